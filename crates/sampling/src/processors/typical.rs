//! Locally typical sampling (Meister et al. 2022), transformers' algorithm: keep the tokens whose
//! surprisal is closest to the entropy until their probability mass reaches `typical_p`.
use burn::tensor::{
    activation::{log_softmax, softmax},
    backend::Backend,
    s, Tensor,
};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};
use crate::util::remove_sorted;

single_field_config! {
    /// `typical_p`: locally typical mass in (0, 1] (1 = off).
    TypicalPConfig { typical_p: f32 = 1.0 }, off 1.0, TypicalP::new
}

#[derive(Debug, Clone)]
pub struct TypicalP {
    mass: f32,
}

impl TypicalP {
    /// 0 < typical_p ≤ 1.
    pub fn new(mass: f32) -> Result<Self, SamplingError> {
        if !(mass > 0.0 && mass <= 1.0) {
            return Err(invalid("typical_p", mass, "must be in (0, 1] (1 = off)"));
        }
        Ok(Self { mass })
    }
}

impl<B: Backend> LogitsProcessor<B> for TypicalP {
    fn name(&self) -> &'static str {
        "typical_p"
    }

    fn process(&self, logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let [b, v] = logits.dims();
        let normalized = log_softmax(logits.clone(), 1);
        let p = normalized.clone().exp();
        let plogp = normalized.clone() * p;
        let plogp = plogp.clone().mask_fill(plogp.is_nan(), 0.0); // nansum
        let ent = plogp.sum_dim(1).neg(); // [b, 1]
        let shifted = (normalized.neg() - ent.expand([b, v])).abs();
        let (sorted_scores, sorted_idx) = shifted.sort_with_indices(1);
        let sorted_logits = logits.clone().gather(1, sorted_idx.clone());
        let cum = softmax(sorted_logits, 1).cumsum(1);
        let last = cum.lower_elem(self.mass).int().sum_dim(1).clamp_max((v - 1) as i64); // [b, 1]
        let cutoff = sorted_scores.clone().gather(1, last).expand([b, v]);
        let remove = sorted_scores.greater(cutoff).float().slice_fill(s![.., 0..1], 0.0);
        remove_sorted(logits, sorted_idx, remove)
    }
}
