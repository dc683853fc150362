//! Every case of `processors.json` (transformers' logits processors on random scores, plus the
//! OpenAI frequency/presence formula) through our processors: max abs 1e-5, -inf identical.
use burn::tensor::backend::Backend;
use demiurgic_tests::processors_fixture::{run_case, scores};
use demiurgic_tests::{json_fixture, per_backend};

fn parity<B: Backend>(device: &B::Device) {
    let f = json_fixture("processors.json");
    let cases = f["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    for (ci, case) in cases.iter().enumerate() {
        let (name, p) = (case["processor"].as_str().unwrap(), &case["params"]);
        let want = scores(&case["expected"]);
        let (got, _, v) = run_case::<B>(case, device);
        assert_eq!(got.len(), want.concat().len(), "case {ci} ({name}): output length");
        for (i, (g, w)) in got.iter().zip(want.concat()).enumerate() {
            let (r, c) = (i / v, i % v);
            assert!(!g.is_nan(), "case {ci} ({name} {p}): row {r} col {c}: NaN");
            if w == f32::NEG_INFINITY || *g == f32::NEG_INFINITY {
                assert_eq!(*g, w, "case {ci} ({name} {p}): row {r} col {c}: -inf mismatch");
            } else {
                assert!((g - w).abs() <= 1e-5, "case {ci} ({name} {p}): row {r} col {c}: {g} vs {w}");
            }
        }
    }
}

per_backend!(processors_match_transformers, parity);

/// The samplers llama.cpp has and transformers has not (top-nσ, dynamic temperature, XTC, DRY,
/// OpenAI frequency/presence): every such case also against llama.cpp's own sampler on the same
/// row (`llamacpp`, made by `scripts/llamacpp_crosscheck.py samplers`; null = removed). A case
/// llama.cpp cannot express says why in `llamacpp_not_comparable`.
const LLAMACPP_SAMPLERS: &[&str] = &["top_n_sigma", "dynamic_temperature", "xtc", "dry", "frequency_presence"];

fn llamacpp_parity<B: Backend>(device: &B::Device) {
    let f = json_fixture("processors.json");
    let cases = f["cases"].as_array().expect("cases");
    let mut checked = std::collections::BTreeMap::<&str, usize>::new();
    for (ci, case) in cases.iter().enumerate() {
        let (name, p) = (case["processor"].as_str().unwrap(), &case["params"]);
        if !LLAMACPP_SAMPLERS.contains(&name) {
            continue;
        }
        if let Some(why) = case["llamacpp_not_comparable"].as_str() {
            assert!(!why.is_empty(), "case {ci}: llamacpp_not_comparable without a reason");
            continue;
        }
        assert!(
            case["llamacpp"].is_array(),
            "case {ci} ({name}): no llama.cpp output (scripts/llamacpp_crosscheck.py)"
        );
        let want = scores(&case["llamacpp"]);
        let (got, _, v) = run_case::<B>(case, device);
        assert_eq!(got.len(), want.concat().len(), "case {ci} ({name}): output length");
        for (i, (g, w)) in got.iter().zip(want.concat()).enumerate() {
            let (r, c) = (i / v, i % v);
            if w == f32::NEG_INFINITY || *g == f32::NEG_INFINITY {
                assert_eq!(
                    *g, w,
                    "case {ci} ({name} {p}): row {r} col {c}: removed by one side only (ours {g}, llama.cpp {w})"
                );
            } else {
                // llama.cpp computes in f32 (entropy, std): a few ulps of the logit's size
                assert!(
                    (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                    "case {ci} ({name} {p}): row {r} col {c}: {g} vs llama.cpp {w}"
                );
            }
        }
        *checked.entry(name).or_default() += 1;
    }
    for s in LLAMACPP_SAMPLERS {
        assert!(checked.get(s).copied().unwrap_or(0) > 0, "no {s} case was compared with llama.cpp");
    }
}

per_backend!(processors_match_llamacpp, llamacpp_parity);
