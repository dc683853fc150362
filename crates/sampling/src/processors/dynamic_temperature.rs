//! Entropy-based dynamic temperature (llama.cpp's `dynatemp_range` / `dynatemp_exponent`, its
//! `temp_ext` sampler): each row's temperature is `min + (max − min) · (H / H_max)^exponent`, with
//! `min = max(0, t − range)`, `max = t + range`, `H` the entropy of the row's distribution and
//! `H_max = ln(N)` over its N candidates (finite logits). It takes the place of the fixed
//! temperature.
use burn::tensor::{backend::Backend, Tensor};

use super::eta::entropy;
use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};

#[derive(Debug, Clone)]
pub struct DynamicTemperature {
    min: f32,
    max: f32,
    exponent: f32,
}

impl DynamicTemperature {
    /// temperature ≥ 0, range > 0, exponent ≥ 0.
    pub fn new(temperature: f32, range: f32, exponent: f32) -> Result<Self, SamplingError> {
        if !(range > 0.0 && range.is_finite()) {
            return Err(invalid("dynatemp_range", range, "must be a finite number > 0 (0 = off)"));
        }
        if !(exponent >= 0.0 && exponent.is_finite()) {
            return Err(invalid("dynatemp_exponent", exponent, "must be a finite number ≥ 0"));
        }
        Ok(Self { min: (temperature - range).max(0.0), max: temperature + range, exponent })
    }
}

impl<B: Backend> LogitsProcessor<B> for DynamicTemperature {
    fn name(&self) -> &'static str {
        "dynamic_temperature"
    }

    fn process(&self, logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let [b, v] = logits.dims();
        let n = logits.clone().is_inf().bool_not().float().sum_dim(1);
        // rows with one candidate keep their logits (their entropy is 0 whatever the temperature)
        let single = n.clone().lower_equal_elem(1.0);
        let h_max = n.clamp_min(2.0).log();
        let ratio = (entropy(logits.clone()) / h_max).clamp(0.0, 1.0);
        let t = ratio.powf_scalar(self.exponent).mul_scalar(self.max - self.min).add_scalar(self.min);
        // a temperature of 0 (min 0 at zero entropy) would divide by zero: argmax-like instead
        let t = t.clamp_min(1e-3).mask_fill(single, 1.0);
        logits / t.expand([b, v])
    }
}
