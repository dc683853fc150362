//! OpenAI frequency and presence penalties:
//! `logit - count * frequency_penalty - (count > 0) * presence_penalty`.
use burn::tensor::{backend::Backend, IndexingUpdateOp, Tensor};

use super::PenaltyScope;
use crate::error::{invalid, SamplingError};
use crate::pipeline::{HostRowProcessor, LogitsProcessor, ProcessorContext};
use crate::util::{counts, row_index};
use serde::{Deserialize, Serialize};

use super::{Boxed, BuildContext, ProcessorConfig};

/// OpenAI's frequency and presence penalties (0 = off) and the tokens they count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FrequencyPresenceConfig {
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_presence_scope: PenaltyScope,
}

impl Default for FrequencyPresenceConfig {
    fn default() -> Self {
        Self { frequency_penalty: 0.0, presence_penalty: 0.0, frequency_presence_scope: PenaltyScope::Generated }
    }
}

impl ProcessorConfig for FrequencyPresenceConfig {
    fn validate(&self) -> Result<(), SamplingError> {
        FrequencyPresencePenalty::new(self.frequency_penalty, self.presence_penalty).map(drop)
    }

    fn build<B: Backend>(&self, _: &BuildContext<'_>, out: &mut Boxed<B>) -> Result<(), SamplingError> {
        if self.frequency_penalty != 0.0 || self.presence_penalty != 0.0 {
            out.push(Box::new(
                FrequencyPresencePenalty::new(self.frequency_penalty, self.presence_penalty)?
                    .with_scope(self.frequency_presence_scope),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct FrequencyPresencePenalty {
    frequency: f32,
    presence: f32,
    scope: PenaltyScope,
}

impl FrequencyPresencePenalty {
    /// Both in [-2, 2], like OpenAI's API.
    pub fn new(frequency: f32, presence: f32) -> Result<Self, SamplingError> {
        if !(-2.0..=2.0).contains(&frequency) {
            return Err(invalid("frequency_penalty", frequency, "must be in [-2, 2] (0 = off)"));
        }
        if !(-2.0..=2.0).contains(&presence) {
            return Err(invalid("presence_penalty", presence, "must be in [-2, 2] (0 = off)"));
        }
        Ok(Self { frequency, presence, scope: PenaltyScope::Generated })
    }

    pub fn with_scope(mut self, scope: PenaltyScope) -> Self {
        self.scope = scope;
        self
    }
}

impl<B: Backend> LogitsProcessor<B> for FrequencyPresencePenalty {
    fn name(&self) -> &'static str {
        "frequency_presence_penalty"
    }

    fn process(&self, logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let rows: Vec<_> = (0..ctx.sequences.len())
            .map(|b| {
                counts(self.scope.tokens(ctx, b))
                    .into_iter()
                    .map(|(id, c)| (id, -(c * self.frequency + self.presence)))
                    .collect::<Vec<_>>()
            })
            .collect();
        let Some(ri) = row_index::<B>(&rows, &logits.device()) else { return logits };
        let delta = ri.values.mul(ri.valid);
        logits.scatter(1, ri.idx, delta, IndexingUpdateOp::Add)
    }

    fn host(&self) -> Option<&dyn HostRowProcessor> {
        Some(self)
    }
}

impl HostRowProcessor for FrequencyPresencePenalty {
    fn process_row(&self, row: &mut [f32], b: usize, ctx: &ProcessorContext<'_>) {
        for (id, c) in counts(self.scope.tokens(ctx, b)) {
            if let Some(x) = row.get_mut(id as usize) {
                *x += -(c * self.frequency + self.presence);
            }
        }
    }
}
