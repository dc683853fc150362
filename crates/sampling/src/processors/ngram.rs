//! `no_repeat_ngram_size`: ban every token that would complete an n-gram already in the row.
use std::collections::HashSet;

use burn::tensor::{backend::Backend, Tensor};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};
use crate::util::{row_index, scatter_set};

single_field_config! {
    /// `no_repeat_ngram_size`: never repeat an n-gram of this size (0 = off).
    NoRepeatNGramConfig { no_repeat_ngram_size: usize = 0 }, off 0, NoRepeatNGram::new
}

#[derive(Debug, Clone)]
pub struct NoRepeatNGram {
    n: usize,
}

impl NoRepeatNGram {
    pub fn new(n: usize) -> Result<Self, SamplingError> {
        if n == 0 {
            return Err(invalid("no_repeat_ngram_size", n, "must be ≥ 1 (0 = off in the config)"));
        }
        Ok(Self { n })
    }

    /// Tokens banned after `seq` (host computation, transformers' `_get_ngrams` logic).
    pub fn banned(&self, seq: &[u32]) -> Vec<u32> {
        let n = self.n;
        if seq.len() + 1 < n {
            return vec![];
        }
        let prefix = &seq[seq.len() + 1 - n..];
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for w in seq.windows(n) {
            if &w[..n - 1] == prefix && seen.insert(w[n - 1]) {
                out.push(w[n - 1]);
            }
        }
        out
    }
}

impl<B: Backend> LogitsProcessor<B> for NoRepeatNGram {
    fn name(&self) -> &'static str {
        "no_repeat_ngram"
    }

    fn process(&self, logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let rows: Vec<Vec<(u32, f32)>> = ctx
            .sequences
            .iter()
            .map(|s| self.banned(s).into_iter().map(|t| (t, f32::NEG_INFINITY)).collect())
            .collect();
        let Some(ri) = row_index::<B>(&rows, &logits.device()) else { return logits };
        scatter_set(logits, ri.idx, ri.values, ri.valid)
    }
}
