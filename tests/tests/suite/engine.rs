//! The continuous-batching engine gives each request what `generate` gives it alone: requests
//! with different prompts, lengths, greedy or seeded sampling, `n` > 1, EOS, joining at
//! different steps — including a prompt longer than the running cache (rows right-aligned) and a
//! cache small enough that rows are shifted left while they run.
use std::collections::HashMap;

use demiurgic_model::engine::{prefix_recompute, PREFIX_BLOCK, PREFIX_MIN};
use demiurgic_model::{generate, load_model, DecodeOps, Engine, GenerateOptions, GenerationOutput};
use demiurgic_sampling::GenerationConfig;
use demiurgic_tests::{fixture, per_backend, tolerance};

/// Log-probabilities of the engine against `generate` alone: the same backend, but other batch
/// shapes, so TF32 matmuls (cuda) round differently.
fn lp_tol<B: DecodeOps>(d: &B::Device) -> f32 {
    tolerance::<B>(d, 1e-4, 2e-3)
}

fn greedy(n: usize) -> GenerationConfig {
    GenerationConfig { max_new_tokens: Some(n), logprobs: true, ..GenerationConfig::greedy() }
}

fn sampled(n: usize, seed: u64, rows: usize) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: Some(n),
        seed: Some(seed),
        num_return_sequences: rows,
        logprobs: true,
        ..Default::default()
    }
    .with(|p| (p.temperature.temperature, p.top_k.top_k, p.top_p.top_p) = (1.2, 0, 0.95))
}

fn engine_matches_generate<B: DecodeOps>(d: &B::Device) {
    let m = load_model::<B>(&fixture("tiny-llama"), d).unwrap().model;
    let long: Vec<u32> = (0..24).map(|i| (i * 37 + 11) % 250 + 3).collect();
    // (prompt, config, step at which it joins)
    let base: Vec<(Vec<u32>, GenerationConfig, usize)> = vec![
        (vec![173, 54, 249, 30, 165, 234, 93], greedy(20), 0),
        (vec![29, 227, 38, 202, 119, 225, 43, 7, 221, 149, 200, 145], greedy(10), 0), // ends with EOS
        (vec![146, 71, 26], sampled(14, 5, 2), 2),
        (long.clone(), sampled(8, 9, 1), 4), // longer than the running cache: rows right-aligned
        (vec![1, 2, 3], greedy(30), 6),
        (vec![9, 8, 7, 6], sampled(25, 3, 3), 9),
    ];
    // 48 positions: long runs outgrow it and are shifted left while they run; 128: the cache
    // starts at 64 positions and grows
    for cap in [48, 128] {
        let mut reqs = base.clone();
        if cap == 128 {
            reqs.push((vec![4, 5], greedy(100), 1)); // runs past 64 positions: the cache grows
        }
        let mut sizes = vec![];
        let mut eng = Engine::new(&m, cap).unwrap();
        let mut outs: HashMap<u64, GenerationOutput> = HashMap::new();
        let (mut step, mut next, mut max_rows) = (0, 0, 0);
        loop {
            while next < reqs.len() && reqs[next].2 <= step {
                let (p, c, _) = &reqs[next];
                let s = eng.add(next as u64, p.clone(), c, None).unwrap();
                assert_eq!(s.tokens.len(), c.num_return_sequences);
                if let Some(o) = s.output {
                    outs.insert(s.id, o);
                }
                next += 1;
            }
            if eng.is_idle() && next == reqs.len() {
                break;
            }
            max_rows = max_rows.max(eng.rows());
            sizes.extend(eng.cache_size());
            for s in eng.step().unwrap() {
                if let Some(o) = s.output {
                    assert!(outs.insert(s.id, o).is_none(), "request {} finished twice", s.id);
                }
            }
            step += 1;
            assert!(step < 500, "the engine does not finish");
        }
        assert!(max_rows >= 5, "requests ran side by side ({max_rows} rows at most)");
        if cap == 128 {
            assert_eq!(
                (sizes.first(), sizes.iter().max()),
                (Some(&64), Some(&128)),
                "the cache starts small and grows"
            );
        }
        for (i, (p, c, _)) in reqs.iter().enumerate() {
            let want = generate(&m, &[p.clone()], c, GenerateOptions::default()).unwrap();
            let got = outs.get(&(i as u64)).unwrap_or_else(|| panic!("request {i} never finished"));
            assert_eq!(got.tokens, want.tokens, "request {i} (cache {cap}): tokens");
            assert_eq!(got.lengths, want.lengths, "request {i}: lengths");
            assert_eq!(got.finish_reasons, want.finish_reasons, "request {i}: finish reasons");
            let (g, w) = (got.logprobs.as_ref().unwrap(), want.logprobs.as_ref().unwrap());
            assert_eq!(g.len(), w.len(), "request {i}: logprob rows");
            for (r, (g, w)) in g.iter().zip(w).enumerate() {
                assert_eq!(g.len(), w.len());
                for (k, (a, b)) in g.iter().zip(w).enumerate() {
                    assert!((a - b).abs() < lp_tol::<B>(d), "request {i} row {r} step {k}: logprob {a} vs {b}");
                }
            }
        }
    }
    // cancelling drops a request's rows; the rest go on
    let mut eng = Engine::new(&m, 48).unwrap();
    eng.add(1, vec![5, 6, 7], &greedy(10), None).unwrap();
    eng.add(2, vec![8, 9], &greedy(10), None).unwrap();
    eng.step().unwrap();
    eng.cancel(1).unwrap();
    assert_eq!(eng.rows(), 1);
    let mut last = None;
    while !eng.is_idle() {
        for s in eng.step().unwrap() {
            assert_eq!(s.id, 2);
            last = s.output.or(last);
        }
    }
    let want = generate(&m, &[vec![8, 9]], &greedy(10), GenerateOptions::default()).unwrap();
    assert_eq!(last.unwrap().tokens, want.tokens);
    // a request that does not fit the engine's cache is refused with the numbers
    let e =
        Engine::new(&m, 16).unwrap().add(3, long, &greedy(8), None).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("16"), "{e}");
}

per_backend!(engine_gives_each_request_what_generate_gives_it_alone, engine_matches_generate);

/// Requests started together on one prompt (`add_shared`: one prefill) each get what `generate`
/// gives them alone, finish at their own step and leave the batch on their own — beside a request
/// already running.
fn shared_prefill_matches_generate<B: DecodeOps>(d: &B::Device) {
    let m = load_model::<B>(&fixture("tiny-llama"), d).unwrap().model;
    let prompt = vec![146, 71, 26, 90, 12];
    let group: Vec<(u64, GenerationConfig)> = vec![
        (10, sampled(6, 1, 1)),
        (11, sampled(18, 2, 1)),
        (12, greedy(12)),
        (13, sampled(9, 3, 2)),
        (14, GenerationConfig { max_new_tokens: Some(1), ..greedy(1) }), // done at its first token
    ];
    let mut eng = Engine::new(&m, 64).unwrap();
    let mut outs: HashMap<u64, GenerationOutput> = HashMap::new();
    eng.add(1, vec![5, 6, 7, 8, 9, 10, 11], &greedy(15), None).unwrap();
    eng.step().unwrap();
    let before = eng.rows();
    let steps = eng.add_shared(prompt.clone(), group.iter().map(|(id, c)| (*id, c.clone(), None)).collect()).unwrap();
    assert_eq!(steps.iter().map(|s| s.id).collect::<Vec<_>>(), vec![10, 11, 12, 13, 14]);
    assert_eq!(steps.len(), group.len());
    let mut running = 0;
    for (s, (_, c)) in steps.into_iter().zip(&group) {
        assert_eq!(s.tokens.len(), c.num_return_sequences);
        match s.output {
            Some(o) => {
                outs.insert(s.id, o);
            }
            None => running += c.num_return_sequences,
        }
    }
    assert!(outs.contains_key(&14), "a one-token request finishes when added");
    assert_eq!(eng.rows(), before + running, "the running rows and the group's unfinished rows");
    let mut rows_seen = vec![];
    while !eng.is_idle() {
        for s in eng.step().unwrap() {
            if let Some(o) = s.output {
                assert!(outs.insert(s.id, o).is_none(), "request {} finished twice", s.id);
            }
        }
        rows_seen.push(eng.rows());
    }
    assert!(rows_seen.windows(2).any(|w| w[1] < w[0] && w[1] > 0), "requests leave one by one: {rows_seen:?}");
    for (id, c) in &group {
        let want = generate(&m, &[prompt.clone()], c, GenerateOptions::default()).unwrap();
        let got = &outs[id];
        assert_eq!(got.tokens, want.tokens, "request {id}: tokens");
        assert_eq!(got.finish_reasons, want.finish_reasons, "request {id}: finish reasons");
        let (g, w) = (got.logprobs.as_ref().unwrap(), want.logprobs.as_ref().unwrap());
        assert_eq!(g.len(), w.len(), "request {id}: logprob rows");
        for (g, w) in g.iter().zip(w) {
            assert_eq!(g.len(), w.len(), "request {id}: logprobs per row");
            for (a, b) in g.iter().zip(w) {
                assert!((a - b).abs() < lp_tol::<B>(d), "request {id}: logprob {a} vs {b}");
            }
        }
    }
    let want = generate(&m, &[vec![5, 6, 7, 8, 9, 10, 11]], &greedy(15), GenerateOptions::default()).unwrap();
    assert_eq!(outs[&1].tokens, want.tokens, "the request already running");
    // a bad request in the group refuses the whole group, naming the value
    let bad = sampled(4, 1, 1).with(|p| p.temperature.temperature = -1.0);
    let e = eng.add_shared(prompt, vec![(20, greedy(4), None), (21, bad, None)]).err().map(|e| e.to_string());
    assert!(e.as_deref().is_some_and(|e| e.contains("temperature")), "{e:?}");
    assert!(eng.is_idle(), "nothing of a refused group runs");
}

per_backend!(engine_shared_prefill_requests_match_generate_alone, shared_prefill_matches_generate);

/// The prefix cache: requests whose prompts start like an earlier one's reuse its keys/values
/// (their stats say how many tokens) and still get what `generate` gives them alone.
fn prefix_cache_matches_generate<B: DecodeOps>(d: &B::Device) {
    let m = load_model::<B>(&fixture("tiny-llama"), d).unwrap().model;
    // a recomputed tail of 17 tokens (AVX2_MAX_ROWS + 1 on AVX2 without VNNI:
    // `cpu::group_rows_before_prefill`); the shared prefix is longer by as much, so every case
    // below reuses the same way
    let r = prefix_recompute();
    assert!(r == 17 || r == demiurgic_model::kernels::cpu::AVX2_MAX_ROWS + 1, "recomputed tail {r}");
    let plen = 40 + r - 17;
    let prefix: Vec<u32> = (0..plen as u32).map(|i| (i * 53 + 7) % 250 + 3).collect();
    let with = |tail: &[u32]| prefix.iter().chain(tail).copied().collect::<Vec<u32>>();
    // (prompt, config, tokens the cache should supply: the whole blocks it shares with earlier
    // prompts, but never the prompt's last prefix_recompute() tokens; 0 under PREFIX_MIN)
    let keep = |p: &[u32], shared: usize| {
        let n = (shared / PREFIX_BLOCK * PREFIX_BLOCK).min(p.len() - r);
        if n < PREFIX_MIN {
            0
        } else {
            n
        }
    };
    let first = with(&[17, 18, 19]);
    let second = with(&[21, 22]);
    // longer than the first by the recomputed tail's growth over 17 and 10 tokens: it reuses all
    // the first's whole blocks, and later more of its own (within tiny-llama's 128 positions)
    let longer: Vec<u32> = first.iter().copied().chain(60..70 + (r - 17) as u32).collect();
    let cases: Vec<(Vec<u32>, GenerationConfig, usize)> = vec![
        (first.clone(), greedy(6), 0),
        (second.clone(), greedy(6), keep(&second, plen)), // shares the prefix
        (first.clone(), sampled(5, 4, 2), keep(&first, first.len())), // the same prompt
        (longer.clone(), greedy(5), keep(&longer, first.len())), // extends the first prompt
        (longer.clone(), greedy(3), keep(&longer, longer.len())), // the longer one again: its own blocks
        (vec![9, 8, 7, 6, 5, 4, 3], greedy(4), 0),        // nothing in common
    ];
    assert_eq!(
        (cases[1].2, cases[3].2, cases[4].2),
        (25, (plen + 3) / PREFIX_BLOCK * PREFIX_BLOCK, longer.len() - r),
        "partial, whole-block and own-block reuse"
    );
    assert!(cases[4].2 > cases[3].2, "the longer prompt reuses more of its own blocks: {}", cases[4].2);
    let mut eng = Engine::new(&m, longer.len() + 8).unwrap().with_prefix_cache(1000);
    assert!(!cases.is_empty());
    for (i, (p, c, reused)) in cases.iter().enumerate() {
        let s = eng.add(i as u64, p.clone(), c, None).unwrap();
        let mut out = s.output;
        while out.is_none() {
            for st in eng.step().unwrap() {
                if st.id == i as u64 {
                    out = st.output;
                }
            }
        }
        let got = out.unwrap();
        assert_eq!(got.stats.cached_prompt_tokens, *reused, "case {i}: tokens from the prefix cache");
        let want = generate(&m, &[p.clone()], c, GenerateOptions::default()).unwrap();
        assert_eq!(got.tokens, want.tokens, "case {i}: tokens");
        for (g, w) in got.logprobs.as_ref().unwrap().iter().zip(want.logprobs.as_ref().unwrap()) {
            assert_eq!(g.len(), w.len(), "case {i}");
            for (a, b) in g.iter().zip(w) {
                assert!((a - b).abs() < lp_tol::<B>(d), "case {i}: logprob {a} vs {b}");
            }
        }
    }
}

per_backend!(engine_prefix_cache_reuses_and_matches_generate_alone, prefix_cache_matches_generate);
