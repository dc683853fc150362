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
