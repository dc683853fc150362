//! Rotary position embeddings, HF's half-split convention (`rotate_half`).
use burn::tensor::{backend::Backend, s, Int, Tensor, TensorData};

/// Precomputed cos/sin tables for every position up to the context length.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding<B: Backend> {
    cos: Tensor<B, 2>,        // [max_pos, head_dim]
    sin_signed: Tensor<B, 2>, // [max_pos, head_dim], first half negated (folds rotate_half's sign)
    head_dim: usize,
}

/// The cos/sin rows of one forward call, gathered by position id.
#[derive(Debug, Clone)]
pub struct RopeSlice<B: Backend> {
    cos: Tensor<B, 4>, // [batch, 1, seq, head_dim]
    sin: Tensor<B, 4>, // [batch, 1, seq, head_dim]
}

/// Host-side tables, computed in f32 exactly like transformers' `LlamaRotaryEmbedding`
/// (`inv_freq = 1 / theta^(2i/d)` in f32, `angle = pos * inv_freq` in f32).
pub fn rope_tables(theta: f64, head_dim: usize, max_pos: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(max_pos * head_dim);
    let mut sin = Vec::with_capacity(max_pos * head_dim);
    for p in 0..max_pos {
        for j in 0..head_dim {
            let a = p as f32 * inv[j % half];
            cos.push(a.cos());
            sin.push(if j < half { -a.sin() } else { a.sin() });
        }
    }
    (cos, sin)
}

impl<B: Backend> RotaryEmbedding<B> {
    pub fn new(theta: f64, head_dim: usize, max_pos: usize, device: &B::Device) -> Self {
        let (cos, sin) = rope_tables(theta, head_dim, max_pos);
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [max_pos, head_dim]), device),
            sin_signed: Tensor::from_data(TensorData::new(sin, [max_pos, head_dim]), device),
            head_dim,
        }
    }

    /// Gather the rows of the given positions.
    ///
    /// # Shapes
    /// - positions: `[batch, seq]`
    /// - output: cos/sin `[batch, 1, seq, head_dim]`
    pub fn slice(&self, positions: Tensor<B, 2, Int>) -> RopeSlice<B> {
        let [b, t] = positions.dims();
        let flat = positions.reshape([b * t]);
        let cos = self.cos.clone().select(0, flat.clone()).reshape([b, 1, t, self.head_dim]);
        let sin = self.sin_signed.clone().select(0, flat).reshape([b, 1, t, self.head_dim]);
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
