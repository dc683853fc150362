//! transformers' `SuppressTokensLogitsProcessor` (never these ids) and
//! `SuppressTokensAtBeginLogitsProcessor` (not these ids as the first generated token).
use burn::tensor::{backend::Backend, Tensor};

use crate::pipeline::{LogitsProcessor, ProcessorContext};

fn suppress<B: Backend>(logits: Tensor<B, 2>, ids: &[u32]) -> Tensor<B, 2> {
    crate::util::fill_columns(logits, ids, f32::NEG_INFINITY)
}

#[derive(Debug, Clone)]
pub struct SuppressTokens {
    ids: Vec<u32>,
}

impl SuppressTokens {
    pub fn new(ids: Vec<u32>) -> Self {
        Self { ids }
    }
}

impl<B: Backend> LogitsProcessor<B> for SuppressTokens {
    fn name(&self) -> &'static str {
        "suppress_tokens"
    }

    fn process(&self, logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        suppress(logits, &self.ids)
    }
}

#[derive(Debug, Clone)]
pub struct SuppressTokensAtBegin {
    ids: Vec<u32>,
    begin_index: usize,
}

impl SuppressTokensAtBegin {
    /// `begin_index`: the padded prompt length (the step generating the first token).
    pub fn new(ids: Vec<u32>, begin_index: usize) -> Self {
        Self { ids, begin_index }
    }
}

impl<B: Backend> LogitsProcessor<B> for SuppressTokensAtBegin {
    fn name(&self) -> &'static str {
        "begin_suppress_tokens"
    }

    fn process(&self, logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        if ctx.cur_len == self.begin_index {
            suppress(logits, &self.ids)
        } else {
            logits
        }
    }
}
