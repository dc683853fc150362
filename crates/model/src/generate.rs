//! The generation loop: prefill, then one token per step through the logits pipeline and the
//! sampler, with per-sequence EOS, stop strings, streaming and finish reasons.
use std::time::Instant;

use demiurgic_sampling::sampler::{ids_to_host, logprobs_of, top_logprobs_of};
use demiurgic_sampling::{FinishReason, GenerationConfig, LogitsPipeline, ProcessorContext, Sampler};

use crate::batch::Batch;
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::llama::StepInput;
use crate::lm::CausalLm;
use crate::load::TextStops;
use crate::ops::DecodeOps;
use burn::tensor::Tensor;

/// Options of one [`generate`] call that are not sampling parameters.
pub struct GenerateOptions<'a, B: DecodeOps> {
    /// Use the KV cache (default) or recompute the whole sequence every step.
    pub use_cache: bool,
    /// Extra processors run after the built-in ones (before the sampling warpers).
    pub pipeline_hook: Option<&'a dyn Fn(&mut LogitsPipeline<B>)>,
    /// Called after every step with the new token of each row (`None` once a row has finished).
    pub on_step: Option<&'a mut dyn FnMut(&[Option<u32>])>,
    /// Decides whether row `i`'s generated ids should stop (a generic hook; see `stops`).
    pub stop_check: Option<&'a dyn Fn(&[u32]) -> bool>,
    /// Stop strings matched incrementally against each row's decoded text.
    pub stops: Option<TextStops<'a>>,
    /// Explicit per-row seeds (overrides `config.seed`), one per returned sequence.
    pub seeds: Option<Vec<u64>>,
    /// A cache to continue from (one row): its first `len()` positions must hold the prompt's
    /// first `len()` tokens; only the rest of the prompt is computed (multi-turn chat). After
    /// the call it holds the prompt and every generated token but the last.
    pub cache: Option<&'a mut KvCache<B>>,
    /// A draft model for speculative decoding (same vocabulary).
    pub draft: Option<&'a dyn CausalLm<B>>,
    /// The tokenizer's grammar compiler ([`crate::load::TextTokenizer::grammar_compiler`]), needed when
    /// the config has a `constraint` (structured generation).
    pub grammar: Option<&'a demiurgic_sampling::GrammarCompiler>,
}

impl<B: DecodeOps> Default for GenerateOptions<'_, B> {
    fn default() -> Self {
        Self {
            use_cache: true,
            pipeline_hook: None,
            on_step: None,
            stop_check: None,
            stops: None,
            seeds: None,
            cache: None,
            draft: None,
            grammar: None,
        }
    }
}

/// Timing and counts of one call.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens served from a cache passed in (not computed again).
    pub cached_prompt_tokens: usize,
    /// Speculative decoding: candidate tokens proposed, and how many the model accepted.
    pub draft_tokens: usize,
    pub accepted_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub decode_tokens_per_s: f64,
}

/// One alternative of a step: token id and log-probability.
pub type TopLogprob = (u32, f32);

/// Result of [`generate`]: rows grouped per prompt (`num_return_sequences` consecutive rows each).
#[derive(Debug, Clone)]
pub struct GenerationOutput {
    /// Generated ids per row, padded with `pad_token_id` after the row finished (as transformers).
    pub tokens: Vec<Vec<u32>>,
    /// Real generated tokens per row (including the EOS that ended it).
    pub lengths: Vec<usize>,
    pub finish_reasons: Vec<FinishReason>,
    /// Log-probability of each real generated token (when requested), per row `lengths[i]` long.
    pub logprobs: Option<Vec<Vec<f32>>>,
    /// The `top_logprobs` most likely tokens of each real step (when requested).
    pub top_logprobs: Option<Vec<Vec<Vec<TopLogprob>>>>,
    /// The seed the sampler used (drawn from the clock when none was given); None when greedy.
    pub seed: Option<u64>,
    /// The EOS ids in force.
    pub eos_token_ids: Vec<u32>,
    /// Beam search: the final score of each returned row (sum of log-probabilities / length **
    /// length_penalty, as transformers' `sequences_scores`).
    pub sequences_scores: Option<Vec<f32>>,
    pub stats: GenerationStats,
}

impl GenerationOutput {
    /// Generated ids of row `i` without padding.
    pub fn row(&self, i: usize) -> &[u32] {
        &self.tokens[i][..self.lengths[i]]
    }
}

/// Bytes a generation needs beyond the weights: the KV cache, plus the prefill's activations and
/// attention scores (the largest transient tensors).
pub fn memory_estimate(config: &crate::config::LlamaConfig, rows: usize, prompt: usize, new_tokens: usize) -> usize {
    let c = config;
    let positions = prompt + new_tokens;
    let kv = c.num_layers * 2 * c.num_kv_heads * c.head_dim * 4 * rows * positions;
    let acts = rows
        * prompt
        * (c.hidden_size * 4 + 2 * c.intermediate_size + (c.num_heads + 2 * c.num_kv_heads) * c.head_dim)
        * 4;
    let scores = rows * c.num_heads * prompt * positions * 4;
    let logits = rows * c.vocab_size * 4 * 3;
    kv + acts + scores + logits
}

/// Memory the OS reports as available (`MemAvailable`), where it says.
fn available_memory() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: usize = s.lines().find(|l| l.starts_with("MemAvailable:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What every strategy checks and derives before its first step.
pub(crate) struct Prepared {
    pub eos: Vec<u32>,
    pub pad: u32,
    /// Prompts repeated `per_prompt` times (rows grouped per prompt).
    pub rows: Vec<Vec<u32>>,
    pub batch: Batch,
    /// Padded prompt length.
    pub t0: usize,
    pub max_new: usize,
}

/// Validate ids, lengths and memory for `prompts` × `per_prompt` rows.
pub(crate) fn prepare<B: DecodeOps>(
    mc: &crate::config::LlamaConfig,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    per_prompt: usize,
) -> Result<Prepared> {
    let eos: Vec<u32> = config.eos_token_ids.clone().unwrap_or_else(|| mc.eos_token_ids.clone());
    let pad = config.pad_token_id.or(mc.pad_token_id).or(eos.first().copied()).unwrap_or(0);
    for &id in eos.iter().chain(std::iter::once(&pad)) {
        if id as usize >= mc.vocab_size {
            return Err(ModelError::Input(format!(
                "special token id {id} is outside the vocabulary (0..{})",
                mc.vocab_size
            )));
        }
    }
    for (i, p) in prompts.iter().enumerate() {
        if let Some(&bad) = p.iter().find(|&&id| id as usize >= mc.vocab_size) {
            return Err(ModelError::Input(format!(
                "prompt {i}: token id {bad} is outside the vocabulary (0..{})",
                mc.vocab_size
            )));
        }
    }
    // rows grouped per prompt (repeat_interleave)
    let rows: Vec<Vec<u32>> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), per_prompt)).collect();
    let batch = Batch::left_padded(&rows, pad)?;
    let t0 = batch.seq_len();
    let ctx_len = mc.max_position_embeddings;
    if t0 >= ctx_len {
        return Err(ModelError::Input(format!(
            "the prompt has {t0} tokens but the model's context is {ctx_len}: nothing can be generated"
        )));
    }
    let mut max_new = match (config.max_new_tokens, config.max_length) {
        (Some(m), _) => m,
        (None, Some(l)) if l > t0 => l - t0,
        (None, Some(l)) => {
            return Err(ModelError::Input(format!("max_length {l} leaves no room after the {t0}-token prompt")))
        }
        (None, None) => unreachable!("validated"),
    };
    if t0 + max_new > ctx_len {
        return Err(ModelError::Input(format!(
            "prompt ({t0} tokens) + max_new_tokens ({max_new}) exceed the model's context of {ctx_len} tokens"
        )));
    }
    max_new = max_new.max(1);
    let b = batch.batch_size();
    if B::host_weights() {
        let need = memory_estimate(mc, b, t0, max_new);
        if let Some(avail) = available_memory() {
            if need > avail {
                let mib = |x: usize| x as f64 / 1048576.0;
                return Err(ModelError::Input(format!(
                    "this generation needs about {:.0} MiB (KV cache for {b} rows × {} positions, activations) and {:.0} MiB are available: \
                     lower --num-return-sequences, the batch or --max-new-tokens",
                    mib(need),
                    t0 + max_new,
                    mib(avail)
                )));
            }
        }
    }
    Ok(Prepared { eos, pad, rows, batch, t0, max_new })
}

/// Generate continuations of `prompts` (token ids, unpadded) with the strategy the config
/// chooses: beam search (`num_beams` > 1), speculative decoding (prompt lookup or a draft
/// model), or greedy / multinomial sampling.
pub fn generate<B: DecodeOps, M: CausalLm<B> + ?Sized>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    opts: GenerateOptions<'_, B>,
) -> Result<GenerationOutput> {
    config.validate()?;
    if config.num_beams > 1 {
        return crate::beam::beam_search(model, prompts, config, opts);
    }
    if config.prompt_lookup_num_tokens.is_some() || opts.draft.is_some() {
        return crate::speculative::speculative(model, prompts, config, opts);
    }
    sample(model, prompts, config, opts)
}

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
        let mut seed_used = None;
        let sampler = if config.is_sampling() {
            match seeds {
                Some(s) if s.len() == b => Sampler::multinomial_seeds(s),
                Some(s) => {
                    return Err(ModelError::Input(format!("{} seeds given for {b} sequences", s.len())));
                }
                None => {
                    let seed = config.seed.unwrap_or_else(seed_from_time);
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
        let logits = self.pipeline.apply(raw, &ctx);
        let ids_dev = self.sampler.sample_device(logits.clone());
        let lp_logits = if want_lp { Some(raw_for_lp.unwrap_or_else(|| logits.clone())) } else { None };
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
            if self.eos.contains(&id) {
                self.finished[i] = Some(FinishReason::Eos);
            } else if stop_hit || stop_check.is_some_and(|f| f(&self.out_tokens[i][..self.lengths[i]])) {
                self.finished[i] = Some(FinishReason::Stop);
            } else if self.step >= self.max_new {
                self.finished[i] = Some(FinishReason::Length);
            }
        }
        Ok(emitted)
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

/// Greedy or multinomial decoding, one token per row per step.
fn sample<B: DecodeOps, M: CausalLm<B> + ?Sized>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    mut opts: GenerateOptions<'_, B>,
) -> Result<GenerationOutput> {
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
    let decode_ms = total_ms - prefill_ms;
    let decode_steps = state.step.saturating_sub(1);
    let stats = GenerationStats {
        prompt_tokens: prep.rows.iter().map(Vec::len).sum(),
        cached_prompt_tokens: reuse,
        prefill_ms,
        decode_ms,
        decode_tokens_per_s: if decode_ms > 0.0 { (decode_steps * b) as f64 / (decode_ms / 1e3) } else { 0.0 },
        ..Default::default()
    };
    Ok(state.into_output(stats))
}

fn seed_from_time() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}
