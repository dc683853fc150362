//! `cargo xtask test | fetch-model`: orchestration only.
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

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

/// Run `cargo test`, echo its output, and close with one plain `tests: N passed, N failed` line.
fn cargo_test_summarised(args: &[&str]) -> Result<()> {
    use std::io::{BufRead, BufReader};
    eprintln!("+ cargo {}", args.join(" "));
    let mut child = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run cargo")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut w = part.split_whitespace().rev();
                let (kind, n) = (w.next(), w.next());
                if let Some(n) = n.and_then(|n| n.trim_start_matches("ok.").trim_start_matches("FAILED.").trim().parse::<u64>().ok()) {
                    match kind {
                        Some("passed") => passed += n,
                        Some("failed") => failed += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let st = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    if !st.success() || passed == 0 {
        bail!("cargo {} failed ({st})", args.join(" "));
    }
    Ok(())
}

fn demiurgic(args: &[&str]) -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
    let bin = target.join("release/demiurgic");
    eprintln!("+ demiurgic {}", args.join(" "));
    let st = Command::new(&bin).args(args).current_dir(root()).status().with_context(|| format!("cannot run {}", bin.display()))?;
    if !st.success() {
        bail!("demiurgic {} failed ({st})", args.join(" "));
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match args.first().map(String::as_str) {
        Some("test") => {
            // fetch first so a missing model fails loudly, once
            cargo(&["build", "--release", "-p", "demiurgic-runner"])?;
            demiurgic(&["fetch-model"])?;
            let mut a = vec!["test", "--release", "--workspace"];
            a.extend(&rest);
            cargo_test_summarised(&a)
        }
        Some("fetch-model") => {
            cargo(&["build", "--release", "-p", "demiurgic-runner"])?;
            demiurgic(&["fetch-model"])
        }
        _ => bail!("usage: cargo xtask <test | fetch-model>"),
    }
}
