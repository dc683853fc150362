//! Parity with transformers on the tiny random Llama (`fixtures/tiny-llama/golden.json`):
//! full-prompt logits, greedy continuations with and without the cache, and the left-padded
//! ragged batch. Data-driven: every case of the file is checked.
use demiurgic_model::DecodeOps;
use demiurgic_model::{generate, load_model, Batch, GenerateOptions, StepInput};
use demiurgic_sampling::GenerationConfig;
use demiurgic_tests::{fixture, ids1, ids2, json_fixture, max_abs_diff, per_backend, tolerance};

fn greedy(n: usize) -> GenerationConfig {
    GenerationConfig { max_new_tokens: Some(n), ..GenerationConfig::greedy() }
}

fn logits_and_greedy<B: DecodeOps>(device: &B::Device) {
    let golden = json_fixture("tiny-llama/golden.json");
    let loaded = load_model::<B>(&fixture("tiny-llama"), device).expect("load tiny-llama");
    let model = &loaded.model;
    let cases = golden["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    for (ci, case) in cases.iter().enumerate() {
        let prompt = ids1(&case["prompt"]);
        // full-prompt logits
        let batch = Batch::left_padded(&[prompt.clone()], 0).unwrap();
        let input = StepInput {
            tokens: batch.tokens.clone(),
            positions: batch.positions.clone(),
            key_valid: batch.mask.clone(),
        };
        let logits: Vec<f32> = model.forward_all(&input, None).unwrap().into_data().iter::<f32>().collect();
        let want: Vec<f32> = case["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32))
            .collect();
        let d = max_abs_diff(&logits, &want);
        let tol = tolerance::<B>(device, 1e-4, 5e-3);
        assert!(d < tol, "case {ci}: logits max abs diff {d} (tolerance {tol})");
        // greedy with and without the cache
        let want = ids1(&case["greedy_24"]);
        for use_cache in [true, false] {
            let out =
                generate(model, &[prompt.clone()], &greedy(24), GenerateOptions { use_cache, ..Default::default() })
                    .unwrap();
            assert_eq!(out.row(0), &want[..], "case {ci}, use_cache={use_cache}");
        }
    }
}

fn batched_left_padded<B: DecodeOps>(device: &B::Device) {
    let golden = json_fixture("tiny-llama/golden.json");
    let loaded = load_model::<B>(&fixture("tiny-llama"), device).expect("load tiny-llama");
    let b = &golden["batched_left_padded"];
    let input_ids = ids2(&b["input_ids"]);
    let mask = ids2(&b["attention_mask"]);
    let want = ids2(&b["greedy_16"]);
    let n = want[0].len();
    // unpad the rows as a caller would pass them; generate() re-pads them on the left
    let prompts: Vec<Vec<u32>> = input_ids
        .iter()
        .zip(&mask)
        .map(|(r, m)| r.iter().zip(m).filter(|(_, &m)| m == 1).map(|(&t, _)| t).collect())
        .collect();
    // the re-padded batch is the fixture's batch
    let batch = Batch::left_padded(&prompts, golden["pad_token_id"].as_u64().unwrap() as u32).unwrap();
    assert_eq!(batch.tokens, input_ids);
    for use_cache in [true, false] {
        let out =
            generate(&loaded.model, &prompts, &greedy(n), GenerateOptions { use_cache, ..Default::default() }).unwrap();
        assert_eq!(out.tokens, want, "use_cache={use_cache}");
    }
}

per_backend!(logits_and_greedy_match_transformers, logits_and_greedy);
per_backend!(left_padded_batch_matches_transformers, batched_left_padded);
