//! Gemma 3 270M base (the real GGUF Q4_K_M: Q5_0, Q8_0, Q4_K and Q6_K blocks, 262k vocabulary)
//! against transformers on the same file dequantized to f32 (`gemma3-270m-golden.json`): the
//! top-5 logits of the last prompt position within 1e-2, greedy ids (EOS active) up to the first
//! reference step whose top-1/top-2 margin is under 0.05; the prompt ids from the file's own
//! SentencePiece vocabulary and the continuation's text. Data-driven over every case; every case
//! on flex, the first on ndarray, wgpu (its Q5_0 / Q8_0 / Q4_K / Q6_K blocks on the device, the
//! 262k-row embedding in buffers the device can allocate) and cuda (all with `--full`).
use crate::smollm2_golden::{check_reference_case, f64s};
use demiurgic_model::{load_model, DecodeOps};
use demiurgic_tests::{gemma3_270m_path, ids1, json_fixture, near_tie_margin, per_backend, real_model_cases};

fn golden<B: DecodeOps>(device: &B::Device) {
    let g = json_fixture("gemma3-270m-golden.json");
    let loaded = load_model::<B>(&gemma3_270m_path(), device).expect("load Gemma 3 270M");
    assert_eq!(loaded.architecture, "gemma3");
    let c = &loaded.model.config;
    assert_eq!((c.num_layers, c.vocab_size, c.head_dim), (18, 262_144, 256));
    // every 6th layer global (no pattern key in the file), the others within 512 keys
    let windows: Vec<Option<usize>> = c.layers.iter().map(|l| l.window).collect();
    let want: Vec<Option<usize>> = (0..18).map(|i| if (i + 1) % 6 == 0 { None } else { Some(512) }).collect();
    assert_eq!(windows, want, "layer windows");
    let kinds = c.layer_kinds();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert!(kinds[0].starts_with("15 × attention within 512 keys, RoPE θ 10000,"), "{kinds:?}");
    assert!(kinds[1].starts_with("3 × full attention, RoPE θ 1000000,"), "{kinds:?}");
    assert!(kinds.iter().all(|k| k.contains("q/k norm") && k.ends_with("GeGLU (tanh GELU)")), "{kinds:?}");
    assert_eq!(c.embed_scale, Some((640f64).sqrt() as f32));
    let tok = loaded.tokenizer.as_ref().unwrap_or_else(|| panic!("tokenizer: {:?}", loaded.tokenizer_error));
    let eos = g["eos_token_id"].as_u64().unwrap() as u32;
    let cases = g["cases"].as_array().expect("cases");
    for (ci, case) in real_model_cases::<B, _>("gemma3-270m golden", cases.iter().enumerate().collect()) {
        let ids = ids1(&case["prompt_ids"]);
        assert!(!ids.is_empty(), "case {ci}: no prompt ids");
        // the SentencePiece vocabulary of the file, BOS added, as transformers' tokenizer
        let prompt = case["prompt"].as_str().unwrap();
        assert_eq!(tok.encode(prompt).unwrap(), ids, "case {ci}: prompt ids of {prompt:?}");
        let top5_ids = ids1(&case["last_prompt_top5"]["ids"]);
        let top5_logits = f64s(&case["last_prompt_top5"]["logits"]);
        assert_eq!(top5_ids.len(), top5_logits.len(), "case {ci}: top-5 ids and logits");
        assert!(!top5_ids.is_empty());
        let want = ids1(&case["greedy_ids"]);
        let margins = f64s(&case["top1_top2_margins"]);
        assert_eq!(margins.len(), want.len(), "case {ci}: one margin per greedy step");
        let floor = near_tie_margin::<B>(device).max(0.05);
        let (_, row, n) = check_reference_case(
            &loaded.model,
            ids,
            &top5_ids,
            &top5_logits,
            &want,
            &margins,
            eos,
            (1e-2, floor),
            &format!("case {ci}"),
        );
        assert!(n > 0, "case {ci}: no comparable step");
        if n == want.len() {
            let text = tok.decode(&row).unwrap();
            assert_eq!(text, case["greedy_text"].as_str().unwrap(), "case {ci}: text");
        }
    }
}

per_backend!(gemma3_270m_matches_transformers, golden);
