//! Top-nσ (Tang et al. 2024, llama.cpp's `top_n_sigma`): keep the tokens whose logit is within
//! `n` standard deviations of the top logit (mean and deviation over the row's finite logits).
//! Scale-free, so it gives the same set before or after temperature.
use burn::tensor::{backend::Backend, Tensor};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};

single_field_config! {
    /// llama.cpp's top-nσ: keep logits within n standard deviations of the top (0 = off).
    TopNSigmaConfig { top_n_sigma: f32 = 0.0 }, off 0.0, TopNSigma::new
}

#[derive(Debug, Clone)]
pub struct TopNSigma {
    n: f32,
}

impl TopNSigma {
    /// n > 0.
    pub fn new(n: f32) -> Result<Self, SamplingError> {
        if !(n > 0.0 && n.is_finite()) {
            return Err(invalid("top_n_sigma", n, "must be a finite number > 0 (0 = off)"));
        }
        Ok(Self { n })
    }
}

impl<B: Backend> LogitsProcessor<B> for TopNSigma {
    fn name(&self) -> &'static str {
        "top_n_sigma"
    }

    fn process(&self, logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let [b, v] = logits.dims();
        let masked = logits.clone().is_inf();
        let count = masked.clone().bool_not().float().sum_dim(1).clamp_min(1.0);
        let max = logits.clone().max_dim(1);
        let mean = logits.clone().mask_fill(masked.clone(), 0.0).sum_dim(1) / count.clone();
        let dev = (logits.clone() - mean.expand([b, v])).powi_scalar(2).mask_fill(masked, 0.0).sum_dim(1);
        let std = (dev / count).sqrt();
        let cutoff = max - std.mul_scalar(self.n);
        let remove = logits.clone().lower(cutoff.expand([b, v]));
        logits.mask_fill(remove, f32::NEG_INFINITY)
    }
}
