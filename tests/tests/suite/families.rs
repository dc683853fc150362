//! Model families through the one decoder, data-driven over `fixtures/families/*` (tiny random
//! checkpoints made with transformers 5.24, `golden.json` beside each): every family loaded from
//! its HF directory and from the GGUF written by `scripts/make_family_ggufs.py` gives
//! transformers' logits at every prompt position and its greedy continuation (EOS active),
//! Mistral's prompts running past its sliding window of 8, Gemma 3's past its window of 6 on
//! three of four layers (two RoPE bases, sandwich norms, GeGLU, q/k norms), Qwen3's q/k norms,
//! Qwen3-MoE's router and top-2 of 4 experts (HF: a tensor per expert; GGUF: stacked).
//! Unsupported variants are refused by name.
use demiurgic_model::{generate, load_model, DecodeOps, GenerateOptions, ModelError, StepInput};
use demiurgic_sampling::GenerationConfig;
use demiurgic_tests::{
    fixture, ids1, json_fixture, max_abs_diff, near_tie_margin, per_backend, tf32_matmul, tolerance,
};

fn families() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixture("families"))
        .expect("fixtures/families")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("golden.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    assert!(v.len() >= 4, "families fixtures: {v:?}");
    v
}

fn family_goldens<B: DecodeOps>(device: &B::Device) {
    for fam in families() {
        let g = json_fixture(&format!("families/{fam}/golden.json"));
        for (src, path) in
            [("hf", fixture(&format!("families/{fam}"))), ("gguf", fixture(&format!("families/{fam}/model.gguf")))]
        {
            let loaded = load_model::<B>(&path, device).unwrap_or_else(|e| panic!("{fam} ({src}): {e}"));
            assert_eq!(
                Some(loaded.architecture.as_str()),
                demiurgic_model::families::lookup(g["architectures"][0].as_str().unwrap()).map(|f| f.name),
                "{fam} ({src}): family"
            );
            let m = &loaded.model;
            let eos = g["eos_token_id"].as_u64().unwrap() as u32;
            let cases = g["cases"].as_array().unwrap();
            assert!(!cases.is_empty(), "{fam}: golden.json has no case");
            for (ci, case) in cases.iter().enumerate() {
                let prompt = ids1(&case["prompt"]);
                let t = prompt.len();
                let input = StepInput {
                    tokens: vec![prompt.clone()],
                    positions: vec![(0..t).collect()],
                    key_valid: vec![vec![true; t]],
                };
                let got: Vec<f32> = m.forward_all(&input, None).unwrap().into_data().iter::<f32>().collect();
                let want: Vec<f32> = case["logits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32))
                    .collect();
                let d = max_abs_diff(&got, &want);
                let tol = tolerance::<B>(device, 1e-4, 2e-2);
                assert!(d < tol, "{fam} ({src}) case {ci}: logits differ by {d} (tolerance {tol})");
                // greedy with EOS active, through the cached loop
                let want = ids1(&case["greedy_16"]);
                let cfg = GenerationConfig {
                    max_new_tokens: Some(want.len()),
                    eos_token_ids: Some(vec![eos]),
                    ..GenerationConfig::greedy()
                };
                let out = generate(m, &[prompt.clone()], &cfg, GenerateOptions::default()).unwrap();
                let row = out.row(0);
                let cut = want.iter().position(|&x| x == eos).map_or(want.len(), |p| p + 1);
                if tf32_matmul::<B>(device) {
                    // TF32 logits may flip a near tie: compare up to the first step whose
                    // top-1/top-2 margin is under the TF32 margin (the golden has no margins; the
                    // f32 reference backend, which matches it exactly, gives them)
                    let n = reference_margin_cut(&path, &prompt, &cfg, near_tie_margin::<B>(device)).min(cut);
                    assert!(row.len() >= n, "{fam} ({src}) case {ci}: {} greedy ids, {n} to compare", row.len());
                    assert_eq!(&row[..n], &want[..n], "{fam} ({src}) case {ci}: greedy ids (first {n})");
                } else {
                    assert_eq!(row, &want[..cut], "{fam} ({src}) case {ci}: greedy ids");
                }
            }
        }
    }
}

/// Steps of `cfg`'s greedy run on ndarray (f32) before the first whose top-1/top-2 logit margin
/// is under `margin`.
#[cfg(feature = "ndarray")]
fn reference_margin_cut(path: &std::path::Path, prompt: &[u32], cfg: &GenerationConfig, margin: f64) -> usize {
    let nd = load_model::<burn::backend::NdArray>(path, &Default::default()).unwrap();
    let cfg = GenerationConfig { top_logprobs: 2, raw_logprobs: true, ..cfg.clone() };
    let out = generate(&nd.model, &[prompt.to_vec()], &cfg, GenerateOptions::default()).unwrap();
    let tops = &out.top_logprobs.expect("top logprobs asked")[0];
    assert!(!tops.is_empty(), "no greedy step on the reference");
    tops.iter().position(|t| ((t[0].1 - t[1].1) as f64) < margin).unwrap_or(tops.len())
}

/// Without ndarray there is no f32 reference to take margins from: refused by name.
#[cfg(not(feature = "ndarray"))]
fn reference_margin_cut(_: &std::path::Path, _: &[u32], _: &GenerationConfig, _: f64) -> usize {
    panic!("the greedy comparison under TF32 needs the ndarray backend (the f32 reference) compiled in")
}

per_backend!(families_match_transformers, family_goldens);

/// The family GGUFs (our converter's files) against llama.cpp on the same files
/// (`families/*/llamacpp.json`, made by `scripts/llamacpp_crosscheck.py families`): full-prompt
/// logits, so a file our loader and transformers agree on but llama.cpp reads differently (tensor
/// layout, metadata keys, RoPE style) is caught.
fn family_ggufs_against_llamacpp<B: DecodeOps>(device: &B::Device) {
    let mut checked = 0;
    for fam in families() {
        let rel = format!("families/{fam}/llamacpp.json");
        assert!(fixture(&rel).exists(), "{rel} missing: run scripts/llamacpp_crosscheck.py families");
        let r = json_fixture(&rel);
        let loaded = load_model::<B>(&fixture(&format!("families/{fam}/model.gguf")), device)
            .unwrap_or_else(|e| panic!("{fam} (gguf): {e}"));
        let cases = r["cases"].as_array().expect("cases");
        assert!(!cases.is_empty(), "{rel}: no case");
        for (ci, case) in cases.iter().enumerate() {
            let prompt = ids1(&case["prompt"]);
            let t = prompt.len();
            let input =
                StepInput { tokens: vec![prompt], positions: vec![(0..t).collect()], key_valid: vec![vec![true; t]] };
            let got: Vec<f32> = loaded.model.forward_all(&input, None).unwrap().into_data().iter::<f32>().collect();
            let rows = case["logits"].as_array().unwrap();
            // every position, or (said in positions_note: Mistral's window, which llama.cpp's
            // llama architecture ignores) the first ones
            if rows.len() != t {
                assert!(
                    rows.len() < t && case["positions_note"].as_str().is_some_and(|n| !n.is_empty()),
                    "{rel} case {ci}: {} rows for {t} positions without a positions_note",
                    rows.len()
                );
            }
            let want: Vec<f32> =
                rows.iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32)).collect();
            assert_eq!(got.len() % t, 0, "{rel} case {ci}: logits length");
            let got = &got[..rows.len() * (got.len() / t)];
            assert_eq!(got.len(), want.len(), "{rel} case {ci}: logits length");
            let d = max_abs_diff(got, &want);
            // a file may widen the tolerance for llama.cpp's own approximations, saying why
            let file_tol = r["tolerance"].as_f64().map(|t| {
                assert!(r["tolerance_note"].as_str().is_some_and(|n| !n.is_empty()), "{rel}: tolerance without a note");
                t as f32
            });
            let tol = tolerance::<B>(device, 1e-3, 2e-2).max(file_tol.unwrap_or(0.0));
            assert!(d < tol, "{fam} (gguf) case {ci}: logits differ from llama.cpp's by {d} (tolerance {tol})");
            checked += 1;
        }
    }
    assert!(checked > 0);
}

per_backend!(family_ggufs_match_llamacpp, family_ggufs_against_llamacpp);

fn edited(fam: &str, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("demiurgic-family-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture(&format!("families/{fam}/{f}")), d.join(f)).unwrap();
    }
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(d.join("config.json"), v.to_string()).unwrap();
    d
}

/// What a family's checkpoint asks for and the decoder does not compute: refused by name.
#[test]
fn unsupported_variants_are_refused_by_name() {
    type B = burn::backend::NdArray;
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (edited("qwen2", "qwen-sw", |v| v["use_sliding_window"] = true.into()), "use_sliding_window"),
        (
            edited("phi3", "phi-partial", |v| v["rope_parameters"]["partial_rotary_factor"] = 0.5.into()),
            "partial_rotary_factor",
        ),
        (edited("llama3-rope", "yarn", |v| v["rope_parameters"]["rope_type"] = "yarn".into()), "yarn"),
        (
            edited("llama3-rope", "gpt2", |v| v["architectures"] = serde_json::json!(["GPT2LMHeadModel"])),
            "GPT2LMHeadModel",
        ),
        (edited("llama3-rope", "gelu", |v| v["hidden_act"] = "gelu".into()), "hidden_act"),
        (edited("llama3-rope", "window", |v| v["sliding_window"] = 4.into()), "sliding_window"),
        (edited("phi3", "longrope", |v| v["max_position_embeddings"] = 8192.into()), "longrope"),
        (edited("qwen3", "qwen3-sw", |v| v["use_sliding_window"] = true.into()), "use_sliding_window"),
        (edited("gemma3", "gemma-gelu", |v| v["hidden_activation"] = "gelu".into()), "hidden_activation"),
        (
            edited("gemma3", "gemma-bidi", |v| v["use_bidirectional_attention"] = true.into()),
            "use_bidirectional_attention",
        ),
        (edited("gemma3", "gemma-chunked", |v| v["layer_types"][1] = "chunked_attention".into()), "chunked_attention"),
        (
            edited("gemma3", "gemma-yarn", |v| v["rope_parameters"]["full_attention"]["rope_type"] = "yarn".into()),
            "yarn",
        ),
        (edited("gemma3", "gemma-layers", |v| v["layer_types"] = serde_json::json!(["full_attention"])), "layer_types"),
        (
            edited("qwen3-moe", "moe-shared", |v| v["shared_expert_intermediate_size"] = 32.into()),
            "shared_expert_intermediate_size",
        ),
        (edited("qwen3-moe", "moe-topk", |v| v["num_experts_per_tok"] = 5.into()), "num_experts_per_tok"),
        (edited("qwen3-moe", "moe-dense", |v| v["mlp_only_layers"] = serde_json::json!([2])), "mlp_only_layers"),
    ];
    for (dir, needle) in cases {
        let err = match load_model::<B>(&dir, &Default::default()) {
            Ok(_) => panic!("{needle}: loaded"),
            Err(e) => e,
        };
        assert!(matches!(err, ModelError::Config { .. }), "{needle}: {err}");
        assert!(err.to_string().contains(needle), "{err} should name {needle}");
    }
    // a tensor the model would not use is refused by name (qwen2's biases on a llama config,
    // qwen3's q/k norms on a llama config)
    let dir = edited("qwen3", "qwen3-as-llama", |v| {
        v["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
        v["model_type"] = "llama".into();
    });
    let err = load_model::<B>(&dir, &Default::default()).err().expect("refused").to_string();
    assert!(err.contains("_norm") && err.contains("not used"), "{err}");
    let dir = edited("qwen2", "qwen-as-llama", |v| {
        v["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
        v["model_type"] = "llama".into();
    });
    let err = load_model::<B>(&dir, &Default::default()).err().expect("refused").to_string();
    assert!(err.contains("bias") && err.contains("not used"), "{err}");
}
