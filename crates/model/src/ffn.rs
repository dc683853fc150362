//! A layer's feed-forward block: one gated MLP ([`Mlp`]) or a sparse mixture of them
//! ([`SparseMoe`]), with the input norm and the residual add fused where the backend can.
use burn::tensor::Tensor;

use crate::mlp::Mlp;
use crate::moe::SparseMoe;
use crate::norm::RmsNorm;
use crate::ops::{DecodeOps, Linear};
use crate::profile::{time, Op};

/// The feed-forward block of a layer: one gated MLP, or a sparse mixture of them.
#[derive(Debug, Clone)]
pub enum Ffn<B: DecodeOps> {
    Dense(Mlp<B>),
    Sparse(SparseMoe<B>),
}

impl<B: DecodeOps> Ffn<B> {
    /// The block on the RMS-normalised `x` (the norm fused into gate/up, the activation after
    /// it, where the backend can), plus `residual` when given (fused into the down projection).
    ///
    /// # Shapes
    /// - x, residual: `[m, hidden]`
    /// - output: `[m, hidden]`
    pub fn forward(&self, x: Tensor<B, 2>, norm: &RmsNorm<B>, residual: Option<Tensor<B, 2>>) -> Tensor<B, 2> {
        match self {
            Ffn::Dense(m) => {
                let a = time(Op::GateUp, || B::norm_linear(x, &norm.gamma, norm.eps, &m.gate_up, Some(m.act)));
                time(Op::Down, || match residual {
                    Some(r) => B::linear_residual(a, &m.down, r),
                    None => B::linear_layer(a, &m.down),
                })
            }
            Ffn::Sparse(s) => {
                let y = s.forward(norm.forward(x));
                match residual {
                    Some(r) => time(Op::Residual, || r + y),
                    None => y,
                }
            }
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
