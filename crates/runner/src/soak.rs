//! `demiurgic soak`: many generations in one process, resident memory watched.
//!
//! Generates `--tokens` tokens in generations of `--per-generation` new tokens (sampling, a new
//! seed each time, EOS disabled so every generation has the same length), reads the resident set
//! size (VmRSS) after each, and fails when it grows by more than `--max-growth-mib` over its
//! value after the first generation (which pays the one-off allocations: weights, kernels, the
//! allocator's pools). A leak of the KV cache or of per-step tensors shows as steady growth.
use demiurgic_model::DecodeOps;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use demiurgic_model::load::load_model_with;
use demiurgic_model::{generate, GenerateOptions};
use demiurgic_sampling::GenerationConfig;
use serde_json::json;

use crate::backends::BackendJob;

#[derive(Args, Clone)]
pub struct SoakArgs {
    /// A .gguf file or an HF checkpoint directory (default: SmolLM2-135M-Instruct Q4_1).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, default_value = crate::backends::DEFAULT)]
    pub backend: String,
    #[command(flatten)]
    pub load: crate::load_args::LoadArgs,
    /// Total new tokens to generate.
    #[arg(long, default_value_t = 10_000)]
    pub tokens: usize,
    /// New tokens per generation (capped by the model's context).
    #[arg(long, default_value_t = 500)]
    pub per_generation: usize,
    /// Allowed growth of the resident set after the first generation, in MiB.
    #[arg(long, default_value_t = 64)]
    pub max_growth_mib: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub struct SoakJob {
    pub args: SoakArgs,
    pub path: PathBuf,
}

/// Current resident set size (VmRSS) in bytes.
fn rss_bytes() -> Result<u64> {
    let s =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status (the soak needs Linux)")?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS in /proc/self/status")?;
    let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).context("VmRSS unreadable")?;
    Ok(kb * 1024)
}

const MIB: f64 = 1024.0 * 1024.0;

impl BackendJob for SoakJob {
    fn run<B: DecodeOps>(self, backend: &str, device: B::Device) -> Result<()> {
        let a = &self.args;
        if a.tokens == 0 || a.per_generation == 0 {
            bail!("--tokens and --per-generation must be positive (got {} and {})", a.tokens, a.per_generation);
        }
        let is_gguf = self.path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
        let opts = self.args.load.options::<B>(backend, is_gguf)?;
        let loaded = load_model_with::<B>(&self.path, &device, &opts)
            .with_context(|| format!("cannot load {}", self.path.display()))?;
        let model = &loaded.model;
        let prompt: Vec<u32> = match &loaded.tokenizer {
            Some(t) => t.encode("Write a long story about a robot who learns to paint.")?,
            None => (1..9).collect(),
        };
        let ctx = model.config.max_position_embeddings;
        if prompt.len() + 1 > ctx {
            bail!("the model's context ({ctx}) is too short for the soak prompt ({} tokens)", prompt.len());
        }
        let per = a.per_generation.min(ctx - prompt.len());
        let t0 = Instant::now();
        let (mut done, mut k) = (0usize, 0u64);
        let mut rss = vec![];
        while done < a.tokens {
            let n = per.min(a.tokens - done);
            let cfg = GenerationConfig {
                max_new_tokens: Some(n),
                eos_token_ids: Some(vec![]),
                seed: Some(k),
                ..GenerationConfig::default()
            };
            let out = generate(model, &[prompt.clone()], &cfg, GenerateOptions::default())?;
            done += out.lengths[0];
            k += 1;
            rss.push(rss_bytes()?);
            if !a.json {
                eprintln!("generation {k}: {done} tokens, RSS {:.1} MiB", *rss.last().unwrap() as f64 / MIB);
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let first = rss[0];
        let max = *rss.iter().max().unwrap_or(&first);
        let growth = max.saturating_sub(first);
        let ok = growth <= a.max_growth_mib * 1024 * 1024;
        if a.json {
            println!(
                "{}",
                json!({"backend": backend, "model": self.path.display().to_string(), "tokens": done,
                "generations": k, "per_generation": per, "seconds": secs, "rss_after_first_bytes": first,
                "rss_max_bytes": max, "growth_bytes": growth, "bound_bytes": a.max_growth_mib * 1024 * 1024, "ok": ok})
            );
        } else {
            println!(
                "soak ({backend}): {done} tokens in {k} generations of {per} in {secs:.1} s; RSS after the first {:.1} MiB, \
                 max {:.1} MiB, growth {:.1} MiB (bound {} MiB): {}",
                first as f64 / MIB, max as f64 / MIB, growth as f64 / MIB, a.max_growth_mib, if ok { "ok" } else { "EXCEEDED" }
            );
        }
        if !ok {
            bail!(
                "resident memory grew by {:.1} MiB over {k} generations (bound {} MiB)",
                growth as f64 / MIB,
                a.max_growth_mib
            );
        }
        Ok(())
    }
}
