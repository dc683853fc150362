//! transformers' `NoBadWordsLogitsProcessor` (`bad_words_ids`): a banned token sequence's last
//! token gets -inf when the row's tokens end with the rest of it, so the sequence never appears
//! (one-token sequences are always banned).
use burn::tensor::{backend::Backend, IndexingUpdateOp, Tensor};
use serde::{Deserialize, Serialize};

use super::sequence_bias::ending_matches;
use super::{Boxed, BuildContext, ProcessorConfig};
use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};
use crate::util::row_index;

/// `bad_words_ids`: token sequences that must not be generated.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BadWordsConfig {
    pub bad_words_ids: Vec<Vec<u32>>,
}

impl ProcessorConfig for BadWordsConfig {
    fn validate(&self) -> Result<(), SamplingError> {
        BadWords::new(self.bad_words_ids.clone()).map(drop)
    }

    fn build<B: Backend>(&self, _: &BuildContext<'_>, out: &mut Boxed<B>) -> Result<(), SamplingError> {
        if !self.bad_words_ids.is_empty() {
            out.push(Box::new(BadWords::new(self.bad_words_ids.clone())?));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct BadWords {
    /// Each sequence with the value 1 (hits are counted, then banned).
    words: Vec<(Vec<u32>, f32)>,
}

impl BadWords {
    /// Each sequence has at least one token id.
    pub fn new(words: Vec<Vec<u32>>) -> Result<Self, SamplingError> {
        if let Some(w) = words.iter().find(|w| w.is_empty()) {
            return Err(invalid("bad_words_ids", format!("{w:?}"), "each sequence needs at least one token id"));
        }
        Ok(Self { words: words.into_iter().map(|w| (w, 1.0)).collect() })
    }
}

impl<B: Backend> LogitsProcessor<B> for BadWords {
    fn name(&self) -> &'static str {
        "bad_words"
    }

    fn process(&self, logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let rows = ending_matches(ctx.sequences, &self.words, logits.dims()[1]);
        let Some(ri) = row_index::<B>(&rows, &logits.device()) else { return logits };
        let hits = logits.zeros_like().scatter(1, ri.idx, ri.values.mul(ri.valid), IndexingUpdateOp::Add);
        logits.mask_fill(hits.greater_elem(0.5), f32::NEG_INFINITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    /// Against transformers' rule, by hand: `[5]` always; `[1, 2, 3]` bans 3 only after `1, 2`;
    /// `[4, 2]` bans 2 after 4; ids past the vocabulary are skipped.
    #[test]
    fn bans_the_last_token_after_the_rest() {
        let p = BadWords::new(vec![vec![5], vec![1, 2, 3], vec![4, 2], vec![99]]).unwrap();
        let seqs = vec![vec![7, 1, 2], vec![1, 2, 4], vec![9, 9, 9]];
        let ctx = ProcessorContext { sequences: &seqs, num_generated: 0, cur_len: 3 };
        let x = Tensor::<NdArray, 2>::from_data(TensorData::new(vec![0.5f32; 18], [3, 6]), &Default::default());
        let out: Vec<f32> = LogitsProcessor::<NdArray>::process(&p, x, &ctx).into_data().iter::<f32>().collect();
        let banned: Vec<Vec<usize>> =
            out.chunks(6).map(|r| (0..6).filter(|&i| r[i] == f32::NEG_INFINITY).collect()).collect();
        assert_eq!(banned, vec![vec![3, 5], vec![2, 5], vec![5]]);
        assert!(out.iter().all(|&x| x == 0.5 || x == f32::NEG_INFINITY));
        let e = BadWords::new(vec![vec![]]).unwrap_err().to_string();
        assert!(e.contains("bad_words_ids"), "{e}");
    }
}
