//! `cargo xtask bench [--quick] [--backend B ...] [--peers] [--reps N] [--model PATH]`
//!
//! Builds the runner in release with the backends asked for, runs `demiurgic bench` once per
//! backend (one process each, so each peak RSS is its own), optionally the peers
//! (`scripts/bench_peers.py`: transformers and llama-cpp-python in a venv under `target/`; and
//! llama.cpp's own `llama-bench` and `llama-server`, built once by [`crate::llama_cpp`]), and
//! writes `target/bench/latest.json`, `latest.md` (also printed) and `latest.png`.
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{cargo, root, target_dir};

struct Opts {
    profile: bool,
    speculative: bool,
    serve: bool,
    quick: bool,
    backends: Vec<String>,
    peers: bool,
    /// `--llama-cpp`: only llama.cpp's own tools as peers (no Python venv).
    llama_cpp: bool,
    reps: Option<String>,
    /// `--activations f32|int16|int8`, passed to `demiurgic bench` (int8 is llama.cpp's arithmetic).
    activations: Option<String>,
    model: Option<String>,
    /// `--contexts 256,1024,…`: batch-1 decode after prompts this long (ours and llama.cpp's).
    contexts: Option<String>,
}

fn parse(args: &[&str]) -> Result<Opts> {
    let mut o = Opts {
        profile: false,
        speculative: false,
        serve: false,
        quick: false,
        backends: vec![],
        peers: false,
        llama_cpp: false,
        reps: None,
        activations: None,
        model: None,
        contexts: None,
    };
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        match a {
            "--quick" => o.quick = true,
            "--profile" => o.profile = true,
            "--speculative" => o.speculative = true,
            "--serve" => o.serve = true,
            "--peers" => o.peers = true,
            "--llama-cpp" => o.llama_cpp = true,
            "--backend" => {
                let b = it.next().context("--backend needs a value (flex, ndarray, wgpu, cuda)")?;
                for b in b.split(',') {
                    if !["flex", "ndarray", "wgpu", "cuda"].contains(&b) {
                        bail!("--backend {b:?} is unknown (allowed: flex, ndarray, wgpu, cuda)");
                    }
                    o.backends.push(b.to_string());
                }
            }
            "--reps" => o.reps = Some(it.next().context("--reps needs a number")?.to_string()),
            "--activations" => {
                o.activations = Some(it.next().context("--activations needs f32, int16 or int8")?.to_string())
            }
            "--model" => o.model = Some(it.next().context("--model needs a path")?.to_string()),
            "--contexts" => {
                o.contexts = Some(it.next().context("--contexts needs a list of prompt lengths (256,1024,4096)")?.to_string())
            }
            other => bail!("unknown bench argument {other:?} (allowed: --quick, --profile, --speculative, --serve, --backend B, --peers, --llama-cpp, --reps N, --activations A, --model PATH, --contexts N,N)"),
        }
    }
    if o.backends.is_empty() {
        o.backends = vec!["flex".into(), "ndarray".into()];
    }
    Ok(o)
}

pub(crate) fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd.stderr(Stdio::inherit()).output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cpu}, {n} hardware threads available, {}", std::env::consts::ARCH)
}

fn burn_version() -> String {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap_or_default();
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l == "name = \"burn\"" {
            if let Some(v) = lines.next().and_then(|v| v.strip_prefix("version = ")) {
                return v.trim_matches('"').to_string();
            }
        }
    }
    "unknown".into()
}

pub(crate) fn commit() -> String {
    let rev = capture(Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(root()))
        .unwrap_or_else(|_| "unknown".into());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(root())
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        format!("{rev}-dirty")
    } else {
        rev
    }
}

pub fn run(args: &[&str]) -> Result<()> {
    let o = parse(args)?;
    let extra: Vec<&str> = o.backends.iter().map(String::as_str).filter(|b| ["wgpu", "cuda"].contains(b)).collect();
    let mut build = vec!["build", "--release", "-p", "demiurgic-runner"];
    let feats = extra.join(",");
    if !extra.is_empty() {
        build.extend(["--features", &feats]);
    }
    cargo(&build)?;
    let bin = target_dir().join("release/demiurgic");
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let model = match &o.model {
        Some(m) => m.clone(),
        None => capture(Command::new(&bin).arg("fetch-model"))?,
    };

    let mut per_backend = Vec::new();
    for b in &o.backends {
        eprintln!("+ demiurgic bench --backend {b}");
        let json_path = out_dir.join(format!("{b}.json"));
        let mut c = Command::new(&bin);
        c.args(["bench", "--backend", b, "--model", &model, "--json-out"]).arg(&json_path);
        if o.quick {
            c.arg("--quick");
        }
        if o.profile {
            c.arg("--profile");
        }
        if o.speculative {
            c.arg("--speculative");
        }
        if let Some(r) = &o.reps {
            c.args(["--reps", r]);
        }
        if let Some(a) = &o.activations {
            c.args(["--activations", a]);
        }
        if let Some(x) = &o.contexts {
            c.args(["--contexts", x]);
        }
        c.stdout(Stdio::null());
        let st = c.stderr(Stdio::inherit()).status()?;
        if !st.success() {
            bail!("demiurgic bench --backend {b} failed ({st})");
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&json_path)?)?;
        per_backend.push(v);
    }
    let threads = per_backend.first().and_then(|v| v["threads"].as_u64()).unwrap_or(0);

    let native = if o.peers || o.llama_cpp {
        Some(crate::llama_cpp::tools(
            std::thread::available_parallelism().map_or(2, |n| n.get() as u64),
            &llama_cpp_cmake_args(),
        )?)
    } else {
        None
    };
    let mut peers =
        if o.peers { run_peers(&model, threads, o.quick, o.reps.as_deref(), o.contexts.as_deref())? } else { vec![] };
    if let Some(t) = &native {
        peers.push(run_llama_bench(t, &model, threads, o.quick, o.reps.as_deref(), o.contexts.as_deref())?);
    }
    let serve = if o.serve { run_serve(&bin, &model, threads, native.as_ref())? } else { vec![] };

    let cat = |k: &str| -> Vec<Value> {
        per_backend.iter().flat_map(|v| v[k].as_array().cloned().unwrap_or_default()).collect()
    };
    let memory: serde_json::Map<String, Value> =
        per_backend.iter().map(|v| (v["backend"].as_str().unwrap_or("?").to_string(), v["memory"].clone())).collect();
    let load_s: serde_json::Map<String, Value> =
        per_backend.iter().map(|v| (v["backend"].as_str().unwrap_or("?").to_string(), v["load_s"].clone())).collect();
    let mut report = json!({
        "date": capture(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])).unwrap_or_default(),
        "machine": machine(),
        "commit": commit(),
        "burn_version": burn_version(),
        "threads": threads,
        "model": model,
        "quick": o.quick,
        "reps": per_backend.first().map(|v| v["reps"].clone()),
        "load_s": load_s,
        "cache_speedup": cat("cache_speedup"),
        "decode": cat("decode"),
        "prefill": cat("prefill"),
        "memory": memory,
        "bandwidth_gbs": per_backend.iter().find_map(|v| v["bandwidth_gbs"].as_f64()),
        "profile": per_backend.iter().filter(|v| !v["profile"].is_null()).map(|v| v["profile"].clone()).collect::<Vec<_>>(),
        "speculative": cat("speculative"),
        "structured": cat("structured"),
        "context": cat("context"),
        "serve": serve,
        "peers": peers,
    });
    report["ratios"] = Value::Array(ratios(&report));
    std::fs::write(out_dir.join("latest.json"), serde_json::to_string_pretty(&report)?)?;
    let md = markdown(&report);
    std::fs::write(out_dir.join("latest.md"), &md)?;
    println!("{md}");
    match plot(&report, &out_dir.join("latest.png")) {
        Ok(()) => eprintln!("wrote {0}/latest.json, {0}/latest.md, {0}/latest.png", out_dir.display()),
        Err(e) => eprintln!("wrote {0}/latest.json and {0}/latest.md; no plot: {e:#}", out_dir.display()),
    }
    Ok(())
}

/// llama.cpp's build flags. Its native build (`-march=native`) turns AMX on when the CPU lists
/// it, and virtual machines that list AMX without granting the tile state kill it with SIGILL
/// on `tilezero` (seen on this project's Intel machines). There the build names every
/// instruction set /proc/cpuinfo lists instead, AMX left out; elsewhere it stays native.
fn llama_cpp_cmake_args() -> String {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> =
        flags.lines().find(|l| l.starts_with("flags")).map(|l| l.split_whitespace().collect()).unwrap_or_default();
    if !flags.contains(&"amx_tile") {
        return "-DGGML_NATIVE=ON".into();
    }
    let has = |f: &str| flags.contains(&f);
    let mut args = vec![
        "-DGGML_NATIVE=OFF".to_string(),
        "-DGGML_AMX_TILE=OFF".into(),
        "-DGGML_AMX_INT8=OFF".into(),
        "-DGGML_AMX_BF16=OFF".into(),
    ];
    for (flag, opt) in [
        ("avx", "GGML_AVX"),
        ("avx2", "GGML_AVX2"),
        ("fma", "GGML_FMA"),
        ("f16c", "GGML_F16C"),
        ("bmi2", "GGML_BMI2"),
        ("avx512f", "GGML_AVX512"),
        ("avx512vbmi", "GGML_AVX512_VBMI"),
        ("avx512_vnni", "GGML_AVX512_VNNI"),
        ("avx512_bf16", "GGML_AVX512_BF16"),
        ("avx_vnni", "GGML_AVX_VNNI"),
    ] {
        args.push(format!("-D{opt}={}", if has(flag) { "ON" } else { "OFF" }));
    }
    args.join(" ")
}

/// Concurrency levels of the server load test: each server gets as many slots as clients.
const SERVE_CLIENTS: [u32; 3] = [1, 8, 32];

/// A server process killed when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server load test (`scripts/bench_serve.py`, streamed 64-token completions, 2 requests per
/// client) at 1, 8 and 32 clients against `demiurgic serve --max-batch C` and, with llama.cpp's
/// tools built, `llama-server -np C -cb` on the same file and threads (one after the other, a
/// fresh server per level).
fn run_serve(bin: &Path, model: &str, threads: u64, native: Option<&crate::llama_cpp::Tools>) -> Result<Vec<Value>> {
    use std::io::BufRead;
    let script = root().join("scripts/bench_serve.py");
    let out = target_dir().join("bench");
    let load = |url: &str, name: &str, clients: u32| -> Result<Vec<Value>> {
        let json_out = out.join(format!("serve-{name}-{clients}.json"));
        let st = Command::new("python3")
            .arg(&script)
            .args(["--url", url, "--model", "bench", "--name", name, "--requests-per-client", "2"])
            .args(["--concurrency", &clients.to_string(), "--json-out"])
            .arg(&json_out)
            .status()?;
        if !st.success() {
            bail!("scripts/bench_serve.py against {name} at {clients} clients failed ({st})");
        }
        Ok(serde_json::from_str::<Value>(&std::fs::read_to_string(&json_out)?)?.as_array().cloned().unwrap_or_default())
    };
    let mut rows = vec![];
    for clients in SERVE_CLIENTS {
        let slots = clients.to_string();
        eprintln!("+ demiurgic serve --port 0 --max-batch {slots}");
        let mut child = Command::new(bin)
            .args(["serve", "--model", model, "--port", "0", "--max-batch", &slots, "--served-model-name", "bench"])
            .stderr(Stdio::piped())
            .spawn()?;
        let mut err = std::io::BufReader::new(child.stderr.take().context("server stderr")?);
        let server = Server(child);
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if err.read_line(&mut line)? == 0 {
                bail!("demiurgic serve exited before listening");
            }
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap_or_default().to_string();
            }
        };
        // keep reading the server's log so it never blocks on a full pipe
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        rows.extend(load(&format!("http://{addr}"), "demiurgic", clients)?);
        drop(server);
        let Some(t) = native else { continue };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // every slot gets the context a request needs (prompt + 64 tokens, well under 512)
        let ctx = (512 * clients).to_string();
        let args = ["-np", &slots, "-cb", "-c", &ctx, "-t", &threads.to_string(), "--port", &port.to_string()];
        eprintln!("+ llama-server {}", args.join(" "));
        let mut server = Server(
            Command::new(&t.server)
                .args(["-m", model, "--alias", "bench", "--host", "127.0.0.1"])
                .args(args)
                .stderr(Stdio::null())
                .stdout(Stdio::null())
                .spawn()?,
        );
        let url = format!("http://127.0.0.1:{port}");
        let start = std::time::Instant::now();
        // llama-server answers /health with 503 while it loads, 200 once ready
        while capture(Command::new("curl").args(["-sf", &format!("{url}/health")])).is_err() {
            if let Some(st) = server.0.try_wait()? {
                bail!(
                    "llama-server -m {model} {} exited before it was ready ({st}); run it by hand to see its log",
                    args.join(" ")
                );
            }
            if start.elapsed().as_secs() > 120 {
                bail!("llama-server did not become ready in 120 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        rows.extend(load(&url, "llama-server", clients)?);
        drop(server);
    }
    Ok(rows)
}

/// llama.cpp's `llama-bench` on the same file and threads: prefill (`-p`), batch-1 decode (`-n`)
/// and decode after `--contexts` tokens (`-d`), as a peer row like `scripts/bench_peers.py`'s.
fn run_llama_bench(
    t: &crate::llama_cpp::Tools,
    model: &str,
    threads: u64,
    quick: bool,
    reps: Option<&str>,
    contexts: Option<&str>,
) -> Result<Value> {
    let reps = reps.unwrap_or(if quick { "2" } else { "3" });
    let threads = threads.max(1).to_string();
    let run = |extra: &[&str]| -> Result<Vec<Value>> {
        let mut c = Command::new(&t.bench);
        c.args(["-m", model, "-t", &threads, "-r", reps, "-o", "json"]).args(extra);
        let out = capture(&mut c)?;
        Ok(serde_json::from_str::<Value>(&out)
            .with_context(|| format!("llama-bench's JSON: {out}"))?
            .as_array()
            .cloned()
            .unwrap_or_default())
    };
    let (prompts, gen) = if quick { ("128", "32") } else { ("128,512", "128") };
    let mut rows = run(&["-p", prompts, "-n", gen])?;
    if let Some(x) = contexts {
        rows.extend(run(&["-p", "0", "-n", "32", "-d", x])?);
    }
    let (mut decode, mut prefill, mut context) = (vec![], vec![], vec![]);
    for r in rows {
        let ts = r["avg_ts"].clone();
        let (np, ng, depth) = (r["n_prompt"].as_u64(), r["n_gen"].as_u64(), r["n_depth"].as_u64().unwrap_or(0));
        match (np, ng) {
            (Some(p), Some(0)) if p > 0 => prefill.push(json!({"prompt_tokens": p, "tokens_per_s": ts})),
            (Some(0), Some(_)) if depth > 0 => context.push(json!({"context_tokens": depth, "tokens_per_s": ts})),
            (Some(0), Some(_)) => decode.push(json!({"batch": 1, "tokens_per_s": ts})),
            _ => bail!("llama-bench row neither prefill nor decode: {r}"),
        }
    }
    Ok(json!({"name": "llama-bench", "build": t.build, "decode": decode, "prefill": prefill, "context": context}))
}

/// transformers and llama.cpp on the same model, thread count and shapes, in a venv under target/.
fn run_peers(model: &str, threads: u64, quick: bool, reps: Option<&str>, contexts: Option<&str>) -> Result<Vec<Value>> {
    let venv = target_dir().join("bench/venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        eprintln!("+ python3 -m venv {}", venv.display());
        let st = Command::new("python3").args(["-m", "venv"]).arg(&venv).status()?;
        if !st.success() {
            bail!("cannot create a venv at {} (install python3-venv)", venv.display());
        }
    }
    let reqs = root().join("scripts/bench-peers-requirements.txt");
    eprintln!(
        "+ pip install -r {} (transformers + CPU torch, llama-cpp-python compiles llama.cpp: minutes)",
        reqs.display()
    );
    let st = Command::new(&py)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "-r"])
        .arg(&reqs)
        .env("CMAKE_BUILD_PARALLEL_LEVEL", threads.max(1).to_string())
        .env("CMAKE_ARGS", llama_cpp_cmake_args())
        .status()?;
    if !st.success() {
        bail!("pip install of the peers failed ({st})");
    }
    let out = target_dir().join("bench/peers.json");
    let mut c = Command::new(&py);
    c.arg(root().join("scripts/bench_peers.py"))
        .args(["--model", model, "--threads", &threads.to_string(), "--json-out"])
        .arg(&out);
    if quick {
        c.arg("--quick");
    }
    if let Some(r) = reps {
        c.args(["--reps", r]);
    }
    if let Some(x) = contexts {
        c.args(["--contexts", x]);
    }
    let st = c.env("PYTHONUNBUFFERED", "1").status()?;
    if !st.success() {
        bail!("scripts/bench_peers.py failed ({st})");
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    Ok(v["peers"].as_array().cloned().unwrap_or_default())
}

fn find<'a>(rows: &'a [Value], key: &str, val: u64) -> Option<&'a Value> {
    rows.iter().find(|r| r[key].as_u64() == Some(val))
}

/// ours / peer for every matching (backend, peer, measurement).
fn ratios(r: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let empty = vec![];
    let ours = |k: &str| r[k].as_array().unwrap_or(&empty).clone();
    for peer in r["peers"].as_array().unwrap_or(&empty) {
        let name = peer["name"].as_str().unwrap_or("?");
        for (k, key, field) in [
            ("decode", "batch", "tokens_per_s"),
            ("prefill", "prompt_tokens", "tokens_per_s"),
            ("cache_speedup", "new_tokens", "cache_s"),
            ("context", "context_tokens", "tokens_per_s"),
        ] {
            let prow = peer[k].as_array().cloned().unwrap_or_default();
            for row in ours(k) {
                let Some(x) = row[key].as_u64() else { continue };
                let Some(p) = find(&prow, key, x) else { continue };
                let (a, b) = (row[field].as_f64().unwrap_or(f64::NAN), p[field].as_f64().unwrap_or(f64::NAN));
                // for times, ours/peer speed = peer time / our time
                let ratio = if field == "cache_s" { b / a } else { a / b };
                out.push(json!({"backend": row["backend"], "peer": name, "measure": k, key: x, "speed_ratio_ours_over_peer": ratio}));
            }
        }
    }
    // the server load: ours against each other server at the same number of clients
    let serve = ours("serve");
    for row in serve.iter().filter(|r| r["server"] == "demiurgic") {
        for peer in serve.iter().filter(|p| p["server"] != "demiurgic" && p["concurrency"] == row["concurrency"]) {
            let (a, b) =
                (row["tokens_per_s"].as_f64().unwrap_or(f64::NAN), peer["tokens_per_s"].as_f64().unwrap_or(f64::NAN));
            out.push(json!({"backend": "serve", "peer": peer["server"], "measure": "tokens/s", "concurrency": row["concurrency"], "speed_ratio_ours_over_peer": a / b}));
        }
    }
    out
}

fn f(v: &Value, digits: usize) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.digits$}"))
}

fn markdown(r: &Value) -> String {
    let empty = vec![];
    let rows = |k: &str| r[k].as_array().unwrap_or(&empty).clone();
    let mut s = format!(
        "# Demiurgic bench\n\n{} · commit {} · burn {} · {} threads · {}{}\n\nmodel: {}\n\n",
        r["date"].as_str().unwrap_or(""),
        r["commit"].as_str().unwrap_or(""),
        r["burn_version"].as_str().unwrap_or(""),
        r["threads"],
        r["machine"].as_str().unwrap_or(""),
        if r["quick"].as_bool() == Some(true) { " · --quick" } else { "" },
        r["model"].as_str().unwrap_or("")
    );
    s += "## KV cache: time to generate N new tokens (greedy, 16-token prompt, median)\n\n| backend | new tokens | no cache (s) | cache (s) | speedup |\n|---|---:|---:|---:|---:|\n";
    let mut cache = rows("cache_speedup");
    for p in r["peers"].as_array().unwrap_or(&empty) {
        for mut row in p["cache_speedup"].as_array().cloned().unwrap_or_default() {
            row["backend"] = p["name"].clone();
            cache.push(row);
        }
    }
    for row in &cache {
        s += &format!(
            "| {} | {} | {} | {} | {}x |\n",
            row["backend"].as_str().unwrap_or(""),
            row["new_tokens"],
            f(&row["no_cache_s"], 3),
            f(&row["cache_s"], 3),
            f(&row["speedup"], 1)
        );
    }
    if let Some(bw) = r["bandwidth_gbs"].as_f64() {
        s += &format!("\nmemory read bandwidth ({} threads): {bw:.1} GB/s\n", r["threads"]);
    }
    if let Some(m) = r["memory"].as_object() {
        for (b, v) in m {
            let kinds: Vec<String> = v["weights_storage"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|p| format!("{} {}", p[0].as_str().unwrap_or(""), p[1].as_str().unwrap_or("")))
                .collect();
            if !kinds.is_empty() {
                s += &format!(
                    "\nweights on {b}: {} · activations {} · {:.1} MB read per token\n",
                    kinds.join(", "),
                    v["activations"].as_str().unwrap_or("f32"),
                    v["weights_bytes_read_per_token"].as_f64().unwrap_or(0.0) / 1e6
                );
            }
        }
    }
    s += "\n## Decode (tokens/s over all rows, after the first token)\n\nGB/s: weight bytes streamed per second (each step reads every weight once); share: of the measured read bandwidth.\n\n| backend | batch | tokens/s | ms/step | weights GB/s | share of bandwidth |\n|---|---:|---:|---:|---:|---:|\n";
    let mut decode = rows("decode");
    let mut prefill = rows("prefill");
    for p in r["peers"].as_array().unwrap_or(&empty) {
        for (dst, k) in [(&mut decode, "decode"), (&mut prefill, "prefill")] {
            for mut row in p[k].as_array().cloned().unwrap_or_default() {
                row["backend"] = p["name"].clone();
                dst.push(row);
            }
        }
    }
    for row in &decode {
        let share = row["bandwidth_share"].as_f64().map_or("-".into(), |x| format!("{:.0}%", 100.0 * x));
        s += &format!(
            "| {} | {} | {} | {} | {} | {share} |\n",
            row["backend"].as_str().unwrap_or(""),
            row["batch"],
            f(&row["tokens_per_s"], 1),
            f(&row["ms_per_step"], 1),
            f(&row["weight_gb_per_s"], 2)
        );
    }
    s += "\n## Prefill\n\n| backend | prompt tokens | tokens/s |\n|---|---:|---:|\n";
    for row in &prefill {
        s += &format!(
            "| {} | {} | {} |\n",
            row["backend"].as_str().unwrap_or(""),
            row["prompt_tokens"],
            f(&row["tokens_per_s"], 1)
        );
    }
    let mut context = rows("context");
    for p in r["peers"].as_array().unwrap_or(&empty) {
        for mut row in p["context"].as_array().cloned().unwrap_or_default() {
            row["backend"] = p["name"].clone();
            context.push(row);
        }
    }
    if !context.is_empty() {
        s += "\n## Decode after a long prompt (batch 1, tokens/s after the first)\n\n| backend | context tokens | KV cache | tokens/s |\n|---|---:|---|---:|\n";
        for row in &context {
            s += &format!(
                "| {} | {} | {} | {} |\n",
                row["backend"].as_str().unwrap_or(""),
                row["context_tokens"],
                row["cache_type"].as_str().unwrap_or("-"),
                f(&row["tokens_per_s"], 1)
            );
        }
    }
    s += "\n## Memory\n\n| backend | peak RSS (MiB) | KV cache per sequence per 1k tokens (MiB) | weights (MiB) | load (s) |\n|---|---:|---:|---:|---:|\n";
    if let Some(m) = r["memory"].as_object() {
        for (b, v) in m {
            let mib = |x: &Value| x.as_f64().map_or("-".into(), |x| format!("{:.1}", x / 1048576.0));
            s += &format!(
                "| {b} | {} | {} | {} | {} |\n",
                mib(&v["peak_rss_bytes"]),
                mib(&v["kv_cache_bytes_per_seq_per_1k_tokens"]),
                mib(&v["weights_bytes"]),
                f(&r["load_s"][b], 2)
            );
        }
    }
    for p in rows("profile") {
        s += &format!(
            "\n## Where a batch-1 decode step goes ({}, {:.2} ms per token)\n\n| operation | ms per token | calls per token |\n|---|---:|---:|\n",
            p["backend"].as_str().unwrap_or(""),
            p["decode_ms_per_token"].as_f64().unwrap_or(0.0)
        );
        let mut total = 0.0;
        for op in p["ops"].as_array().unwrap_or(&empty) {
            total += op["ms_per_token"].as_f64().unwrap_or(0.0);
            s += &format!(
                "| {} | {} | {} |\n",
                op["op"].as_str().unwrap_or(""),
                f(&op["ms_per_token"], 3),
                f(&op["calls_per_token"], 0)
            );
        }
        let rest = p["decode_ms_per_token"].as_f64().unwrap_or(0.0) - total;
        s += &format!("| (sampling, stopping, host loop) | {rest:.3} | |\n");
    }
    let spec = rows("speculative");
    if !spec.is_empty() {
        s += "\n## Speculative decoding (greedy, 96 new tokens; output identical to plain greedy)\n\n| backend | task | method | plain tokens/s | tokens/s | speedup | accepted / drafted |\n|---|---|---|---:|---:|---:|---:|\n";
        for row in &spec {
            s += &format!(
                "| {} | {} | {} | {} | {} | {}x | {} / {} |\n",
                row["backend"].as_str().unwrap_or(""),
                row["task"].as_str().unwrap_or(""),
                row["method"].as_str().unwrap_or(""),
                f(&row["plain_tokens_per_s"], 1),
                f(&row["tokens_per_s"], 1),
                f(&row["speedup"], 2),
                row["accepted_tokens"],
                row["draft_tokens"]
            );
        }
    }
    let st = rows("structured");
    if !st.is_empty() {
        s += "\n## Structured generation (greedy, the same prompt; target: constrained ≥ 0.9x plain)\n\n| backend | constraint | new tokens | plain tokens/s | constrained tokens/s | ratio |\n|---|---|---:|---:|---:|---:|\n";
        for row in &st {
            s += &format!(
                "| {} | {} | {} | {} | {} | {}x |\n",
                row["backend"].as_str().unwrap_or(""),
                row["constraint"].as_str().unwrap_or(""),
                row["new_tokens"],
                f(&row["plain_tokens_per_s"], 1),
                f(&row["constrained_tokens_per_s"], 1),
                f(&row["ratio"], 2)
            );
        }
    }
    let serve = rows("serve");
    if !serve.is_empty() {
        s += "\n## Server load (streamed completions, 64 tokens, 2 per client, as many slots as clients)\n\n| server | clients | requests/s | tokens/s | latency p50 (s) | latency p99 (s) | TTFT p50 (s) | TTFT p99 (s) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";
        for row in &serve {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                row["server"].as_str().unwrap_or(""),
                row["concurrency"],
                f(&row["requests_per_s"], 2),
                f(&row["tokens_per_s"], 1),
                f(&row["latency_p50_s"], 2),
                f(&row["latency_p99_s"], 2),
                f(&row["ttft_p50_s"], 3),
                f(&row["ttft_p99_s"], 3)
            );
        }
    }
    let ratios = rows("ratios");
    if !ratios.is_empty() {
        s += "\n## Ours / peer (speed ratio, > 1 means Demiurgic is faster)\n\n| backend | peer | measure | at | ratio |\n|---|---|---|---:|---:|\n";
        for row in &ratios {
            let at = ["batch", "prompt_tokens", "new_tokens", "context_tokens", "concurrency"]
                .iter()
                .find_map(|k| row.get(*k).map(|v| format!("{k}={v}")))
                .unwrap_or_default();
            s += &format!(
                "| {} | {} | {} | {} | {} |\n",
                row["backend"].as_str().unwrap_or(""),
                row["peer"].as_str().unwrap_or(""),
                row["measure"].as_str().unwrap_or(""),
                at,
                f(&row["speed_ratio_ours_over_peer"], 2)
            );
        }
    }
    s
}

pub(crate) fn font() -> Result<&'static [u8]> {
    for p in [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ] {
        if let Ok(b) = std::fs::read(p) {
            return Ok(Box::leak(b.into_boxed_slice()));
        }
    }
    bail!("no TrueType font found for the plot labels (apt-get install fonts-dejavu-core)")
}

/// Two panels: decode tokens/s per batch size, cache speedup per length; one line per backend/peer.
fn plot(r: &Value, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let bytes = font()?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("font does not load"))?;
    let root_area = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root_area.fill(&WHITE)?;
    let (left, right) = root_area.split_horizontally(600);
    let empty = vec![];
    let series = |k: &str, x: &str, y: &str| -> Vec<(String, Vec<(f64, f64)>)> {
        let mut groups: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        let mut add = |name: String, rows: &Vec<Value>| {
            for row in rows {
                let (Some(a), Some(b)) = (row[x].as_f64(), row[y].as_f64()) else { continue };
                match groups.iter_mut().find(|g| g.0 == name) {
                    Some(g) => g.1.push((a, b)),
                    None => groups.push((name.clone(), vec![(a, b)])),
                }
            }
        };
        for row in r[k].as_array().unwrap_or(&empty) {
            add(row["backend"].as_str().unwrap_or("?").to_string(), &vec![row.clone()]);
        }
        for p in r["peers"].as_array().unwrap_or(&empty) {
            add(p["name"].as_str().unwrap_or("?").to_string(), p[k].as_array().unwrap_or(&empty));
        }
        groups
    };
    for (area, k, x, y, title, xl, yl, legend) in [
        (
            &left,
            "decode",
            "batch",
            "tokens_per_s",
            "Decode throughput",
            "batch size",
            "tokens/s",
            SeriesLabelPosition::UpperRight,
        ),
        (
            &right,
            "cache_speedup",
            "new_tokens",
            "speedup",
            "KV-cache speedup",
            "new tokens",
            "no-cache time / cache time",
            SeriesLabelPosition::UpperLeft,
        ),
    ] {
        let s = series(k, x, y);
        let xmax = s.iter().flat_map(|g| g.1.iter().map(|p| p.0)).fold(1.0, f64::max) * 1.1;
        let ymax = s.iter().flat_map(|g| g.1.iter().map(|p| p.1)).fold(1.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
        chart.configure_mesh().x_desc(xl).y_desc(yl).draw()?;
        for (i, (name, pts)) in s.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).position(legend).draw()?;
    }
    root_area.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Value {
        json!({
            "date": "d", "commit": "c", "burn_version": "0.21.0", "threads": 2, "machine": "m", "quick": true, "model": "x.gguf",
            "load_s": {"flex": 0.5},
            "cache_speedup": [{"backend": "flex", "new_tokens": 50, "no_cache_s": 6.0, "cache_s": 1.0, "speedup": 6.0}],
            "decode": [{"backend": "flex", "batch": 1, "tokens_per_s": 50.0, "ms_per_step": 20.0}],
            "prefill": [{"backend": "flex", "prompt_tokens": 128, "tokens_per_s": 300.0}],
            "context": [{"backend": "flex", "context_tokens": 4096, "tokens_per_s": 30.0, "cache_type": "f16"}],
            "memory": {"flex": {"peak_rss_bytes": 1048576, "kv_cache_bytes_per_seq_per_1k_tokens": 2097152, "weights_bytes": 3145728}},
            "serve": [{"server": "demiurgic", "concurrency": 8, "requests_per_s": 3.3, "tokens_per_s": 211.6, "latency_p50_s": 2.3, "latency_p99_s": 2.9, "ttft_p50_s": 0.139, "ttft_p99_s": 0.5},
                {"server": "llama-server", "concurrency": 8, "tokens_per_s": 105.8},
                {"server": "llama-server", "concurrency": 32, "tokens_per_s": 50.0}],
            "speculative": [{"backend": "flex", "task": "input-grounded", "method": "prompt lookup (≤10)", "plain_tokens_per_s": 70.0, "tokens_per_s": 105.0, "speedup": 1.5, "draft_tokens": 40, "accepted_tokens": 30}],
            "peers": [{"name": "llama.cpp",
                "cache_speedup": [{"new_tokens": 50, "no_cache_s": 3.0, "cache_s": 0.5, "speedup": 6.0}],
                "decode": [{"batch": 1, "tokens_per_s": 100.0, "ms_per_step": 10.0}],
                "prefill": [{"prompt_tokens": 128, "tokens_per_s": 600.0}],
                "context": [{"context_tokens": 4096, "tokens_per_s": 25.0, "cache_type": "f16"}]}],
        })
    }

    #[test]
    fn ratios_are_ours_over_peer_speed() {
        let r = ratios(&report());
        let get =
            |m: &str| r.iter().find(|x| x["measure"] == m).unwrap()["speed_ratio_ours_over_peer"].as_f64().unwrap();
        assert_eq!(get("decode"), 0.5);
        assert_eq!(get("prefill"), 0.5);
        assert_eq!(get("cache_speedup"), 0.5); // peer 0.5 s, ours 1.0 s
        assert_eq!(get("context"), 1.2);
        // the server load: only at the clients both were measured at
        let serve: Vec<&Value> = r.iter().filter(|x| x["backend"] == "serve").collect();
        assert_eq!(serve.len(), 1, "{serve:?}");
        assert_eq!(
            (serve[0]["concurrency"].as_u64(), serve[0]["speed_ratio_ours_over_peer"].as_f64()),
            (Some(8), Some(2.0))
        );
    }

    #[test]
    fn markdown_has_every_table_and_the_peer_rows() {
        let mut rep = report();
        rep["ratios"] = Value::Array(ratios(&rep));
        let md = markdown(&rep);
        for needle in [
            "| flex | 50 | 6.000 | 1.000 | 6.0x |",
            "| llama.cpp | 1 | 100.0 | 10.0 |",
            "| flex | 128 | 300.0 |",
            "| flex | 4096 | f16 | 30.0 |",
            "| llama.cpp | 4096 | f16 | 25.0 |",
            "| flex | 1.0 | 2.0 | 3.0 | 0.50 |",
            "| flex | llama.cpp | decode | batch=1 | 0.50 |",
            "| flex | llama.cpp | context | context_tokens=4096 | 1.20 |",
            "| flex | input-grounded | prompt lookup (≤10) | 70.0 | 105.0 | 1.50x | 30 / 40 |",
            "| demiurgic | 8 | 3.30 | 211.6 | 2.30 | 2.90 | 0.139 | 0.500 |",
            "| serve | llama-server | tokens/s | concurrency=8 | 2.00 |",
        ] {
            assert!(md.contains(needle), "missing {needle:?} in\n{md}");
        }
    }
}
