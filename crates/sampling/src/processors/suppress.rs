//! transformers' `SuppressTokensLogitsProcessor` (never these ids) and
//! `SuppressTokensAtBeginLogitsProcessor` (not these ids as the first generated token).
use burn::tensor::{backend::Backend, Tensor};

use crate::pipeline::{LogitsProcessor, ProcessorContext};
use serde::{Deserialize, Serialize};

use super::{Boxed, BuildContext, ProcessorConfig};
use crate::error::SamplingError;

/// transformers' `suppress_tokens` (never generated) and `begin_suppress_tokens` (not the first
/// generated token).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SuppressConfig {
    pub suppress_tokens: Vec<u32>,
    pub begin_suppress_tokens: Vec<u32>,
}

impl ProcessorConfig for SuppressConfig {
    fn build<B: Backend>(&self, ctx: &BuildContext<'_>, out: &mut Boxed<B>) -> Result<(), SamplingError> {
        if !self.suppress_tokens.is_empty() {
            out.push(Box::new(SuppressTokens::new(self.suppress_tokens.clone())));
        }
        if !self.begin_suppress_tokens.is_empty() {
            out.push(Box::new(SuppressTokensAtBegin::new(self.begin_suppress_tokens.clone(), ctx.prompt_len)));
        }
        Ok(())
    }
}

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
