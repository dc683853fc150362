//! Cross-backend suite: every compiled-in backend against the reference CPU backend (ndarray),
//! on the same inputs, with the same model code.
//!
//! - tiny-llama fixture: full-prompt logits within 1e-3 and identical greedy tokens (every case,
//!   cache on and off), identical left-padded batch continuation;
//! - `processors.json`: every case identical (same -inf set, values within 1e-5);
//! - SmolLM2: 12 greedy tokens identical for every prompt of `smollm2-golden.json`, and the last
//!   prompt position's logits close.
//!
//! The ndarray results are computed once per test binary and shared by the backends' tests.
//! With only ndarray compiled in there is nothing to compare, and the file holds no test.
#![cfg(feature = "ndarray")]
#![allow(dead_code, unused_imports)]

use demiurgic_model::DecodeOps;
use std::sync::OnceLock;

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use demiurgic_model::{generate, load_model, Batch, GenerateOptions, StepInput};
use demiurgic_sampling::GenerationConfig;
use demiurgic_tests::processors_fixture::run_case;
use demiurgic_tests::{
    fixture, ids1, ids2, json_fixture, max_abs_diff, near_tie_margin, per_backend, real_model_cases, smollm2_path,
    tolerance,
};

/// Tolerance on f32 logits between backends (different kernels, different summation order);
/// the second figure applies where matmuls run in TF32 (CUDA, see `tf32_matmul`).
const LOGITS_TOL: (f32, f32) = (1e-3, 5e-3);
/// Tolerance on SmolLM2's last-position logits: measured 6e-5 on flex and wgpu, 3.2e-2 on CUDA (TF32).
const SMOLLM2_LOGITS_TOL: (f32, f32) = (1e-3, 0.1);
/// SmolLM2 greedy tokens compared per prompt.
const SMOLLM2_TOKENS: usize = 12;

fn greedy(n: usize) -> GenerationConfig {
    GenerationConfig { max_new_tokens: Some(n), ..GenerationConfig::greedy() }
}

/// What one backend computes on the tiny fixture.
#[derive(Debug, PartialEq)]
struct TinyRun {
    /// per case: full-prompt logits (flattened), greedy-24 with cache, greedy-24 without
    cases: Vec<(Vec<f32>, Vec<u32>, Vec<u32>)>,
    /// left-padded ragged batch, greedy
    batch: Vec<Vec<u32>>,
}

fn tiny_run<B: DecodeOps>(device: &B::Device) -> TinyRun {
    let golden = json_fixture("tiny-llama/golden.json");
    let loaded = load_model::<B>(&fixture("tiny-llama"), device).expect("load tiny-llama");
    let model = &loaded.model;
    let cases = golden["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    let cases = cases
        .iter()
        .map(|case| {
            let prompt = ids1(&case["prompt"]);
            let batch = Batch::left_padded(&[prompt.clone()], 0).unwrap();
            let input = StepInput { tokens: batch.tokens, positions: batch.positions, key_valid: batch.mask };
            let logits = model.forward_all(&input, None).unwrap().into_data().iter::<f32>().collect();
            let n = ids1(&case["greedy_24"]).len();
            let run = |use_cache| {
                generate(model, &[prompt.clone()], &greedy(n), GenerateOptions { use_cache, ..Default::default() })
                    .unwrap()
                    .row(0)
                    .to_vec()
            };
            (logits, run(true), run(false))
        })
        .collect();
    let b = &golden["batched_left_padded"];
    let (input_ids, mask) = (ids2(&b["input_ids"]), ids2(&b["attention_mask"]));
    let prompts: Vec<Vec<u32>> = input_ids
        .iter()
        .zip(&mask)
        .map(|(r, m)| r.iter().zip(m).filter(|(_, &m)| m == 1).map(|(&t, _)| t).collect())
        .collect();
    let n = ids2(&b["greedy_16"])[0].len();
    let batch = generate(model, &prompts, &greedy(n), GenerateOptions::default()).unwrap().tokens;
    TinyRun { cases, batch }
}

fn tiny_reference() -> &'static TinyRun {
    static R: OnceLock<TinyRun> = OnceLock::new();
    R.get_or_init(|| tiny_run::<NdArray>(&Default::default()))
}

fn tiny_matches_ndarray<B: DecodeOps>(device: &B::Device) {
    let got = tiny_run::<B>(device);
    let want = tiny_reference();
    let tol = tolerance::<B>(device, LOGITS_TOL.0, LOGITS_TOL.1);
    assert_eq!(got.cases.len(), want.cases.len());
    for (ci, (g, w)) in got.cases.iter().zip(&want.cases).enumerate() {
        let d = max_abs_diff(&g.0, &w.0);
        assert!(d < tol, "case {ci}: logits differ from ndarray by {d} (tolerance {tol})");
        assert_eq!(g.1, w.1, "case {ci}: greedy tokens with the cache");
        assert_eq!(g.2, w.2, "case {ci}: greedy tokens without the cache");
    }
    assert_eq!(got.batch, want.batch, "left-padded batch");
}

fn processors_reference() -> &'static Vec<Vec<f32>> {
    static R: OnceLock<Vec<Vec<f32>>> = OnceLock::new();
    R.get_or_init(|| {
        let f = json_fixture("processors.json");
        f["cases"].as_array().expect("cases").iter().map(|c| run_case::<NdArray>(c, &Default::default()).0).collect()
    })
}

fn processors_match_ndarray<B: DecodeOps>(device: &B::Device) {
    let f = json_fixture("processors.json");
    let cases = f["cases"].as_array().expect("cases");
    let want = processors_reference();
    assert_eq!(cases.len(), want.len());
    assert!(!cases.is_empty());
    for (ci, (case, w)) in cases.iter().zip(want).enumerate() {
        let name = case["processor"].as_str().unwrap();
        let (g, _, v) = run_case::<B>(case, device);
        assert_eq!(g.len(), w.len());
        for (i, (g, w)) in g.iter().zip(w).enumerate() {
            let (r, c) = (i / v, i % v);
            if w.is_infinite() || g.is_infinite() {
                assert_eq!(g, w, "case {ci} ({name}): row {r} col {c}: -inf set differs from ndarray");
            } else {
                assert!((g - w).abs() <= 1e-5, "case {ci} ({name}): row {r} col {c}: {g} vs ndarray {w}");
            }
        }
    }
}

/// Per prompt of `smollm2-golden.json` (the first `n`): last prompt position's logits and 12 greedy
/// tokens.
fn smollm2_run<B: DecodeOps>(device: &B::Device, n: usize) -> Vec<(Vec<f32>, Vec<u32>)> {
    let g = json_fixture("smollm2-golden.json");
    let loaded = load_model::<B>(&smollm2_path(), device).expect("load SmolLM2");
    let cases = g["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    cases
        .iter()
        .take(n)
        .map(|case| {
            let ids = ids1(&case["prompt_ids"]);
            let batch = Batch::left_padded(&[ids.clone()], 0).unwrap();
            let input = StepInput { tokens: batch.tokens, positions: batch.positions, key_valid: batch.mask };
            let logits = loaded.model.forward_last(&input, None).unwrap().into_data().iter::<f32>().collect();
            let cfg = GenerationConfig { eos_token_ids: Some(vec![]), ..greedy(SMOLLM2_TOKENS) };
            let out = generate(&loaded.model, &[ids], &cfg, GenerateOptions::default()).unwrap();
            (logits, out.row(0).to_vec())
        })
        .collect()
}

fn smollm2_reference() -> &'static Vec<(Vec<f32>, Vec<u32>)> {
    static R: OnceLock<Vec<(Vec<f32>, Vec<u32>)>> = OnceLock::new();
    R.get_or_init(|| smollm2_run::<NdArray>(&Default::default(), usize::MAX))
}

fn smollm2_matches_ndarray<B: DecodeOps>(device: &B::Device) {
    let golden = json_fixture("smollm2-golden.json");
    let cases = golden["cases"].as_array().expect("cases");
    let n = real_model_cases::<B, _>("smollm2 cross-backend", cases.iter().collect()).len();
    let got = smollm2_run::<B>(device, n);
    let want = &smollm2_reference()[..n];
    let tol = tolerance::<B>(device, SMOLLM2_LOGITS_TOL.0, SMOLLM2_LOGITS_TOL.1);
    assert_eq!(got.len(), want.len());
    for (ci, (g, w)) in got.iter().zip(want).enumerate() {
        let d = max_abs_diff(&g.0, &w.0);
        eprintln!("SmolLM2 case {ci}: last-position logits max abs diff vs ndarray {d}");
        assert!(d < tol, "case {ci}: logits differ from ndarray by {d} (tolerance {tol})");
        assert_eq!(g.1.len(), SMOLLM2_TOKENS, "case {ci}: token count");
        // every step before the first near-tie of the reference (ndarray follows the golden run)
        let margins: Vec<f64> =
            cases[ci]["top1_top2_margins"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let n =
            margins.iter().position(|&m| m < near_tie_margin::<B>(device)).unwrap_or(margins.len()).min(SMOLLM2_TOKENS);
        assert!(n >= SMOLLM2_TOKENS.min(8), "case {ci}: only {n} comparable steps");
        assert_eq!(
            g.1[..n],
            w.1[..n],
            "case {ci}: the first {n} of {SMOLLM2_TOKENS} greedy tokens differ from ndarray"
        );
    }
}

per_backend!(except_ndarray tiny_llama_same_as_ndarray, tiny_matches_ndarray);
per_backend!(except_ndarray processors_same_as_ndarray, processors_match_ndarray);
per_backend!(except_ndarray smollm2_same_as_ndarray, smollm2_matches_ndarray);
