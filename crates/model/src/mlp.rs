//! SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`, gate and up fused into one
//! projection at load.
use burn::tensor::Tensor;

use crate::ops::{DecodeOps, Linear};

/// SwiGLU MLP: `gate_up` rows `[gate | up]`, then `down`.
#[derive(Debug, Clone)]
pub struct Mlp<B: DecodeOps> {
    pub gate_up: Linear<B>, // [2·intermediate, hidden]
    pub down: Linear<B>,    // [hidden, intermediate]
}

impl<B: DecodeOps> Mlp<B> {
    /// # Shapes
    /// - x: `[m, hidden]`
    /// - output: `[m, hidden]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        B::linear_layer(B::swiglu(B::linear_layer(x, &self.gate_up)), &self.down)
    }
}
