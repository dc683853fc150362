//! Temperature scaling: `logits / t`. `t = 0` means greedy and is handled by the sampler.
use burn::tensor::{backend::Backend, Tensor};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{HostRowProcessor, LogitsProcessor, ProcessorContext};
use serde::{Deserialize, Serialize};

use super::{Boxed, BuildContext, ProcessorConfig};

/// Temperature, fixed or dynamic (llama.cpp's `temp_ext`: `dynatemp_range` > 0 makes it move
/// with the entropy of each row's distribution).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TemperatureConfig {
    /// ≥ 0; 0 = greedy (with `do_sample` it decides whether tokens are drawn).
    pub temperature: f32,
    /// ± this range around `temperature`, by entropy (0 = off).
    pub dynatemp_range: f32,
    pub dynatemp_exponent: f32,
}

impl Default for TemperatureConfig {
    fn default() -> Self {
        Self { temperature: 0.8, dynatemp_range: 0.0, dynatemp_exponent: 1.0 }
    }
}

impl ProcessorConfig for TemperatureConfig {
    fn validate(&self) -> Result<(), SamplingError> {
        let t = self.temperature;
        if !(t >= 0.0 && t.is_finite()) {
            return Err(invalid("temperature", t, "must be a finite number ≥ 0 (0 = greedy)"));
        }
        if !(self.dynatemp_range >= 0.0 && self.dynatemp_range.is_finite()) {
            return Err(invalid("dynatemp_range", self.dynatemp_range, "must be a finite number ≥ 0 (0 = off)"));
        }
        if !(self.dynatemp_exponent >= 0.0 && self.dynatemp_exponent.is_finite()) {
            return Err(invalid("dynatemp_exponent", self.dynatemp_exponent, "must be a finite number ≥ 0"));
        }
        Ok(())
    }

    fn build<B: Backend>(&self, _: &BuildContext<'_>, out: &mut Boxed<B>) -> Result<(), SamplingError> {
        if self.dynatemp_range > 0.0 {
            out.push(Box::new(super::DynamicTemperature::new(
                self.temperature,
                self.dynatemp_range,
                self.dynatemp_exponent,
            )?));
        } else if self.temperature != 1.0 {
            out.push(Box::new(Temperature::new(self.temperature)?));
        }
        Ok(())
    }
}

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

    fn host(&self) -> Option<&dyn HostRowProcessor> {
        Some(self)
    }
}

impl HostRowProcessor for Temperature {
    fn process_row(&self, row: &mut [f32], _b: usize, _ctx: &ProcessorContext<'_>) {
        row.iter_mut().for_each(|x| *x /= self.t);
    }
}
