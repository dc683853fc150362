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

/// Tokens per chunk of the draw's partial sums (a multiple of [`LANES`]).
const CHUNK: usize = 1024;
/// Accumulators per chunk: token `i` of a chunk adds to lane `i % LANES`, so the loops vectorize
/// and a truncated row's few tokens add up exactly as the whole row's pass does.
const LANES: usize = 16;

/// `e^d` for `d ≤ 0` in f32 (Cephes' `expf`: `d = n · ln 2 + r`, a degree-6 polynomial in `r`,
/// within 2 ulp of `e^d`); 0 below -87 (f32's smallest normal) and for -inf. Branch-free, so
/// loops over it vectorize; the same operations in any vector width give the same bits.
#[inline(always)]
fn exp_neg(d: f32) -> f32 {
    // adding 1.5 · 2^23 rounds to an integer held in the low mantissa bits
    const MAGIC: f32 = 12_582_912.0;
    let dc = if d > -87.0 { d } else { -87.0 };
    let t = dc * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    // ln 2 in two parts (0.693359375 exact, and the rest) for an exact reduction
    let r = dc - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 0.166_666_65)
        * r
        + 0.5)
        * (r * r)
        + r
        + 1.0;
    let e = t.to_bits() as i32 - MAGIC.to_bits() as i32 + 127;
    let v = p * f32::from_bits((e << 23) as u32);
    if d > -87.0 {
        v
    } else {
        0.0
    }
}

/// The largest finite logit and the count of finite ones, [`LANES`] at a time.
#[inline(always)]
fn max_and_finite(row: &[f32]) -> (f32, usize) {
    let (mut mx, mut n) = ([f32::NEG_INFINITY; LANES], [0u32; LANES]);
    let body = row.len() / LANES * LANES;
    for x in row[..body].chunks_exact(LANES) {
        for j in 0..LANES {
            mx[j] = if x[j] > mx[j] { x[j] } else { mx[j] };
            n[j] += u32::from(x[j] > f32::NEG_INFINITY);
        }
    }
    for (j, &x) in row[body..].iter().enumerate() {
        mx[j] = if x > mx[j] { x } else { mx[j] };
        n[j] += u32::from(x > f32::NEG_INFINITY);
    }
    let max = mx.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    (max, n.iter().map(|&c| c as usize).sum())
}

/// A chunk's weights summed in its lanes, the lanes in order.
fn lane_total(acc: &[f32; LANES]) -> f64 {
    acc.iter().map(|&a| a as f64).sum()
}

/// Each chunk's sum of `e^(x - max)` over the whole row.
#[inline(always)]
fn chunk_sums(row: &[f32], max: f32, sums: &mut [f64]) {
    for (chunk, sum) in row.chunks(CHUNK).zip(sums.iter_mut()) {
        let mut acc = [0f32; LANES];
        let body = chunk.len() / LANES * LANES;
        for x in chunk[..body].chunks_exact(LANES) {
            for j in 0..LANES {
                acc[j] += exp_neg(x[j] - max);
            }
        }
        for (j, &x) in chunk[body..].iter().enumerate() {
            acc[j] += exp_neg(x - max);
        }
        *sum = lane_total(&acc);
    }
}

/// [`max_and_finite`] and [`chunk_sums`] compiled for this CPU's widest vectors.
fn row_pass(row: &[f32], sums: Option<&mut [f64]>) -> (f32, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2")]
        unsafe fn wide(row: &[f32], sums: Option<&mut [f64]>) -> (f32, usize) {
            let (max, n) = max_and_finite(row);
            if let Some(s) = sums {
                chunk_sums(row, max, s);
            }
            (max, n)
        }
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the features were detected on this CPU.
            return unsafe { wide(row, sums) };
        }
    }
    let (max, n) = max_and_finite(row);
    if let Some(s) = sums {
        chunk_sums(row, max, s);
    }
    (max, n)
}

/// The token of `row` (logits) at uniform `u` ∈ [0, 1) of its softmax's CDF in vocabulary order:
/// the first token whose cumulative probability exceeds `u` (the last finite token when rounding
/// leaves `u` above the total). Weights `e^(x - max)` in f32 ([`exp_neg`]), summed per chunk of
/// [`CHUNK`] tokens in [`LANES`] lanes, the chunks in f64; the token is found in the chunk where
/// the running sum passes `u · total`, recomputing only that chunk's weights. A truncated row (a
/// quarter or fewer of its tokens finite) adds only its finite tokens, to the same sums.
pub fn draw(row: &[f32], u: f32) -> usize {
    let (max, finite) = row_pass(row, None);
    if !max.is_finite() {
        return row.len() - 1;
    }
    let mut sums = vec![0f64; row.len().div_ceil(CHUNK)];
    if finite * 4 <= row.len() {
        draw_sparse(row, u, max, &mut sums)
    } else {
        row_pass(row, Some(&mut sums));
        pick(row, u, max, &sums)
    }
}

/// [`draw`] adding only the finite tokens (`sums` zeroed).
fn draw_sparse(row: &[f32], u: f32, max: f32, sums: &mut [f64]) -> usize {
    let mut lanes = vec![[0f32; LANES]; sums.len()];
    for (i, &x) in row.iter().enumerate() {
        if x > f32::NEG_INFINITY {
            lanes[i / CHUNK][i % CHUNK % LANES] += exp_neg(x - max);
        }
    }
    for (s, acc) in sums.iter_mut().zip(&lanes) {
        *s = lane_total(acc);
    }
    pick(row, u, max, sums)
}

/// The token at `u` given each chunk's sum.
fn pick(row: &[f32], u: f32, max: f32, sums: &[f64]) -> usize {
    let total: f64 = sums.iter().sum();
    let target = u as f64 * total;
    let mut cum = 0.0f64;
    for (c, &s) in sums.iter().enumerate() {
        if cum + s > target {
            let (mut within, mut last) = (cum, c * CHUNK);
            for (i, &x) in row.iter().enumerate().skip(c * CHUNK).take(CHUNK) {
                if x > f32::NEG_INFINITY {
                    within += exp_neg(x - max) as f64;
                    last = i;
                    if within > target {
                        return i;
                    }
                }
            }
            return last;
        }
        cum += s;
    }
    row.iter().rposition(|&x| x > f32::NEG_INFINITY).expect("a finite maximum")
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

    /// The draw over a truncated row (only its finite tokens' weights added) picks what the pass
    /// over the whole row picks, for every u: the same sums in the same order.
    #[test]
    fn truncated_draw_is_the_whole_row_draw() {
        let mut r = SeqRng::new(9, 0);
        let (mut draws, mut sparse) = (0, 0);
        for (v, keep) in [(1000usize, 0.02f32), (5000, 0.2), (5000, 0.6), (300, 1.0), (3000, 0.01)] {
            for _ in 0..50 {
                let row: Vec<f32> = (0..v)
                    .map(|_| if r.next_f32() < keep { (r.next_f32() - 0.5) * 10.0 } else { f32::NEG_INFINITY })
                    .collect();
                let (max, finite) = super::row_pass(&row, None);
                if !max.is_finite() {
                    continue;
                }
                sparse += usize::from(finite * 4 <= v);
                let mut sums = vec![0f64; v.div_ceil(super::CHUNK)];
                super::row_pass(&row, Some(&mut sums));
                for u in [0.0f32, r.next_f32(), r.next_f32(), 0.999_999] {
                    let whole = super::pick(&row, u, max, &sums);
                    let truncated = super::draw_sparse(&row, u, max, &mut vec![0f64; sums.len()]);
                    assert_eq!(truncated, whole, "v {v} keep {keep} u {u}");
                    assert_eq!(draw(&row, u), whole, "v {v} keep {keep} u {u}");
                    draws += 1;
                }
            }
        }
        assert!(draws > 700 && sparse > 50, "{draws} draws, {sparse} truncated rows");
    }

    /// `exp_neg` within 2 ulp (relative 2.4e-7) of f64's `exp` over [-87, 0], exactly 1 at 0,
    /// and 0 below f32's normal range and at -inf.
    #[test]
    fn exp_neg_is_exp() {
        let mut worst = 0f64;
        let mut n = 0;
        let mut d = 0f32;
        while d > -87.0 {
            let want = (d as f64).exp();
            let got = super::exp_neg(d) as f64;
            worst = worst.max((got - want).abs() / want);
            n += 1;
            d -= 0.000_731;
        }
        assert!(n > 100_000 && worst <= 2.4e-7, "{n} points, worst relative error {worst:e}");
        assert_eq!(super::exp_neg(0.0), 1.0);
        for d in [-87.5f32, -100.0, -1e30, f32::NEG_INFINITY] {
            assert_eq!(super::exp_neg(d), 0.0, "{d}");
        }
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
