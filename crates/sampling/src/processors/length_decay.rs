//! transformers' `ExponentialDecayLengthPenalty`: after `start` generated positions, EOS logits
//! grow by `|logit| · (factor^(n) − 1)` where `n` counts the positions past the start.
use burn::tensor::{backend::Backend, s, Tensor};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};
use serde::{Deserialize, Serialize};

use super::{Boxed, BuildContext, ProcessorConfig};

/// transformers' `exponential_decay_length_penalty`: `(start_index, decay_factor)`; after
/// `start_index` new tokens the EOS logits grow by `|logit| · (factor^n − 1)` (None = off).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LengthDecayConfig {
    pub exponential_decay_length_penalty: Option<(usize, f32)>,
}

impl ProcessorConfig for LengthDecayConfig {
    fn validate(&self) -> Result<(), SamplingError> {
        if let Some((_, f)) = self.exponential_decay_length_penalty {
            if !(f.is_finite() && f > 0.0) {
                return Err(invalid(
                    "exponential_decay_length_penalty",
                    f,
                    "the decay factor must be a finite number > 0",
                ));
            }
        }
        Ok(())
    }

    fn build<B: Backend>(&self, ctx: &BuildContext<'_>, out: &mut Boxed<B>) -> Result<(), SamplingError> {
        if let Some((start, factor)) = self.exponential_decay_length_penalty {
            if !ctx.eos.is_empty() {
                out.push(Box::new(ExponentialDecayLengthPenalty::new(
                    start,
                    factor,
                    ctx.eos.to_vec(),
                    ctx.prompt_len,
                )?));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct ExponentialDecayLengthPenalty {
    regulation_start: usize,
    factor: f32,
    eos: Vec<u32>,
}

impl ExponentialDecayLengthPenalty {
    /// `(start_index, decay_factor)` as transformers' `exponential_decay_length_penalty`;
    /// `prompt_len` is the padded prompt length.
    pub fn new(start: usize, factor: f32, eos: Vec<u32>, prompt_len: usize) -> Result<Self, SamplingError> {
        if !(factor.is_finite() && factor > 0.0) {
            return Err(invalid(
                "exponential_decay_length_penalty",
                factor,
                "the decay factor must be a finite number > 0 (1 = off)",
            ));
        }
        Ok(Self { regulation_start: start + prompt_len, factor, eos })
    }
}

impl<B: Backend> LogitsProcessor<B> for ExponentialDecayLengthPenalty {
    fn name(&self) -> &'static str {
        "exponential_decay_length_penalty"
    }

    fn process(&self, mut logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        if ctx.cur_len <= self.regulation_start {
            return logits;
        }
        let n = (ctx.cur_len - self.regulation_start) as i32;
        let scale = self.factor.powi(n) - 1.0;
        let v = logits.dims()[1];
        for &e in &self.eos {
            let i = e as usize;
            if i < v {
                let col = logits.clone().slice(s![.., i..i + 1]);
                let pen = col.clone().abs().mul_scalar(scale);
                let pen = pen.clone().mask_fill(col.clone().is_inf(), 0.0);
                logits = logits.slice_assign(s![.., i..i + 1], col + pen);
            }
        }
        logits
    }
}
