//! Top-p (nucleus): keep the smallest set of most likely tokens whose probability reaches p;
//! the token that crosses p is kept (transformers' boundary).
use burn::tensor::{activation::softmax, backend::Backend, s, Tensor};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};
use crate::util::remove_sorted;

single_field_config! {
    /// `top_p`: nucleus mass in (0, 1] (1 = off).
    TopPConfig { top_p: f32 = 0.95 }, off 1.0, TopP::new
}

#[derive(Debug, Clone)]
pub struct TopP {
    p: f32,
}

impl TopP {
    /// 0 < p ≤ 1.
    pub fn new(p: f32) -> Result<Self, SamplingError> {
        if !(p > 0.0 && p <= 1.0) {
            return Err(invalid("top_p", p, "must be in (0, 1] (1 = off)"));
        }
        Ok(Self { p })
    }
}

impl<B: Backend> LogitsProcessor<B> for TopP {
    fn name(&self) -> &'static str {
        "top_p"
    }

    fn process(&self, logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let v = logits.dims()[1];
        let (sorted, idx) = logits.clone().sort_with_indices(1); // ascending
        let cum = softmax(sorted, 1).cumsum(1);
        let remove = cum.lower_equal_elem(1.0 - self.p).float().slice_fill(s![.., v - 1..v], 0.0);
        remove_sorted(logits, idx, remove)
    }
}
