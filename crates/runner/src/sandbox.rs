//! Landlock for the generated programs of `demiurgic eval`: the binary re-executes itself as
//! `demiurgic __sandbox-exec DIR PROGRAM ARGS…`, which restricts itself with a Landlock ruleset
//! and then executes PROGRAM, so the program (and anything it starts) runs in that domain:
//!
//! - the file system is read-only (read, list, execute) everywhere except beneath DIR, where the
//!   program may do anything;
//! - no TCP bind and no TCP connect, on any port;
//! - the rules are a hard requirement (Landlock ABI 4, Linux 6.7, or newer): a kernel that cannot
//!   enforce all of them makes the helper fail, so `eval` never believes it is sandboxed when it
//!   is not.
//!
//! A separate process (not `pre_exec`) because building a ruleset allocates and opens files,
//! which is not safe between `fork` and `exec` in a threaded program, and because bubblewrap,
//! which mounts file systems, cannot start inside a Landlock domain: with both, bubblewrap starts
//! first and this helper runs inside it.
use std::path::Path;

/// The first argument that makes `demiurgic` the sandbox helper instead of the command line tool.
pub const HELPER_ARG: &str = "__sandbox-exec";

/// Landlock is Linux's.
#[cfg(not(target_os = "linux"))]
pub fn restrict(_dir: &Path) -> Result<(), String> {
    Err("landlock: only on Linux".into())
}

/// Restrict this process (and what it executes afterwards) as the module says.
#[cfg(target_os = "linux")]
pub fn restrict(dir: &Path) -> Result<(), String> {
    use landlock::{
        path_beneath_rules, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
        RulesetCreatedAttr, RulesetStatus, ABI,
    };
    // the first ABI with TCP rules
    let abi = ABI::V4;
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(["/"], AccessFs::from_read(abi))))
        .and_then(|r| r.add_rules(path_beneath_rules([dir], AccessFs::from_all(abi))))
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("landlock: {e}"))?;
    if status.ruleset != RulesetStatus::FullyEnforced || !status.no_new_privs {
        return Err(format!("landlock: the ruleset is not fully enforced ({:?})", status.ruleset));
    }
    Ok(())
}

/// `demiurgic __sandbox-exec DIR PROGRAM ARGS…`: restrict, then execute PROGRAM (found on PATH).
/// Never returns: exits 126 when the sandbox or the program cannot be set up (nothing ran).
pub fn helper_main(args: &[std::ffi::OsString]) -> ! {
    let fail = |msg: String| -> ! {
        eprintln!("sandbox: {msg}");
        std::process::exit(126)
    };
    let [dir, program, rest @ ..] = args else {
        fail(format!("usage: demiurgic {HELPER_ARG} DIR PROGRAM [ARGS…]"));
    };
    if let Err(e) = restrict(Path::new(dir)) {
        fail(e);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let e = std::process::Command::new(program).args(rest).exec();
        fail(format!("cannot execute {}: {e}", program.to_string_lossy()));
    }
    #[cfg(not(unix))]
    fail(format!("not supported on this system ({})", program.to_string_lossy()));
}
