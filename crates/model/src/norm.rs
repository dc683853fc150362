//! RMSNorm: Burn's own [`burn::nn::RmsNorm`] (`y = x / sqrt(mean(x²) + eps) * gamma`), which is
//! exactly HF's `LlamaRMSNorm` in f32. Re-exported here so the model has one place for it.
pub use burn::nn::{RmsNorm, RmsNormConfig};

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Tensor, TensorData};

    #[test]
    fn matches_hand_computation() {
        let device = Default::default();
        let mut norm = RmsNormConfig::new(4).with_epsilon(1e-5).init::<NdArray>(&device);
        norm.gamma = burn::module::Param::from_tensor(Tensor::from_floats([1.0, 2.0, 0.5, -1.0], &device));
        let x = Tensor::<NdArray, 2>::from_floats([[1.0, -2.0, 3.0, 0.5]], &device);
        let y: Vec<f32> = norm.forward(x).into_data().to_vec().unwrap();
        let ms = (1.0f32 + 4.0 + 9.0 + 0.25) / 4.0;
        let r = 1.0 / (ms + 1e-5).sqrt();
        let want = [1.0 * r, -2.0 * r * 2.0, 3.0 * r * 0.5, 0.5 * r * -1.0];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let _ = TensorData::new(vec![0f32], [1]);
    }
}
