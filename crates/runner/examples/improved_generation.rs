//! The seed's demo (`examples/test_improved_generation.py`) in Rust: every strategy on the default
//! model, then the speed with and without the KV cache.
//!
//! `cargo run --release -p demiurgic-runner --example improved_generation`
#![allow(clippy::cloned_ref_to_slice_refs)]
use std::time::Instant;

use anyhow::Result;
use demiurgic_model::{generate, load_model, GenerateOptions};
use demiurgic_runner::fetch;
use demiurgic_sampling::{GenerationConfig, PRESETS};

#[cfg(feature = "flex")]
type B = burn::backend::Flex;
#[cfg(all(not(feature = "flex"), feature = "ndarray"))]
type B = burn::backend::NdArray;

fn main() -> Result<()> {
    let device = Default::default();
    let path = fetch::default_model(true)?;
    let loaded = load_model::<B>(&path, &device)?;
    let tok = loaded.tokenizer.as_ref().expect("the default model has a tokenizer");
    let prompt = "def fibonacci(n):";
    let ids = tok.encode(prompt)?;
    println!("model: {}\nprompt: {prompt:?}\n", loaded.description);
    for preset in PRESETS {
        let cfg = GenerationConfig { max_new_tokens: Some(40), seed: Some(42), ..preset.config() };
        let out = generate(&loaded.model, &[ids.clone()], &cfg, GenerateOptions::default())?;
        println!("=== {} ({})", preset.name, preset.description);
        println!("{prompt}{}", tok.decode(out.row(0))?);
        println!(
            "[{} tokens, {:.1} tokens/s, finish {:?}]\n",
            out.lengths[0], out.stats.decode_tokens_per_s, out.finish_reasons[0]
        );
    }
    println!("=== KV cache speed-up (greedy, EOS off)");
    for n in [50usize, 100] {
        let cfg =
            GenerationConfig { max_new_tokens: Some(n), eos_token_ids: Some(vec![]), ..GenerationConfig::greedy() };
        let mut times = vec![];
        for use_cache in [false, true] {
            let t = Instant::now();
            generate(&loaded.model, &[ids.clone()], &cfg, GenerateOptions { use_cache, ..Default::default() })?;
            times.push(t.elapsed().as_secs_f64());
        }
        println!(
            "{n:>4} new tokens: without cache {:.2} s, with cache {:.2} s, speed-up {:.1}x",
            times[0],
            times[1],
            times[0] / times[1]
        );
    }
    Ok(())
}
