//! CTRL repetition penalty (Keskar et al.): divide positive logits of seen tokens by the
//! penalty, multiply negative ones.
use burn::tensor::{backend::Backend, Tensor};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{HostRowProcessor, LogitsProcessor, ProcessorContext};
use crate::util::{counts, row_index, scatter_set};
use serde::{Deserialize, Serialize};

use super::{Boxed, BuildContext, ProcessorConfig};

/// Which tokens a penalty counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PenaltyScope {
    /// Prompt and generated tokens (transformers' repetition penalty).
    #[default]
    PromptAndGenerated,
    /// Generated tokens only (OpenAI's frequency/presence penalties).
    Generated,
}

impl PenaltyScope {
    pub(crate) fn tokens<'a>(&self, ctx: &ProcessorContext<'a>, b: usize) -> &'a [u32] {
        match self {
            PenaltyScope::PromptAndGenerated => &ctx.sequences[b],
            PenaltyScope::Generated => ctx.generated(b),
        }
    }
}

/// The CTRL repetition penalty (1 = off) and the tokens it counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RepetitionConfig {
    pub repetition_penalty: f32,
    pub repetition_scope: PenaltyScope,
}

impl Default for RepetitionConfig {
    fn default() -> Self {
        Self { repetition_penalty: 1.0, repetition_scope: PenaltyScope::PromptAndGenerated }
    }
}

impl ProcessorConfig for RepetitionConfig {
    fn validate(&self) -> Result<(), SamplingError> {
        RepetitionPenalty::new(self.repetition_penalty).map(drop)
    }

    fn build<B: Backend>(&self, _: &BuildContext<'_>, out: &mut Boxed<B>) -> Result<(), SamplingError> {
        if self.repetition_penalty != 1.0 {
            out.push(Box::new(RepetitionPenalty::new(self.repetition_penalty)?.with_scope(self.repetition_scope)));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct RepetitionPenalty {
    penalty: f32,
    scope: PenaltyScope,
}

impl RepetitionPenalty {
    /// `penalty` > 0 (1.0 = off, > 1 discourages repeats).
    pub fn new(penalty: f32) -> Result<Self, SamplingError> {
        if !(penalty > 0.0 && penalty.is_finite()) {
            return Err(invalid("repetition_penalty", penalty, "must be a finite number > 0 (1.0 = off)"));
        }
        Ok(Self { penalty, scope: PenaltyScope::PromptAndGenerated })
    }

    pub fn with_scope(mut self, scope: PenaltyScope) -> Self {
        self.scope = scope;
        self
    }
}

impl<B: Backend> LogitsProcessor<B> for RepetitionPenalty {
    fn name(&self) -> &'static str {
        "repetition_penalty"
    }

    fn process(&self, logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let rows: Vec<_> = (0..ctx.sequences.len()).map(|b| counts(self.scope.tokens(ctx, b))).collect();
        let Some(ri) = row_index::<B>(&rows, &logits.device()) else { return logits };
        let seen = logits.clone().gather(1, ri.idx.clone());
        let negative = seen.clone().lower_elem(0.0);
        let penalized = seen.clone().div_scalar(self.penalty).mask_where(negative, seen.mul_scalar(self.penalty));
        scatter_set(logits, ri.idx, penalized, ri.valid)
    }

    fn host(&self) -> Option<&dyn HostRowProcessor> {
        Some(self)
    }
}

impl HostRowProcessor for RepetitionPenalty {
    fn process_row(&self, row: &mut [f32], b: usize, ctx: &ProcessorContext<'_>) {
        // each seen token once (the tensor body scatters unique ids)
        for (id, _) in counts(self.scope.tokens(ctx, b)) {
            if let Some(x) = row.get_mut(id as usize) {
                *x = if *x < 0.0 { *x * self.penalty } else { *x / self.penalty };
            }
        }
    }
}
