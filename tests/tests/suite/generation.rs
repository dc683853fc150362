//! Generation engine behaviour on the tiny fixture model: seeded reproducibility, batch
//! composition independence, EOS + padding, num_return_sequences grouping, logprobs, user
//! processors, and input errors.
use burn::tensor::{backend::Backend, Tensor};
use demiurgic_model::DecodeOps;
use demiurgic_model::{generate, load_model, GenerateOptions, Llama};
use demiurgic_sampling::{FinishReason, GenerationConfig, LogitsPipeline, LogitsProcessor, ProcessorContext};
use demiurgic_tests::{fixture, per_backend};

fn model<B: DecodeOps>(d: &B::Device) -> Llama<B> {
    load_model::<B>(&fixture("tiny-llama"), d).expect("tiny-llama").model
}

fn sampling(seed: u64, n: usize) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: Some(n),
        seed: Some(seed),
        temperature: 1.3,
        top_k: 0,
        top_p: 1.0,
        ..Default::default()
    }
}

fn seeded_and_batch_independent<B: DecodeOps>(d: &B::Device) {
    let m = model::<B>(d);
    let a = vec![173u32, 54, 249];
    let b = vec![29u32, 227, 38, 202, 119];
    let one = generate(&m, &[a.clone()], &sampling(7, 12), GenerateOptions::default()).unwrap();
    let again = generate(&m, &[a.clone()], &sampling(7, 12), GenerateOptions::default()).unwrap();
    assert_eq!(one.tokens, again.tokens, "same seed, same tokens");
    let other = generate(&m, &[a.clone()], &sampling(8, 12), GenerateOptions::default()).unwrap();
    assert_ne!(one.tokens, other.tokens, "another seed draws other tokens");
    // sequence 0 draws the same tokens whether or not another prompt is in the batch
    let batch = generate(&m, &[a.clone(), b], &sampling(7, 12), GenerateOptions::default()).unwrap();
    assert_eq!(batch.row(0), one.row(0));
    // and with or without the cache
    let nc = generate(&m, &[a], &sampling(7, 12), GenerateOptions { use_cache: false, ..Default::default() }).unwrap();
    assert_eq!(nc.tokens, one.tokens);
}

fn eos_padding_and_grouping<B: DecodeOps>(d: &B::Device) {
    let m = model::<B>(d);
    // the third golden prompt ends with EOS (2) after 6 tokens; its row is then padded with 0
    let p3 = vec![29u32, 227, 38, 202, 119, 225, 43, 7, 221, 149, 200, 145];
    let p1 = vec![173u32, 54, 249, 30, 165, 234, 93];
    let g = GenerationConfig { max_new_tokens: Some(10), ..GenerationConfig::greedy() };
    let out = generate(&m, &[p1, p3], &g, GenerateOptions::default()).unwrap();
    assert_eq!(out.finish_reasons, vec![FinishReason::Length, FinishReason::Eos]);
    assert_eq!(out.lengths, vec![10, 6]);
    assert_eq!(&out.tokens[1][5..], &[2, 0, 0, 0, 0]);
    // num_return_sequences: rows grouped per prompt, each group from its own prompt
    let c = GenerationConfig { num_return_sequences: 3, logprobs: true, ..sampling(3, 5) };
    let out = generate(&m, &[vec![1, 2, 3], vec![9, 8]], &c, GenerateOptions::default()).unwrap();
    assert_eq!(out.tokens.len(), 6);
    let lp = out.logprobs.as_ref().unwrap();
    assert!(lp.iter().flatten().all(|&x| x <= 0.0 && x.is_finite()));
    // min_new_tokens keeps EOS away: the EOS-ending prompt now runs to the length limit
    let g = GenerationConfig { max_new_tokens: Some(8), min_new_tokens: 8, ..GenerationConfig::greedy() };
    let p3 = vec![29u32, 227, 38, 202, 119, 225, 43, 7, 221, 149, 200, 145];
    let out = generate(&m, &[p3], &g, GenerateOptions::default()).unwrap();
    assert_eq!(out.lengths, vec![8]);
    assert!(!out.row(0).contains(&2));
}

/// A user processor: forbid token 179 (the first greedy token of the first golden case).
struct Forbid179;
impl<B: Backend> LogitsProcessor<B> for Forbid179 {
    fn name(&self) -> &'static str {
        "forbid_179"
    }
    fn process(&self, logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        logits.slice_fill(burn::tensor::s![.., 179..180], f32::NEG_INFINITY)
    }
}

fn user_processor_and_errors<B: DecodeOps>(d: &B::Device) {
    let m = model::<B>(d);
    let p = vec![173u32, 54, 249, 30, 165, 234, 93];
    let g = GenerationConfig { max_new_tokens: Some(4), ..GenerationConfig::greedy() };
    let hook = |pl: &mut LogitsPipeline<B>| pl.push(Box::new(Forbid179));
    let out =
        generate(&m, &[p.clone()], &g, GenerateOptions { pipeline_hook: Some(&hook), ..Default::default() }).unwrap();
    assert!(!out.row(0).contains(&179));
    // stop check: stop as soon as the row holds 2 tokens
    let stop = |ids: &[u32]| ids.len() >= 2;
    let out =
        generate(&m, &[p.clone()], &g, GenerateOptions { stop_check: Some(&stop), ..Default::default() }).unwrap();
    assert_eq!(out.finish_reasons, vec![FinishReason::Stop]);
    assert_eq!(out.lengths, vec![2]);
    // input errors name the problem
    let e = |r: Result<_, demiurgic_model::ModelError>| {
        r.map(|_: demiurgic_model::GenerationOutput| ()).unwrap_err().to_string()
    };
    assert!(e(generate(&m, &[vec![]], &g, GenerateOptions::default())).contains("empty"));
    assert!(e(generate(&m, &[vec![999]], &g, GenerateOptions::default())).contains("999"));
    let long = GenerationConfig { max_new_tokens: Some(200), ..GenerationConfig::greedy() };
    assert!(e(generate(&m, &[p.clone()], &long, GenerateOptions::default())).contains("context"));
    let bad = GenerationConfig { top_p: 2.0, ..Default::default() };
    assert!(e(generate(&m, &[p], &bad, GenerateOptions::default())).contains("top_p"));
}

per_backend!(seeded_sampling_is_reproducible_and_batch_independent, seeded_and_batch_independent);
per_backend!(eos_padding_grouping_and_min_new_tokens, eos_padding_and_grouping);
per_backend!(user_processors_stop_checks_and_errors, user_processor_and_errors);
