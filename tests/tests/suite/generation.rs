//! Generation engine behaviour on the tiny fixture model: seeded reproducibility, batch
//! composition independence, EOS + padding, num_return_sequences grouping, logprobs, user
//! processors, and input errors.
use demiurgic_model::DecodeOps;
use demiurgic_model::{generate, load_model, Decoder, GenerateOptions};
use demiurgic_sampling::{FinishReason, GenerationConfig, LogitsPipeline};
use demiurgic_tests::{fixture, ids1, ids2, json_fixture, per_backend, tolerance, Forbid};

fn model<B: DecodeOps>(d: &B::Device) -> Decoder<B> {
    load_model::<B>(&fixture("tiny-llama"), d).expect("tiny-llama").model
}

fn sampling(seed: u64, n: usize) -> GenerationConfig {
    GenerationConfig { max_new_tokens: Some(n), seed: Some(seed), ..Default::default() }
        .with(|p| (p.temperature.temperature, p.top_k.top_k, p.top_p.top_p) = (1.3, 0, 1.0))
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

/// The tiny golden's batched case: unpadded prompts, expected rows, EOS and pad ids.
struct Batched {
    prompts: Vec<Vec<u32>>,
    want: Vec<Vec<u32>>,
    eos: u32,
    pad: u32,
}

fn batched() -> Batched {
    let g = json_fixture("tiny-llama/golden.json");
    let b = &g["batched_left_padded"];
    let ids = ids2(&b["input_ids"]);
    let mask = ids2(&b["attention_mask"]);
    let prompts = ids
        .iter()
        .zip(&mask)
        .map(|(r, m)| r.iter().zip(m).filter(|(_, &m)| m == 1).map(|(&t, _)| t).collect())
        .collect();
    Batched {
        prompts,
        want: ids2(&b["greedy_16"]),
        eos: g["eos_token_id"].as_u64().unwrap() as u32,
        pad: g["pad_token_id"].as_u64().unwrap() as u32,
    }
}

fn eos_padding_and_grouping<B: DecodeOps>(d: &B::Device) {
    let m = model::<B>(d);
    let Batched { prompts, want, eos, pad } = batched();
    let n = want[0].len();
    // where each reference row ends: after its EOS, or at the length limit
    let ends: Vec<Option<usize>> = want.iter().map(|r| r.iter().position(|&t| t == eos).map(|i| i + 1)).collect();
    assert!(
        ends.iter().any(Option::is_some) && ends.iter().any(Option::is_none),
        "the golden batch needs a row ending with EOS and one running to the limit"
    );
    let g = GenerationConfig {
        max_new_tokens: Some(n),
        eos_token_ids: Some(vec![eos]),
        pad_token_id: Some(pad),
        ..GenerationConfig::greedy()
    };
    let out = generate(&m, &prompts, &g, GenerateOptions::default()).unwrap();
    for (r, end) in ends.iter().enumerate() {
        let len = end.unwrap_or(n);
        assert_eq!(out.lengths[r], len, "row {r}: length");
        assert_eq!(
            out.finish_reasons[r],
            if end.is_some() { FinishReason::Eos } else { FinishReason::Length },
            "row {r}"
        );
        assert_eq!(out.row(r), &want[r][..len], "row {r}: tokens");
        assert_eq!(out.tokens[r].len(), n, "row {r}: padded to the longest row");
        assert!(
            out.tokens[r][len..].iter().all(|&t| t == pad),
            "row {r}: padded with {pad} after its end: {:?}",
            out.tokens[r]
        );
    }
    // min_new_tokens keeps EOS away: an EOS-ending row now runs to the length limit
    let r = ends.iter().position(Option::is_some).unwrap();
    let g2 = g.clone().with(|p| p.min_length.min_new_tokens = n);
    let out = generate(&m, &[prompts[r].clone()], &g2, GenerateOptions::default()).unwrap();
    assert_eq!(out.lengths, vec![n]);
    assert!(!out.row(0).contains(&eos));
    // num_return_sequences: rows grouped per prompt. top_k = 1 makes every sample its prompt's
    // greedy continuation, so a row of the wrong group (or interleaved groups) differs.
    let k = 3;
    let c = GenerationConfig {
        num_return_sequences: k,
        eos_token_ids: Some(vec![eos]),
        pad_token_id: Some(pad),
        logprobs: true,
        ..sampling(3, n)
    }
    .with(|p| p.top_k.top_k = 1);
    let out = generate(&m, &prompts, &c, GenerateOptions::default()).unwrap();
    assert_eq!(out.tokens.len(), prompts.len() * k);
    for (p, w) in want.iter().enumerate() {
        for j in 0..k {
            let row = p * k + j;
            assert_eq!(out.row(row), &w[..out.lengths[row]], "row {row} belongs to prompt {p}");
            assert_eq!(out.lengths[row], ends[p].unwrap_or(n), "row {row}: length");
        }
    }
    // logprobs are of the processed distribution: top_k = 1 leaves one token, probability 1;
    // one value per generated token
    let lp = out.logprobs.as_ref().unwrap();
    for (row, l) in lp.iter().enumerate() {
        assert_eq!(l.len(), out.lengths[row], "row {row}: one logprob per generated token");
        assert!(l.iter().all(|&x| x.abs() < 1e-5), "row {row}: {l:?}");
    }
}

/// Raw logprobs equal transformers' log-softmax of the golden logits at the first step.
fn raw_logprobs_match_the_golden<B: DecodeOps>(d: &B::Device) {
    let m = model::<B>(d);
    let gold = json_fixture("tiny-llama/golden.json");
    let cases = gold["cases"].as_array().unwrap();
    assert!(!cases.is_empty(), "tiny-llama/golden.json has no case");
    for (ci, case) in cases.iter().enumerate() {
        let prompt = ids1(&case["prompt"]);
        let logits: Vec<f64> = case["logits"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + logits.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        let first = ids1(&case["greedy_24"])[0] as usize;
        for raw in [true, false] {
            let g = GenerationConfig {
                max_new_tokens: Some(1),
                logprobs: true,
                raw_logprobs: raw,
                top_logprobs: 3,
                ..GenerationConfig::greedy()
            };
            let out = generate(&m, &[prompt.clone()], &g, GenerateOptions::default()).unwrap();
            assert_eq!(out.row(0), &[first as u32], "case {ci}");
            let got = out.logprobs.as_ref().unwrap()[0][0] as f64;
            // greedy has no processors: the processed distribution is the raw one
            assert!(
                (got - (logits[first] - lse)).abs() < tolerance::<B>(d, 1e-4, 2e-3) as f64,
                "case {ci} raw={raw}: {got} vs {}",
                logits[first] - lse
            );
            let top = &out.top_logprobs.as_ref().unwrap()[0][0];
            assert_eq!(top.len(), 3);
            assert_eq!(top[0].0 as usize, first, "case {ci}: the best alternative is the chosen token");
            assert!(top.windows(2).all(|w| w[0].1 >= w[1].1), "case {ci}: best first");
        }
    }
}

fn user_processor_and_errors<B: DecodeOps>(d: &B::Device) {
    let m = model::<B>(d);
    let gold = json_fixture("tiny-llama/golden.json");
    let case = &gold["cases"][0];
    let p = ids1(&case["prompt"]);
    let first = ids1(&case["greedy_24"])[0];
    // the reference's second choice at the first step
    let last: Vec<f64> = case["logits"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let second =
        (0..last.len()).filter(|&i| i as u32 != first).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap() as u32;
    let g = GenerationConfig { max_new_tokens: Some(4), ..GenerationConfig::greedy() };
    let plain = generate(&m, &[p.clone()], &g, GenerateOptions::default()).unwrap();
    assert_eq!(plain.row(0)[0], first, "without the processor the golden's first token comes");
    let forbid = Forbid(first);
    let hook = |pl: &mut LogitsPipeline<B>| pl.push(Box::new(Forbid(forbid.0)));
    let out =
        generate(&m, &[p.clone()], &g, GenerateOptions { pipeline_hook: Some(&hook), ..Default::default() }).unwrap();
    assert!(!out.row(0).contains(&first), "{:?}", out.row(0));
    assert_eq!(out.row(0)[0], second, "the next best token of the reference comes instead");
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
    let vocab = m.config.vocab_size as u32;
    assert!(e(generate(&m, &[vec![vocab]], &g, GenerateOptions::default())).contains(&vocab.to_string()));
    let long =
        GenerationConfig { max_new_tokens: Some(m.config.max_position_embeddings), ..GenerationConfig::greedy() };
    assert!(e(generate(&m, &[p.clone()], &long, GenerateOptions::default())).contains("context"));
    let bad = GenerationConfig::default().with(|p| p.top_p.top_p = 2.0);
    assert!(e(generate(&m, &[p], &bad, GenerateOptions::default())).contains("top_p"));
}

per_backend!(seeded_sampling_is_reproducible_and_batch_independent, seeded_and_batch_independent);
per_backend!(eos_padding_grouping_and_min_new_tokens, eos_padding_and_grouping);
per_backend!(user_processors_stop_checks_and_errors, user_processor_and_errors);
per_backend!(raw_and_processed_logprobs_match_the_golden, raw_logprobs_match_the_golden);
