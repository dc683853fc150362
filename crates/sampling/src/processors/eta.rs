//! Eta sampling (Hewitt et al. 2022), transformers' `EtaLogitsWarper`: remove tokens whose
//! probability is below `min(eta, sqrt(eta) · exp(-entropy))`, always keeping the most likely.
use burn::tensor::{
    activation::{log_softmax, softmax},
    backend::Backend,
    Tensor,
};

use super::epsilon::remove_keeping_top;
use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};

single_field_config! {
    /// transformers' eta sampling (0 = off).
    EtaConfig { eta_cutoff: f32 = 0.0 }, off 0.0, EtaCutoff::new
}

#[derive(Debug, Clone)]
pub struct EtaCutoff {
    eta: f32,
}

impl EtaCutoff {
    /// 0 < eta < 1.
    pub fn new(eta: f32) -> Result<Self, SamplingError> {
        if !(eta > 0.0 && eta < 1.0) {
            return Err(invalid("eta_cutoff", eta, "must be in (0, 1) (0 = off)"));
        }
        Ok(Self { eta })
    }
}

/// Entropy per row (`[b, 1]`), -inf logits contributing 0. No infinity enters the arithmetic:
/// masked logits become -1e30 (probability 0 after the softmax, `p·log p` = -0) and their terms
/// are zeroed, because backends disagree on `exp(-inf)` and `0·(-inf)` (burn-ndarray's SIMD paths
/// gave NaN where flex gives 0).
pub(crate) fn entropy<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 2> {
    let masked = logits.clone().is_inf();
    let logp = log_softmax(logits.mask_fill(masked.clone(), -1e30), 1);
    let plogp = logp.clone().exp() * logp;
    plogp.mask_fill(masked, 0.0).sum_dim(1).neg()
}

impl<B: Backend> LogitsProcessor<B> for EtaCutoff {
    fn name(&self) -> &'static str {
        "eta_cutoff"
    }

    fn process(&self, logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let [b, v] = logits.dims();
        let eta = entropy(logits.clone()).neg().exp().mul_scalar(self.eta.sqrt()).clamp_max(self.eta);
        let remove = softmax(logits.clone(), 1).lower(eta.expand([b, v]));
        remove_keeping_top(logits, remove)
    }
}
