//! Top-k: keep the k highest logits (ties with the k-th value kept, as transformers).
use burn::tensor::{backend::Backend, s, Tensor};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};

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
        let [b, v] = logits.dims();
        if self.k >= v {
            return logits;
        }
        let kth = logits.clone().topk(self.k, 1).slice(s![.., self.k - 1..self.k]).expand([b, v]);
        let remove = logits.clone().lower(kth);
        logits.mask_fill(remove, f32::NEG_INFINITY)
    }
}
