//! `bench --host-profile FILE`: where the host's time goes during batch-1 decode, sampled with
//! pprof (a `SIGPROF` sampling profiler, the `host-profile` feature). On a GPU backend this
//! splits the step into our code, Burn's and CubeCL's launch paths, the driver, and waiting for
//! the device. Writes FILE (per thread, then the top functions by inclusive and by self samples)
//! and FILE.folded (collapsed stacks, `thread;root;…;leaf count`, for flame graph tools).
use std::path::Path;

use anyhow::Result;

/// Whether this build can profile the host.
pub const AVAILABLE: bool = cfg!(all(feature = "host-profile", target_os = "linux", target_env = "gnu"));

/// Run `f` under the sampling profiler and write its report to `path`.
#[cfg(all(feature = "host-profile", target_os = "linux", target_env = "gnu"))]
pub fn profile<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    use anyhow::Context;
    use std::collections::{HashMap, HashSet};
    use std::fmt::Write;

    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(4000)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .context("cannot start the host profiler")?;
    let out = f()?;
    let report = guard.report().build().context("cannot build the host profile")?;
    drop(guard);

    let short = |s: String| -> String {
        let s = s.replace("alloc::", "").replace("core::", "");
        if s.chars().count() > 150 {
            s.chars().take(150).collect()
        } else {
            s
        }
    };
    let (mut total, mut threads) = (0isize, HashMap::<String, isize>::new());
    let (mut incl, mut own) = (HashMap::<String, isize>::new(), HashMap::<String, isize>::new());
    let mut folded = String::new();
    for (frames, &n) in &report.data {
        total += n;
        let thread = format!("{}#{}", frames.thread_name_or_id(), frames.thread_id);
        *threads.entry(thread.clone()).or_default() += n;
        let mut seen = HashSet::new();
        let mut stack = Vec::new();
        for (depth, frame) in frames.frames.iter().enumerate() {
            for (k, sym) in frame.iter().enumerate() {
                let name = short(sym.name());
                if depth == 0 && k == 0 {
                    *own.entry(name.clone()).or_default() += n;
                }
                if seen.insert(name.clone()) {
                    *incl.entry(name.clone()).or_default() += n;
                }
                stack.push(name);
            }
        }
        stack.push(thread);
        stack.reverse();
        let _ = writeln!(folded, "{} {n}", stack.join(";").replace(' ', "_"));
    }
    let mut text = format!("host profile: {total} samples at 4 kHz\n\nthreads:\n");
    let sorted = |m: HashMap<String, isize>| {
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    };
    let pct = |n: isize| 100.0 * n as f64 / total.max(1) as f64;
    for (t, n) in sorted(threads) {
        let _ = writeln!(text, "{:6.1}%  {t}", pct(n));
    }
    for (title, m) in [("inclusive", incl), ("self", own)] {
        let _ = writeln!(text, "\ntop functions, {title}:");
        for (f, n) in sorted(m).into_iter().take(80) {
            let _ = writeln!(text, "{:6.1}%  {f}", pct(n));
        }
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    let folded_path = path.with_extension("folded");
    std::fs::write(&folded_path, folded).with_context(|| format!("cannot write {}", folded_path.display()))?;
    Ok(out)
}

/// Run `f` under the sampling profiler and write its report to `path`.
#[cfg(not(all(feature = "host-profile", target_os = "linux", target_env = "gnu")))]
pub fn profile<T>(_path: &Path, _f: impl FnOnce() -> Result<T>) -> Result<T> {
    anyhow::bail!("--host-profile needs a build with `--features host-profile` (Linux with glibc)")
}
