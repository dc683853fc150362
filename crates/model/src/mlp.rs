//! Gated feed-forward block: `down(act(gate(x)) * up(x))` (SwiGLU, GeGLU), gate and up fused
//! into one projection at load; [`Ffn`]: a layer's dense MLP or sparse mixture of them.
use burn::tensor::Tensor;

use crate::families::Activation;
use crate::moe::SparseMoe;
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

/// The feed-forward block of a layer: one gated MLP, or a sparse mixture of them.
#[derive(Debug, Clone)]
pub enum Ffn<B: DecodeOps> {
    Dense(Mlp<B>),
    Sparse(SparseMoe<B>),
}

impl<B: DecodeOps> Ffn<B> {
    /// # Shapes
    /// - x: `[m, hidden]`
    /// - output: `[m, hidden]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Ffn::Dense(m) => m.forward(x),
            Ffn::Sparse(m) => m.forward(x),
        }
    }

    /// Every projection with its kind (`ffn_gate_up`, `ffn_down`, `ffn_router`, …).
    pub fn linears(&self) -> Vec<(&'static str, &Linear<B>)> {
        match self {
            Ffn::Dense(m) => vec![("ffn_gate_up", &m.gate_up), ("ffn_down", &m.down)],
            Ffn::Sparse(s) => std::iter::once(("ffn_router", &s.router))
                .chain(s.experts.iter().flat_map(|m| [("ffn_gate_up_exps", &m.gate_up), ("ffn_down_exps", &m.down)]))
                .collect(),
        }
    }

    /// Bytes of weights one token reads (a sparse block: the router and `top_k` experts).
    pub fn bytes_per_token(&self) -> usize {
        let lin = |l: &Linear<B>| l.weight.bytes();
        match self {
            Ffn::Dense(m) => lin(&m.gate_up) + lin(&m.down),
            Ffn::Sparse(s) => {
                let experts: usize = s.experts.iter().map(|m| lin(&m.gate_up) + lin(&m.down)).sum();
                lin(&s.router) + experts / s.experts.len().max(1) * s.top_k
            }
        }
    }
}
