//! Temperature scaling: `logits / t`. `t = 0` means greedy and is handled by the sampler.
use burn::tensor::{backend::Backend, Tensor};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};

#[derive(Debug, Clone)]
pub struct Temperature {
    t: f32,
}

impl Temperature {
    /// `t` > 0 (use greedy decoding for 0).
    pub fn new(t: f32) -> Result<Self, SamplingError> {
        if !(t > 0.0 && t.is_finite()) {
            return Err(invalid("temperature", t, "must be a finite number > 0 here (0 = greedy decoding)"));
        }
        Ok(Self { t })
    }
}

impl<B: Backend> LogitsProcessor<B> for Temperature {
    fn name(&self) -> &'static str {
        "temperature"
    }

    fn process(&self, logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        logits.div_scalar(self.t)
    }
}
