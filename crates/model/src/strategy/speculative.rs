//! Speculative decoding (transformers' assisted generation), one prompt: candidates come from
//! n-gram matches in the text so far (prompt lookup) or from a draft model with the same
//! vocabulary; the model verifies them in one forward pass over `[last token, candidates…]`,
//! keeps the agreeing prefix plus its own next token, and the rejected positions are rolled back
//! in the KV cache(s). Greedy output equals plain greedy decoding; with sampling, a draft model's
//! candidates go through the speculative-sampling rule (accept with `min(1, p/q)`, else resample
//! from `max(0, p − q)`), prompt-lookup candidates through plain sampling of each position, so
//! the output distribution is the model's. Log-probabilities are the model's (not the draft's)
//! at each emitted token, as plain decoding reports them.
use std::time::Instant;

use burn::tensor::activation::softmax;
use burn::tensor::{s, Tensor};
use demiurgic_sampling::{FinishReason, LogitsPipeline, ProcessorContext, SeqRng};

use super::common::{finish_after, host_logprobs, prepare, stats, Prepared};
use super::contract::{GenOption, Job, Strategy};
use super::types::{GenerationOutput, GenerationStats, TopLogprob};
use crate::decoder::StepInput;
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::lm::CausalLm;
use crate::ops::DecodeOps;

/// What speculative decoding cannot honour, whichever the source of candidates.
const SPECULATIVE_REFUSES: &[(GenOption, &str)] = &[
    (GenOption::Mirostat, "mirostat's state advances one token per step; speculative decoding verifies several"),
    (GenOption::NumReturnSequences, "speculative decoding runs one sequence"),
    (GenOption::Batch, "speculative decoding runs one prompt per call"),
    (GenOption::Cache, "speculative decoding starts from the prompt: a cache passed in cannot be continued"),
    (GenOption::NoCache, "speculative decoding verifies candidates on its KV cache and rolls it back"),
];

/// Speculative decoding with candidates from n-gram matches (`prompt_lookup_num_tokens`).
pub struct PromptLookup;

impl Strategy for PromptLookup {
    const NAME: &'static str = "prompt lookup decoding";
    const REFUSES: &'static [(GenOption, &'static str)] = SPECULATIVE_REFUSES;

    fn run<B: DecodeOps, M: CausalLm<B> + ?Sized>(job: Job<'_, '_, B, M>) -> Result<GenerationOutput> {
        speculative(job)
    }
}

/// Speculative decoding with candidates from a draft model ([`GenerateOptions::draft`]).
pub struct DraftModel;

impl Strategy for DraftModel {
    const NAME: &'static str = "draft-model speculative decoding";
    const REFUSES: &'static [(GenOption, &'static str)] = SPECULATIVE_REFUSES;

    fn run<B: DecodeOps, M: CausalLm<B> + ?Sized>(job: Job<'_, '_, B, M>) -> Result<GenerationOutput> {
        speculative(job)
    }
}

/// transformers' `PromptLookupCandidateGenerator`: the tokens that followed the latest earlier
/// occurrence… of the longest trailing n-gram (n from `max_ngram` down to 1; the first match in
/// the sequence wins), at most `num` of them, cut before an EOS.
pub fn prompt_lookup(seq: &[u32], max_ngram: usize, num: usize, eos: &[u32]) -> Vec<u32> {
    let len = seq.len();
    for n in (1..=max_ngram.min(len.saturating_sub(1))).rev() {
        let tail = &seq[len - n..];
        for idx in 0..=len - n {
            if &seq[idx..idx + n] != tail {
                continue;
            }
            let start = idx + n;
            let end = (start + num).min(len);
            if start < end {
                let mut out = seq[start..end].to_vec();
                if let Some(e) = out.iter().position(|t| eos.contains(t)) {
                    out.truncate(e);
                }
                return out;
            }
        }
    }
    vec![]
}

/// The speculative-sampling rule (Leviathan et al.; transformers' `_speculative_sampling`):
/// `p` are the model's distributions at each candidate position plus one (`k + 1` rows), `q` the
/// draft's at each candidate (`k` rows). Returns how many candidates are accepted and the token
/// that follows them.
pub fn speculative_accept(p: &[Vec<f32>], q: &[Vec<f32>], cand: &[u32], rng: &mut SeqRng) -> (usize, u32) {
    let k = cand.len();
    let mut n = 0;
    while n < k {
        let (pi, qi) = (p[n][cand[n] as usize], q[n][cand[n] as usize]);
        let r = rng.next_f32();
        if qi > 0.0 && r <= pi / qi {
            n += 1;
        } else {
            break;
        }
    }
    let next = if n < k {
        // resample from the residual max(0, p − q), normalised
        let resid: Vec<f32> = p[n].iter().zip(&q[n]).map(|(a, b)| (a - b).max(0.0)).collect();
        let total: f32 = resid.iter().sum();
        if total > 0.0 {
            draw(&resid, total, rng)
        } else {
            draw(&p[n], p[n].iter().sum(), rng)
        }
    } else {
        draw(&p[k], p[k].iter().sum(), rng)
    };
    (n, next)
}

fn draw(w: &[f32], total: f32, rng: &mut SeqRng) -> u32 {
    let u = rng.next_f32() * total;
    let mut acc = 0f32;
    for (i, &x) in w.iter().enumerate() {
        acc += x;
        if u < acc {
            return i as u32;
        }
    }
    w.iter().rposition(|&x| x > 0.0).unwrap_or(0) as u32
}

fn argmax(v: &[f32]) -> u32 {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap_or(0) as u32
}

/// Host rows of a `[t, vocab]` tensor.
fn rows_of<B: DecodeOps>(t: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [n, v] = t.dims();
    let flat: Vec<f32> = t.into_data().iter::<f32>().collect();
    (0..n).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

/// Processed rows of `logits` `[t, vocab]` where row `i` follows `seq[..base + i]`: the
/// distributions (greedy: the processed logits; sampling: their softmax), and with `keep` the
/// processed logits too (for log-probabilities).
fn process_rows<B: DecodeOps>(
    pipeline: &LogitsPipeline<B>,
    logits: Tensor<B, 2>,
    seq: &[u32],
    base: usize,
    prompt_len: usize,
    t0: usize,
    sampling: bool,
    keep: bool,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let [t, _] = logits.dims();
    let (mut dist, mut kept) = (Vec::with_capacity(t), vec![]);
    for i in 0..t {
        let row = logits.clone().slice(s![i..i + 1, ..]);
        let history = vec![seq[..base + i].to_vec()];
        let generated = base + i - prompt_len;
        let ctx = ProcessorContext { sequences: &history, num_generated: generated, cur_len: t0 + generated };
        let processed = pipeline.apply(row, &ctx);
        if keep {
            kept.extend(rows_of(processed.clone()));
        }
        let processed = if sampling { softmax(processed, 1) } else { processed };
        dist.extend(rows_of(processed));
    }
    (dist, kept)
}

/// The log-probabilities plain decoding reports for the tokens emitted from `rows` (row `i`
/// chose `tokens[i]`): of the processed logits, or of the raw ones.
struct LogprobSource {
    raw: bool,
    top: usize,
}

impl LogprobSource {
    fn of(&self, processed: &[Vec<f32>], raw: &[Vec<f32>], tokens: &[u32]) -> Vec<(f32, Vec<TopLogprob>)> {
        let rows = if self.raw { raw } else { processed };
        tokens.iter().enumerate().map(|(i, &t)| host_logprobs(&rows[i], t, self.top)).collect()
    }
}

fn speculative<B: DecodeOps, M: CausalLm<B> + ?Sized>(job: Job<'_, '_, B, M>) -> Result<GenerationOutput> {
    let Job { model, prompts, config, mut opts } = job;
    if prompts.len() != 1 {
        return Err(ModelError::Input(format!("speculative decoding runs one prompt ({} given)", prompts.len())));
    }
    let Prepared { eos, pad: _, rows: _, batch: _, t0, max_new } = prepare::<B>(model.config(), prompts, config, 1)?;
    let draft = opts.draft;
    if let Some(d) = draft {
        if d.config().vocab_size != model.config().vocab_size {
            return Err(ModelError::Input(format!(
                "the draft model's vocabulary has {} tokens, the model's {}: speculative decoding needs the same vocabulary",
                d.config().vocab_size,
                model.config().vocab_size
            )));
        }
    }
    let sampling = config.is_sampling();
    let mut pipeline = LogitsPipeline::<B>::from_config_with(config, &eos, t0, opts.grammar)?;
    if let Some(hook) = opts.pipeline_hook {
        hook(&mut pipeline);
    }
    let seed = match opts.seeds.as_deref() {
        Some([s]) => *s,
        Some(s) => return Err(ModelError::Input(format!("{} seeds given for 1 sequence", s.len()))),
        None => config.seed.unwrap_or(0),
    };
    let mut rng = SeqRng::new(seed, 0);
    let mut draft_rng = SeqRng::new(seed, 1);
    let want_lp = config.logprobs || config.top_logprobs > 0;
    let lp_source = LogprobSource { raw: config.raw_logprobs, top: config.top_logprobs };
    let (mut logprobs, mut top) = (vec![], vec![]);
    let ctx_len = model.config().max_position_embeddings;
    let max_k = config.prompt_lookup_num_tokens.unwrap_or(config.num_assistant_tokens).max(1);
    let cap = (t0 + max_new + max_k + 1).min(ctx_len);
    let mut cache = model.new_cache(1, cap)?;
    let mut draft_cache: Option<KvCache<B>> = match draft {
        Some(d) => Some(d.new_cache(1, cap.min(d.config().max_position_embeddings))?),
        None => None,
    };
    let mut seq: Vec<u32> = prompts[0].clone();
    let mut generated: Vec<u32> = vec![];
    let mut finish = None;
    // candidates per step: the draft's (num_assistant_tokens) or prompt lookup's (at most
    // prompt_lookup_num_tokens), adapted as transformers' "heuristic" schedule adapts the draft's:
    // +2 after a fully accepted round, −1 otherwise (on a CPU, verifying k tokens costs more
    // than one step, so unused candidates are not free)
    let mut k_assist = match config.prompt_lookup_num_tokens {
        Some(n) if draft.is_none() => n.min(4),
        _ => config.num_assistant_tokens,
    };
    let (mut draft_tokens, mut accepted_tokens) = (0usize, 0usize);
    let start = Instant::now();

    // the first token: one ordinary step over the prompt
    let full =
        StepInput { tokens: vec![seq.clone()], positions: vec![(0..t0).collect()], key_valid: vec![vec![true; t0]] };
    let logits = model.forward_last(&full, Some(&mut cache))?;
    let raw = if want_lp && config.raw_logprobs { rows_of(logits.clone()) } else { vec![] };
    let (dist, kept) = process_rows(&pipeline, logits, &seq, t0, t0, t0, sampling, want_lp);
    let first = if sampling { draw(&dist[0], dist[0].iter().sum(), &mut rng) } else { argmax(&dist[0]) };
    let prefill_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut pending = vec![first];
    let mut pending_lp = if want_lp { lp_source.of(&kept, &raw, &pending) } else { vec![] };

    loop {
        // emit the accepted tokens, stopping at EOS / stop strings / the length limit
        for (j, &t) in pending.iter().enumerate() {
            seq.push(t);
            generated.push(t);
            if let Some((l, alts)) = pending_lp.get(j).cloned() {
                logprobs.push(l);
                top.push(alts);
            }
            if let Some(cb) = opts.on_step.as_deref_mut() {
                cb(&[Some(t)]);
            }
            let stop_hit = match opts.stops.as_mut() {
                Some(s) => s.push(0, t)?,
                None => false,
            };
            finish = finish_after(&eos, stop_hit, opts.stop_check, &generated, max_new);
            if finish.is_some() {
                break;
            }
        }
        if finish.is_some() {
            break;
        }
        // the cache holds seq[..len-1]; the last token is fed with the candidates
        let len = seq.len();
        let room = (max_new - generated.len()).saturating_sub(1).min(cap.saturating_sub(len + 1));
        // candidates, and the draft's distributions for speculative sampling
        let (cand, q): (Vec<u32>, Option<Vec<Vec<f32>>>) = match (draft, config.prompt_lookup_num_tokens) {
            (Some(d), _) => {
                let dc = draft_cache.as_mut().expect("a draft cache with a draft model");
                let k = k_assist.min(room);
                let mut cand = vec![];
                let mut qs = vec![];
                let mut dseq = seq.clone();
                for _ in 0..k {
                    let have = dc.len();
                    let feed = &dseq[have..];
                    let n_in = dseq.len();
                    let input = StepInput {
                        tokens: vec![feed.to_vec()],
                        positions: vec![(have..n_in).collect()],
                        key_valid: vec![vec![true; n_in]],
                    };
                    let logits = d.forward_last(&input, Some(dc))?;
                    let t = if !sampling && pipeline.is_empty() {
                        logits.argmax(1).into_data().iter::<i64>().next().unwrap_or(0) as u32
                    } else {
                        let (dist, _) = process_rows(&pipeline, logits, &dseq, n_in, t0, t0, sampling, false);
                        let t = if sampling {
                            draw(&dist[0], dist[0].iter().sum(), &mut draft_rng)
                        } else {
                            argmax(&dist[0])
                        };
                        qs.push(dist.into_iter().next().expect("one row"));
                        t
                    };
                    cand.push(t);
                    dseq.push(t);
                    if eos.contains(&t) {
                        break;
                    }
                }
                (cand, sampling.then_some(qs))
            }
            (None, Some(n)) => {
                (prompt_lookup(&seq, config.max_matching_ngram_size, n.min(k_assist).min(room), &eos), None)
            }
            (None, None) => unreachable!("dispatched for a draft or prompt lookup"),
        };
        let k = cand.len();
        draft_tokens += k;
        // verify: one forward over [last token, candidates]
        let feed: Vec<u32> = std::iter::once(seq[len - 1]).chain(cand.iter().copied()).collect();
        let input = StepInput {
            tokens: vec![feed.clone()],
            positions: vec![(len - 1..len + k).collect()],
            key_valid: vec![vec![true; len + k]],
        };
        let logits = model.forward_all(&input, Some(&mut cache))?;
        let logits = logits.reshape([k + 1, model.config().vocab_size]);
        let mut ext = seq.clone();
        ext.extend_from_slice(&cand);
        let (n, next, kept, raw) = if !sampling && pipeline.is_empty() && !want_lp {
            // greedy without processors or logprobs: the argmax of every row on the device, only
            // ids come back
            let ids: Vec<u32> = logits.argmax(1).into_data().iter::<i64>().map(|x| x as u32).collect();
            let mut n = 0;
            while n < k && ids[n] == cand[n] {
                n += 1;
            }
            (n, ids[n], vec![], vec![])
        } else {
            let raw = if want_lp && config.raw_logprobs { rows_of(logits.clone()) } else { vec![] };
            let (p, kept) = process_rows(&pipeline, logits, &ext, len, t0, t0, sampling, want_lp);
            let (n, next) = match (&q, sampling) {
                (Some(q), true) => speculative_accept(&p, q, &cand, &mut rng),
                (_, true) => {
                    // prompt lookup with sampling: sample each position, keep the agreeing prefix
                    let mut n = 0;
                    loop {
                        let t = draw(&p[n], p[n].iter().sum(), &mut rng);
                        if n < k && t == cand[n] {
                            n += 1;
                        } else {
                            break (n, t);
                        }
                    }
                }
                (_, false) => {
                    let mut n = 0;
                    while n < k && argmax(&p[n]) == cand[n] {
                        n += 1;
                    }
                    (n, argmax(&p[n]))
                }
            };
            (n, next, kept, raw)
        };
        accepted_tokens += n;
        // roll back what was not accepted: the cache keeps seq + the accepted candidates
        cache.truncate(len + n)?;
        if let Some(dc) = draft_cache.as_mut() {
            let keep = dc.len().min(len + n);
            dc.truncate(keep)?;
        }
        if k > 0 {
            k_assist = if n == k { k_assist + 2 } else { k_assist.saturating_sub(1).max(1) };
        }
        pending = cand[..n].to_vec();
        pending.push(next);
        pending_lp = if want_lp { lp_source.of(&kept, &raw, &pending) } else { vec![] };
    }
    let total_ms = start.elapsed().as_secs_f64() * 1e3;
    let n_gen = generated.len();
    let stats = GenerationStats {
        draft_tokens,
        accepted_tokens,
        ..stats(t0, n_gen, prefill_ms, total_ms, n_gen.saturating_sub(1))
    };
    Ok(GenerationOutput {
        lengths: vec![n_gen],
        tokens: vec![generated],
        finish_reasons: vec![finish.unwrap_or(FinishReason::Length)],
        logprobs: config.logprobs.then(|| vec![logprobs]),
        top_logprobs: (config.top_logprobs > 0).then(|| vec![top]),
        seed: sampling.then_some(seed),
        eos_token_ids: eos,
        sequences_scores: None,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_lookup_finds_the_continuation_of_the_trailing_ngram() {
        // "a b c d ... a b" → after "a b" came "c d"
        let seq = [1, 2, 3, 4, 5, 1, 2];
        assert_eq!(prompt_lookup(&seq, 2, 3, &[]), vec![3, 4, 5]);
        assert_eq!(prompt_lookup(&seq, 2, 2, &[]), vec![3, 4]);
        // cut before an EOS
        assert_eq!(prompt_lookup(&seq, 2, 3, &[4]), vec![3]);
        // no earlier occurrence
        assert!(prompt_lookup(&[1, 2, 3], 2, 3, &[]).is_empty());
        // falls back to shorter n-grams
        assert_eq!(prompt_lookup(&[7, 9, 8, 9], 2, 1, &[]), vec![8]);
    }

    /// χ² of observed counts against expected probabilities.
    fn chi2(counts: &[usize], p: &[f32]) -> f64 {
        let n: usize = counts.iter().sum();
        counts
            .iter()
            .zip(p)
            .filter(|(_, &q)| q > 0.0)
            .map(|(&c, &q)| (c as f64 - n as f64 * q as f64).powi(2) / (n as f64 * q as f64))
            .sum()
    }

    #[test]
    fn speculative_sampling_keeps_the_model_distribution() {
        // the first emitted token must follow p[0] whatever the draft q
        let p = vec![vec![0.5, 0.3, 0.15, 0.05], vec![0.25; 4], vec![0.1, 0.2, 0.3, 0.4]];
        let q = vec![vec![0.1, 0.1, 0.7, 0.1], vec![0.7, 0.1, 0.1, 0.1]];
        let (mut counts, mut biased) = (vec![0usize; 4], vec![0usize; 4]);
        let mut rng = SeqRng::new(7, 0);
        for _ in 0..20_000 {
            // the draft proposes from q
            let c0 = draw(&q[0], 1.0, &mut rng);
            let c1 = draw(&q[1], 1.0, &mut rng);
            let (n, next) = speculative_accept(&p, &q, &[c0, c1], &mut rng);
            let first = if n >= 1 { c0 } else { next };
            counts[first as usize] += 1;
            // a deliberately biased rule: accept every candidate
            biased[c0 as usize] += 1;
        }
        // 3 degrees of freedom: χ² > 16.3 has probability 0.001
        let (good, bad) = (chi2(&counts, &p[0]), chi2(&biased, &p[0]));
        assert!(good < 16.3, "speculative sampling drifts from p: χ² = {good}");
        assert!(bad > 16.3, "the test must catch a biased acceptance: χ² = {bad}");
    }
}
