//! XTC, "exclude top choices" (llama.cpp's `xtc_probability` / `xtc_threshold`): with probability
//! `probability` per row and step, remove every token whose probability is at least `threshold`
//! except the least likely of them (nothing happens when fewer than two reach it).
use std::sync::Mutex;

use burn::tensor::{activation::softmax, backend::Backend, Tensor, TensorData};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};
use crate::rng::SeqRng;
use serde::{Deserialize, Serialize};

use super::{Boxed, BuildContext, ProcessorConfig};

/// llama.cpp's XTC: with this probability per step (0 = off) remove the tokens above
/// `xtc_threshold` but the least likely of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct XtcConfig {
    pub xtc_probability: f32,
    pub xtc_threshold: f32,
}

impl Default for XtcConfig {
    fn default() -> Self {
        Self { xtc_probability: 0.0, xtc_threshold: 0.1 }
    }
}

impl ProcessorConfig for XtcConfig {
    fn validate(&self) -> Result<(), SamplingError> {
        Xtc::new(self.xtc_probability, self.xtc_threshold, 0).map(drop)
    }

    fn build<B: Backend>(&self, ctx: &BuildContext<'_>, out: &mut Boxed<B>) -> Result<(), SamplingError> {
        if self.xtc_probability > 0.0 {
            let seed = ctx.seed.unwrap_or_else(crate::rng::clock_seed);
            out.push(Box::new(Xtc::new(self.xtc_probability, self.xtc_threshold, seed)?));
        }
        Ok(())
    }
}

pub struct Xtc {
    probability: f32,
    threshold: f32,
    seed: u64,
    rngs: Mutex<Vec<SeqRng>>,
}

impl Xtc {
    /// probability in [0, 1], threshold in [0, 1]; `seed` drives the per-row draws.
    pub fn new(probability: f32, threshold: f32, seed: u64) -> Result<Self, SamplingError> {
        if !(0.0..=1.0).contains(&probability) {
            return Err(invalid("xtc_probability", probability, "must be in [0, 1] (0 = off)"));
        }
        if !(0.0..=1.0).contains(&threshold) {
            return Err(invalid("xtc_threshold", threshold, "must be in [0, 1] (above 0.5 nothing is removed)"));
        }
        Ok(Self { probability, threshold, seed, rngs: Mutex::new(vec![]) })
    }
}

impl<B: Backend> LogitsProcessor<B> for Xtc {
    fn name(&self) -> &'static str {
        "xtc"
    }

    fn process(&self, logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let [b, v] = logits.dims();
        let fire: Vec<f32> = {
            let mut rngs = self.rngs.lock().expect("xtc rngs");
            while rngs.len() < b {
                let i = rngs.len() as u64;
                rngs.push(SeqRng::new(self.seed ^ 0x7874_635f_7874_6331, i));
            }
            rngs.iter_mut().take(b).map(|r| if r.next_f32() <= self.probability { 1.0 } else { 0.0 }).collect()
        };
        if fire.iter().all(|&f| f == 0.0) {
            return logits;
        }
        let fire = Tensor::<B, 2>::from_data(TensorData::new(fire, [b, 1]), &logits.device()).greater_elem(0.5);
        let p = softmax(logits.clone(), 1);
        let above = p.clone().greater_equal_elem(self.threshold);
        let enough = above.clone().float().sum_dim(1).greater_equal_elem(2.0).bool_and(fire);
        let least = p.clone().mask_fill(above.clone().bool_not(), 2.0).min_dim(1);
        let remove = above.bool_and(p.greater(least.expand([b, v]))).bool_and(enough.expand([b, v]));
        logits.mask_fill(remove, f32::NEG_INFINITY)
    }
}
