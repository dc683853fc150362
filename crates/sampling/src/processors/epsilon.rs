//! Epsilon sampling (Hewitt et al. 2022), transformers' `EpsilonLogitsWarper`: remove tokens whose
//! probability is below `epsilon`, always keeping the most likely one.
use burn::tensor::{activation::softmax, backend::Backend, Tensor};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};

single_field_config! {
    /// transformers' epsilon sampling: drop tokens below this probability (0 = off).
    EpsilonConfig { epsilon_cutoff: f32 = 0.0 }, off 0.0, EpsilonCutoff::new
}

#[derive(Debug, Clone)]
pub struct EpsilonCutoff {
    epsilon: f32,
}

impl EpsilonCutoff {
    /// 0 < epsilon < 1.
    pub fn new(epsilon: f32) -> Result<Self, SamplingError> {
        if !(epsilon > 0.0 && epsilon < 1.0) {
            return Err(invalid("epsilon_cutoff", epsilon, "must be in (0, 1) (0 = off)"));
        }
        Ok(Self { epsilon })
    }
}

/// Remove where `remove`, except the row's top logit (transformers' `min_tokens_to_keep = 1`).
pub(crate) fn remove_keeping_top<B: Backend>(
    logits: Tensor<B, 2>,
    remove: Tensor<B, 2, burn::tensor::Bool>,
) -> Tensor<B, 2> {
    let [b, v] = logits.dims();
    let top = logits.clone().max_dim(1).expand([b, v]);
    let remove = remove.bool_and(logits.clone().lower(top));
    logits.mask_fill(remove, f32::NEG_INFINITY)
}

impl<B: Backend> LogitsProcessor<B> for EpsilonCutoff {
    fn name(&self) -> &'static str {
        "epsilon_cutoff"
    }

    fn process(&self, logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let remove = softmax(logits.clone(), 1).lower_elem(self.epsilon);
        remove_keeping_top(logits, remove)
    }
}
