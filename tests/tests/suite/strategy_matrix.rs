//! Every strategy × every option ([`Kind::ALL`] × [`GenOption::ALL`]) on the tiny model: the
//! option is refused by name when the strategy declares so, and otherwise honoured — checked
//! against plain greedy / sampling for the lossless strategies (speculative decoding gives plain
//! decoding's tokens, logprobs and stops), against the option's meaning for beam search
//! (log-probabilities against the model's own forward pass, stops within each returned row,
//! bans absent from every row). The README's support table is the one the code declares.
use demiurgic_model::load::TextTokenizer;
use demiurgic_model::strategy::{support_table, Kind};
use demiurgic_model::text::TextStops;
use demiurgic_model::{
    generate, load_model, DecodeOps, Decoder, GenOption, GenerateOptions, GenerationOutput, ModelError, StepInput,
};
use demiurgic_sampling::{Constraint, FinishReason, GenerationConfig, LogitsPipeline, SamplingError};
use demiurgic_tests::{fixture, per_backend, Forbid};

const MAX_NEW: usize = 8;

fn prompts() -> Vec<Vec<u32>> {
    // the first repeats an n-gram, so prompt lookup finds candidates
    vec![vec![1, 17, 42, 99, 5, 17, 42, 99, 5, 17], vec![1, 8, 9, 200]]
}

/// The config a strategy runs with before the option under test is set.
fn base(kind: Kind) -> GenerationConfig {
    let g =
        GenerationConfig { max_new_tokens: Some(MAX_NEW), eos_token_ids: Some(vec![2]), ..GenerationConfig::greedy() };
    match kind {
        Kind::Beam => GenerationConfig { num_beams: 2, ..g },
        Kind::PromptLookup => GenerationConfig { prompt_lookup_num_tokens: Some(3), ..g },
        Kind::Sample | Kind::DraftModel => g,
    }
}

fn sampling(c: GenerationConfig, seed: u64) -> GenerationConfig {
    GenerationConfig { do_sample: true, seed: Some(seed), ..c }
        .with(|p| (p.temperature.temperature, p.top_k.top_k, p.top_p.top_p) = (1.0, 0, 1.0))
}

/// The model's own log-softmax after `seq` (one uncached forward pass).
fn direct_logprobs<B: DecodeOps>(m: &Decoder<B>, seq: &[u32]) -> Vec<f32> {
    let n = seq.len();
    let input =
        StepInput { tokens: vec![seq.to_vec()], positions: vec![(0..n).collect()], key_valid: vec![vec![true; n]] };
    let logits: Vec<f32> = m.forward_last(&input, None).unwrap().into_data().iter::<f32>().collect();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
    logits.iter().map(|x| x - lse).collect()
}

fn rows(out: &GenerationOutput) -> Vec<Vec<u32>> {
    (0..out.tokens.len()).map(|i| out.row(i).to_vec()).collect()
}

struct Ctx<'a, B: DecodeOps> {
    m: &'a Decoder<B>,
    tok: &'a TextTokenizer,
    kind: Kind,
}

impl<'a, B: DecodeOps> Ctx<'a, B> {
    /// Run `kind` on `prompts` with `config`, the draft model (the same weights) where the
    /// strategy is draft-model decoding, and `edit` applied to the options.
    fn run_with<'o>(
        &self,
        prompts: &[Vec<u32>],
        config: &GenerationConfig,
        edit: impl FnOnce(&mut GenerateOptions<'o, B>),
    ) -> Result<GenerationOutput, ModelError>
    where
        'a: 'o,
    {
        let mut opts = GenerateOptions::<'o, B>::default();
        if self.kind == Kind::DraftModel {
            opts.draft = Some(self.m);
        }
        edit(&mut opts);
        generate(self.m, prompts, config, opts)
    }

    fn run(&self, config: &GenerationConfig) -> GenerationOutput {
        self.run_with(&prompts()[..1], config, |_| {}).unwrap()
    }

    /// Decoded text of generated ids (the word tokenizer: "w17w42…").
    fn text(&self, ids: &[u32]) -> String {
        self.tok.decode(ids).unwrap()
    }
}

/// `got` logprobs of row `row` (after `prompt`) are the model's own.
fn assert_direct_logprobs<B: DecodeOps>(m: &Decoder<B>, what: &str, prompt: &[u32], row: &[u32], got: &[f32]) {
    assert_eq!(got.len(), row.len(), "{what}: one logprob per token");
    for (i, (&t, &lp)) in row.iter().zip(got).enumerate() {
        let seq: Vec<u32> = prompt.iter().chain(&row[..i]).copied().collect();
        let want = direct_logprobs(m, &seq)[t as usize];
        assert!((lp - want).abs() < 2e-3, "{what}: step {i} token {t}: logprob {lp} vs the model's {want}");
    }
}

/// Check that `kind` honours `option` (it declares so).
fn honoured<B: DecodeOps>(c: &Ctx<'_, B>, option: GenOption) {
    let (m, kind) = (c.m, c.kind);
    let what = format!("{} × {}", kind.name(), option.field());
    let b = base(kind);
    let all = prompts();
    let p = &all[0];
    let plain = c.run(&b);
    // the lossless strategies give plain decoding's answers: compare with the reference strategy
    let lossless = matches!(kind, Kind::PromptLookup | Kind::DraftModel);
    let reference = |cfg: &GenerationConfig| {
        let r = Ctx { m, tok: c.tok, kind: Kind::Sample };
        r.run(&GenerationConfig { num_beams: 1, prompt_lookup_num_tokens: None, ..cfg.clone() })
    };
    match option {
        GenOption::Mirostat => {
            // Mirostat 2 with a target surprise near 0 keeps only the most likely token: greedy
            let cfg = sampling(b.clone(), 3).with(|p| (p.mirostat.mirostat, p.mirostat.mirostat_tau) = (2, 1e-4));
            assert_eq!(rows(&c.run(&cfg)), rows(&plain), "{what}: a vanishing target surprise is greedy");
        }
        GenOption::Sampling => {
            let a = c.run(&sampling(b.clone(), 5));
            assert_eq!(a.seed, Some(5), "{what}: the seed is reported");
            assert_eq!(rows(&a), rows(&c.run(&sampling(b.clone(), 5))), "{what}: a seed repeats");
            assert_ne!(rows(&a), rows(&c.run(&sampling(b.clone(), 6))), "{what}: another seed differs");
            let top1 = sampling(b.clone(), 7).with(|p| p.top_k.top_k = 1);
            assert_eq!(rows(&c.run(&top1)), rows(&plain), "{what}: top_k 1 is greedy");
        }
        GenOption::Logprobs | GenOption::RawLogprobs => {
            // with a processor, raw and processed differ: raw is the model's own
            let penalty = if option == GenOption::RawLogprobs { 1.5 } else { 1.0 };
            let cfg = GenerationConfig { logprobs: true, raw_logprobs: option == GenOption::RawLogprobs, ..b.clone() }
                .with(|p| p.repetition.repetition_penalty = penalty);
            let out = c.run(&cfg);
            let lps = out.logprobs.as_ref().unwrap_or_else(|| panic!("{what}: no logprobs"));
            assert_eq!(lps.len(), out.tokens.len(), "{what}: logprobs per row");
            for (i, row) in rows(&out).iter().enumerate() {
                assert_direct_logprobs(m, &format!("{what} row {i}"), p, row, &lps[i]);
            }
            if lossless {
                let r = reference(&cfg);
                assert_eq!(rows(&out), rows(&r), "{what}: tokens of plain decoding");
            }
        }
        GenOption::TopLogprobs => {
            let cfg = GenerationConfig { top_logprobs: 3, ..b.clone() };
            let out = c.run(&cfg);
            let top = out.top_logprobs.as_ref().unwrap_or_else(|| panic!("{what}: no top_logprobs"));
            for (i, row) in rows(&out).iter().enumerate() {
                assert_eq!(top[i].len(), row.len(), "{what}: one list per token");
                for (s, alts) in top[i].iter().enumerate() {
                    let seq: Vec<u32> = p.iter().chain(&row[..s]).copied().collect();
                    let want = direct_logprobs(m, &seq);
                    let mut order: Vec<usize> = (0..want.len()).collect();
                    order.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
                    assert_eq!(alts.len(), 3, "{what}: step {s}");
                    for (j, &(id, lp)) in alts.iter().enumerate() {
                        assert!((lp - want[order[j]]).abs() < 2e-3, "{what}: step {s} alternative {j}: {lp}");
                        assert!(
                            (want[id as usize] - lp).abs() < 2e-3,
                            "{what}: step {s}: token {id} is not worth {lp}"
                        );
                    }
                }
            }
        }
        GenOption::Stop => {
            // a stop string the plain run generates mid-row: the first token text not seen before
            let row = plain.row(0);
            let s = (2..row.len().saturating_sub(1))
                .find(|&s| !c.text(&row[..s]).contains(&c.text(&row[s..s + 1])))
                .unwrap_or_else(|| panic!("{what}: plain row {row:?} has no new token to stop on"));
            let stop = c.text(&row[s..s + 1]);
            let cfg = GenerationConfig { stop: vec![stop.clone()], ..b.clone() };
            let out = c
                .run_with(&prompts()[..1], &cfg, |o| o.stops = Some(TextStops::new(c.tok, vec![stop.clone()])))
                .unwrap();
            for (i, r) in rows(&out).iter().enumerate() {
                let (text, before) = (c.text(r), c.text(&r[..r.len() - 1]));
                assert!(!before.contains(&stop), "{what}: row {i} {text:?} runs past the stop {stop:?}");
                let hit = text.contains(&stop);
                match out.finish_reasons[i] {
                    FinishReason::Stop => assert!(hit, "{what}: row {i} {text:?} stopped without the stop"),
                    FinishReason::Eos => {}
                    r => assert!(!hit, "{what}: row {i} {text:?} holds the stop but ends by {r:?}"),
                }
            }
            if kind != Kind::Beam {
                assert_eq!(out.row(0), &row[..=s], "{what}: plain decoding's tokens up to the stop");
                assert_eq!(out.finish_reasons[0], FinishReason::Stop, "{what}");
            }
        }
        GenOption::StopCheck => {
            let check = |g: &[u32]| g.len() >= 3;
            let out = c.run_with(&prompts()[..1], &b, |o| o.stop_check = Some(&check)).unwrap();
            for (i, r) in rows(&out).iter().enumerate() {
                assert!(r.len() <= 3, "{what}: row {i} {r:?} runs past the criterion");
                if r.len() == 3 && !r.contains(&2) {
                    assert_eq!(out.finish_reasons[i], FinishReason::Stop, "{what}: row {i}");
                }
            }
            if kind != Kind::Beam {
                assert_eq!(out.row(0), &plain.row(0)[..3], "{what}: plain decoding's first 3 tokens");
            }
        }
        GenOption::NumReturnSequences => {
            let cfg = if kind == Kind::Beam { b.clone() } else { sampling(b.clone(), 11) };
            let out = c.run(&GenerationConfig { num_return_sequences: 2, ..cfg });
            assert_eq!(out.tokens.len(), 2, "{what}: rows");
            assert_ne!(out.row(0), out.row(1), "{what}: two different sequences");
        }
        GenOption::Batch => {
            let both = c.run_with(&prompts(), &b, |_| {}).unwrap();
            for (i, p) in prompts().iter().enumerate() {
                let alone = c.run_with(std::slice::from_ref(p), &b, |_| {}).unwrap();
                assert_eq!(both.row(i), alone.row(0), "{what}: prompt {i} batched = alone");
            }
        }
        GenOption::Seeds => {
            let cfg = sampling(b.clone(), 0);
            let out = c.run_with(&prompts()[..1], &cfg, |o| o.seeds = Some(vec![9])).unwrap();
            assert_eq!(rows(&out), rows(&c.run(&sampling(b.clone(), 9))), "{what}: seeds[0] is the row's seed");
        }
        GenOption::Cache => {
            let mut cache = m.new_cache(1, 64).unwrap();
            let head = GenerationConfig { max_new_tokens: Some(1), ..b.clone() };
            c.run_with(&[p[..5].to_vec()], &head, |o| o.cache = Some(&mut cache)).unwrap();
            assert_eq!(cache.len(), 5, "{what}: the cache holds the first prompt tokens");
            let out = c.run_with(&prompts()[..1], &b, |o| o.cache = Some(&mut cache)).unwrap();
            assert_eq!(rows(&out), rows(&plain), "{what}: continuing a cache = from scratch");
            assert_eq!(out.stats.cached_prompt_tokens, 5, "{what}");
        }
        GenOption::NoCache => {
            let out = c.run_with(&prompts()[..1], &b, |o| o.use_cache = false).unwrap();
            assert_eq!(rows(&out), rows(&plain), "{what}: recomputing = cached");
        }
        GenOption::Constraint => {
            // "w1+": the first token is w1, w11 or w111, and nothing but EOS can follow it (every
            // token of the word vocabulary starts with "w"). A vocabulary without a token per
            // byte is not llguidance's case: keep the regex to one token.
            let cfg = b.clone().with(|p| p.constraint.constraint = Some(Constraint::Regex("w1+".into())));
            let grammar = c.tok.grammar_compiler(m.config.vocab_size, &[2]).unwrap();
            let out = c.run_with(&prompts()[..1], &cfg, |o| o.grammar = Some(&*grammar)).unwrap();
            for (i, r) in rows(&out).iter().enumerate() {
                assert!(
                    !r.is_empty() && [1, 11, 111].contains(&r[0]) && r[1..].iter().all(|&t| t == 2),
                    "{what}: row {i} {r:?} leaves the regex"
                );
            }
        }
        GenOption::PipelineHook => {
            let x = plain.row(0)[0];
            let hook = move |pl: &mut LogitsPipeline<B>| pl.push(Box::new(Forbid(x)));
            let out = c.run_with(&prompts()[..1], &b, |o| o.pipeline_hook = Some(&hook)).unwrap();
            let banned = c.run(&b.clone().with(|p| p.bias.banned_token_ids = vec![x]));
            for r in rows(&out) {
                assert!(!r.contains(&x), "{what}: {r:?} holds the forbidden {x}");
            }
            assert_eq!(rows(&out), rows(&banned), "{what}: a user ban = banned_token_ids");
        }
        GenOption::Streaming => {
            let mut seen = vec![];
            let mut on_step = |ids: &[Option<u32>]| seen.extend(ids[0]);
            let out = c.run_with(&prompts()[..1], &b, |o| o.on_step = Some(&mut on_step)).unwrap();
            assert_eq!(seen, out.row(0), "{what}: streamed = returned");
        }
    }
    if lossless {
        assert_eq!(rows(&plain), rows(&reference(&b)), "{}: plain decoding's tokens", kind.name());
    }
}

/// Set `option` on `kind` and expect the refusal naming it.
fn refused<B: DecodeOps>(c: &Ctx<'_, B>, option: GenOption) {
    let what = format!("{} × {}", c.kind.name(), option.field());
    let b = base(c.kind);
    let check = |g: &[u32]| g.len() >= 3;
    let mut cache = c.m.new_cache(1, 64).unwrap();
    let mut on_step = |_: &[Option<u32>]| {};
    let one = &prompts()[..1];
    let r = match option {
        GenOption::Mirostat => c.run_with(one, &sampling(b, 1).with(|p| p.mirostat.mirostat = 2), |_| {}),
        GenOption::Sampling => c.run_with(one, &sampling(b, 1), |_| {}),
        GenOption::Logprobs => c.run_with(one, &GenerationConfig { logprobs: true, ..b }, |_| {}),
        GenOption::TopLogprobs => c.run_with(one, &GenerationConfig { top_logprobs: 2, ..b }, |_| {}),
        GenOption::RawLogprobs => {
            c.run_with(one, &GenerationConfig { logprobs: true, raw_logprobs: true, ..b }, |_| {})
        }
        GenOption::Stop => c.run_with(one, &GenerationConfig { stop: vec!["w3".into()], ..b }, |o| {
            o.stops = Some(TextStops::new(c.tok, vec!["w3".into()]))
        }),
        GenOption::StopCheck => c.run_with(one, &b, |o| o.stop_check = Some(&check)),
        GenOption::NumReturnSequences => {
            c.run_with(one, &GenerationConfig { num_return_sequences: 2, ..sampling(b, 1) }, |_| {})
        }
        GenOption::Batch => c.run_with(&prompts(), &b, |_| {}),
        GenOption::Seeds => c.run_with(one, &b, |o| o.seeds = Some(vec![1])),
        GenOption::Cache => c.run_with(one, &b, |o| o.cache = Some(&mut cache)),
        GenOption::NoCache => c.run_with(one, &b, |o| o.use_cache = false),
        GenOption::Constraint => {
            let grammar = c.tok.grammar_compiler(c.m.config.vocab_size, &[2]).unwrap();
            let cfg = b.with(|p| p.constraint.constraint = Some(Constraint::Regex("w1+".into())));
            c.run_with(one, &cfg, |o| o.grammar = Some(&*grammar))
        }
        GenOption::PipelineHook => {
            let hook = |_: &mut LogitsPipeline<B>| {};
            c.run_with(one, &b, |o| o.pipeline_hook = Some(&hook))
        }
        GenOption::Streaming => c.run_with(one, &b, |o| o.on_step = Some(&mut on_step)),
    };
    match r {
        Err(ModelError::Unsupported { option: named, .. }) => assert_eq!(named, option.field(), "{what}"),
        Err(ModelError::Sampling(SamplingError::Invalid { field, .. })) => assert_eq!(field, option.field(), "{what}"),
        Err(e) => panic!("{what}: refused, but not by name: {e}"),
        Ok(_) => panic!("{what}: declared refused, but it ran"),
    }
}

fn matrix<B: DecodeOps>(device: &B::Device) {
    let loaded = load_model::<B>(&fixture("tiny-llama"), device).unwrap();
    let tok = TextTokenizer::from_file(&fixture("word-tokenizer.json")).unwrap();
    let mut cells = 0;
    for kind in Kind::ALL {
        let c = Ctx { m: &loaded.model, tok: &tok, kind };
        for option in GenOption::ALL {
            match kind.refusal(option) {
                Some(_) => refused(&c, option),
                None => honoured(&c, option),
            }
            cells += 1;
        }
    }
    assert_eq!(cells, Kind::ALL.len() * GenOption::ALL.len());
    assert!(cells >= 60, "{cells} cells");
}

per_backend!(every_strategy_honours_or_refuses_every_option, matrix);

/// The README's table is the one the strategies declare.
#[test]
fn readme_shows_the_declared_support_table() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let table = support_table();
    assert!(readme.contains(&table), "README.md lacks the strategy table; paste:\n{table}");
}
