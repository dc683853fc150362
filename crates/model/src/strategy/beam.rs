//! Beam search, as transformers 5's vectorised `_beam_search` computes it: per step the
//! log-softmax of every running beam goes through the logits processors, is added to the beam's
//! score, and the best `K = max(2, 1 + #EOS) · num_beams` continuations of each prompt are taken;
//! those that end (EOS or the length limit) among the first `num_beams` become finished
//! candidates scored `sum / length ** length_penalty`, the best unfinished ones run on (the KV
//! cache rows reordered on the device), until `early_stopping`'s rule says no better candidate
//! can come. A candidate also ends on a stop string or the user's stopping criterion, as
//! transformers applies its stopping criteria (`StopStringCriteria` included) to every
//! candidate; the log-probabilities of each returned row's tokens are those of the beam it
//! grew from (`output_scores`).
use std::time::Instant;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};
use demiurgic_sampling::sampler::top_logprobs_of;
use demiurgic_sampling::{EarlyStopping, FinishReason, GenerationConfig, LogitsPipeline, ProcessorContext};

use super::common::{finish_after, prepare, stats, Prepared};
use super::contract::{GenOption, Job, Strategy};
use super::types::{GenerationOutput, TopLogprob};
use crate::decoder::StepInput;
use crate::error::Result;
use crate::lm::CausalLm;
use crate::ops::DecodeOps;

const NEG: f32 = -1.0e9;

/// Beam search (`num_beams` > 1).
pub struct Beam;

impl Strategy for Beam {
    const NAME: &'static str = "beam search";
    const REFUSES: &'static [(GenOption, &'static str)] = &[
        (GenOption::Mirostat, "beam sampling is not implemented: set do_sample false, or num_beams 1 to sample"),
        (GenOption::Sampling, "beam sampling is not implemented: set do_sample false, or num_beams 1 to sample"),
        (GenOption::Seeds, "beam search draws nothing: there is no use for seeds"),
        (GenOption::Cache, "beam search starts from the prompt: a cache passed in cannot be continued"),
        (GenOption::NoCache, "beam search runs on its KV cache (rows reordered every step)"),
        (GenOption::Streaming, "beam tokens are only final when the search ends: nothing can be streamed"),
    ];

    fn run<B: DecodeOps, M: CausalLm<B> + ?Sized>(job: Job<'_, '_, B, M>) -> Result<GenerationOutput> {
        beam_search(job)
    }
}

/// What a beam (running or finished) has generated.
#[derive(Clone, Default)]
struct Grown {
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    top: Vec<Vec<TopLogprob>>,
}

impl Grown {
    fn then(&self, tok: u32, lp: Option<(f32, Vec<TopLogprob>)>) -> Self {
        let mut g = self.clone();
        g.tokens.push(tok);
        if let Some((l, t)) = lp {
            g.logprobs.push(l);
            g.top.push(t);
        }
        g
    }
}

/// A finished candidate of one prompt.
#[derive(Clone)]
struct Done {
    score: f32,
    grown: Grown,
    finished: bool,
    reason: Option<FinishReason>,
}

fn beam_search<B: DecodeOps, M: CausalLm<B> + ?Sized>(job: Job<'_, '_, B, M>) -> Result<GenerationOutput> {
    let Job { model, prompts, config, mut opts } = job;
    let nb = config.num_beams;
    let Prepared { eos, pad, rows, batch, t0, max_new } = prepare::<B>(model.config(), prompts, config, nb)?;
    let np = prompts.len();
    let r = np * nb;
    let vocab = model.config().vocab_size;
    let k = 2usize.max(1 + eos.len()) * nb;
    let max_length = t0 + max_new;
    let lp = config.length_penalty;
    // beams are chosen by score, never drawn: the pipeline without the sampling warpers
    let greedy_cfg = GenerationConfig { do_sample: false, ..config.clone() };
    let mut pipeline = LogitsPipeline::<B>::from_config_with(&greedy_cfg, &eos, t0, opts.grammar)?;
    if let Some(hook) = opts.pipeline_hook {
        hook(&mut pipeline);
    }
    let device = model.device().clone();
    let mut cache = model.new_cache(r, max_length)?;

    let want_lp = config.logprobs || config.top_logprobs > 0;
    // running beams: what each has generated, and its score (row = prompt · nb + beam)
    let mut gen: Vec<Grown> = vec![Grown::default(); r];
    let mut running: Vec<f32> = (0..r).map(|i| if i % nb == 0 { 0.0 } else { NEG }).collect();
    let placeholder = Done { score: NEG, grown: Grown::default(), finished: false, reason: None };
    let mut done: Vec<Vec<Done>> = vec![vec![placeholder; nb]; np];
    let mut unsatisfied = vec![true; np];
    let mut key_valid = batch.mask.clone();
    let mut next_pos: Vec<usize> = batch.mask.iter().map(|m| m.iter().filter(|&&x| x).count()).collect();
    let mut input =
        StepInput { tokens: batch.tokens.clone(), positions: batch.positions.clone(), key_valid: key_valid.clone() };
    let start = Instant::now();
    let mut prefill_ms = 0.0;
    let mut step = 0usize;
    loop {
        let cur_len = t0 + step;
        let logits = model.forward_last(&input, Some(&mut cache))?;
        if step == 0 {
            prefill_ms = start.elapsed().as_secs_f64() * 1e3;
        }
        let sequences: Vec<Vec<u32>> =
            rows.iter().zip(&gen).map(|(p, g)| p.iter().chain(&g.tokens).copied().collect()).collect();
        let ctx = ProcessorContext { sequences: &sequences, num_generated: step, cur_len };
        let base = log_softmax(logits, 1);
        let logp = pipeline.apply(base.clone(), &ctx);
        // the distribution logprobs report: the processed one (renormalised), or the raw one
        let lp_src = want_lp.then(|| log_softmax(if config.raw_logprobs { base } else { logp.clone() }, 1));
        let scores = Tensor::<B, 2>::from_data(TensorData::new(running.clone(), [r, 1]), &device);
        let acc = (logp + scores).reshape([np, nb * vocab]);
        let (vals, idx_dev) = acc.topk_with_indices(k, 1);
        let vals: Vec<f32> = vals.into_data().iter::<f32>().collect();
        // per candidate: its log-probability under its beam's row; per row: the best alternatives
        let (cand_lp, row_top): (Vec<f32>, Vec<Vec<TopLogprob>>) = match &lp_src {
            Some(l) => {
                let lp =
                    l.clone().reshape([np, nb * vocab]).gather(1, idx_dev.clone()).into_data().iter::<f32>().collect();
                let top = if config.top_logprobs > 0 {
                    top_logprobs_of(l.clone(), config.top_logprobs)
                } else {
                    vec![vec![]; r]
                };
                (lp, top)
            }
            None => (vec![], vec![]),
        };
        let idx: Vec<i64> = idx_dev.into_data().iter::<i64>().collect();
        let lp_of = |p: usize, j: usize, src: usize| want_lp.then(|| (cand_lp[p * k + j], row_top[src].clone()));

        let mut next_src = Vec::with_capacity(r); // global source row of each new running beam
        let mut next_tok = Vec::with_capacity(r);
        let mut next_score = Vec::with_capacity(r);
        let mut next_lp = Vec::with_capacity(r);
        let mut all_hit = true;
        let all_finished_before: Vec<bool> = done.iter().map(|d| d.iter().all(|x| x.finished)).collect();
        for p in 0..np {
            // (score, source beam, token, the candidate ends here, why)
            let mut cand: Vec<(f32, usize, u32, bool, Option<FinishReason>)> = Vec::with_capacity(k);
            for j in 0..k {
                let (v, i) = (vals[p * k + j], idx[p * k + j] as usize);
                let (src, tok) = (i / vocab, (i % vocab) as u32);
                let row = p * nb + src;
                let stop_hit = match opts.stops.as_ref() {
                    Some(s) => s.probe(row, tok)?,
                    None => false,
                };
                let mut g = gen[row].tokens.clone();
                g.push(tok);
                let reason = finish_after(&eos, stop_hit, opts.stop_check, &g, max_length - t0);
                cand.push((v, src, tok, reason.is_some(), reason));
            }
            all_hit &= cand.iter().all(|c| c.3);
            // e. the best unfinished continuations run on
            let mut order: Vec<usize> = (0..k).collect();
            let masked = |j: usize| cand[j].0 + if cand[j].3 { NEG } else { 0.0 };
            order.sort_by(|&a, &b| masked(b).total_cmp(&masked(a)));
            for &j in order.iter().take(nb) {
                next_src.push(p * nb + cand[j].1);
                next_tok.push(cand[j].2);
                next_score.push(masked(j));
                next_lp.push(lp_of(p, j, p * nb + cand[j].1));
            }
            // f. finished candidates among the first `nb`, merged with the earlier ones
            let penalty = ((cur_len + 1 - t0) as f32).powf(lp);
            let full = all_finished_before[p] && config.early_stopping == EarlyStopping::True;
            let mut merged: Vec<Done> = done[p].clone();
            for (j, c) in cand.iter().enumerate() {
                let just = c.3 && j < nb;
                let mut s = c.0 / penalty;
                if full {
                    s += NEG;
                }
                if !unsatisfied[p] {
                    s += NEG;
                }
                if !just {
                    s += NEG;
                }
                let grown = gen[p * nb + c.1].then(c.2, lp_of(p, j, p * nb + c.1));
                merged.push(Done { score: s, grown, finished: just, reason: c.4 });
            }
            merged.sort_by(|a, b| b.score.total_cmp(&a.score));
            merged.truncate(nb);
            done[p] = merged;
        }
        step += 1;
        // g. the cache rows and the sequences follow their beams
        cache.reorder(&next_src)?;
        gen = (0..r).map(|i| gen[next_src[i]].then(next_tok[i], next_lp[i].take())).collect();
        if let Some(s) = opts.stops.as_mut() {
            s.reorder(&next_src);
            for (i, &t) in next_tok.iter().enumerate() {
                s.push(i, t)?;
            }
        }
        running = next_score;
        // early-stop heuristic per prompt
        let cur_len = t0 + step;
        for p in 0..np {
            let best_len =
                if config.early_stopping == EarlyStopping::Never && lp > 0.0 { max_length - t0 } else { cur_len - t0 };
            let best_possible = running[p * nb] / (best_len as f32).powf(lp);
            let min_done = done[p].iter().map(|d| d.score).fold(f32::INFINITY, f32::min);
            let beats = done[p].iter().any(|d| best_possible > if d.finished { min_done } else { NEG });
            unsatisfied[p] &= beats;
        }
        let all_finished = done.iter().all(|d| d.iter().all(|x| x.finished));
        let go_on = unsatisfied.iter().any(|&u| u)
            && !(all_finished && config.early_stopping == EarlyStopping::True)
            && !all_hit;
        if !go_on || step >= max_new {
            break;
        }
        for (i, kv) in key_valid.iter_mut().enumerate() {
            kv.push(true);
            let _ = i;
        }
        let positions: Vec<Vec<usize>> = next_src.iter().map(|&s| vec![next_pos[s]]).collect();
        next_pos = next_src.iter().map(|&s| next_pos[s] + 1).collect();
        input =
            StepInput { tokens: next_tok.iter().map(|&t| vec![t]).collect(), positions, key_valid: key_valid.clone() };
    }

    // the best `num_return_sequences` of each prompt, cut after the first EOS
    let n = config.num_return_sequences;
    let (mut tokens, mut lengths, mut reasons, mut scores) = (vec![], vec![], vec![], vec![]);
    let (mut logprobs, mut top) = (vec![], vec![]);
    for d in &done {
        for cand in d.iter().take(n) {
            let mut g = cand.grown.clone();
            let reason = match (cand.reason, g.tokens.iter().position(|x| eos.contains(x))) {
                (Some(r), _) => r,
                (None, Some(e)) => {
                    g.tokens.truncate(e + 1);
                    FinishReason::Eos
                }
                (None, None) => FinishReason::Length,
            };
            g.logprobs.truncate(g.tokens.len());
            g.top.truncate(g.tokens.len());
            lengths.push(g.tokens.len());
            reasons.push(reason);
            scores.push(cand.score);
            tokens.push(g.tokens);
            logprobs.push(g.logprobs);
            top.push(g.top);
        }
    }
    let longest = lengths.iter().copied().max().unwrap_or(0);
    for t in &mut tokens {
        t.resize(longest, pad);
    }
    let total_ms = start.elapsed().as_secs_f64() * 1e3;
    let prompt_tokens = prompts.iter().map(Vec::len).sum();
    let stats = stats(prompt_tokens, lengths.iter().sum(), prefill_ms, total_ms, (step - 1) * r);
    Ok(GenerationOutput {
        tokens,
        lengths,
        finish_reasons: reasons,
        logprobs: config.logprobs.then_some(logprobs),
        top_logprobs: (config.top_logprobs > 0).then_some(top),
        seed: None,
        eos_token_ids: eos,
        sequences_scores: Some(scores),
        stats,
    })
}
