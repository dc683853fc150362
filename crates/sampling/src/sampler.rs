//! Picks the next token per row: argmax, or multinomial with a seeded stream per sequence.
//! Only `[batch]` values leave the device per step.
use burn::tensor::{activation::log_softmax, backend::Backend, Int, Tensor, TensorData};

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
        let v = logits.dims()[1];
        match self {
            Sampler::Greedy => logits.argmax(1),
            Sampler::Multinomial { .. } => {
                // the inverse CDF on the host, one pass over each row (a softmax and cumsum of a
                // 262k row on the device cost ~3 ms per row and step on 2 cores)
                let device = logits.device();
                let rows = crate::util::host_rows(&logits);
                ids_on_device(self.sample_rows(&rows, v).expect("a multinomial sampler draws on the host"), &device)
            }
        }
    }

    /// For multinomial sampling, the ids drawn from host rows of logits (`[batch · vocab]`), the
    /// same as [`Self::sample_device`] on them; `None` for greedy (its argmax stays on the device).
    pub fn sample_rows(&mut self, rows: &[f32], vocab: usize) -> Option<Vec<u32>> {
        match self {
            Sampler::Greedy => None,
            Sampler::Multinomial { rngs } => {
                let b = rows.len() / vocab.max(1);
                assert_eq!(rows.len(), b * vocab, "sample_rows: {} values are not rows of {vocab}", rows.len());
                assert_eq!(rngs.len(), b, "sampler was built for {} rows, got {b}", rngs.len());
                let u: Vec<f32> = rngs.iter_mut().map(SeqRng::next_f32).collect();
                use rayon::prelude::*;
                Some(rows.par_chunks(vocab).zip(&u).map(|(row, &u)| draw(row, u) as u32).collect())
            }
        }
    }

    /// Sample and copy the ids to the host.
    pub fn sample<B: Backend>(&mut self, logits: Tensor<B, 2>) -> Vec<u32> {
        ids_to_host(self.sample_device(logits))
    }
}

/// The token of `row` (logits) at uniform `u` ∈ [0, 1) of its softmax's CDF in vocabulary order:
/// the first token whose cumulative probability exceeds `u` (the last finite token when rounding
/// leaves `u` above the total). Exponentials only for finite logits, each computed once, in f64.
pub fn draw(row: &[f32], u: f32) -> usize {
    let (max, finite) =
        row.iter().fold((f32::NEG_INFINITY, 0usize), |(m, n), &x| (m.max(x), n + usize::from(x > f32::NEG_INFINITY)));
    if !max.is_finite() {
        return row.len() - 1;
    }
    let weight = |x: f32| ((x - max) as f64).exp();
    // the finite tokens with their weights, in vocabulary order (a truncated row: a few; the sums
    // below are the same as over the whole row with zeros for -inf)
    let w: Vec<(usize, f64)> = if finite * 4 <= row.len() {
        row.iter().enumerate().filter(|(_, &x)| x > f32::NEG_INFINITY).map(|(i, &x)| (i, weight(x))).collect()
    } else {
        row.iter().map(|&x| if x > f32::NEG_INFINITY { weight(x) } else { 0.0 }).enumerate().collect()
    };
    let total: f64 = w.iter().map(|&(_, wi)| wi).sum();
    let target = u as f64 * total;
    let mut cum = 0.0f64;
    let mut last = 0;
    for &(i, wi) in &w {
        if row[i] > f32::NEG_INFINITY {
            cum += wi;
            last = i;
            if cum > target {
                return i;
            }
        }
    }
    last
}

/// Host ids as a `[batch, 1]` device tensor.
pub(crate) fn ids_on_device<B: Backend>(ids: Vec<u32>, device: &B::Device) -> Tensor<B, 2, Int> {
    let b = ids.len();
    Tensor::from_data(TensorData::new(ids.into_iter().map(i64::from).collect::<Vec<_>>(), [b, 1]), device)
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

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{activation::softmax, s, Tensor, TensorData};

    use super::draw;
    use crate::rng::SeqRng;

    /// The draw over a truncated row (only its finite tokens' weights kept) picks what the plain
    /// pass over the whole row picks, for every u: the same sums in the same order.
    #[test]
    fn truncated_draw_is_the_whole_row_draw() {
        fn whole(row: &[f32], u: f32) -> usize {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let w: Vec<f64> =
                row.iter().map(|&x| if x > f32::NEG_INFINITY { ((x - max) as f64).exp() } else { 0.0 }).collect();
            let target = u as f64 * w.iter().sum::<f64>();
            let (mut cum, mut last) = (0.0f64, 0);
            for (i, (&x, &wi)) in row.iter().zip(&w).enumerate() {
                if x > f32::NEG_INFINITY {
                    cum += wi;
                    last = i;
                    if cum > target {
                        return i;
                    }
                }
            }
            last
        }
        let mut r = SeqRng::new(9, 0);
        let mut draws = 0;
        for (v, keep) in [(1000usize, 0.02f32), (5000, 0.2), (5000, 0.6), (300, 1.0)] {
            for _ in 0..50 {
                let row: Vec<f32> = (0..v)
                    .map(|_| if r.next_f32() < keep { (r.next_f32() - 0.5) * 10.0 } else { f32::NEG_INFINITY })
                    .collect();
                if row.iter().all(|x| *x == f32::NEG_INFINITY) {
                    continue;
                }
                for u in [0.0f32, r.next_f32(), r.next_f32(), 0.999_999] {
                    assert_eq!(draw(&row, u), whole(&row, u), "v {v} keep {keep} u {u}");
                    draws += 1;
                }
            }
        }
        assert!(draws > 700, "{draws}");
    }

    /// The host draw against the device formula it replaced (softmax, cumsum, count of
    /// cumulative values ≤ u·total): the same token unless u·total falls within float noise of a
    /// boundary (the host sums in f64); -inf tokens are never drawn.
    #[test]
    fn host_draw_is_the_inverse_cdf() {
        let mut r = SeqRng::new(7, 0);
        let (mut same, mut draws) = (0, 0);
        for v in [1usize, 2, 17, 1000, 50_000] {
            for _ in 0..40 {
                let row: Vec<f32> = (0..v)
                    .map(|_| if r.next_f32() < 0.3 && v > 1 { f32::NEG_INFINITY } else { (r.next_f32() - 0.5) * 12.0 })
                    .collect();
                if row.iter().all(|x| *x == f32::NEG_INFINITY) {
                    continue;
                }
                let u = r.next_f32();
                let got = draw(&row, u);
                assert!(row[got] > f32::NEG_INFINITY, "v {v}: drew a -inf token");
                let t = Tensor::<NdArray, 2>::from_data(TensorData::new(row.clone(), [1, v]), &Default::default());
                let cum = softmax(t, 1).cumsum(1);
                let cumv: Vec<f32> = cum.clone().into_data().into_vec().unwrap();
                let total = cum.slice(s![.., v - 1..v]).into_scalar();
                let want = cumv.iter().filter(|&&c| c <= u * total).count().min(v - 1);
                if got == want {
                    same += 1;
                } else {
                    // a boundary within float noise of u
                    let c = cumv[got.min(want)] / total;
                    assert!((c - u).abs() < 1e-5, "v {v} u {u}: drew {got}, the formula {want}");
                }
                draws += 1;
            }
        }
        // (the f32 cumsum of a 50,000-token row drifts by ~1e-5: a few draws land on either side)
        assert!(draws > 150 && same * 20 >= draws * 19, "{same} of {draws}");
    }
}
