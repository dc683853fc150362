//! What every strategy shares: input checks and sizes ([`prepare`]), one seed resolution, the
//! stopping rule of a row, log-probabilities of chosen tokens, and the timing record.
use demiurgic_sampling::{FinishReason, GenerationConfig};

use super::types::{GenerationStats, TopLogprob};
use crate::batch::Batch;
use crate::decoder::StepInput;
use crate::error::{ModelError, Result};
use crate::ops::DecodeOps;

/// Bytes a generation needs beyond the weights: the KV cache, plus the prefill's activations and
/// attention scores (the largest transient tensors).
pub fn memory_estimate(config: &crate::families::ModelConfig, rows: usize, prompt: usize, new_tokens: usize) -> usize {
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
    mc: &crate::families::ModelConfig,
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

/// The config with its seed resolved: a sampling config without a seed gets one from the clock,
/// so the sampler, XTC and speculative sampling draw from one seed and the output reports it.
pub(crate) fn resolve_seed(config: &GenerationConfig) -> GenerationConfig {
    let mut c = config.clone();
    if c.is_sampling() && c.seed.is_none() {
        c.seed = Some(demiurgic_sampling::clock_seed());
    }
    c
}

/// The stopping rule of every strategy for a row that has just generated `generated` (its last
/// token included): EOS, then a stop string (`stop_hit`) or the user's criterion, then the
/// length limit.
pub(crate) fn finish_after(
    eos: &[u32],
    stop_hit: bool,
    check: Option<&dyn Fn(&[u32]) -> bool>,
    generated: &[u32],
    max_new: usize,
) -> Option<FinishReason> {
    let last = *generated.last()?;
    if eos.contains(&last) {
        Some(FinishReason::Eos)
    } else if stop_hit || check.is_some_and(|f| f(generated)) {
        Some(FinishReason::Stop)
    } else if generated.len() >= max_new {
        Some(FinishReason::Length)
    } else {
        None
    }
}

/// Log-probability of `id` and the `top` best alternatives under host `logits` (one row, not
/// normalised): the log-softmax computed on the host.
pub(crate) fn host_logprobs(logits: &[f32], id: u32, top: usize) -> (f32, Vec<TopLogprob>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|&x| (x - max).exp()).sum::<f32>().ln();
    let lp = logits[id as usize] - lse;
    let mut alts = vec![];
    if top > 0 {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        let k = top.min(order.len());
        order.select_nth_unstable_by(k - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
        order.truncate(k);
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        // only tokens the distribution can draw (as `top_logprobs_of`)
        alts = order.into_iter().map(|i| (i as u32, logits[i] - lse)).filter(|&(_, lp)| lp.is_finite()).collect();
    }
    (lp, alts)
}

/// The timing record: `decode_tokens` tokens were produced after the prefill.
pub(crate) fn stats(
    prompt_tokens: usize,
    generated_tokens: usize,
    prefill_ms: f64,
    total_ms: f64,
    decode_tokens: usize,
) -> GenerationStats {
    let decode_ms = total_ms - prefill_ms;
    GenerationStats {
        prompt_tokens,
        generated_tokens,
        prefill_ms,
        decode_ms,
        decode_tokens_per_s: if decode_ms > 0.0 { decode_tokens as f64 / (decode_ms / 1e3) } else { 0.0 },
        ..Default::default()
    }
}

/// The log-probability of each prompt token given the tokens before it (the first token has
/// none) with the `top` most likely tokens at each position, under the model's raw distribution:
/// what the OpenAI API's `echo` with `logprobs` reports for the prompt. One forward pass over the
/// prompt, no cache.
pub fn prompt_logprobs<B: DecodeOps>(
    model: &crate::decoder::Decoder<B>,
    ids: &[u32],
    top: usize,
) -> Result<Vec<Option<super::StepLogprob>>> {
    let n = ids.len();
    if n == 0 {
        return Err(ModelError::Input("the prompt is empty".into()));
    }
    let mut out = vec![None];
    if n == 1 {
        return Ok(out);
    }
    let input =
        StepInput { tokens: vec![ids.to_vec()], positions: vec![(0..n).collect()], key_valid: vec![vec![true; n]] };
    let v = model.config.vocab_size;
    // position t predicts token t + 1
    let logits = model.forward_all(&input, None)?.reshape([n, v]).slice(burn::tensor::s![0..n - 1, ..]);
    let next: Vec<i64> = ids[1..].iter().map(|&i| i as i64).collect();
    let next =
        burn::tensor::Tensor::<B, 1, burn::tensor::Int>::from_data(next.as_slice(), model.device()).reshape([n - 1, 1]);
    let lps = demiurgic_sampling::sampler::logprobs_of(logits.clone(), next);
    let tops = if top > 0 { demiurgic_sampling::sampler::top_logprobs_of(logits, top) } else { vec![vec![]; n - 1] };
    out.extend(lps.into_iter().zip(tops).map(|(lp, top)| Some(super::StepLogprob { logprob: Some(lp), top })));
    Ok(out)
}
