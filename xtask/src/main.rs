//! `cargo xtask test | soak | fetch-model | bench | eval | fuzz | gpu-check`: orchestration only.
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

mod bench;
mod eval;
mod llama_cpp;
mod test;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn cargo(args: &[&str]) -> Result<()> {
    eprintln!("+ cargo {}", args.join(" "));
    let st = Command::new(env!("CARGO")).args(args).current_dir(root()).status().context("cannot run cargo")?;
    if !st.success() {
        bail!("cargo {} failed ({st})", args.join(" "));
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

fn demiurgic(args: &[&str]) -> Result<()> {
    let bin = target_dir().join("release/demiurgic");
    eprintln!("+ demiurgic {}", args.join(" "));
    let st = Command::new(&bin)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !st.success() {
        bail!("demiurgic {} failed ({st})", args.join(" "));
    }
    Ok(())
}

/// Whether a Vulkan loader and at least one ICD (driver manifest) are installed.
fn vulkan_present() -> bool {
    let loader = [
        "/usr/lib/x86_64-linux-gnu/libvulkan.so.1",
        "/usr/lib/aarch64-linux-gnu/libvulkan.so.1",
        "/usr/lib/libvulkan.so.1",
        "/usr/lib64/libvulkan.so.1",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists());
    let icd = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"].iter().any(|d| {
        std::fs::read_dir(d)
            .map(|mut it| it.any(|e| e.map(|e| e.path().extension().is_some_and(|x| x == "json")).unwrap_or(false)))
            .unwrap_or(false)
    });
    loader && icd
}

/// The wgpu tests need a Vulkan driver; on a CPU-only machine that is Mesa's lavapipe.
/// Installed with apt when missing and we are root (as on CI); otherwise a clear error.
/// apt-get install `pkgs` when root and apt exists (update first if the plain install fails).
fn apt_install(pkgs: &[&str], why: &str) -> bool {
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if !is_root || Command::new("apt-get").arg("--version").output().is_err() {
        return false;
    }
    eprintln!("+ apt-get install -y {} ({why})", pkgs.join(" "));
    let install = || {
        Command::new("apt-get").args(["install", "-y", "-qq"]).args(pkgs).status().map(|s| s.success()).unwrap_or(false)
    };
    if install() {
        return true;
    }
    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    install()
}

/// bubblewrap for the eval sandbox tests (which test it present and absent); a clear error when it
/// cannot be had.
fn ensure_bwrap() -> Result<()> {
    let present = || Command::new("bwrap").arg("--version").output().is_ok_and(|o| o.status.success());
    if present() || (apt_install(&["bubblewrap"], "the eval sandbox tests run with and without it") && present()) {
        return Ok(());
    }
    bail!("the eval sandbox tests need bubblewrap: run `apt-get install -y bubblewrap`")
}

/// nginx for the three-replica test (a load balancer in front of `demiurgic serve`); a clear
/// error when it cannot be had.
fn ensure_nginx() -> Result<()> {
    let present = || ["/usr/sbin/nginx", "/usr/bin/nginx"].iter().any(|p| std::path::Path::new(p).exists());
    if present() || (apt_install(&["nginx-light"], "the three-replica serving test puts nginx in front") && present()) {
        return Ok(());
    }
    bail!("the three-replica serving test needs nginx: run `apt-get install -y nginx-light`")
}

fn ensure_vulkan() -> Result<()> {
    if vulkan_present() {
        return Ok(());
    }
    let pkgs = ["mesa-vulkan-drivers", "libvulkan1"];
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if is_root && Command::new("apt-get").arg("--version").output().is_ok() {
        eprintln!(
            "+ apt-get install -y {} (Vulkan for the wgpu tests: lavapipe, Mesa's software driver)",
            pkgs.join(" ")
        );
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-qq"])
                .args(pkgs)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !install() {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
            install();
        }
        if vulkan_present() {
            return Ok(());
        }
    }
    bail!(
        "the wgpu tests need a Vulkan driver and none is installed: run `apt-get install -y {}` \
         (Mesa's lavapipe, a CPU Vulkan driver), or pass --no-wgpu to test ndarray and flex only",
        pkgs.join(" ")
    )
}

const FUZZ_TARGETS: &[&str] = &["gguf", "safetensors_config"];

/// `cargo xtask fuzz [--seconds N] [--target T]`: each cargo-fuzz target for N seconds (default
/// 60) on its committed corpus (`fuzz/corpus/T`). Installs cargo-fuzz when missing. Only the
/// stable toolchain exists here: `RUSTC_BOOTSTRAP=1` lets it pass the nightly flags libFuzzer
/// needs; no sanitizer (the code under test is safe Rust: we hunt panics, hangs and huge
/// allocations, which libFuzzer reports as crashes, timeouts and OOMs).
fn fuzz(args: &[&str]) -> Result<()> {
    let mut seconds = 60u64;
    let mut targets: Vec<&str> = FUZZ_TARGETS.to_vec();
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        match a {
            "--seconds" => {
                let v = it.next().context("--seconds needs a number")?;
                seconds = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .with_context(|| format!("--seconds must be a positive integer, got {v:?}"))?;
            }
            "--target" => {
                let t = *it.next().context("--target needs a name")?;
                if !FUZZ_TARGETS.contains(&t) {
                    bail!("--target {t:?} is unknown (targets: {})", FUZZ_TARGETS.join(", "));
                }
                targets = vec![t];
            }
            other => bail!("unknown fuzz argument {other:?} (allowed: --seconds N, --target T)"),
        }
    }
    let have =
        Command::new(env!("CARGO")).args(["fuzz", "--version"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !have {
        cargo(&["install", "cargo-fuzz", "--locked"])?;
    }
    for t in targets {
        let corpus = root().join("fuzz/corpus").join(t);
        std::fs::create_dir_all(&corpus)?;
        let max_time = format!("-max_total_time={seconds}");
        let a = [
            "fuzz",
            "run",
            t,
            "--sanitizer",
            "none",
            "--",
            &max_time,
            "-timeout=20",
            "-rss_limit_mb=4096",
            "-max_len=65536",
        ];
        eprintln!("+ RUSTC_BOOTSTRAP=1 cargo {}", a.join(" "));
        let st = Command::new(env!("CARGO")).args(a).env("RUSTC_BOOTSTRAP", "1").current_dir(root()).status()?;
        if !st.success() {
            bail!(
                "fuzz target {t} found a failure ({st}): the input is under fuzz/artifacts/{t}/; \
                   add it to tests/fixtures/fuzz-regressions/{t}/ and fix the bug"
            );
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match args.first().map(String::as_str) {
        Some("test") => {
            // wgpu (on lavapipe where no GPU exists) is tested unless --no-wgpu
            let wgpu = !rest.contains(&"--no-wgpu");
            let full = rest.contains(&"--full");
            let lint = rest.contains(&"--lint");
            rest.retain(|a| !matches!(*a, "--no-wgpu" | "--full" | "--lint"));
            if wgpu {
                ensure_vulkan()?;
                // lavapipe warns on every device creation without it
                if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
                    std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
                }
            }
            ensure_bwrap()?;
            ensure_nginx()?;
            test::run(&root(), wgpu, full, lint, &rest)
        }
        Some("soak") => {
            // long run on the real model: N tokens (10,000 by default), resident memory flat
            let tokens = match rest.as_slice() {
                [] => "10000",
                ["--tokens", n] if n.parse::<u64>().is_ok_and(|n| n > 0) => n,
                other => bail!("soak takes --tokens N (a positive integer), got {other:?}"),
            };
            cargo(&["build", "--release", "-p", "demiurgic-runner"])?;
            demiurgic(&["soak", "--backend", "flex", "--tokens", tokens, "--max-growth-mib", "64"])
        }
        Some("fetch-model") => {
            cargo(&["build", "--release", "-p", "demiurgic-runner"])?;
            demiurgic(&["fetch-model"])
        }
        Some("bench") => bench::run(&rest),
        Some("eval") => eval::run(&rest),
        Some("fuzz") => fuzz(&rest),
        Some("gpu-check") => {
            let st = Command::new("bash").arg(root().join("scripts/gpu-check.sh")).args(&rest).current_dir(root()).status()?;
            if !st.success() {
                bail!("scripts/gpu-check.sh failed ({st})");
            }
            Ok(())
        }
        _ => bail!(
            "usage: cargo xtask <test [--full] [--no-wgpu] [--lint] [test name filters] | soak [--tokens N] | fetch-model | \
             bench [--quick] [--backend B ...] [--peers] [--reps N] [--model PATH] | \
             eval [--quick] [--presets LIST] [--samples N] [--limit P] [--backend B] | gpu-check [--prebuilt DIR] | fuzz [--seconds N] [--target T]>"
        ),
    }
}
