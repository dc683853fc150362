//! `min_length` / `min_new_tokens`: EOS is masked (-inf) until the length is reached.
use burn::tensor::{backend::Backend, s, Tensor};

use crate::pipeline::{LogitsProcessor, ProcessorContext};
use serde::{Deserialize, Serialize};

use super::{Boxed, BuildContext, ProcessorConfig};
use crate::error::SamplingError;

/// transformers' `min_length` (prompt + new tokens) and `min_new_tokens`: EOS is masked until
/// reached (0 = off).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MinLengthConfig {
    pub min_length: usize,
    pub min_new_tokens: usize,
}

impl ProcessorConfig for MinLengthConfig {
    fn build<B: Backend>(&self, ctx: &BuildContext<'_>, out: &mut Boxed<B>) -> Result<(), SamplingError> {
        if self.min_length > 0 && !ctx.eos.is_empty() {
            out.push(Box::new(MinLength::new(self.min_length, ctx.eos.to_vec())));
        }
        if self.min_new_tokens > 0 && !ctx.eos.is_empty() {
            out.push(Box::new(MinNewTokens::new(self.min_new_tokens, ctx.prompt_len, ctx.eos.to_vec())));
        }
        Ok(())
    }
}

fn mask_eos<B: Backend>(mut logits: Tensor<B, 2>, eos: &[u32]) -> Tensor<B, 2> {
    let v = logits.dims()[1];
    for &e in eos {
        let e = e as usize;
        if e < v {
            logits = logits.slice_fill(s![.., e..e + 1], f32::NEG_INFINITY);
        }
    }
    logits
}

/// EOS banned while the total (padded) length is below `min_length`.
#[derive(Debug, Clone)]
pub struct MinLength {
    min_length: usize,
    eos: Vec<u32>,
}

impl MinLength {
    pub fn new(min_length: usize, eos: Vec<u32>) -> Self {
        Self { min_length, eos }
    }
}

impl<B: Backend> LogitsProcessor<B> for MinLength {
    fn name(&self) -> &'static str {
        "min_length"
    }

    fn process(&self, logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        if ctx.cur_len < self.min_length {
            mask_eos(logits, &self.eos)
        } else {
            logits
        }
    }
}

/// EOS banned until `min_new_tokens` tokens were generated after a prompt of `prompt_len`.
#[derive(Debug, Clone)]
pub struct MinNewTokens {
    min_new_tokens: usize,
    prompt_len: usize,
    eos: Vec<u32>,
}

impl MinNewTokens {
    pub fn new(min_new_tokens: usize, prompt_len: usize, eos: Vec<u32>) -> Self {
        Self { min_new_tokens, prompt_len, eos }
    }
}

impl<B: Backend> LogitsProcessor<B> for MinNewTokens {
    fn name(&self) -> &'static str {
        "min_new_tokens"
    }

    fn process(&self, logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        if ctx.cur_len.saturating_sub(self.prompt_len) < self.min_new_tokens {
            mask_eos(logits, &self.eos)
        } else {
            logits
        }
    }
}
