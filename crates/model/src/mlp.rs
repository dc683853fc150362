//! Gated feed-forward block: `down(act(gate(x)) * up(x))` (SwiGLU, GeGLU), gate and up fused
//! into one projection at load.
use burn::tensor::Tensor;

use crate::families::Activation;
use crate::ops::{DecodeOps, Linear};
use crate::profile::{time, Op};

/// Gated MLP: `gate_up` rows `[gate | up]`, the activation, then `down`.
#[derive(Debug, Clone)]
pub struct Mlp<B: DecodeOps> {
    pub gate_up: Linear<B>, // [2·intermediate, hidden]
    pub down: Linear<B>,    // [hidden, intermediate]
    pub act: Activation,
}

impl<B: DecodeOps> Mlp<B> {
    /// # Shapes
    /// - x: `[m, hidden]`
    /// - output: `[m, hidden]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let gu = time(Op::GateUp, || B::linear_layer(x, &self.gate_up));
        let a = time(Op::GatedAct, || B::gated_act(gu, self.act));
        time(Op::Down, || B::linear_layer(a, &self.down))
    }
}
