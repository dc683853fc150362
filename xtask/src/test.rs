//! `cargo xtask test [--full] [--no-wgpu] [FILTER…]`: one build of the whole workspace with one
//! feature set, then every test binary run here with per-test times.
//!
//! - One `cargo test --release --workspace --no-run` with the backends' features on the runner and
//!   the suite together, so the dependency tree is resolved and compiled once (the runner binary the
//!   CLI tests call is linked by the same build).
//! - Each test binary is then run by this program with libtest's JSON events (`--format json
//!   --report-time`, unstable options that stable libtest takes when `RUSTC_BOOTSTRAP` is set in the
//!   test's environment only, never in cargo's, which would change every fingerprint). A failure
//!   prints the test's captured output; the run goes on through every binary and fails at the end.
//! - The slowest tests are printed at the end, so a slow new test is seen when it lands.
//! - `--full` sets `DEMIURGIC_FULL=1`: the expensive real-model cases run on every backend (without
//!   it, every case on flex and one SmolLM2 case on each other backend: `demiurgic_tests::full`).
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

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

/// Build every test target (and the `demiurgic` binary) once; the test executables built.
fn build(root: &Path, features: &str) -> Result<Vec<TestBinary>> {
    let mut args = vec!["test", "--release", "--workspace", "--no-run", "--message-format", "json-render-diagnostics"];
    if !features.is_empty() {
        args.extend(["--features", features]);
    }
    eprintln!("+ cargo {}", args.join(" "));
    let mut child = Command::new(env!("CARGO"))
        .args(&args)
        .current_dir(root)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo")?;
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
        let package = msg["package_id"].as_str().unwrap_or_default();
        // "path+file:///…/crates/model#demiurgic-model@0.1.0" → demiurgic-model
        let package = package.rsplit('#').next().unwrap_or(package).split('@').next().unwrap_or(package);
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
fn run_binary(bin: &TestBinary, filters: &[&str], full: bool, tally: &mut Tally) -> Result<()> {
    eprintln!("\n+ {} ({})", bin.label, bin.exe.display());
    let mut cmd = Command::new(&bin.exe);
    cmd.args(["-Z", "unstable-options", "--format", "json", "--report-time"])
        .args(filters)
        .current_dir(&bin.package_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_MANIFEST_DIR", &bin.package_dir)
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
pub fn run(root: &Path, wgpu: bool, full: bool, filters: &[&str]) -> Result<()> {
    let t0 = Instant::now();
    let bins = build(root, &features(wgpu, false))?;
    let built = t0.elapsed().as_secs_f64();
    // the CLI tests and the real-model tests share the default model: fetch it once, loudly
    let bin = crate::target_dir().join("release/demiurgic");
    crate::demiurgic(&["fetch-model"]).with_context(|| format!("fetching the default model with {}", bin.display()))?;
    let t1 = Instant::now();
    let mut tally = Tally::default();
    for b in &bins {
        run_binary(b, filters, full, &mut tally)?;
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
    println!(
        "build {built:.0} s, tests {ran:.0} s ({}; {})",
        if full {
            "--full: every real-model case on every backend"
        } else {
            "real-model cases: all on flex, one per other backend"
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
