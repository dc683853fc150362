//! Rotary position embeddings, HF's half-split convention (`rotate_half`).
use burn::tensor::{backend::Backend, s, Int, Tensor, TensorData};

/// Rotary embedding of one model: the inverse frequencies, with the `[max_pos, head_dim]`
/// cos/sin tables of the default (device) path built on first use.
#[derive(Debug)]
pub struct RotaryEmbedding<B: Backend> {
    inv_freq: Vec<f32>,
    head_dim: usize,
    max_pos: usize,
    /// Which of the model's tables this is (per-step caches are keyed by it).
    key: usize,
    device: B::Device,
    tables: std::sync::OnceLock<(Tensor<B, 2>, Tensor<B, 2>)>, // cos, sin_signed: [max_pos, head_dim]
}

/// The cos/sin rows of one forward call, gathered by position id.
#[derive(Debug, Clone)]
pub struct RopeSlice<B: Backend> {
    cos: Tensor<B, 4>, // [batch, 1, seq, head_dim]
    sin: Tensor<B, 4>, // [batch, 1, seq, head_dim]
}

/// transformers' default inverse frequencies, in f32 as `LlamaRotaryEmbedding` computes them:
/// `1 / theta^(2i/d)`.
pub fn default_inv_freq(theta: f64, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2).map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect()
}

/// transformers' `_compute_llama3_parameters` (in f32, as torch computes it): wavelengths longer
/// than `original / low_freq_factor` are divided by `factor`, shorter than `original /
/// high_freq_factor` kept, and smoothly interpolated between.
pub fn llama3_inv_freq(inv: &[f32], factor: f64, low: f64, high: f64, original: usize) -> Vec<f32> {
    let (factor, low, high, old) = (factor as f32, low as f32, high as f32, original as f32);
    let low_wavelen = old / low;
    let high_wavelen = old / high;
    inv.iter()
        .map(|&f| {
            let wavelen = 2.0 * std::f32::consts::PI / f;
            let scaled = if wavelen > low_wavelen { f / factor } else { f };
            let smooth = (old / wavelen - low) / (high - low);
            let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
            // as transformers: neither `wavelen < high_wavelen` nor `wavelen > low_wavelen` (NaN stays medium)
            let medium = wavelen.partial_cmp(&high_wavelen) != Some(std::cmp::Ordering::Less)
                && wavelen.partial_cmp(&low_wavelen) != Some(std::cmp::Ordering::Greater);
            if medium {
                smoothed
            } else {
                scaled
            }
        })
        .collect()
}

/// cos and signed sin (first half negated, folding `rotate_half`'s sign) of position `p`,
/// `angle = p * inv_freq` in f32 like transformers.
fn rows_of(inv: &[f32], p: usize, cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
    let half = inv.len();
    for j in 0..2 * half {
        let a = p as f32 * inv[j % half];
        cos.push(a.cos());
        sin.push(if j < half { -a.sin() } else { a.sin() });
    }
}

/// Host-side tables for every position below `max_pos` (`[max_pos, head_dim]` each).
pub fn rope_tables(theta: f64, head_dim: usize, max_pos: usize) -> (Vec<f32>, Vec<f32>) {
    let inv = default_inv_freq(theta, head_dim);
    let (mut cos, mut sin) = (Vec::with_capacity(max_pos * head_dim), Vec::with_capacity(max_pos * head_dim));
    for p in 0..max_pos {
        rows_of(&inv, p, &mut cos, &mut sin);
    }
    (cos, sin)
}

impl<B: Backend> RotaryEmbedding<B> {
    pub fn new(theta: f64, head_dim: usize, max_pos: usize, device: &B::Device) -> Self {
        Self::from_inv_freq(default_inv_freq(theta, head_dim), max_pos, device)
    }

    /// From explicit inverse frequencies (`head_dim / 2` of them), e.g. after RoPE scaling.
    pub fn from_inv_freq(inv_freq: Vec<f32>, max_pos: usize, device: &B::Device) -> Self {
        let head_dim = 2 * inv_freq.len();
        Self { inv_freq, head_dim, max_pos, key: 0, device: device.clone(), tables: std::sync::OnceLock::new() }
    }

    /// The same table as the model's table number `key`.
    pub fn with_key(mut self, key: usize) -> Self {
        self.key = key;
        self
    }

    pub fn key(&self) -> usize {
        self.key
    }

    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// cos / signed-sin rows of `positions`, `[positions, head_dim]` each (host).
    pub fn host_rows(&self, positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let n = positions.len() * self.head_dim;
        let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for &p in positions {
            rows_of(&self.inv_freq, p, &mut cos, &mut sin);
        }
        (cos, sin)
    }

    /// The cos / signed-sin tables of every position, `[max_pos, head_dim]` each, built on the
    /// device on first use.
    pub fn tables(&self) -> &(Tensor<B, 2>, Tensor<B, 2>) {
        self.tables.get_or_init(|| {
            let all: Vec<usize> = (0..self.max_pos).collect();
            let (cos, sin) = self.host_rows(&all);
            let shape = [self.max_pos, self.head_dim];
            (
                Tensor::from_data(TensorData::new(cos, shape), &self.device),
                Tensor::from_data(TensorData::new(sin, shape), &self.device),
            )
        })
    }

    /// Gather the rows of the given positions.
    ///
    /// # Shapes
    /// - positions: `[batch, seq]`
    /// - output: cos/sin `[batch, 1, seq, head_dim]`
    pub fn slice(&self, positions: Tensor<B, 2, Int>) -> RopeSlice<B> {
        let [b, t] = positions.dims();
        let flat = positions.reshape([b * t]);
        let (cos, sin) = self.tables();
        let cos = cos.clone().select(0, flat.clone()).reshape([b, 1, t, self.head_dim]);
        let sin = sin.clone().select(0, flat).reshape([b, 1, t, self.head_dim]);
        RopeSlice { cos, sin }
    }
}

impl<B: Backend> RopeSlice<B> {
    /// `x * cos + rotate_half(x) * sin`.
    ///
    /// # Shapes
    /// - x: `[batch, heads, seq, head_dim]`
    /// - output: `[batch, heads, seq, head_dim]`
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let d = x.dims()[3];
        let half = d / 2;
        let x1 = x.clone().slice(s![.., .., .., 0..half]);
        let x2 = x.clone().slice(s![.., .., .., half..d]);
        let swapped = Tensor::cat(vec![x2, x1], 3);
        x * self.cos.clone() + swapped * self.sin.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn rotation_matches_reference_formula() {
        let device = Default::default();
        let (theta, d) = (10000.0, 8);
        let rope = RotaryEmbedding::<NdArray>::new(theta, d, 16, &device);
        let xs: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin() + 0.1).collect();
        let x = Tensor::<NdArray, 4>::from_data(TensorData::new(xs.clone(), [1, 1, 1, d]), &device);
        let pos = Tensor::<NdArray, 2, Int>::from_data(TensorData::new(vec![5i64], [1, 1]), &device);
        let y: Vec<f32> = rope.slice(pos).apply(x).into_data().convert::<f32>().to_vec().unwrap();
        let half = d / 2;
        for j in 0..d {
            let i = j % half;
            let a = 5.0f64 / theta.powf(2.0 * i as f64 / d as f64);
            let rot = if j < half { -xs[j + half] } else { xs[j - half] } as f64;
            let want = xs[j] as f64 * a.cos() + rot * a.sin();
            assert!((y[j] as f64 - want).abs() < 1e-5, "dim {j}: {} vs {want}", y[j]);
        }
    }

    #[test]
    fn position_zero_is_identity() {
        let device = Default::default();
        let rope = RotaryEmbedding::<NdArray>::new(500000.0, 4, 4, &device);
        let x = Tensor::<NdArray, 4>::from_floats([[[[1.0, 2.0, 3.0, 4.0]]]], &device);
        let pos = Tensor::<NdArray, 2, Int>::from_data(TensorData::new(vec![0i64], [1, 1]), &device);
        let y: Vec<f32> = rope.slice(pos).apply(x).into_data().convert::<f32>().to_vec().unwrap();
        assert_eq!(y, vec![1.0, 2.0, 3.0, 4.0]);
    }
}
