//! `demiurgic bench`: speed of one backend on one model, as JSON (what `cargo xtask bench` merges).
//!
//! Every figure is the median of `--reps` timed runs (the cache-less generations of the cache
//! table: one run) after an untimed warm-up of the same shape
//! (the warm-up pays one-off costs: JIT compilation and autotune on wgpu/cuda, page faults on CPU).
//! Greedy decoding with EOS disabled, so every run produces exactly the tokens asked for.
use demiurgic_model::DecodeOps;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use demiurgic_model::load::load_model_with;
use demiurgic_model::{generate, Decoder, GenerateOptions};
use demiurgic_sampling::GenerationConfig;
use serde_json::{json, Value};

use crate::backends::BackendJob;

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// A .gguf file or an HF checkpoint directory (default: SmolLM2-135M-Instruct Q4_1).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Backend to measure (one per process, so peak RSS is this backend's).
    #[arg(long, default_value = crate::backends::DEFAULT)]
    pub backend: String,
    #[command(flatten)]
    pub load: crate::load_args::LoadArgs,
    /// Fewer, shorter measurements (cache table at 50 and 100 tokens, batches 1 and 4, prefill 128).
    #[arg(long)]
    pub quick: bool,
    /// New-token counts of the cache table (overrides the defaults).
    #[arg(long, value_delimiter = ',')]
    pub cache_lengths: Option<Vec<usize>>,
    /// Batch sizes of the decode measurement.
    #[arg(long, value_delimiter = ',')]
    pub batches: Option<Vec<usize>>,
    /// Prompt lengths of the prefill measurement.
    #[arg(long, value_delimiter = ',')]
    pub prefill: Option<Vec<usize>>,
    /// New tokens per decode measurement.
    #[arg(long)]
    pub decode_tokens: Option<usize>,
    /// Timed repetitions per figure (the median is reported).
    #[arg(long)]
    pub reps: Option<usize>,
    /// Also measure batch-1 decode after prompts of these many tokens (long-context decode: the
    /// KV cache's reads grow with the context), e.g. 256,1024,4096,8000.
    #[arg(long, value_delimiter = ',')]
    pub contexts: Option<Vec<usize>>,
    /// Write the JSON here as well as to stdout.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Also time each decoder operation during batch-1 decode (per-token breakdown).
    #[arg(long)]
    pub profile: bool,
    /// Also measure speculative decoding: prompt lookup on an input-grounded task and on free
    /// generation, and a draft pair (the model with f32 weights as target, the same file with
    /// its native weights and int8 activations as draft).
    #[arg(long)]
    pub speculative: bool,
    /// Also sample where the host's time goes during batch-1 decode (a text report here, and
    /// collapsed stacks beside it as FILE.folded); needs a build with `--features host-profile`.
    #[arg(long, value_name = "FILE")]
    pub host_profile: Option<PathBuf>,
}

impl BenchArgs {
    fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("--cache-lengths", &self.cache_lengths),
            ("--batches", &self.batches),
            ("--prefill", &self.prefill),
            ("--contexts", &self.contexts),
        ] {
            if let Some(v) = v {
                if v.is_empty() || v.contains(&0) {
                    bail!("{name} must be a comma-separated list of positive integers, got {v:?}");
                }
            }
        }
        if self.reps == Some(0) {
            bail!("--reps must be at least 1");
        }
        if self.host_profile.is_some() && !crate::host_profile::AVAILABLE {
            bail!("--host-profile needs a build with `--features host-profile` (Linux with glibc)");
        }
        if matches!(self.decode_tokens, Some(n) if n < 2) {
            bail!("--decode-tokens must be at least 2 (the first token comes from the prefill)");
        }
        Ok(())
    }
}

pub struct BenchJob {
    pub args: BenchArgs,
    pub path: PathBuf,
}

/// An input-grounded task: the output copies most of the input.
const GROUNDED: &str = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n    a, b = 0, 1\n    for _ in range(n - 1):\n        a, b = b, a + b\n    return b\n\n\ndef factorial(n):\n    \"\"\"Return n factorial.\"\"\"\n    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result\n\n# The same two functions again, with type hints added:\n\ndef fibonacci(n: int) -> int:\n";

/// Decode tokens/s, candidates and accepted ones of one greedy generation (median of `reps`).
fn spec_run<B: DecodeOps>(
    model: &Decoder<B>,
    prompt: &[u32],
    n: usize,
    lookup: Option<usize>,
    draft: Option<&Decoder<B>>,
    reps: usize,
) -> Result<(f64, usize, usize)> {
    let cfg = GenerationConfig { prompt_lookup_num_tokens: lookup, ..greedy(n) };
    let run = || -> Result<demiurgic_model::GenerationStats> {
        let opts =
            GenerateOptions { draft: draft.map(|d| d as &dyn demiurgic_model::CausalLm<B>), ..Default::default() };
        Ok(generate(model, &[prompt.to_vec()], &cfg, opts)?.stats)
    };
    run()?; // warm-up
    let mut v = vec![];
    let mut last = None;
    for _ in 0..reps {
        let st = run()?;
        v.push(st.decode_tokens_per_s);
        last = Some(st);
    }
    let st = last.expect("reps ≥ 1");
    Ok((median(v), st.draft_tokens, st.accepted_tokens))
}

/// The structured-generation bench prompt (the same for both runs).
const STRUCTURED_PROMPT: &str = "List 64 records as JSON, each with an integer id and a boolean flag ok:\n";

/// A fixed English + code passage, tokenized and cycled to any prompt length.
const PASSAGE: &str = "The quick brown fox jumps over the lazy dog. In computer science, a linked list is a \
linear collection of data elements whose order is not given by their physical placement in memory. \
def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\
Language models predict the next token from the previous ones; a cache of keys and values avoids \
recomputing the past at every step. ";

fn prompt_of(len: usize, base: &[u32], shift: usize) -> Vec<u32> {
    (0..len).map(|i| base[(i + shift) % base.len()]).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Read bandwidth of this machine's memory with `threads` threads: GB/s summing a 512 MiB
/// buffer (larger than any cache), best of 3. The limit a decode that streams every weight
/// once per token can approach.
pub fn read_bandwidth_gbs(threads: usize) -> f64 {
    let v = vec![1.0f32; 128 << 20];
    let chunk = v.len().div_ceil(threads.max(1));
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let s: f32 = std::thread::scope(|sc| {
            let hs: Vec<_> = v
                .chunks(chunk)
                .map(|c| {
                    sc.spawn(move || {
                        let mut a = [0f32; 16];
                        for x in c.chunks_exact(16) {
                            for j in 0..16 {
                                a[j] += x[j];
                            }
                        }
                        a.iter().sum::<f32>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        std::hint::black_box(s);
        best = best.max((v.len() * 4) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Peak resident set size of this process (VmHWM), in bytes, where /proc exists.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Threads the CPU backends use (rayon's pool size; RAYON_NUM_THREADS when set).
pub fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

struct Plan {
    cache_lengths: Vec<usize>,
    batches: Vec<usize>,
    prefill: Vec<usize>,
    decode_tokens: usize,
    reps: usize,
    /// prompt length of the cache table and decode runs
    prompt_len: usize,
}

impl BenchArgs {
    fn plan(&self) -> Plan {
        let q = self.quick;
        Plan {
            cache_lengths: self.cache_lengths.clone().unwrap_or(if q {
                vec![50, 100]
            } else {
                vec![50, 100, 200, 512]
            }),
            batches: self.batches.clone().unwrap_or(if q { vec![1, 4] } else { vec![1, 4, 16] }),
            prefill: self.prefill.clone().unwrap_or(if q { vec![128] } else { vec![128, 512] }),
            decode_tokens: self.decode_tokens.unwrap_or(if q { 32 } else { 64 }),
            reps: self.reps.unwrap_or(if q { 3 } else { 5 }),
            prompt_len: 16,
        }
    }
}

fn greedy(n: usize) -> GenerationConfig {
    GenerationConfig { max_new_tokens: Some(n), eos_token_ids: Some(vec![]), ..GenerationConfig::greedy() }
}

/// One timed generation: (wall seconds, stats).
fn timed<B: DecodeOps>(
    model: &Decoder<B>,
    prompts: &[Vec<u32>],
    n: usize,
    use_cache: bool,
) -> Result<(f64, demiurgic_model::GenerationStats)> {
    let t = Instant::now();
    let out = generate(model, prompts, &greedy(n), GenerateOptions { use_cache, ..Default::default() })?;
    let secs = t.elapsed().as_secs_f64();
    if out.lengths.iter().any(|&l| l != n) {
        bail!("a bench run stopped early: lengths {:?}, asked for {n}", out.lengths);
    }
    Ok((secs, out.stats))
}

impl BackendJob for BenchJob {
    fn run<B: DecodeOps>(self, backend: &str, device: B::Device) -> Result<()> {
        self.args.validate()?;
        let plan = self.args.plan();
        let t = Instant::now();
        let is_gguf = self.path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
        let opts = self.args.load.options::<B>(backend, is_gguf)?;
        let loaded = load_model_with::<B>(&self.path, &device, &opts)
            .with_context(|| format!("cannot load {}", self.path.display()))?;
        let load_s = t.elapsed().as_secs_f64();
        let model = &loaded.model;
        let cfg = model.config.clone();
        let base: Vec<u32> = match &loaded.tokenizer {
            Some(tok) => tok.encode(PASSAGE)?,
            None => (1..cfg.vocab_size.min(500) as u32).collect(),
        };
        let max_prefill = plan.prefill.iter().copied().max().unwrap_or(0);
        let max_context = self.args.contexts.iter().flatten().map(|c| c + plan.decode_tokens).max().unwrap_or(0);
        let max_prefill = max_prefill.max(max_context);
        let longest = plan.prompt_len + plan.cache_lengths.iter().copied().max().unwrap_or(0).max(plan.decode_tokens);
        if max_prefill.max(longest) > cfg.max_position_embeddings {
            bail!(
                "the bench needs {} positions; the model's context is {}",
                max_prefill.max(longest),
                cfg.max_position_embeddings
            );
        }

        let steps = plan.cache_lengths.len() * (1 + plan.reps) * 2
            + plan.batches.len() * (1 + plan.reps)
            + plan.prefill.len() * (1 + plan.reps);
        let bar = crate::progress_bar(steps as u64, &format!("bench {backend}"));
        let tick = |msg: String| {
            if let Some(b) = &bar {
                b.set_message(msg);
                b.inc(1);
            }
        };

        // 1. the seed's table: N new tokens with and without the cache
        let prompt = vec![prompt_of(plan.prompt_len, &base, 0)];
        let mut cache_rows = Vec::new();
        for &n in &plan.cache_lengths {
            let mut secs = [0.0f64; 2];
            for (k, use_cache) in [true, false].into_iter().enumerate() {
                // the cache-less run is quadratic in length (minutes on slow backends): timed once
                let reps = if use_cache { plan.reps } else { 1 };
                // warm-up: on backends that compile kernels per shape (wgpu, cuda) the whole
                // length, so the timed cache-less run meets no new shape (its first run at each
                // prompt length compiles and autotunes); a few tokens elsewhere
                let warm = if B::device_blocks_supported() && !use_cache { n } else { n.min(8) };
                timed(model, &prompt, warm, use_cache)?;
                tick(format!("{n} tokens, cache={use_cache} (warm-up)"));
                let mut v = Vec::new();
                for r in 0..plan.reps {
                    if r < reps {
                        v.push(timed(model, &prompt, n, use_cache)?.0);
                    }
                    tick(format!("{n} tokens, cache={use_cache}"));
                }
                secs[k] = median(v);
            }
            cache_rows.push(json!({"backend": backend, "new_tokens": n, "prompt_tokens": plan.prompt_len,
                "cache_s": secs[0], "no_cache_s": secs[1], "speedup": secs[1] / secs[0]}));
        }

        // 2. decode tokens/s per batch size (tokens after the first, over decode time), and the
        // weight bytes streamed per second against the machine's read bandwidth (CPU backends)
        let bytes_per_step = model.weights.bytes_per_token() as f64;
        let mut decode_rows = Vec::new();
        for &b in &plan.batches {
            let prompts: Vec<Vec<u32>> = (0..b).map(|i| prompt_of(plan.prompt_len, &base, 7 * i)).collect();
            timed(model, &prompts, plan.decode_tokens, true)?;
            tick(format!("decode batch {b} (warm-up)"));
            let mut v = Vec::new();
            for _ in 0..plan.reps {
                let (_, st) = timed(model, &prompts, plan.decode_tokens, true)?;
                v.push((b * (plan.decode_tokens - 1)) as f64 / (st.decode_ms / 1e3));
                tick(format!("decode batch {b}"));
            }
            let tps = median(v);
            let weight_gbs = tps / b as f64 * bytes_per_step / 1e9;
            decode_rows.push(json!({"backend": backend, "batch": b, "new_tokens": plan.decode_tokens,
                "tokens_per_s": tps, "ms_per_step": 1e3 * b as f64 / tps,
                "weight_gb_per_s": weight_gbs}));
        }

        // 3. prefill tokens/s (the prompt's forward pass into a fresh cache, first token included)
        let mut prefill_rows = Vec::new();
        for &p in &plan.prefill {
            let prompts = vec![prompt_of(p, &base, 3)];
            timed(model, &prompts, 1, true)?;
            tick(format!("prefill {p} (warm-up)"));
            let mut v = Vec::new();
            for _ in 0..plan.reps {
                let (_, st) = timed(model, &prompts, 1, true)?;
                v.push(p as f64 / (st.prefill_ms / 1e3));
                tick(format!("prefill {p}"));
            }
            prefill_rows.push(json!({"backend": backend, "prompt_tokens": p, "tokens_per_s": median(v)}));
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }

        // the main measurements' peak, before the optional sections load more models
        let peak_rss = peak_rss_bytes();

        // 5. optional: batch-1 decode after long prompts (one warm-up at the first length)
        let mut context_rows = vec![];
        for (i, &c) in self.args.contexts.iter().flatten().enumerate() {
            let prompts = vec![prompt_of(c, &base, 11)];
            if i == 0 {
                timed(model, &prompts, 2, true)?;
            }
            let mut v = Vec::new();
            for _ in 0..plan.reps {
                let (_, st) = timed(model, &prompts, plan.decode_tokens, true)?;
                v.push((plan.decode_tokens - 1) as f64 / (st.decode_ms / 1e3));
            }
            let tps = median(v);
            eprintln!("decode after {c} tokens of context: {tps:.1} tokens/s");
            context_rows.push(json!({"backend": backend, "context_tokens": c, "new_tokens": plan.decode_tokens,
                "tokens_per_s": tps, "cache_type": model.cache_type().to_string()}));
        }

        // 7. structured generation: a JSON schema against the same greedy run unconstrained
        // (a model without a tokenizer, such as the test fixtures, has no vocabulary to constrain)
        let structured = if loaded.tokenizer.is_none() {
            None
        } else {
            let tok = loaded.text_tokenizer()?;
            let grammar = loaded.grammar_compiler()?;
            let prompt = tok.encode(STRUCTURED_PROMPT)?;
            let schema = json!({"type": "array", "minItems": 64, "maxItems": 64,
                "items": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 999},
                "ok": {"type": "boolean"}}, "required": ["id", "ok"], "additionalProperties": false}});
            let n = 96;
            let run = |c: &GenerationConfig| -> Result<f64> {
                let opts = GenerateOptions { grammar: Some(&grammar), ..Default::default() };
                let out = generate(model, &[prompt.clone()], c, opts)?;
                if out.lengths[0] != n {
                    bail!("the structured bench run stopped after {} of {n} tokens", out.lengths[0]);
                }
                Ok(out.stats.decode_tokens_per_s)
            };
            let plain = greedy(n);
            let constrained =
                greedy(n).with(|p| p.constraint.constraint = Some(demiurgic_sampling::Constraint::JsonSchema(schema)));
            run(&plain)?;
            run(&constrained)?;
            let (mut a, mut c) = (vec![], vec![]);
            for _ in 0..plan.reps {
                a.push(run(&plain)?);
                c.push(run(&constrained)?);
            }
            let (a, c) = (median(a), median(c));
            Some(vec![
                json!({"backend": backend, "constraint": "JSON schema (array of 64 {id, ok} objects)", "new_tokens": n,
                "plain_tokens_per_s": a, "constrained_tokens_per_s": c, "ratio": c / a}),
            ])
        };

        // 6. optional: speculative decoding against plain greedy decoding
        let speculative = if self.args.speculative {
            let tok = loaded.text_tokenizer()?;
            let grounded = tok.encode(GROUNDED)?;
            let free = prompt_of(plan.prompt_len, &base, 0);
            let n = 96;
            let mut rows = vec![];
            for (task, prompt) in [("input-grounded", &grounded), ("free generation", &free)] {
                let (plain, _, _) = spec_run(model, prompt, n, None, None, plan.reps)?;
                let (tps, drafted, accepted) = spec_run(model, prompt, n, Some(10), None, plan.reps)?;
                rows.push(json!({"backend": backend, "task": task, "method": "prompt lookup (≤10)", "plain_tokens_per_s": plain,
                    "tokens_per_s": tps, "speedup": tps / plain, "draft_tokens": drafted, "accepted_tokens": accepted}));
            }
            // the draft pair
            let target = load_model_with::<B>(
                &self.path,
                &device,
                &demiurgic_model::LoadOptions { weights: demiurgic_model::WeightMode::F32, ..Default::default() },
            )?;
            let draft_opts = demiurgic_model::LoadOptions {
                activations: if B::host_weights() {
                    demiurgic_model::Activations::Int8
                } else {
                    demiurgic_model::Activations::F32
                },
                ..Default::default()
            };
            let draft = load_model_with::<B>(&self.path, &device, &draft_opts)?;
            for (task, prompt) in [("input-grounded", &grounded), ("free generation", &free)] {
                let (plain, _, _) = spec_run(&target.model, prompt, n, None, None, plan.reps)?;
                let (tps, drafted, accepted) = spec_run(&target.model, prompt, n, None, Some(&draft.model), plan.reps)?;
                rows.push(json!({"backend": backend, "task": task, "method": "draft model (target f32 weights, draft native + int8)",
                    "plain_tokens_per_s": plain, "tokens_per_s": tps, "speedup": tps / plain, "draft_tokens": drafted, "accepted_tokens": accepted}));
            }
            Some(rows)
        } else {
            None
        };

        // 5. optional: where a batch-1 decode step's time goes
        let profile = if self.args.profile {
            let prompts = vec![prompt_of(plan.prompt_len, &base, 0)];
            timed(model, &prompts, 4, true)?;
            // profiling starts after the first step (the prefill)
            let mut on_step = |_: &[Option<u32>]| demiurgic_model::profile::enable_once();
            let opts = GenerateOptions { on_step: Some(&mut on_step), ..Default::default() };
            let out = generate(model, &prompts, &greedy(plan.decode_tokens), opts)?;
            demiurgic_model::profile::enable(false);
            let st = out.stats;
            let steps = (plan.decode_tokens - 1) as f64;
            let rows: Vec<Value> = demiurgic_model::profile::totals()
                .into_iter()
                .map(|(op, s, calls)| json!({"op": op.name(), "ms_per_token": 1e3 * s / steps, "calls_per_token": calls as f64 / steps}))
                .collect();
            // and where a prefill of the first --prefill length goes (whole-prompt milliseconds)
            let n = plan.prefill.first().copied().unwrap_or(128);
            let prompts = vec![prompt_of(n, &base, 1)];
            demiurgic_model::profile::enable(true);
            let out = generate(model, &prompts, &greedy(1), GenerateOptions::default())?;
            demiurgic_model::profile::enable(false);
            let prefill_rows: Vec<Value> = demiurgic_model::profile::totals()
                .into_iter()
                .filter(|(_, _, calls)| *calls > 0)
                .map(|(op, s, calls)| json!({"op": op.name(), "ms": 1e3 * s, "calls": calls}))
                .collect();
            Some(json!({"backend": backend, "tokens": plan.decode_tokens, "decode_ms_per_token": st.decode_ms / steps,
                "ops": rows, "prefill_tokens": n, "prefill_ms": out.stats.prefill_ms, "prefill_ops": prefill_rows}))
        } else {
            None
        };

        // 8. optional: a host profile of batch-1 decode (after everything is compiled and tuned)
        if let Some(path) = &self.args.host_profile {
            let prompts = vec![prompt_of(plan.prompt_len, &base, 0)];
            timed(model, &prompts, plan.decode_tokens, true)?;
            crate::host_profile::profile(path, || {
                for _ in 0..plan.reps.max(3) {
                    timed(model, &prompts, plan.decode_tokens, true)?;
                }
                Ok(())
            })?;
            eprintln!("host profile of batch-1 decode written to {}", path.display());
        }

        // 4. memory
        let kv_n = 1000.min(cfg.max_position_embeddings);
        let kv_per_1k = model.new_cache(1, kv_n)?.bytes() * 1000 / kv_n;
        let memory = json!({"backend": backend, "peak_rss_bytes": peak_rss,
            "kv_cache_bytes_per_seq_per_1k_tokens": kv_per_1k,
            "weights_bytes": model.weights.bytes(model.config.tie_word_embeddings),
            "weights_bytes_read_per_token": model.weights.bytes_per_token(),
            "weights_storage": model.weights.storage_summary(),
            "activations": format!("{:?}", opts.activations).to_lowercase(),
            "cache_type": model.cache_type().to_string()});

        // the bandwidth probe allocates 512 MiB: after the peak RSS is read
        let bandwidth = B::host_weights().then(|| read_bandwidth_gbs(threads()));
        if let Some(bw) = bandwidth {
            for r in &mut decode_rows {
                let share = r["weight_gb_per_s"].as_f64().unwrap_or(0.0) / bw;
                r["bandwidth_share"] = json!(share);
            }
        }
        let out: Value = json!({
            "backend": backend, "threads": threads(), "model": self.path.display().to_string(),
            "model_description": loaded.description, "load_s": load_s, "reps": plan.reps, "quick": self.args.quick,
            "cache_speedup": cache_rows, "decode": decode_rows, "prefill": prefill_rows, "memory": memory,
            "bandwidth_gbs": bandwidth, "profile": profile, "speculative": speculative,
            "structured": structured, "context": context_rows,
        });
        let text = serde_json::to_string_pretty(&out)?;
        if let Some(p) = &self.args.json_out {
            std::fs::write(p, &text).with_context(|| format!("cannot write {}", p.display()))?;
        }
        println!("{text}");
        Ok(())
    }
}
