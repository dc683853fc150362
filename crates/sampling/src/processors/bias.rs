//! Logit bias (OpenAI `logit_bias`) and banned token ids.
use burn::tensor::{backend::Backend, s, Tensor};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Boxed, BuildContext, ProcessorConfig};

/// OpenAI's `logit_bias` (token id → bias in [-100, 100]) and banned token ids.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BiasConfig {
    /// JSON object keys are token ids as text, as OpenAI's.
    #[serde(deserialize_with = "id_keys")]
    pub logit_bias: BTreeMap<u32, f32>,
    pub banned_token_ids: Vec<u32>,
}

/// A map with token-id keys (JSON keys are strings; flattened fields are read without serde_json's
/// number-key support).
fn id_keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, f32>, D::Error> {
    let m = BTreeMap::<String, f32>::deserialize(d)?;
    m.into_iter()
        .map(|(k, v)| {
            k.trim().parse::<u32>().map(|id| (id, v)).map_err(|_| {
                serde::de::Error::custom(format!("logit_bias key {k:?} is not a token id (an integer ≥ 0)"))
            })
        })
        .collect()
}

impl ProcessorConfig for BiasConfig {
    fn validate(&self) -> Result<(), SamplingError> {
        LogitBias::new(self.logit_bias.iter().map(|(&k, &v)| (k, v)).collect()).map(drop)
    }

    fn build<B: Backend>(&self, _: &BuildContext<'_>, out: &mut Boxed<B>) -> Result<(), SamplingError> {
        if !self.logit_bias.is_empty() {
            out.push(Box::new(LogitBias::new(self.logit_bias.iter().map(|(&k, &v)| (k, v)).collect())?));
        }
        if !self.banned_token_ids.is_empty() {
            out.push(Box::new(BannedTokens::new(self.banned_token_ids.clone())));
        }
        Ok(())
    }
}

/// Add a fixed bias to chosen token ids.
#[derive(Debug, Clone)]
pub struct LogitBias {
    bias: Vec<(u32, f32)>,
}

impl LogitBias {
    /// Bias values in [-100, 100] like OpenAI's API.
    pub fn new(bias: Vec<(u32, f32)>) -> Result<Self, SamplingError> {
        if let Some(&(_, b)) = bias.iter().find(|(_, b)| !(-100.0..=100.0).contains(b)) {
            return Err(invalid("logit_bias", b, "values must be in [-100, 100]"));
        }
        Ok(Self { bias })
    }
}

impl<B: Backend> LogitsProcessor<B> for LogitBias {
    fn name(&self) -> &'static str {
        "logit_bias"
    }

    fn process(&self, mut logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let v = logits.dims()[1];
        for &(id, b) in &self.bias {
            let i = id as usize;
            if i < v {
                let col = logits.clone().slice(s![.., i..i + 1]).add_scalar(b);
                logits = logits.slice_assign(s![.., i..i + 1], col);
            }
        }
        logits
    }
}

/// Never generate these ids.
#[derive(Debug, Clone)]
pub struct BannedTokens {
    ids: Vec<u32>,
}

impl BannedTokens {
    pub fn new(ids: Vec<u32>) -> Self {
        Self { ids }
    }
}

impl<B: Backend> LogitsProcessor<B> for BannedTokens {
    fn name(&self) -> &'static str {
        "banned_tokens"
    }

    fn process(&self, logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        crate::util::fill_columns(logits, &self.ids, f32::NEG_INFINITY)
    }
}
