//! Top-k: keep the k highest logits (ties with the k-th value kept, as transformers).
use burn::tensor::{backend::Backend, Tensor};
use rayon::prelude::*;

use crate::error::{invalid, SamplingError};
use crate::pipeline::{HostRowProcessor, LogitsProcessor, ProcessorContext};
use crate::util::{host_rows, kth_largest, mask_below, mask_row_below};

single_field_config! {
    /// `top_k`: keep the k most likely tokens (0 = off).
    TopKConfig { top_k: usize = 50 }, off 0, TopK::new
}

#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
}

impl TopK {
    /// `k` ≥ 1 (0 means "off" in [`crate::GenerationConfig`] and adds no processor).
    pub fn new(k: usize) -> Result<Self, SamplingError> {
        if k == 0 {
            return Err(invalid("top_k", k, "must be ≥ 1 for the processor (0 = off in the config)"));
        }
        Ok(Self { k })
    }
}

impl<B: Backend> LogitsProcessor<B> for TopK {
    fn name(&self) -> &'static str {
        "top_k"
    }

    fn process(&self, logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let v = logits.dims()[1];
        if self.k >= v {
            return logits;
        }
        // the k-th largest per row by selection on the host (O(vocab)); Burn's `topk` sorts the
        // whole row (a 262k vocabulary: ~9 ms a row on 2 cores)
        let kth: Vec<f32> = host_rows(&logits).par_chunks(v).map(|row| kth_largest(row, self.k)).collect();
        mask_below(logits, kth)
    }

    fn host(&self) -> Option<&dyn HostRowProcessor> {
        Some(self)
    }
}

impl HostRowProcessor for TopK {
    fn process_row(&self, row: &mut [f32], _b: usize, _ctx: &ProcessorContext<'_>) {
        if self.k < row.len() {
            let kth = kth_largest(row, self.k);
            mask_row_below(row, kth);
        }
    }
}
