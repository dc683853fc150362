//! Decoding strategies against their references, data-driven:
//! - beam search against transformers' `generate(num_beams=…)` on tiny-llama (every case of
//!   `beam/tiny-llama-beam.json`) and SmolLM2 (`beam/smollm2-beam.json`), alone and with all of a
//!   fixture's prompts batched;
//! - speculative decoding (prompt lookup and a draft model) against plain greedy decoding on the
//!   SmolLM2 goldens, and against plain decoding on the tiny model.
use demiurgic_model::{generate, load_model, load_model_with, Activations, DecodeOps, GenerateOptions, LoadOptions};
use demiurgic_sampling::{EarlyStopping, GenerationConfig};
use demiurgic_tests::{
    fixture, ids1, json_fixture, near_tie_margin, per_backend, real_model_strategy_cases, smollm2_path, tolerance,
};

fn beam_config(case: &serde_json::Value) -> GenerationConfig {
    let es = match &case["early_stopping"] {
        serde_json::Value::Bool(true) => EarlyStopping::True,
        serde_json::Value::Bool(false) => EarlyStopping::False,
        _ => EarlyStopping::Never,
    };
    GenerationConfig {
        num_beams: case["num_beams"].as_u64().unwrap() as usize,
        length_penalty: case["length_penalty"].as_f64().unwrap() as f32,
        early_stopping: es,
        num_return_sequences: case["num_return_sequences"].as_u64().unwrap() as usize,
        max_new_tokens: Some(case["max_new_tokens"].as_u64().unwrap() as usize),
        eos_token_ids: Some(vec![case["eos_token_id"].as_u64().unwrap() as u32]),
        pad_token_id: Some(case["pad_token_id"].as_u64().unwrap() as u32),
        ..GenerationConfig::greedy()
    }
}

/// Returned rows equal transformers' (order free among scores within 1e-3), scores within `tol`.
fn check_beams(name: &str, got_rows: &[Vec<u32>], got_scores: &[f32], case: &serde_json::Value, tol: f32) {
    let want: Vec<Vec<u32>> = case["sequences"].as_array().unwrap().iter().map(ids1).collect();
    let want_scores: Vec<f32> =
        case["sequences_scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert_eq!(got_rows.len(), want.len(), "{name}: returned rows");
    for (i, (w, ws)) in want.iter().zip(&want_scores).enumerate() {
        // the same row, or one whose reference score is within 1e-3 (their order may differ)
        let j = (0..got_rows.len())
            .find(|&j| got_rows[j] == *w && (j == i || (want_scores[j] - ws).abs() < 1e-3))
            .unwrap_or_else(|| panic!("{name}: row {i} {w:?} not returned (got {got_rows:?})"));
        assert!((got_scores[j] - ws).abs() < tol, "{name}: row {i} score {} vs {ws}", got_scores[j]);
    }
}

/// Every case of `file` alone, then batched by configuration; `real_model`: the real-model
/// strategy rule ([`real_model_strategy_cases`]) applies.
fn beam_fixture<B: DecodeOps>(device: &B::Device, file: &str, model: &std::path::Path, tol: f32, real_model: bool) {
    let f = json_fixture(file);
    let all = f["cases"].as_array().unwrap();
    assert!(!all.is_empty(), "{file}: no case");
    let cases: Vec<serde_json::Value> =
        if real_model { real_model_strategy_cases::<B, _>(file, all.clone()) } else { all.clone() };
    if cases.is_empty() {
        return;
    }
    let loaded = load_model::<B>(model, device).unwrap();
    for (ci, case) in cases.iter().enumerate() {
        let cfg = beam_config(case);
        let out = generate(&loaded.model, &[ids1(&case["prompt"])], &cfg, GenerateOptions::default()).unwrap();
        let rows: Vec<Vec<u32>> = (0..out.tokens.len()).map(|i| out.row(i).to_vec()).collect();
        check_beams(&format!("{file} case {ci}"), &rows, out.sequences_scores.as_ref().unwrap(), case, tol);
    }
    // batched: for each configuration, every prompt the fixture has it for, in one call
    let mut configs: Vec<GenerationConfig> = vec![];
    for c in &cases {
        let cfg = beam_config(c);
        if !configs.contains(&cfg) {
            configs.push(cfg);
        }
    }
    let mut batched_runs = 0;
    for cfg in &configs {
        let group: Vec<&serde_json::Value> = cases.iter().filter(|c| beam_config(c) == *cfg).collect();
        if group.len() < 2 {
            continue;
        }
        let prompts: Vec<Vec<u32>> = group.iter().map(|c| ids1(&c["prompt"])).collect();
        let out = generate(&loaded.model, &prompts, cfg, GenerateOptions::default()).unwrap();
        let n = cfg.num_return_sequences;
        for (pi, single) in group.iter().enumerate() {
            let rows: Vec<Vec<u32>> = (pi * n..(pi + 1) * n).map(|i| out.row(i).to_vec()).collect();
            let scores = &out.sequences_scores.as_ref().unwrap()[pi * n..(pi + 1) * n];
            check_beams(&format!("{file} batched prompt {pi} ({} beams)", cfg.num_beams), &rows, scores, single, tol);
        }
        batched_runs += 1;
    }
    let mut distinct: Vec<Vec<u32>> = cases.iter().map(|c| ids1(&c["prompt"])).collect();
    distinct.dedup();
    assert!(distinct.len() < 2 || batched_runs > 0, "{file}: no configuration shared by two prompts to batch");
}

fn tiny_beams<B: DecodeOps>(device: &B::Device) {
    beam_fixture::<B>(
        device,
        "beam/tiny-llama-beam.json",
        &fixture("tiny-llama"),
        tolerance::<B>(device, 1e-4, 5e-3),
        false,
    );
}

fn smollm2_beams<B: DecodeOps>(device: &B::Device) {
    beam_fixture::<B>(device, "beam/smollm2-beam.json", &smollm2_path(), tolerance::<B>(device, 1e-3, 5e-2), true);
}

per_backend!(beam_search_matches_transformers_tiny, tiny_beams);
per_backend!(beam_search_matches_transformers_smollm2, smollm2_beams);

/// Greedy speculative decoding (prompt lookup; a draft model) gives plain greedy decoding's
/// tokens on every SmolLM2 golden case, up to the first reference near-tie.
fn speculative_greedy<B: DecodeOps>(device: &B::Device) {
    let g = json_fixture("smollm2-golden.json");
    let cases = g["cases"].as_array().unwrap();
    let cases = real_model_strategy_cases::<B, _>("speculative on smollm2", cases.iter().enumerate().collect());
    if cases.is_empty() {
        return;
    }
    let target = load_model::<B>(&smollm2_path(), device).unwrap();
    // the natural pair: the same file, the draft computing with int8 activations where the
    // backend can (flex), otherwise a second copy
    let draft_opts = if B::host_weights() {
        LoadOptions { activations: Activations::Int8, ..Default::default() }
    } else {
        LoadOptions::default()
    };
    let draft = load_model_with::<B>(&smollm2_path(), device, &draft_opts).unwrap();
    let tok = target.tokenizer.as_ref().unwrap();
    for (ci, case) in cases {
        let ids = tok.encode(case["prompt"].as_str().unwrap()).unwrap();
        let want = ids1(&case["greedy_ids"]);
        let margins: Vec<f64> =
            case["top1_top2_margins"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let n = margins.iter().position(|&m| m < near_tie_margin::<B>(device)).unwrap_or(margins.len());
        let eos = vec![g["eos_token_id"].as_u64().unwrap() as u32];
        for (name, cfg, use_draft) in [
            (
                "prompt lookup",
                GenerationConfig { prompt_lookup_num_tokens: Some(4), ..GenerationConfig::greedy() },
                false,
            ),
            ("draft model", GenerationConfig { num_assistant_tokens: 3, ..GenerationConfig::greedy() }, true),
        ] {
            let cfg = GenerationConfig { max_new_tokens: Some(want.len()), eos_token_ids: Some(eos.clone()), ..cfg };
            let opts =
                GenerateOptions { draft: if use_draft { Some(&draft.model) } else { None }, ..Default::default() };
            let out = generate(&target.model, &[ids.clone()], &cfg, opts).unwrap();
            let row = out.row(0);
            assert!(row.len() >= n, "case {ci} {name}: {} tokens", row.len());
            assert_eq!(&row[..n], &want[..n], "case {ci} {name}: greedy ids (first {n})");
            assert!(out.stats.draft_tokens >= out.stats.accepted_tokens, "case {ci} {name}");
            if use_draft {
                assert!(out.stats.draft_tokens > 0, "case {ci}: the draft proposed nothing");
            }
        }
    }
}

per_backend!(speculative_greedy_equals_greedy, speculative_greedy);

/// On the tiny model: a repetitive prompt makes prompt lookup accept candidates, and the output
/// is still plain greedy's; a draft with another vocabulary size is refused by name.
#[test]
fn prompt_lookup_accepts_on_repetitive_text() {
    type B = burn::backend::NdArray;
    let loaded = load_model::<B>(&fixture("tiny-llama"), &Default::default()).unwrap();
    let g = json_fixture("tiny-llama/golden.json");
    let case = &g["cases"][0];
    let prompt = ids1(&case["prompt"]);
    let mut long = prompt.clone();
    long.extend(ids1(&case["greedy_24"]));
    long.extend(&prompt);
    let base = GenerationConfig { max_new_tokens: Some(20), eos_token_ids: Some(vec![]), ..GenerationConfig::greedy() };
    let plain = generate(&loaded.model, &[long.clone()], &base, GenerateOptions::default()).unwrap();
    let cfg = GenerationConfig { prompt_lookup_num_tokens: Some(5), ..base };
    let spec = generate(&loaded.model, &[long], &cfg, GenerateOptions::default()).unwrap();
    assert_eq!(spec.row(0), plain.row(0));
    assert!(spec.stats.accepted_tokens > 0, "repeated text: some candidates accepted ({:?})", spec.stats);
    let other = load_model::<B>(&fixture("families/qwen2"), &Default::default()).unwrap();
    let smol = load_model::<B>(&smollm2_path(), &Default::default()).unwrap();
    let err = match generate(
        &smol.model,
        &[vec![1, 2, 3]],
        &GenerationConfig { max_new_tokens: Some(2), ..GenerationConfig::greedy() },
        GenerateOptions { draft: Some(&other.model), ..Default::default() },
    ) {
        Ok(_) => panic!("a draft with another vocabulary must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("vocabulary"), "{err}");
}
