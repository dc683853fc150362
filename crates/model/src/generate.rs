//! The generation loop: prefill, then one token per step through the logits pipeline and the
//! sampler, with per-sequence EOS, stop strings, streaming and finish reasons.
use std::time::Instant;

use crate::ops::DecodeOps;
use demiurgic_sampling::sampler::{ids_to_host, logprobs_of};
use demiurgic_sampling::{FinishReason, GenerationConfig, LogitsPipeline, ProcessorContext, Sampler};

use crate::batch::Batch;
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::llama::{Llama, StepInput};

/// Options of one [`generate`] call that are not sampling parameters.
pub struct GenerateOptions<'a, B: DecodeOps> {
    /// Use the KV cache (default) or recompute the whole sequence every step.
    pub use_cache: bool,
    /// Extra processors run after the built-in ones (before the sampling warpers).
    pub pipeline_hook: Option<&'a dyn Fn(&mut LogitsPipeline<B>)>,
    /// Called after every step with the new token of each row (`None` once a row has finished).
    pub on_step: Option<&'a mut dyn FnMut(&[Option<u32>])>,
    /// Decides whether row `i`'s generated ids contain a stop string (needs a tokenizer).
    pub stop_check: Option<&'a dyn Fn(&[u32]) -> bool>,
    /// Explicit per-row seeds (overrides `config.seed`), one per returned sequence.
    pub seeds: Option<Vec<u64>>,
}

impl<B: DecodeOps> Default for GenerateOptions<'_, B> {
    fn default() -> Self {
        Self { use_cache: true, pipeline_hook: None, on_step: None, stop_check: None, seeds: None }
    }
}

/// Timing and counts of one call.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub decode_tokens_per_s: f64,
}

/// Result of [`generate`]: rows grouped per prompt (`num_return_sequences` consecutive rows each).
#[derive(Debug, Clone)]
pub struct GenerationOutput {
    /// Generated ids per row, padded with `pad_token_id` after the row finished (as transformers).
    pub tokens: Vec<Vec<u32>>,
    /// Real generated tokens per row (including the EOS that ended it).
    pub lengths: Vec<usize>,
    pub finish_reasons: Vec<FinishReason>,
    /// Log-probability of each generated token under the processed distribution (when requested).
    pub logprobs: Option<Vec<Vec<f32>>>,
    pub stats: GenerationStats,
}

impl GenerationOutput {
    /// Generated ids of row `i` without padding.
    pub fn row(&self, i: usize) -> &[u32] {
        &self.tokens[i][..self.lengths[i]]
    }
}

/// Generate continuations of `prompts` (token ids, unpadded).
pub fn generate<B: DecodeOps>(
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    mut opts: GenerateOptions<'_, B>,
) -> Result<GenerationOutput> {
    config.validate()?;
    let mc = &model.config;
    let eos: Vec<u32> = config.eos_token_ids.clone().unwrap_or_else(|| mc.eos_token_ids.clone());
    let pad = config.pad_token_id.or(mc.pad_token_id).or(eos.first().copied()).unwrap_or(0);
    for &id in eos.iter().chain(std::iter::once(&pad)) {
        if id as usize >= mc.vocab_size {
            return Err(ModelError::Input(format!("special token id {id} is outside the vocabulary (0..{})", mc.vocab_size)));
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
    // num_return_sequences: rows grouped per prompt (repeat_interleave).
    let n = config.num_return_sequences;
    let rows: Vec<Vec<u32>> = prompts.iter().flat_map(|p| std::iter::repeat(p.clone()).take(n)).collect();
    let batch = Batch::left_padded(&rows, pad)?;
    let (b, t0) = (batch.batch_size(), batch.seq_len());
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

    let mut pipeline = LogitsPipeline::<B>::from_config(config, &eos, t0)?;
    if let Some(hook) = opts.pipeline_hook {
        hook(&mut pipeline);
    }
    let mut sampler = if config.is_sampling() {
        match &opts.seeds {
            Some(s) if s.len() == b => Sampler::multinomial_seeds(s),
            Some(s) => {
                return Err(ModelError::Input(format!("{} seeds given for {b} sequences", s.len())));
            }
            None => Sampler::multinomial(config.seed.unwrap_or_else(seed_from_time), b),
        }
    } else {
        Sampler::Greedy
    };

    let mut cache: Option<KvCache<B>> = if opts.use_cache { Some(model.new_cache(b, t0 + max_new)?) } else { None };
    let mut sequences: Vec<Vec<u32>> = rows.clone();
    let mut all_tokens = batch.tokens.clone(); // padded, grows (no-cache path)
    let mut key_valid = batch.mask.clone();
    let mut next_pos: Vec<usize> = batch.mask.iter().map(|m| m.iter().filter(|&&x| x).count()).collect();
    let mut out_tokens: Vec<Vec<u32>> = vec![Vec::with_capacity(max_new); b];
    let mut lengths = vec![0usize; b];
    let mut finished: Vec<Option<FinishReason>> = vec![None; b];
    let mut logprobs: Option<Vec<Vec<f32>>> = config.logprobs.then(|| vec![Vec::new(); b]);

    let mut input = StepInput { tokens: batch.tokens.clone(), positions: batch.positions.clone(), key_valid: key_valid.clone() };
    let start = Instant::now();
    let mut prefill_ms = 0.0;
    let mut step = 0usize;
    loop {
        let logits = model.forward_last(&input, cache.as_mut())?;
        let ctx = ProcessorContext { sequences: &sequences, num_generated: step, cur_len: t0 + step };
        let logits = pipeline.apply(logits, &ctx);
        let ids_dev = sampler.sample_device(logits.clone());
        let lp = logprobs.as_ref().map(|_| logprobs_of(logits, ids_dev.clone()));
        let ids = ids_to_host(ids_dev);
        if step == 0 {
            prefill_ms = start.elapsed().as_secs_f64() * 1e3;
        }
        step += 1;
        let mut emitted = vec![None; b];
        for i in 0..b {
            if finished[i].is_some() {
                out_tokens[i].push(pad);
                continue;
            }
            let id = ids[i];
            out_tokens[i].push(id);
            lengths[i] += 1;
            sequences[i].push(id);
            emitted[i] = Some(id);
            if let (Some(all), Some(lp)) = (logprobs.as_mut(), lp.as_ref()) {
                all[i].push(lp[i]);
            }
            if eos.contains(&id) {
                finished[i] = Some(FinishReason::Eos);
            } else if opts.stop_check.is_some_and(|f| f(&out_tokens[i][..lengths[i]])) {
                finished[i] = Some(FinishReason::Stop);
            } else if step >= max_new {
                finished[i] = Some(FinishReason::Length);
            }
        }
        if let Some(cb) = opts.on_step.as_deref_mut() {
            cb(&emitted);
        }
        if finished.iter().all(Option::is_some) || step >= max_new {
            break;
        }
        let step_tokens: Vec<u32> = (0..b).map(|i| *out_tokens[i].last().expect("one token per step")).collect();
        for (i, kv) in key_valid.iter_mut().enumerate() {
            kv.push(true);
            all_tokens[i].push(step_tokens[i]);
        }
        let positions: Vec<Vec<usize>> = next_pos.iter().map(|&p| vec![p]).collect();
        next_pos.iter_mut().for_each(|p| *p += 1);
        input = if cache.is_some() {
            StepInput { tokens: step_tokens.iter().map(|&x| vec![x]).collect(), positions, key_valid: key_valid.clone() }
        } else {
            let positions = key_valid.iter().map(|m| crate::batch::positions_from_mask(m)).collect();
            StepInput { tokens: all_tokens.clone(), positions, key_valid: key_valid.clone() }
        };
    }
    let finish_reasons = finished.into_iter().map(|f| f.unwrap_or(FinishReason::Length)).collect();
    let total_ms = start.elapsed().as_secs_f64() * 1e3;
    let decode_ms = total_ms - prefill_ms;
    let decode_steps = step.saturating_sub(1);
    let stats = GenerationStats {
        prompt_tokens: rows.iter().map(Vec::len).sum(),
        generated_tokens: lengths.iter().sum(),
        prefill_ms,
        decode_ms,
        decode_tokens_per_s: if decode_ms > 0.0 { (decode_steps * b) as f64 / (decode_ms / 1e3) } else { 0.0 },
    };
    Ok(GenerationOutput { tokens: out_tokens, lengths, finish_reasons, logprobs, stats })
}

fn seed_from_time() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}
