//! Picks the next token per row: argmax, or multinomial with a seeded stream per sequence.
//! Only `[batch]` values leave the device per step.
use burn::tensor::{
    activation::{log_softmax, softmax},
    backend::Backend,
    s, Int, Tensor, TensorData,
};

use crate::rng::SeqRng;

#[derive(Debug, Clone)]
pub enum Sampler {
    Greedy,
    Multinomial { rngs: Vec<SeqRng> },
}

impl Sampler {
    /// Multinomial sampling for `batch` sequences; sequence i uses stream i of `seed`.
    pub fn multinomial(seed: u64, batch: usize) -> Self {
        Sampler::Multinomial { rngs: (0..batch).map(|i| SeqRng::new(seed, i as u64)).collect() }
    }

    /// Multinomial sampling with explicit per-sequence seeds.
    pub fn multinomial_seeds(seeds: &[u64]) -> Self {
        Sampler::Multinomial { rngs: seeds.iter().map(|&s| SeqRng::new(s, 0)).collect() }
    }

    /// The ids chosen for each row of `logits` (`[batch, vocab]`), as a device tensor `[batch, 1]`.
    pub fn sample_device<B: Backend>(&mut self, logits: Tensor<B, 2>) -> Tensor<B, 2, Int> {
        let [b, v] = logits.dims();
        match self {
            Sampler::Greedy => logits.argmax(1),
            Sampler::Multinomial { rngs } => {
                assert_eq!(rngs.len(), b, "sampler was built for {} rows, got {b}", rngs.len());
                let u: Vec<f32> = rngs.iter_mut().map(SeqRng::next_f32).collect();
                let u = Tensor::<B, 2>::from_data(TensorData::new(u, [b, 1]), &logits.device());
                let cum = softmax(logits, 1).cumsum(1);
                let total = cum.clone().slice(s![.., v - 1..v]);
                let threshold = (u * total).expand([b, v]);
                cum.lower_equal(threshold).int().sum_dim(1).clamp_max((v - 1) as i64)
            }
        }
    }

    /// Sample and copy the ids to the host.
    pub fn sample<B: Backend>(&mut self, logits: Tensor<B, 2>) -> Vec<u32> {
        ids_to_host(self.sample_device(logits))
    }
}

/// `[batch, 1]` ids to the host.
pub fn ids_to_host<B: Backend>(ids: Tensor<B, 2, Int>) -> Vec<u32> {
    ids.into_data().iter::<i64>().map(|x| x as u32).collect()
}

/// Log-probabilities of `ids` (`[batch, 1]`) under `logits`.
pub fn logprobs_of<B: Backend>(logits: Tensor<B, 2>, ids: Tensor<B, 2, Int>) -> Vec<f32> {
    log_softmax(logits, 1).gather(1, ids).into_data().iter::<f32>().collect()
}

/// The `k` most likely tokens of each row of `logits` with their log-probabilities, best first
/// (`k · batch` values leave the device). Only tokens the distribution can draw are listed: after
/// a truncation (top-k, top-p, a grammar…) a row may have fewer than `k`, never one at −∞.
pub fn top_logprobs_of<B: Backend>(logits: Tensor<B, 2>, k: usize) -> Vec<Vec<(u32, f32)>> {
    let [b, v] = logits.dims();
    let k = k.min(v);
    let (vals, idx) = log_softmax(logits, 1).topk_with_indices(k, 1);
    let vals: Vec<f32> = vals.into_data().iter::<f32>().collect();
    let idx: Vec<i64> = idx.into_data().iter::<i64>().collect();
    (0..b)
        .map(|r| (0..k).map(|j| (idx[r * k + j] as u32, vals[r * k + j])).filter(|&(_, lp)| lp.is_finite()).collect())
        .collect()
}
