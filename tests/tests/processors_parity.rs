//! Every case of `processors.json` (transformers' logits processors on random scores, plus the
//! OpenAI frequency/presence formula) through our processors: max abs 1e-5, -inf identical.
use burn::tensor::{backend::Backend, Tensor, TensorData};
use demiurgic_sampling::{
    FrequencyPresencePenalty, LogitsProcessor, MinLength, MinNewTokens, MinP, NoRepeatNGram, PenaltyScope,
    ProcessorContext, RepetitionPenalty, Temperature, TopK, TopP, TypicalP,
};
use demiurgic_tests::{ids2, json_fixture, per_backend};
use serde_json::Value;

fn scores(v: &Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().map_or(f32::NEG_INFINITY, |f| f as f32)).collect())
        .collect()
}

fn param(p: &Value, k: &str) -> f64 {
    p[k].as_f64().unwrap_or_else(|| panic!("param {k} missing in {p}"))
}

fn build<B: Backend>(name: &str, p: &Value) -> Box<dyn LogitsProcessor<B>> {
    match name {
        "repetition_penalty" => Box::new(RepetitionPenalty::new(param(p, "penalty") as f32).unwrap()),
        "temperature" => Box::new(Temperature::new(param(p, "temperature") as f32).unwrap()),
        "top_k" => Box::new(TopK::new(param(p, "top_k") as usize).unwrap()),
        "top_p" => Box::new(TopP::new(param(p, "top_p") as f32).unwrap()),
        "typical_p" => Box::new(TypicalP::new(param(p, "typical_p") as f32).unwrap()),
        "min_p" => Box::new(MinP::new(param(p, "min_p") as f32).unwrap()),
        "min_length" => Box::new(MinLength::new(param(p, "min_length") as usize, vec![param(p, "eos_token_id") as u32])),
        "min_new_tokens" => Box::new(MinNewTokens::new(
            param(p, "min_new_tokens") as usize,
            param(p, "prompt_length") as usize,
            vec![param(p, "eos_token_id") as u32],
        )),
        "no_repeat_ngram_size" => Box::new(NoRepeatNGram::new(param(p, "ngram_size") as usize).unwrap()),
        "frequency_presence" => Box::new(
            FrequencyPresencePenalty::new(param(p, "frequency_penalty") as f32, param(p, "presence_penalty") as f32)
                .unwrap()
                .with_scope(PenaltyScope::Generated),
        ),
        other => panic!("processors.json has a processor this test does not know: {other}"),
    }
}

fn parity<B: Backend>(device: &B::Device) {
    let f = json_fixture("processors.json");
    let cases = f["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    for (ci, case) in cases.iter().enumerate() {
        let name = case["processor"].as_str().unwrap();
        let p = &case["params"];
        let input_ids = ids2(&case["input_ids"]);
        let s = scores(&case["scores"]);
        let want = scores(&case["expected"]);
        let (b, v) = (s.len(), s[0].len());
        let cur_len = input_ids[0].len();
        let prompt_len = p.get("prompt_length").and_then(Value::as_u64).map_or(cur_len, |x| x as usize);
        let ctx = ProcessorContext { sequences: &input_ids, num_generated: cur_len - prompt_len, cur_len };
        let logits = Tensor::<B, 2>::from_data(TensorData::new(s.concat(), [b, v]), device);
        let got: Vec<f32> = build::<B>(name, p).process(logits, &ctx).into_data().iter::<f32>().collect();
        for (i, (g, w)) in got.iter().zip(want.concat()).enumerate() {
            let (r, c) = (i / v, i % v);
            if w == f32::NEG_INFINITY || *g == f32::NEG_INFINITY {
                assert_eq!(*g, w, "case {ci} ({name} {p}): row {r} col {c}: -inf mismatch");
            } else {
                assert!((g - w).abs() <= 1e-5, "case {ci} ({name} {p}): row {r} col {c}: {g} vs {w}");
            }
        }
    }
}

per_backend!(processors_match_transformers, parity);
