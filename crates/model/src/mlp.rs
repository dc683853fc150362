//! SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`, gate and up fused into one
//! projection at load.
use burn::tensor::Tensor;

use crate::ops::{DecodeOps, Linear};
use crate::profile::{time, Op};

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
        let gu = time(Op::GateUp, || B::linear_layer(x, &self.gate_up));
        let a = time(Op::Swiglu, || B::swiglu(gu));
        time(Op::Down, || B::linear_layer(a, &self.down))
    }
}
