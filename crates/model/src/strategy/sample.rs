//! Greedy and multinomial decoding: one token per row per step through the logits pipeline and
//! the sampler, with per-row EOS, stop strings, streaming and finish reasons. [`SampleState`] is
//! also the per-row state of the batching [`crate::engine::Engine`].
use std::time::Instant;

use burn::tensor::Tensor;
use demiurgic_sampling::sampler::{ids_to_host, logprobs_of, top_logprobs_of};
use demiurgic_sampling::{FinishReason, GenerationConfig, LogitsPipeline, ProcessorContext, Sampler};

use super::common::{finish_after, prepare, resolve_seed, stats, Prepared};
use super::contract::{GenOption, Job, Strategy};
use super::types::{GenerationOutput, GenerationStats, StepLogprob, TopLogprob};
use crate::decoder::StepInput;
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::lm::CausalLm;
use crate::ops::DecodeOps;
use crate::text::TextStops;

/// The per-row state of greedy / multinomial decoding: the logits pipeline, the sampler and what
/// each row has generated. [`sample`] and the batching [`crate::engine::Engine`] both advance it,
/// so a row gets the same tokens whichever drives it.
pub(crate) struct SampleState<B: DecodeOps> {
    config: GenerationConfig,
    pub eos: Vec<u32>,
    pub pad: u32,
    pub t0: usize,
    pub max_new: usize,
    pipeline: LogitsPipeline<B>,
    sampler: Sampler,
    seed_used: Option<u64>,
    sequences: Vec<Vec<u32>>,
    out_tokens: Vec<Vec<u32>>,
    lengths: Vec<usize>,
    finished: Vec<Option<FinishReason>>,
    logprobs: Option<Vec<Vec<f32>>>,
    top: Option<Vec<Vec<Vec<TopLogprob>>>>,
    pub step: usize,
}

impl<B: DecodeOps> SampleState<B> {
    pub(crate) fn new(
        config: &GenerationConfig,
        prep: &Prepared,
        seeds: Option<&Vec<u64>>,
        hook: Option<&dyn Fn(&mut LogitsPipeline<B>)>,
        grammar: Option<&demiurgic_sampling::GrammarCompiler>,
    ) -> Result<Self> {
        let b = prep.rows.len();
        let mut pipeline = LogitsPipeline::<B>::from_config_with(config, &prep.eos, prep.t0, grammar)?;
        if let Some(hook) = hook {
            hook(&mut pipeline);
        }
        let config = &resolve_seed(config);
        let mut seed_used = None;
        let sampler = if config.is_sampling() {
            match seeds {
                Some(s) if s.len() == b => Sampler::multinomial_seeds(s),
                Some(s) => {
                    return Err(ModelError::Input(format!("{} seeds given for {b} sequences", s.len())));
                }
                None => {
                    let seed = config.seed.expect("resolve_seed gives a sampling config its seed");
                    seed_used = Some(seed);
                    Sampler::multinomial(seed, b)
                }
            }
        } else {
            Sampler::Greedy
        };
        Ok(Self {
            config: config.clone(),
            eos: prep.eos.clone(),
            pad: prep.pad,
            t0: prep.t0,
            max_new: prep.max_new,
            pipeline,
            sampler,
            seed_used,
            sequences: prep.rows.clone(),
            out_tokens: vec![Vec::with_capacity(prep.max_new); b],
            lengths: vec![0; b],
            finished: vec![None; b],
            logprobs: config.logprobs.then(|| vec![Vec::new(); b]),
            top: (config.top_logprobs > 0).then(|| vec![Vec::new(); b]),
            step: 0,
        })
    }

    /// One step from the model's raw logits of every row (`[rows, vocab]`): processors, sampling,
    /// logprobs, EOS / stop / length checks. Returns each row's new token (None once finished).
    pub(crate) fn advance(
        &mut self,
        raw: Tensor<B, 2>,
        mut stops: Option<&mut TextStops<'_>>,
        stop_check: Option<&dyn Fn(&[u32]) -> bool>,
    ) -> Result<Vec<Option<u32>>> {
        let config = &self.config;
        let want_lp = config.logprobs || config.top_logprobs > 0;
        let ctx =
            ProcessorContext { sequences: &self.sequences, num_generated: self.step, cur_len: self.t0 + self.step };
        let raw_for_lp = (want_lp && config.raw_logprobs).then(|| raw.clone());
        let (ids_dev, processed) =
            self.pipeline.process_and_sample(&mut self.sampler, raw, &ctx, want_lp && raw_for_lp.is_none());
        let lp_logits = raw_for_lp.or(processed);
        let lp = match (&lp_logits, config.logprobs) {
            (Some(l), true) => Some(logprobs_of(l.clone(), ids_dev.clone())),
            _ => None,
        };
        let tl = match (&lp_logits, config.top_logprobs) {
            (Some(l), k) if k > 0 => Some(top_logprobs_of(l.clone(), k)),
            _ => None,
        };
        let ids = ids_to_host(ids_dev);
        self.step += 1;
        let b = self.out_tokens.len();
        let mut emitted = vec![None; b];
        for i in 0..b {
            if self.finished[i].is_some() {
                self.out_tokens[i].push(self.pad);
                continue;
            }
            let id = ids[i];
            self.out_tokens[i].push(id);
            self.lengths[i] += 1;
            self.sequences[i].push(id);
            emitted[i] = Some(id);
            if let (Some(all), Some(lp)) = (self.logprobs.as_mut(), lp.as_ref()) {
                all[i].push(lp[i]);
            }
            if let (Some(all), Some(tl)) = (self.top.as_mut(), tl.as_ref()) {
                all[i].push(tl[i].clone());
            }
            let stop_hit = match stops.as_deref_mut() {
                Some(s) => s.push(i, id)?,
                None => false,
            };
            self.finished[i] =
                finish_after(&self.eos, stop_hit, stop_check, &self.out_tokens[i][..self.lengths[i]], self.max_new);
        }
        Ok(emitted)
    }

    /// The log-probabilities of the tokens the last [`Self::advance`] emitted (`emitted`: what it
    /// returned), per row; None for a row that emitted nothing or when none were asked for.
    pub(crate) fn last_logprobs(&self, emitted: &[Option<u32>]) -> Vec<Option<StepLogprob>> {
        let want = self.logprobs.is_some() || self.top.is_some();
        (0..emitted.len())
            .map(|i| {
                (want && emitted[i].is_some()).then(|| StepLogprob {
                    logprob: self.logprobs.as_ref().and_then(|l| l[i].last().copied()),
                    top: self.top.as_ref().and_then(|t| t[i].last().cloned()).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Every row has finished (or the length limit is reached).
    pub(crate) fn done(&self) -> bool {
        self.finished.iter().all(Option::is_some) || self.step >= self.max_new
    }

    /// The token each row feeds to the next step (the pad id once a row has finished).
    pub(crate) fn last_tokens(&self) -> Vec<u32> {
        self.out_tokens.iter().map(|r| *r.last().expect("one token per step")).collect()
    }

    pub(crate) fn rows(&self) -> usize {
        self.out_tokens.len()
    }

    pub(crate) fn into_output(self, mut stats: GenerationStats) -> GenerationOutput {
        stats.generated_tokens = self.lengths.iter().sum();
        GenerationOutput {
            finish_reasons: self.finished.into_iter().map(|f| f.unwrap_or(FinishReason::Length)).collect(),
            tokens: self.out_tokens,
            lengths: self.lengths,
            logprobs: self.logprobs,
            top_logprobs: self.top,
            seed: self.seed_used.or(self.config.seed.filter(|_| self.config.is_sampling())),
            eos_token_ids: self.eos,
            sequences_scores: None,
            stats,
        }
    }
}

/// Greedy or multinomial decoding, one token per row per step: the reference every other
/// strategy is checked against, honouring every option.
pub struct Sample;

impl Strategy for Sample {
    const NAME: &'static str = "greedy / sampling";
    const REFUSES: &'static [(GenOption, &'static str)] = &[];

    fn run<B: DecodeOps, M: CausalLm<B> + ?Sized>(job: Job<'_, '_, B, M>) -> Result<GenerationOutput> {
        sample(job)
    }
}

fn sample<B: DecodeOps, M: CausalLm<B> + ?Sized>(job: Job<'_, '_, B, M>) -> Result<GenerationOutput> {
    let Job { model, prompts, config, mut opts } = job;
    let n = config.num_return_sequences;
    let prep = prepare::<B>(model.config(), prompts, config, n)?;
    let (batch, t0, max_new) = (&prep.batch, prep.t0, prep.max_new);
    let b = batch.batch_size();

    // A cache passed in: one row whose cached prefix the prompt extends.
    let reuse = opts.cache.as_ref().map(|c| c.len()).unwrap_or(0);
    if let Some(c) = opts.cache.as_ref() {
        if b != 1 || c.batch() != 1 {
            return Err(ModelError::Input("a cache can be continued for one row only".into()));
        }
        if reuse >= t0 {
            return Err(ModelError::Input(format!(
                "the cache holds {reuse} positions; the prompt must be longer ({t0})"
            )));
        }
        c.check_room(t0 - reuse + max_new - 1)?;
    }
    let mut state = SampleState::<B>::new(config, &prep, opts.seeds.as_ref(), opts.pipeline_hook, opts.grammar)?;

    let mut own_cache: Option<KvCache<B>> =
        if opts.use_cache && opts.cache.is_none() { Some(model.new_cache(b, t0 + max_new)?) } else { None };
    let mut all_tokens = batch.tokens.clone(); // padded, grows (no-cache path)
    let mut key_valid = batch.mask.clone();
    let mut next_pos: Vec<usize> = batch.mask.iter().map(|m| m.iter().filter(|&&x| x).count()).collect();

    let mut input = if reuse > 0 {
        let p = &batch.tokens[0];
        StepInput {
            tokens: vec![p[reuse..].to_vec()],
            positions: vec![(reuse..t0).collect()],
            key_valid: vec![vec![true; t0]],
        }
    } else {
        StepInput { tokens: batch.tokens.clone(), positions: batch.positions.clone(), key_valid: key_valid.clone() }
    };
    let start = Instant::now();
    let mut prefill_ms = 0.0;
    loop {
        let cache = match opts.cache.as_deref_mut() {
            Some(c) => Some(c),
            None => own_cache.as_mut(),
        };
        let raw = model.forward_last(&input, cache)?;
        let emitted = state.advance(raw, opts.stops.as_mut(), opts.stop_check)?;
        if state.step == 1 {
            prefill_ms = start.elapsed().as_secs_f64() * 1e3;
        }
        if let Some(cb) = opts.on_step.as_deref_mut() {
            cb(&emitted);
        }
        if state.done() {
            break;
        }
        let step_tokens = state.last_tokens();
        for (i, kv) in key_valid.iter_mut().enumerate() {
            kv.push(true);
            all_tokens[i].push(step_tokens[i]);
        }
        let positions: Vec<Vec<usize>> = next_pos.iter().map(|&p| vec![p]).collect();
        next_pos.iter_mut().for_each(|p| *p += 1);
        input = if own_cache.is_some() || opts.cache.is_some() {
            StepInput {
                tokens: step_tokens.iter().map(|&x| vec![x]).collect(),
                positions,
                key_valid: key_valid.clone(),
            }
        } else {
            let positions = key_valid.iter().map(|m| crate::batch::positions_from_mask(m)).collect();
            StepInput { tokens: all_tokens.clone(), positions, key_valid: key_valid.clone() }
        };
    }
    let total_ms = start.elapsed().as_secs_f64() * 1e3;
    let decode_steps = state.step.saturating_sub(1);
    let prompt_tokens = prep.rows.iter().map(Vec::len).sum();
    let stats = GenerationStats {
        cached_prompt_tokens: reuse,
        ..stats(prompt_tokens, 0, prefill_ms, total_ms, decode_steps * b)
    };
    Ok(state.into_output(stats))
}
