//! Grouped-query self-attention with RoPE and an optional KV cache, q/k/v fused into one
//! projection at load; per-head q/k RMSNorm, scale, softcap and sliding window as the layer's
//! spec says.
use burn::tensor::Tensor;

use crate::kv_cache::LayerKv;
use crate::norm::RmsNorm;
use crate::ops::{AttnSpec, DecodeOps, Linear, QkNorm, Step};
use crate::profile::{time, Op};
use crate::rope::RotaryEmbedding;

/// Self-attention of one layer: fused `qkv` projection (rows `[q | k | v]`), output projection.
#[derive(Debug, Clone)]
pub struct Attention<B: DecodeOps> {
    pub qkv: Linear<B>,    // [(q + 2·kv)·dim, hidden]
    pub o_proj: Linear<B>, // [hidden, q·dim]
    /// Per-head RMSNorm of queries and of keys before RoPE (`[dim]` each): both or neither.
    pub qk_norm: Option<(RmsNorm<B>, RmsNorm<B>)>,
    pub spec: AttnSpec,
    /// Index of the model's RoPE table this layer uses.
    pub rope: usize,
}

impl<B: DecodeOps> Attention<B> {
    /// Attention of the RMS-normalised `x` (`norm` fused into the q/k/v projection where the
    /// backend can), plus `residual` when given (fused into the output projection).
    ///
    /// # Shapes
    /// - x, residual: `[batch·seq, hidden]`
    /// - output: `[batch·seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        norm: &RmsNorm<B>,
        step: &Step<B>,
        ropes: &[RotaryEmbedding<B>],
        cache: Option<&mut LayerKv<B>>,
        residual: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 2> {
        let qkv = time(Op::Qkv, || B::norm_linear(x, &norm.gamma, norm.eps, &self.qkv, None));
        let qk_norm = self.qk_norm.as_ref().map(|(q, k)| QkNorm { q: &q.gamma, k: &k.gamma, eps: q.eps });
        let out = B::rope_attention(qkv, step, &ropes[self.rope], qk_norm, cache, &self.spec);
        time(Op::AttnOut, || match residual {
            Some(r) => B::linear_residual(out, &self.o_proj, r),
            None => B::linear_layer(out, &self.o_proj),
        })
    }
}
