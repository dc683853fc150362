//! transformers' `SequenceBiasLogitsProcessor`: a bias on the last token of each token sequence,
//! applied when the row's tokens end with the rest of the sequence (one-token sequences always).
use burn::tensor::{backend::Backend, IndexingUpdateOp, Tensor};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};
use crate::util::row_index;
use serde::{Deserialize, Serialize};

use super::{Boxed, BuildContext, ProcessorConfig};

/// transformers' `sequence_bias`: `[[token ids], bias]` pairs; the last token of a sequence gets
/// the bias when the text ends with the rest of it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SequenceBiasConfig {
    pub sequence_bias: Vec<(Vec<u32>, f32)>,
}

impl ProcessorConfig for SequenceBiasConfig {
    fn validate(&self) -> Result<(), SamplingError> {
        SequenceBias::new(self.sequence_bias.clone()).map(drop)
    }

    fn build<B: Backend>(&self, _: &BuildContext<'_>, out: &mut Boxed<B>) -> Result<(), SamplingError> {
        if !self.sequence_bias.is_empty() {
            out.push(Box::new(SequenceBias::new(self.sequence_bias.clone())?));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct SequenceBias {
    seqs: Vec<(Vec<u32>, f32)>,
}

impl SequenceBias {
    pub fn new(seqs: Vec<(Vec<u32>, f32)>) -> Result<Self, SamplingError> {
        if let Some((s, _)) = seqs.iter().find(|(s, _)| s.is_empty()) {
            return Err(invalid("sequence_bias", format!("{s:?}"), "each sequence needs at least one token id"));
        }
        if let Some((_, b)) = seqs.iter().find(|(_, b)| !b.is_finite()) {
            return Err(invalid("sequence_bias", b, "biases must be finite numbers"));
        }
        Ok(Self { seqs })
    }
}

impl<B: Backend> LogitsProcessor<B> for SequenceBias {
    fn name(&self) -> &'static str {
        "sequence_bias"
    }

    fn process(&self, logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let rows = ending_matches(ctx.sequences, &self.seqs, logits.dims()[1]);
        let Some(ri) = row_index::<B>(&rows, &logits.device()) else { return logits };
        logits.scatter(1, ri.idx, ri.values.mul(ri.valid), IndexingUpdateOp::Add)
    }
}

/// Per row: `(last token, value)` of every sequence whose other tokens end the row (one-token
/// sequences always), the values of one token summed; ids past `vocab` are skipped.
pub(crate) fn ending_matches(rows: &[Vec<u32>], seqs: &[(Vec<u32>, f32)], vocab: usize) -> Vec<Vec<(u32, f32)>> {
    rows.iter()
        .map(|seq| {
            let mut acc: Vec<(u32, f32)> = vec![];
            for (s, value) in seqs {
                let (prefix, last) = s.split_at(s.len() - 1);
                if (last[0] as usize) < vocab && seq.ends_with(prefix) {
                    match acc.iter_mut().find(|(t, _)| *t == last[0]) {
                        Some(e) => e.1 += value,
                        None => acc.push((last[0], *value)),
                    }
                }
            }
            acc
        })
        .collect()
}
