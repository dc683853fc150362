//! `demiurgic`: generate text with a Llama-family model on a Burn backend chosen at run time.
mod backends;
mod bench;
mod load_args;
mod soak;
use demiurgic_model::DecodeOps;
use demiurgic_runner::fetch;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use demiurgic_model::load::{load_model_with, LoadedModel, StreamDecoder};
use demiurgic_model::{generate, GenerateOptions};
use demiurgic_sampling::{GenerationConfig, PRESETS};
use serde_json::json;

use backends::{with_backend, BackendJob, COMPILED};

#[derive(Parser)]
#[command(name = "demiurgic", version, about = "Run decoder-only language models on Burn")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate text or token ids.
    Generate(GenerateArgs),
    /// Show the token ids of a text.
    Tokenize(TokenizeArgs),
    /// List the generation presets with their values.
    Presets,
    /// List the compiled-in backends and whether a device is usable.
    Backends,
    /// Fetch the default model into the cache (DEMIURGIC_HOME) and print its path.
    FetchModel,
    /// Measure one backend (cache table, decode per batch, prefill, memory) and print JSON;
    /// `cargo xtask bench` runs it per backend and merges the results.
    Bench(bench::BenchArgs),
    /// Generate many tokens (default 10,000) in one process and check resident memory stays flat.
    Soak(soak::SoakArgs),
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// A .gguf file or an HF checkpoint directory (default: SmolLM2-135M-Instruct Q4_1, fetched on first use).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Backend to run on (compiled in: see `demiurgic backends`).
    #[arg(long, default_value = backends::DEFAULT)]
    backend: String,
    #[command(flatten)]
    load: load_args::LoadArgs,
}

#[derive(Args, Clone)]
struct GenerateArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Prompt text (repeat for a batch).
    #[arg(long)]
    prompt: Vec<String>,
    /// Prompt as comma-separated token ids (repeat for a batch).
    #[arg(long = "prompt-ids")]
    prompt_ids: Vec<String>,
    /// Wrap each prompt in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Recompute the whole sequence every step (no KV cache).
    #[arg(long = "no-cache")]
    no_cache: bool,
    /// Start from a preset: greedy, balanced-code, precise-code, creative-code, natural-text, completion-fim.
    #[arg(long)]
    preset: Option<String>,
    /// Start from a GenerationConfig JSON file (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Argmax decoding (same as --do-sample false).
    #[arg(long)]
    greedy: bool,
    /// Sample (multinomial) instead of argmax; on by default unless a preset/config says otherwise.
    #[arg(long = "do-sample", conflicts_with = "greedy")]
    do_sample: bool,
    #[arg(long = "max-new-tokens")]
    max_new_tokens: Option<usize>,
    #[arg(long = "max-length")]
    max_length: Option<usize>,
    #[arg(long = "min-length")]
    min_length: Option<usize>,
    #[arg(long = "min-new-tokens")]
    min_new_tokens: Option<usize>,
    #[arg(long, allow_negative_numbers = true)]
    temperature: Option<f32>,
    #[arg(long = "top-k")]
    top_k: Option<usize>,
    #[arg(long = "top-p", allow_negative_numbers = true)]
    top_p: Option<f32>,
    #[arg(long = "typical-p", allow_negative_numbers = true)]
    typical_p: Option<f32>,
    #[arg(long = "min-p", allow_negative_numbers = true)]
    min_p: Option<f32>,
    #[arg(long = "repetition-penalty", allow_negative_numbers = true)]
    repetition_penalty: Option<f32>,
    #[arg(long = "frequency-penalty", allow_negative_numbers = true)]
    frequency_penalty: Option<f32>,
    #[arg(long = "presence-penalty", allow_negative_numbers = true)]
    presence_penalty: Option<f32>,
    #[arg(long = "no-repeat-ngram-size")]
    no_repeat_ngram_size: Option<usize>,
    #[arg(long = "num-return-sequences")]
    num_return_sequences: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Stop string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Report the log-probability of each generated token.
    #[arg(long)]
    logprobs: bool,
}

#[derive(Args, Clone)]
struct TokenizeArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[arg(long)]
    text: String,
    #[arg(long)]
    json: bool,
}

fn main() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        eprintln!("error: internal failure: {msg}");
    }));
    let cli = Cli::parse();
    let result = std::panic::catch_unwind(|| run(cli));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        Err(_) => std::process::exit(1),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Presets => {
            for p in PRESETS {
                let c = p.config();
                println!(
                    "{:<15} {}\n{:<15} temperature={} top_k={} top_p={} repetition_penalty={} frequency_penalty={} presence_penalty={} do_sample={} max_new_tokens={}",
                    p.name, p.description, "", c.temperature, c.top_k, c.top_p, c.repetition_penalty,
                    c.frequency_penalty, c.presence_penalty, c.do_sample, c.max_new_tokens.unwrap_or(0)
                );
            }
            Ok(())
        }
        Cmd::Backends => {
            for name in COMPILED {
                let status = backends::probe(name);
                println!("{name:<8} compiled in, {status}");
            }
            Ok(())
        }
        Cmd::FetchModel => {
            println!("{}", fetch::default_model(std::io::stderr().is_terminal())?.display());
            Ok(())
        }
        Cmd::Generate(args) => {
            let config = build_config(&args)?;
            let backend = args.m.backend.clone();
            with_backend(&backend, GenerateJob { args, config })
        }
        Cmd::Bench(args) => {
            let path = model_path(&args.model)?;
            let backend = args.backend.clone();
            with_backend(&backend, bench::BenchJob { args, path })
        }
        Cmd::Soak(args) => {
            let path = model_path(&args.model)?;
            let backend = args.backend.clone();
            with_backend(&backend, soak::SoakJob { args, path })
        }
        Cmd::Tokenize(args) => {
            let backend = args.m.backend.clone();
            with_backend(&backend, TokenizeJob { args })
        }
    }
}

/// A progress bar on stderr when it is a terminal.
fn progress_bar(len: u64, prefix: &str) -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(len);
        b.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        b.set_prefix(prefix.to_string());
        b
    })
}

fn build_config(a: &GenerateArgs) -> Result<GenerationConfig> {
    if a.preset.is_some() && a.config.is_some() {
        bail!("--preset and --config both given: choose one starting point");
    }
    let mut c = match (&a.preset, &a.config) {
        (Some(p), _) => GenerationConfig::preset(p)?,
        (_, Some(f)) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("cannot read --config {}", f.display()))?;
            GenerationConfig::from_json(&text).with_context(|| format!("--config {}", f.display()))?
        }
        _ => GenerationConfig::default(),
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f { c.$f = v; } )* };
    }
    set!(min_length, min_new_tokens, temperature, top_k, top_p, typical_p, min_p, repetition_penalty,
         frequency_penalty, presence_penalty, no_repeat_ngram_size, num_return_sequences);
    if a.do_sample {
        c.do_sample = true;
    }
    if a.max_new_tokens.is_some() {
        c.max_new_tokens = a.max_new_tokens;
    }
    if let Some(l) = a.max_length {
        c.max_length = Some(l);
        if a.max_new_tokens.is_none() {
            c.max_new_tokens = None;
        }
    }
    if a.seed.is_some() {
        c.seed = a.seed;
    }
    if !a.stop.is_empty() {
        c.stop = a.stop.clone();
    }
    if a.greedy {
        c.do_sample = false;
    }
    c.logprobs |= a.logprobs;
    c.validate()?;
    Ok(c)
}

fn resolve_model(m: &ModelArgs) -> Result<PathBuf> {
    model_path(&m.model)
}

/// The `--model` given, or the default model (fetched on first use).
fn model_path(model: &Option<PathBuf>) -> Result<PathBuf> {
    match model {
        Some(p) => Ok(p.clone()),
        None => fetch::default_model(std::io::stderr().is_terminal()),
    }
}

fn load<B: DecodeOps>(m: &ModelArgs, device: &B::Device) -> Result<(LoadedModel<B>, PathBuf, f64)> {
    let path = resolve_model(m)?;
    let spinner = std::io::stderr().is_terminal().then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_message(format!("loading {}", path.display()));
        s.enable_steady_tick(std::time::Duration::from_millis(120));
        s
    });
    let t = Instant::now();
    let is_gguf = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let opts = m.load.options::<B>(&m.backend, is_gguf)?;
    let loaded = load_model_with::<B>(&path, device, &opts);
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let loaded = loaded.with_context(|| format!("cannot load model {}", path.display()))?;
    Ok((loaded, path, t.elapsed().as_secs_f64() * 1e3))
}

fn render_chat(template: &str, user: &str, bos: &str, eos: &str) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.add_template("chat", template).context("the model's chat template does not parse")?;
    let out = env
        .get_template("chat")?
        .render(minijinja::context! {
            messages => vec![minijinja::context!{ role => "user", content => user }],
            add_generation_prompt => true,
            bos_token => bos,
            eos_token => eos,
        })
        .context("rendering the chat template failed")?;
    Ok(out)
}

struct GenerateJob {
    args: GenerateArgs,
    config: GenerationConfig,
}

impl BackendJob for GenerateJob {
    fn run<B: DecodeOps>(self, backend: &str, device: B::Device) -> Result<()> {
        let a = &self.args;
        if a.prompt.is_empty() && a.prompt_ids.is_empty() {
            bail!("no prompt: give --prompt TEXT or --prompt-ids 1,2,3");
        }
        if a.chat && !a.prompt_ids.is_empty() {
            bail!("--chat applies to --prompt text, not to --prompt-ids");
        }
        let (loaded, path, load_ms) = load::<B>(&a.m, &device)?;
        let tok = loaded.tokenizer.as_ref();
        let mut prompts: Vec<Vec<u32>> = vec![];
        for (i, p) in a.prompt.iter().enumerate() {
            if p.is_empty() {
                bail!("--prompt {} is empty: give some text", i + 1);
            }
            let tok = loaded.text_tokenizer()?;
            let text = if a.chat {
                let tmpl = loaded.chat_template.as_deref().context("--chat: this model has no chat template")?;
                let name = |id: Option<u32>| id.map(|i| tok.tokens(&[i]).join("")).unwrap_or_default();
                let eos = name(loaded.model.config.eos_token_ids.first().copied());
                render_chat(tmpl, p, &name(loaded.model.config.bos_token_id), &eos)?
            } else {
                p.clone()
            };
            prompts.push(tok.encode(&text)?);
        }
        for s in &a.prompt_ids {
            let ids: Result<Vec<u32>, _> = s.split(',').map(|x| x.trim().parse::<u32>()).collect();
            let ids = ids.map_err(|_| anyhow::anyhow!("--prompt-ids {s:?}: expected comma-separated non-negative integers"))?;
            prompts.push(ids);
        }
        let stream = !a.json && prompts.len() == 1 && self.config.num_return_sequences == 1 && tok.is_some();
        let mut decoder = StreamDecoder::new();
        let mut stdout = std::io::stdout();
        let mut stream_err = None;
        let mut on_step = |ids: &[Option<u32>]| {
            if let (Some(Some(id)), Some(tok)) = (ids.first(), tok) {
                match decoder.push(tok, *id) {
                    Ok(Some(t)) => {
                        let _ = write!(stdout, "{t}");
                        let _ = stdout.flush();
                    }
                    Ok(None) => {}
                    Err(e) => stream_err = Some(e),
                }
            }
        };
        let stop_strings = self.config.stop.clone();
        let stop_check = |ids: &[u32]| -> bool {
            tok.and_then(|t| t.decode(ids).ok()).is_some_and(|text| stop_strings.iter().any(|s| text.contains(s.as_str())))
        };
        if !stop_strings.is_empty() && tok.is_none() {
            bail!("--stop needs a tokenizer, and this model has none");
        }
        if stream {
            print!("{}", a.prompt[0]);
        }
        let opts = GenerateOptions {
            use_cache: !a.no_cache,
            pipeline_hook: None,
            on_step: if stream { Some(&mut on_step) } else { None },
            stop_check: if stop_strings.is_empty() { None } else { Some(&stop_check) },
            seeds: None,
        };
        let out = generate(&loaded.model, &prompts, &self.config, opts)?;
        if let Some(e) = stream_err {
            return Err(e.into());
        }
        let n = self.config.num_return_sequences;
        let texts: Option<Vec<String>> = match tok {
            Some(t) => Some((0..out.tokens.len()).map(|i| t.decode(out.row(i))).collect::<Result<_, _>>()?),
            None => None,
        };
        if a.json {
            let prompt_rows: Vec<&Vec<u32>> = prompts.iter().flat_map(|p| std::iter::repeat_n(p, n)).collect();
            let mut obj = json!({
                "backend": backend,
                "model": path.display().to_string(),
                "prompt_ids": prompt_rows,
                "generated_ids": out.tokens,
                "lengths": out.lengths,
                "finish_reasons": out.finish_reasons,
                "config": self.config,
                "stats": {
                    "prompt_tokens": out.stats.prompt_tokens,
                    "generated_tokens": out.stats.generated_tokens,
                    "load_ms": load_ms,
                    "prefill_ms": out.stats.prefill_ms,
                    "decode_ms": out.stats.decode_ms,
                    "decode_tokens_per_s": out.stats.decode_tokens_per_s,
                }
            });
            if let Some(t) = texts {
                obj["texts"] = json!(t);
            }
            if let Some(lp) = out.logprobs {
                obj["logprobs"] = json!(lp);
            }
            println!("{}", serde_json::to_string(&obj)?);
        } else if stream {
            println!();
            eprintln!(
                "[{} tokens, finish: {:?}, prefill {:.0} ms, decode {:.1} tokens/s on {backend}]",
                out.stats.generated_tokens, out.finish_reasons[0], out.stats.prefill_ms, out.stats.decode_tokens_per_s
            );
        } else {
            for i in 0..out.tokens.len() {
                println!("--- sequence {} (prompt {}, finish: {:?})", i, i / n, out.finish_reasons[i]);
                match &texts {
                    Some(t) => println!("{}", t[i]),
                    None => println!("{:?}", out.row(i)),
                }
            }
            eprintln!(
                "[{} tokens, prefill {:.0} ms, decode {:.1} tokens/s on {backend}]",
                out.stats.generated_tokens, out.stats.prefill_ms, out.stats.decode_tokens_per_s
            );
        }
        Ok(())
    }
}

struct TokenizeJob {
    args: TokenizeArgs,
}

impl BackendJob for TokenizeJob {
    fn run<B: DecodeOps>(self, _backend: &str, device: B::Device) -> Result<()> {
        let (loaded, _, _) = load::<B>(&self.args.m, &device)?;
        let tok = loaded.text_tokenizer()?;
        let ids = tok.encode(&self.args.text)?;
        let tokens = tok.tokens(&ids);
        if self.args.json {
            println!("{}", json!({"ids": ids, "tokens": tokens}));
        } else {
            for (i, t) in ids.iter().zip(&tokens) {
                println!("{i:>8}  {t:?}");
            }
        }
        Ok(())
    }
}
