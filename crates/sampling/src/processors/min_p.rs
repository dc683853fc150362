//! Min-p: remove tokens whose probability is below `min_p` × the top probability.
use burn::tensor::{activation::softmax, backend::Backend, Tensor};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};

single_field_config! {
    /// `min_p`: drop tokens below min_p × the top probability (0 = off).
    MinPConfig { min_p: f32 = 0.0 }, off 0.0, MinP::new
}

#[derive(Debug, Clone)]
pub struct MinP {
    min_p: f32,
}

impl MinP {
    /// 0 ≤ min_p ≤ 1.
    pub fn new(min_p: f32) -> Result<Self, SamplingError> {
        if !(0.0..=1.0).contains(&min_p) {
            return Err(invalid("min_p", min_p, "must be in [0, 1] (0 = off)"));
        }
        Ok(Self { min_p })
    }
}

impl<B: Backend> LogitsProcessor<B> for MinP {
    fn name(&self) -> &'static str {
        "min_p"
    }

    fn process(&self, logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let [b, v] = logits.dims();
        let probs = softmax(logits.clone(), 1);
        let threshold = probs.clone().max_dim(1).mul_scalar(self.min_p).expand([b, v]);
        let remove = probs.lower(threshold);
        logits.mask_fill(remove, f32::NEG_INFINITY)
    }
}
