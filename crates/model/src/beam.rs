//! Beam search, as transformers 5's vectorised `_beam_search` computes it: per step the
//! log-softmax of every running beam goes through the logits processors, is added to the beam's
//! score, and the best `K = max(2, 1 + #EOS) · num_beams` continuations of each prompt are taken;
//! those that end (EOS or the length limit) among the first `num_beams` become finished
//! candidates scored `sum / length ** length_penalty`, the best unfinished ones run on (the KV
//! cache rows reordered on the device), until `early_stopping`'s rule says no better candidate
//! can come.
use std::time::Instant;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};
use demiurgic_sampling::{EarlyStopping, FinishReason, GenerationConfig, LogitsPipeline, ProcessorContext};

use crate::error::Result;
use crate::generate::{prepare, GenerateOptions, GenerationOutput, GenerationStats, Prepared};
use crate::llama::StepInput;
use crate::lm::CausalLm;
use crate::ops::DecodeOps;

const NEG: f32 = -1.0e9;

/// A finished candidate of one prompt.
#[derive(Clone)]
struct Done {
    score: f32,
    tokens: Vec<u32>,
    finished: bool,
}

pub(crate) fn beam_search<B: DecodeOps, M: CausalLm<B> + ?Sized>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    mut opts: GenerateOptions<'_, B>,
) -> Result<GenerationOutput> {
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

    // running beams: generated tokens and scores per row (row = prompt · nb + beam)
    let mut gen: Vec<Vec<u32>> = vec![vec![]; r];
    let mut running: Vec<f32> = (0..r).map(|i| if i % nb == 0 { 0.0 } else { NEG }).collect();
    let mut done: Vec<Vec<Done>> = vec![vec![Done { score: NEG, tokens: vec![], finished: false }; nb]; np];
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
            rows.iter().zip(&gen).map(|(p, g)| p.iter().chain(g).copied().collect()).collect();
        let ctx = ProcessorContext { sequences: &sequences, num_generated: step, cur_len };
        let logp = pipeline.apply(log_softmax(logits, 1), &ctx);
        let scores = Tensor::<B, 2>::from_data(TensorData::new(running.clone(), [r, 1]), &device);
        let acc = (logp + scores).reshape([np, nb * vocab]);
        let (vals, idx) = acc.topk_with_indices(k, 1);
        let vals: Vec<f32> = vals.into_data().iter::<f32>().collect();
        let idx: Vec<i64> = idx.into_data().iter::<i64>().collect();

        let mut next_src = Vec::with_capacity(r); // global source row of each new running beam
        let mut next_tok = Vec::with_capacity(r);
        let mut next_score = Vec::with_capacity(r);
        let mut all_hit = true;
        let all_finished_before: Vec<bool> = done.iter().map(|d| d.iter().all(|x| x.finished)).collect();
        for p in 0..np {
            let cand: Vec<(f32, usize, u32, bool)> = (0..k)
                .map(|j| {
                    let (v, i) = (vals[p * k + j], idx[p * k + j] as usize);
                    let tok = (i % vocab) as u32;
                    let hit = eos.contains(&tok) || cur_len + 1 >= max_length;
                    (v, i / vocab, tok, hit)
                })
                .collect();
            all_hit &= cand.iter().all(|c| c.3);
            // e. the best unfinished continuations run on
            let mut order: Vec<usize> = (0..k).collect();
            let masked = |j: usize| cand[j].0 + if cand[j].3 { NEG } else { 0.0 };
            order.sort_by(|&a, &b| masked(b).total_cmp(&masked(a)));
            for &j in order.iter().take(nb) {
                next_src.push(p * nb + cand[j].1);
                next_tok.push(cand[j].2);
                next_score.push(masked(j));
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
                let mut tokens = gen[p * nb + c.1].clone();
                tokens.push(c.2);
                merged.push(Done { score: s, tokens, finished: just });
            }
            merged.sort_by(|a, b| b.score.total_cmp(&a.score));
            merged.truncate(nb);
            done[p] = merged;
        }
        step += 1;
        // g. the cache rows and the sequences follow their beams
        cache.reorder(&next_src)?;
        gen = next_src
            .iter()
            .zip(&next_tok)
            .map(|(&s, &t)| {
                let mut g = gen[s].clone();
                g.push(t);
                g
            })
            .collect();
        running = next_score;
        if let Some(cb) = opts.on_step.as_deref_mut() {
            let first: Vec<Option<u32>> = (0..r).map(|i| Some(next_tok[i])).collect();
            cb(&first);
        }
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
    for d in &done {
        for cand in d.iter().take(n) {
            let mut t = cand.tokens.clone();
            let reason = match t.iter().position(|x| eos.contains(x)) {
                Some(e) => {
                    t.truncate(e + 1);
                    FinishReason::Eos
                }
                None => FinishReason::Length,
            };
            lengths.push(t.len());
            reasons.push(reason);
            scores.push(cand.score);
            tokens.push(t);
        }
    }
    let longest = lengths.iter().copied().max().unwrap_or(0);
    for t in &mut tokens {
        t.resize(longest, pad);
    }
    let total_ms = start.elapsed().as_secs_f64() * 1e3;
    let stats = GenerationStats {
        prompt_tokens: prompts.iter().map(Vec::len).sum(),
        generated_tokens: lengths.iter().sum(),
        prefill_ms,
        decode_ms: total_ms - prefill_ms,
        decode_tokens_per_s: if total_ms > prefill_ms {
            ((step - 1) * r) as f64 / ((total_ms - prefill_ms) / 1e3)
        } else {
            0.0
        },
        ..Default::default()
    };
    Ok(GenerationOutput {
        tokens,
        lengths,
        finish_reasons: reasons,
        logprobs: None,
        top_logprobs: None,
        seed: None,
        eos_token_ids: eos,
        sequences_scores: Some(scores),
        stats,
    })
}
