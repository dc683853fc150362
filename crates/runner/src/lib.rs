//! The `demiurgic` command-line tool (`src/main.rs` only calls [`main`]): generate text with a
//! Llama-family model on a Burn backend chosen at run time. Everything is in the library so that its
//! unit tests build with the library and the binary is never compiled a second time as a test.
#![allow(clippy::cloned_ref_to_slice_refs)]
mod args;
mod backends;
mod bench;
mod chat;
mod cli;
mod eval;
pub mod fetch;
mod gen;
mod host_profile;
mod load_args;
pub mod sandbox;
mod serve;
mod soak;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use demiurgic_model::load::{load_model_with, LoadedModel};
use demiurgic_model::DecodeOps;
use demiurgic_sampling::PRESETS;
use serde_json::json;

use args::{DetokenizeArgs, InfoArgs, ModelArgs, TokenizeArgs};
use backends::{with_backend, BackendJob, COMPILED};
use cli::{Cli, Cmd};

/// Write to stdout; a closed pipe (`| head`) ends the program quietly with success, like other
/// command-line tools.
pub fn emit(s: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// "1 token", "2 tokens".
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The binary's entry point: parse the arguments, run the command, exit 1 with one line on error.
pub fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == sandbox::HELPER_ARG) {
        sandbox::helper_main(&args[2..]);
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        eprintln!("error: internal failure: {msg}");
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                std::process::exit(if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { 1 } else { 0 });
            }
            eprintln!("error: {}", cli::one_line(&e));
            std::process::exit(1);
        }
    };
    let json_errors = matches!(&cli.cmd, Cmd::Generate(a) if a.json);
    if let Some(n) = threads_of(&cli.cmd) {
        // the CPU backends' pool (rayon's global one), before anything uses it
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(n as usize).build_global() {
            eprintln!("error: --threads {n}: {e}");
            std::process::exit(1);
        }
    }
    let result = std::panic::catch_unwind(|| run(cli));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let msg = format!("{e:#}");
            if json_errors {
                emit(&format!("{}\n", json!({"error": {"message": msg, "type": "invalid_request"}})));
            }
            eprintln!("error: {msg}");
            std::process::exit(1);
        }
        Err(_) => std::process::exit(1),
    }
}

/// `--threads` of the command that loads a model.
fn threads_of(cmd: &Cmd) -> Option<u16> {
    match cmd {
        Cmd::Generate(a) => a.m.threads,
        Cmd::Chat(a) => a.m.threads,
        Cmd::Tokenize(a) => a.m.threads,
        Cmd::Detokenize(a) => a.m.threads,
        Cmd::Info(a) => a.m.threads,
        Cmd::Serve(a) => a.m.threads,
        Cmd::Eval(e) => match &e.cmd {
            eval::EvalCmd::Run(r) => r.m.threads,
            eval::EvalCmd::Score(_) => None,
        },
        _ => None,
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Presets => {
            for p in PRESETS {
                let c = p.config();
                let q = &c.processors;
                emit(&format!(
                    "{:<15} {}\n{:<15} temperature={} top_k={} top_p={} repetition_penalty={} frequency_penalty={} presence_penalty={} do_sample={} max_new_tokens={}\n",
                    p.name,
                    p.description,
                    "",
                    q.temperature.temperature,
                    q.top_k.top_k,
                    q.top_p.top_p,
                    q.repetition.repetition_penalty,
                    q.frequency_presence.frequency_penalty,
                    q.frequency_presence.presence_penalty,
                    c.do_sample,
                    c.max_new_tokens.unwrap_or(0)
                ));
            }
            Ok(())
        }
        Cmd::Backends => {
            for name in COMPILED {
                let status = backends::probe(name);
                emit(&format!("{name:<8} compiled in, {status}\n"));
            }
            Ok(())
        }
        Cmd::FetchModel(a) => {
            let spec = match &a.name {
                None => &fetch::SMOLLM2,
                Some(n) => fetch::lookup(n)
                    .ok_or_else(|| anyhow::anyhow!("unknown model {n:?} (fetchable: {})", fetch::names()))?,
            };
            let progress = std::io::stderr().is_terminal();
            let p = if a.force { fetch::fetch_spec(spec, progress)? } else { fetch::model(spec, progress)? };
            emit(&format!("{}\n", p.display()));
            Ok(())
        }
        Cmd::Generate(args) => {
            let backend = args.m.backend.clone();
            with_backend(&backend, gen::GenerateJob { args })
        }
        Cmd::Chat(args) => {
            let backend = args.m.backend.clone();
            with_backend(&backend, chat::ChatJob { args })
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
        Cmd::Detokenize(args) => {
            let backend = args.m.backend.clone();
            with_backend(&backend, DetokenizeJob { args })
        }
        Cmd::Serve(args) => {
            let backend = args.m.backend.clone();
            with_backend(&backend, serve::ServeJob { args })
        }
        Cmd::Eval(a) => match a.cmd {
            eval::EvalCmd::Score(s) => eval::score_cmd(&s),
            eval::EvalCmd::Run(r) => {
                let backend = r.m.backend.clone();
                with_backend(&backend, eval::RunJob { args: *r })
            }
        },
        Cmd::Info(args) => {
            let backend = args.m.backend.clone();
            with_backend(&backend, InfoJob { args })
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

/// The `--model` given: a path, or (when no such path exists) a fetchable model's name; the
/// default model without one (fetched on first use).
fn model_path(model: &Option<PathBuf>) -> Result<PathBuf> {
    let progress = std::io::stderr().is_terminal();
    match model {
        Some(p) if p.exists() => Ok(p.clone()),
        Some(p) => match p.to_str().and_then(fetch::lookup) {
            Some(spec) => fetch::model(spec, progress),
            None => Ok(p.clone()),
        },
        None => fetch::default_model(progress),
    }
}

fn load<B: DecodeOps>(m: &ModelArgs, device: &B::Device) -> Result<(LoadedModel<B>, PathBuf, f64)> {
    let path = model_path(&m.model)?;
    let is_gguf = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let opts = m.load.options::<B>(&m.backend, is_gguf)?;
    let spinner = std::io::stderr().is_terminal().then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_message(format!("loading {}", path.display()));
        s.enable_steady_tick(std::time::Duration::from_millis(120));
        s
    });
    let t = Instant::now();
    let loaded = load_model_with::<B>(&path, device, &opts);
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let loaded = loaded.with_context(|| format!("cannot load model {}", path.display()))?;
    Ok((loaded, path, t.elapsed().as_secs_f64() * 1e3))
}

/// One chat message.
struct TokenizeJob {
    args: TokenizeArgs,
}

impl BackendJob for TokenizeJob {
    fn run<B: DecodeOps>(self, _backend: &str, device: B::Device) -> Result<()> {
        let (loaded, _, _) = load::<B>(&self.args.m, &device)?;
        let tok = loaded.text_tokenizer()?;
        let ids = tok.encode(&self.args.text)?;
        let tokens = tok.tokens(&ids);
        let texts: Vec<String> = ids.iter().map(|&i| tok.decode(&[i]).unwrap_or_default()).collect();
        if self.args.json {
            emit(&format!("{}\n", json!({"ids": ids, "tokens": tokens, "texts": texts})));
        } else {
            for ((i, t), x) in ids.iter().zip(&tokens).zip(&texts) {
                emit(&format!("{i:>8}  {:<24} {x:?}\n", format!("{t:?}")));
            }
        }
        Ok(())
    }
}

struct DetokenizeJob {
    args: DetokenizeArgs,
}

impl BackendJob for DetokenizeJob {
    fn run<B: DecodeOps>(self, _backend: &str, device: B::Device) -> Result<()> {
        let (loaded, _, _) = load::<B>(&self.args.m, &device)?;
        let tok = loaded.text_tokenizer()?;
        let ids: Result<Vec<u32>, _> = self.args.ids.split(',').map(|x| x.trim().parse::<u32>()).collect();
        let ids = ids.map_err(|_| {
            anyhow::anyhow!("--ids {:?}: expected comma-separated token ids (integers ≥ 0)", self.args.ids)
        })?;
        let vocab = loaded.model.config.vocab_size;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            anyhow::bail!("--ids: token id {bad} is outside the vocabulary (0..{vocab})");
        }
        let text = tok.decode_with(&ids, !self.args.keep_special_tokens)?;
        if self.args.json {
            emit(&format!("{}\n", json!({"ids": ids, "text": text})));
        } else {
            emit(&format!("{text}\n"));
        }
        Ok(())
    }
}

struct InfoJob {
    args: InfoArgs,
}

impl BackendJob for InfoJob {
    fn run<B: DecodeOps>(self, backend: &str, device: B::Device) -> Result<()> {
        let (loaded, path, load_ms) = load::<B>(&self.args.m, &device)?;
        let c = &loaded.model.config;
        let w = &loaded.model.weights;
        let params = c.parameter_count();
        let storage: Vec<String> = w.storage_summary().into_iter().map(|(n, k)| format!("{n}: {k}")).collect();
        let tokenizer = match (&loaded.tokenizer, &loaded.tokenizer_error) {
            (Some(t), _) => format!("{} tokens", t.inner.get_vocab_size(true)),
            (None, Some(e)) => format!("unusable ({e})"),
            (None, None) => "none".into(),
        };
        let names = |ids: &[u32]| -> Vec<String> {
            ids.iter()
                .map(|&i| {
                    loaded
                        .tokenizer
                        .as_ref()
                        .map(|t| format!("{i} {:?}", t.tokens(&[i]).join("")))
                        .unwrap_or(i.to_string())
                })
                .collect()
        };
        let v = json!({
            "model": path.display().to_string(),
            "description": loaded.description,
            "architecture": loaded.architecture,
            "parameters": params,
            "layers": c.num_layers,
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "heads": c.num_heads,
            "kv_heads": c.num_kv_heads,
            "head_dim": c.head_dim,
            "vocab_size": c.vocab_size,
            "context_length": c.max_position_embeddings,
            "rope_theta": c.ropes.iter().map(|r| r.theta).collect::<Vec<_>>(),
            "sliding_window": c.sliding_window(),
            "layer_kinds": c.layer_kinds(),
            "embed_scale": c.embed_scale,
            "final_logit_softcap": c.final_softcap,
            "tied_embeddings": c.tie_word_embeddings,
            "weights": storage,
            "weights_bytes": w.bytes(c.tie_word_embeddings),
            "tokenizer": tokenizer,
            "chat_template": loaded.chat_template.is_some(),
            "bos_token_id": c.bos_token_id,
            "eos_token_ids": names(&c.eos_token_ids),
            "backend": backend,
            "load_ms": load_ms,
        });
        if self.args.json {
            emit(&format!("{v}\n"));
        } else {
            for (k, val) in v.as_object().expect("object") {
                let sep = if k == "layer_kinds" { format!("\n{:<19}", "") } else { ", ".to_string() };
                let shown = match val {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(a) => a
                        .iter()
                        .map(|x| x.as_str().map(String::from).unwrap_or(x.to_string()))
                        .collect::<Vec<_>>()
                        .join(&sep),
                    other => other.to_string(),
                };
                emit(&format!("{k:<18} {shown}\n"));
            }
        }
        Ok(())
    }
}
