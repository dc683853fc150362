//! `cargo xtask test [--full] [--no-wgpu] [FILTER…]`: one build of the whole workspace with one
//! feature set, then every test binary run here with per-test times.
//!
//! - One `cargo test --profile testing --workspace --no-run` with the backends' features on the
//!   runner and the suite together, so the dependency tree is resolved and compiled once (the
//!   runner binary the CLI tests call is linked by the same build). The `testing` profile
//!   (Cargo.toml) keeps opt-level 3 where the tests spend their time and compiles the rest at 1.
//! - Each test binary is then run by this program with libtest's JSON events (`--format json
//!   --report-time`, unstable options that stable libtest takes when `RUSTC_BOOTSTRAP` is set in the
//!   test's environment only, never in cargo's, which would change every fingerprint). A failure
//!   prints the test's captured output; the run goes on through every binary and fails at the end.
//! - The slowest tests are printed at the end, so a slow new test is seen when it lands.
//! - `--lint` (CI) makes that one build the lint as well: clippy-driver is the workspace's compiler
//!   wrapper (`RUSTC_WORKSPACE_WRAPPER`, what `cargo clippy` itself sets, with `-D warnings`), so
//!   our crates are linted while they are compiled for the tests, and the dependencies are built
//!   once, with code, for both. The cuda backend is compiled in (and linted) too; it runs only
//!   where a GPU is (`cargo xtask gpu-check`): the backends the tests run are named in
//!   `DEMIURGIC_TEST_BACKENDS`, printed at the start.
//! - `--full` sets `DEMIURGIC_FULL=1`: the expensive real-model cases run on every backend (without
//!   it, every case on flex and one SmolLM2 case on each other backend: `demiurgic_tests::full`).
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The cargo profile of the test build (Cargo.toml: release code where tests spend their time,
/// opt-level 1 elsewhere, to compile fast).
const PROFILE: &str = "testing";

/// One test executable of the build.
struct TestBinary {
    /// `package::target` (e.g. `demiurgic-tests::suite`), for the report.
    label: String,
    exe: PathBuf,
    /// The package's directory: cargo runs a test binary there, so do we.
    package_dir: PathBuf,
}

/// What the run of every binary found.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: Vec<String>,
    ignored: u64,
    /// (seconds, binary, test)
    times: Vec<(f64, String, String)>,
}

/// The `--features` of the build: the backends on the runner (its binary and CLI tests) and on the
/// cross-crate suite at once.
pub fn features(wgpu: bool, cuda: bool) -> String {
    let mut f = vec![];
    for (on, b) in [(wgpu, "wgpu"), (cuda, "cuda")] {
        if on {
            f.push(format!("demiurgic-runner/{b}"));
            f.push(format!("demiurgic-tests/{b}"));
        }
    }
    f.join(",")
}

/// clippy-driver of the toolchain that runs this build (beside its cargo).
fn clippy_driver() -> Result<PathBuf> {
    let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into()));
    let driver = cargo.with_file_name("clippy-driver");
    if driver.exists() {
        return Ok(driver);
    }
    let out = Command::new("rustup").args(["which", "clippy-driver"]).output();
    match out {
        Ok(o) if o.status.success() => Ok(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())),
        _ => bail!("--lint needs clippy (rustup component add clippy); no clippy-driver beside {}", cargo.display()),
    }
}

/// Build every test target (and the `demiurgic` binary) once; the test executables built. With
/// `lint`, clippy (warnings denied) compiles our crates in the same build.
fn build(root: &Path, features: &str, lint: bool) -> Result<Vec<TestBinary>> {
    let mut args =
        vec!["test", "--profile", PROFILE, "--workspace", "--no-run", "--message-format", "json-render-diagnostics"];
    if !features.is_empty() {
        args.extend(["--features", features]);
    }
    let mut cmd = Command::new(env!("CARGO"));
    if lint {
        let driver = clippy_driver()?;
        eprintln!("+ RUSTC_WORKSPACE_WRAPPER={} CLIPPY_ARGS=-D warnings", driver.display());
        // the argument list cargo-clippy passes to its driver: each argument ends with this marker
        cmd.env("RUSTC_WORKSPACE_WRAPPER", driver).env("CLIPPY_ARGS", "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__");
    }
    eprintln!("+ cargo {}", args.join(" "));
    let mut child = cmd.args(&args).current_dir(root).stdout(Stdio::piped()).spawn().context("cannot run cargo")?;
    let mut bins = vec![];
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            println!("{line}");
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else { continue };
        let manifest = PathBuf::from(msg["manifest_path"].as_str().context("cargo message without manifest_path")?);
        // "path+file:///…/crates/model#demiurgic-model@0.1.0" → demiurgic-model;
        // "path+file:///…/xtask#0.1.0" (name = folder) → xtask
        let id = msg["package_id"].as_str().unwrap_or_default();
        let (url, frag) = id.rsplit_once('#').unwrap_or((id, ""));
        let package = match frag.split_once('@') {
            Some((name, _)) => name,
            None => url.rsplit('/').next().unwrap_or(url),
        };
        let target = msg["target"]["name"].as_str().unwrap_or("?");
        bins.push(TestBinary {
            label: format!("{package}::{target}"),
            exe: PathBuf::from(exe),
            package_dir: manifest.parent().context("manifest path without a directory")?.to_path_buf(),
        });
    }
    let st = child.wait()?;
    if !st.success() {
        bail!("cargo {} failed ({st})", args.join(" "));
    }
    if bins.is_empty() {
        bail!("the build produced no test binary");
    }
    bins.sort_by(|a, b| a.label.cmp(&b.label));
    Ok(bins)
}

/// Run one test binary with libtest's JSON events; add what it reports to `tally`.
fn run_binary(
    bin: &TestBinary,
    filters: &[&str],
    full: bool,
    backends: &str,
    cut_log: &Path,
    tally: &mut Tally,
) -> Result<()> {
    eprintln!("\n+ {} ({})", bin.label, bin.exe.display());
    let mut cmd = Command::new(&bin.exe);
    cmd.args(["-Z", "unstable-options", "--format", "json", "--report-time"])
        .args(filters)
        .current_dir(&bin.package_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_MANIFEST_DIR", &bin.package_dir)
        .env("DEMIURGIC_TEST_BACKENDS", backends)
        .env("DEMIURGIC_CUT_LOG", cut_log)
        .stdout(Stdio::piped());
    if full {
        cmd.env("DEMIURGIC_FULL", "1");
    }
    let mut child = cmd.spawn().with_context(|| format!("cannot run {}", bin.exe.display()))?;
    let mut suite_done = false;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        let Ok(ev) = serde_json::from_str::<Value>(&line) else {
            println!("{line}");
            continue;
        };
        let name = ev["name"].as_str().unwrap_or_default();
        let secs = ev["exec_time"].as_f64();
        match (ev["type"].as_str(), ev["event"].as_str()) {
            (Some("suite"), Some("started")) => {
                println!("running {} tests", ev["test_count"]);
            }
            (Some("test"), Some("ok")) => {
                tally.passed += 1;
                let s = secs.unwrap_or(0.0);
                tally.times.push((s, bin.label.clone(), name.to_string()));
                println!("test {name} ... ok ({s:.2} s)");
            }
            (Some("test"), Some("failed")) => {
                tally.failed.push(format!("{}: {name}", bin.label));
                if let Some(s) = secs {
                    tally.times.push((s, bin.label.clone(), name.to_string()));
                }
                println!("test {name} ... FAILED ({:.2} s)", secs.unwrap_or(0.0));
                if let Some(out) = ev["stdout"].as_str() {
                    println!("---- {name} output ----\n{out}");
                }
            }
            (Some("test"), Some("ignored")) => {
                tally.ignored += 1;
                println!("test {name} ... ignored");
            }
            (Some("suite"), Some(_)) => {
                suite_done = true;
                println!(
                    "{}: {} passed, {} failed, {} ignored in {:.1} s",
                    bin.label,
                    ev["passed"],
                    ev["failed"],
                    ev["ignored"],
                    ev["exec_time"].as_f64().unwrap_or(0.0)
                );
            }
            _ => {}
        }
    }
    let st = child.wait()?;
    if !suite_done {
        // crashed (signal, abort) before libtest could report: the binary itself failed
        tally.failed.push(format!("{}: the test binary ended without a result ({st})", bin.label));
    }
    Ok(())
}

/// `cargo xtask test`.
pub fn run(root: &Path, wgpu: bool, full: bool, lint: bool, filters: &[&str]) -> Result<()> {
    let t0 = Instant::now();
    // cuda is compiled in with --lint (the runner's feature only: the suite's per-backend tests
    // are generated for the backends run here), never run without a GPU
    let mut features = features(wgpu, false);
    if lint {
        features.push_str(if features.is_empty() { "demiurgic-runner/cuda" } else { ",demiurgic-runner/cuda" });
    }
    let backends = if wgpu { "flex,ndarray,wgpu" } else { "flex,ndarray" };
    eprintln!(
        "backends the tests run: {backends}{}",
        if lint { " (cuda compiled and linted, run by `cargo xtask gpu-check` where a GPU is)" } else { "" }
    );
    let bins = build(root, &features, lint)?;
    let built = t0.elapsed().as_secs_f64();
    // the CLI tests and the real-model tests share the default model: fetch it once, loudly
    let bin = crate::target_dir().join(format!("{PROFILE}/demiurgic"));
    eprintln!("+ {} fetch-model", bin.display());
    let st = Command::new(&bin)
        .arg("fetch-model")
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !st.success() {
        bail!("fetching the default model with {} failed ({st})", bin.display());
    }
    let t1 = Instant::now();
    let mut tally = Tally::default();
    // what the real-model tests leave to --full (demiurgic_tests::real_model_cases), listed at the end
    let cut_log = crate::target_dir().join(PROFILE).join("cut-cases.log");
    let _ = std::fs::remove_file(&cut_log);
    // in name order: the CLI tests' `demiurgic --backend wgpu` processes (runner) before the
    // suite, so their kernels, compiled on both cores at once, are in Mesa's shader disk cache
    // (lavapipe, Mesa ≥ 23) when the suite's one wgpu device compiles them one at a time
    // (measured: suite first, 1,029 s of tests; runner first, 725 s)
    for b in &bins {
        run_binary(b, filters, full, backends, &cut_log, &mut tally)?;
    }
    let ran = t1.elapsed().as_secs_f64();

    tally.times.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("\nslowest tests:");
    for (s, bin, name) in tally.times.iter().take(15) {
        println!("  {s:8.2} s  {bin}  {name}");
    }
    let mut per_bin: BTreeMap<&str, f64> = BTreeMap::new();
    for (s, bin, _) in &tally.times {
        *per_bin.entry(bin).or_default() += s;
    }
    println!("test time per binary (sum over its tests, which run 2 at a time on 2 cores):");
    for (bin, s) in &per_bin {
        println!("  {s:8.1} s  {bin}");
    }
    if let Ok(cut) = std::fs::read_to_string(&cut_log) {
        println!("real-model cases left to `cargo xtask test --full`:");
        for l in cut.lines() {
            println!("  {l}");
        }
    }
    println!(
        "build {built:.0} s, tests {ran:.0} s ({}; {})",
        if full {
            "--full: every real-model case on every backend"
        } else {
            "real-model cases: all on flex; SmolLM2 golden and cross-backend: one case per other backend"
        },
        if wgpu { "ndarray, flex, wgpu" } else { "ndarray, flex" }
    );
    for f in &tally.failed {
        println!("FAILED {f}");
    }
    if tally.ignored > 0 {
        println!("tests: {} passed, {} failed, {} skipped", tally.passed, tally.failed.len(), tally.ignored);
    } else {
        println!("tests: {} passed, {} failed", tally.passed, tally.failed.len());
    }
    if !tally.failed.is_empty() {
        bail!("{} test(s) failed", tally.failed.len());
    }
    if tally.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}
