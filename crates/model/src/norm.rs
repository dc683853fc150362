//! RMSNorm: `y = x / sqrt(mean(x²) + eps) * gamma`, exactly HF's `LlamaRMSNorm` in f32.
use burn::tensor::Tensor;

use crate::ops::DecodeOps;
use crate::profile::{time, Op};

/// RMSNorm over the last dimension.
#[derive(Debug, Clone)]
pub struct RmsNorm<B: DecodeOps> {
    pub gamma: Tensor<B, 1>, // [hidden]
    pub eps: f64,
}

impl<B: DecodeOps> RmsNorm<B> {
    /// # Shapes
    /// - x: `[m, hidden]` → `[m, hidden]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        time(Op::Norm, || B::rms_norm(x, &self.gamma, self.eps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn matches_hand_computation() {
        let device = Default::default();
        let norm = RmsNorm::<NdArray> { gamma: Tensor::from_floats([1.0, 2.0, 0.5, -1.0], &device), eps: 1e-5 };
        let x = Tensor::<NdArray, 2>::from_floats([[1.0, -2.0, 3.0, 0.5]], &device);
        let y: Vec<f32> = norm.forward(x).into_data().to_vec().unwrap();
        let ms = (1.0f32 + 4.0 + 9.0 + 0.25) / 4.0;
        let r = 1.0 / (ms + 1e-5).sqrt();
        let want = [1.0 * r, -2.0 * r * 2.0, 3.0 * r * 0.5, -(0.5 * r)];
        assert_eq!(y.len(), want.len());
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
