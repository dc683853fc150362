//! Logit bias (OpenAI `logit_bias`) and banned token ids.
use burn::tensor::{backend::Backend, s, Tensor};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};

/// Add a fixed bias to chosen token ids.
#[derive(Debug, Clone)]
pub struct LogitBias {
    bias: Vec<(u32, f32)>,
}

impl LogitBias {
    /// Bias values in [-100, 100] like OpenAI's API.
    pub fn new(bias: Vec<(u32, f32)>) -> Result<Self, SamplingError> {
        if let Some(&(_, b)) = bias.iter().find(|(_, b)| !(-100.0..=100.0).contains(b)) {
            return Err(invalid("logit_bias", b, "values must be in [-100, 100]"));
        }
        Ok(Self { bias })
    }
}

impl<B: Backend> LogitsProcessor<B> for LogitBias {
    fn name(&self) -> &'static str {
        "logit_bias"
    }

    fn process(&self, mut logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let v = logits.dims()[1];
        for &(id, b) in &self.bias {
            let i = id as usize;
            if i < v {
                let col = logits.clone().slice(s![.., i..i + 1]).add_scalar(b);
                logits = logits.slice_assign(s![.., i..i + 1], col);
            }
        }
        logits
    }
}

/// Never generate these ids.
#[derive(Debug, Clone)]
pub struct BannedTokens {
    ids: Vec<u32>,
}

impl BannedTokens {
    pub fn new(ids: Vec<u32>) -> Self {
        Self { ids }
    }
}

impl<B: Backend> LogitsProcessor<B> for BannedTokens {
    fn name(&self) -> &'static str {
        "banned_tokens"
    }

    fn process(&self, logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        crate::util::fill_columns(logits, &self.ids, f32::NEG_INFINITY)
    }
}
