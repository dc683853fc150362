//! Top-p (nucleus): keep the smallest set of most likely tokens whose probability reaches p;
//! the token that crosses p is kept (transformers' boundary).
use burn::tensor::{backend::Backend, Tensor};
use rayon::prelude::*;

use crate::error::{invalid, SamplingError};
use crate::pipeline::{HostRowProcessor, LogitsProcessor, ProcessorContext};
use crate::util::{host_rows, mask_below, mask_row_below, nucleus_threshold};

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
        // the nucleus per row on the host, sorting only the head of the ranking (Burn's sort of a
        // 262k row: ~14 ms on 2 cores); ties with the smallest kept logit are kept
        let t: Vec<f32> = host_rows(&logits).par_chunks(v).map(|row| nucleus_threshold(row, self.p)).collect();
        mask_below(logits, t)
    }

    fn host(&self) -> Option<&dyn HostRowProcessor> {
        Some(self)
    }
}

impl HostRowProcessor for TopP {
    fn process_row(&self, row: &mut [f32], _b: usize, _ctx: &ProcessorContext<'_>) {
        let t = nucleus_threshold(row, self.p);
        mask_row_below(row, t);
    }
}
