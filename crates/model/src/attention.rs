//! Grouped-query self-attention with RoPE and an optional KV cache, q/k/v fused into one
//! projection at load.
use burn::tensor::Tensor;

use crate::kv_cache::LayerKv;
use crate::ops::{DecodeOps, Heads, Linear, Step};
use crate::profile::{time, Op};
use crate::rope::RotaryEmbedding;

/// Self-attention of one layer: fused `qkv` projection (rows `[q | k | v]`), output projection.
#[derive(Debug, Clone)]
pub struct Attention<B: DecodeOps> {
    pub qkv: Linear<B>,    // [(q + 2·kv)·dim, hidden]
    pub o_proj: Linear<B>, // [hidden, q·dim]
    pub heads: Heads,
}

impl<B: DecodeOps> Attention<B> {
    /// # Shapes
    /// - x: `[batch·seq, hidden]`
    /// - output: `[batch·seq, hidden]`
    ///
    /// With a cache, keys are the `step.past` cached positions plus the `step.seq` new ones.
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        step: &Step<B>,
        rope: &RotaryEmbedding<B>,
        cache: Option<&mut LayerKv<B>>,
    ) -> Tensor<B, 2> {
        let qkv = time(Op::Qkv, || B::linear_layer(x, &self.qkv));
        let (q, k, v) = time(Op::Rope, || B::split_rope(qkv, step, rope, self.heads));
        let out = time(Op::Attention, || B::cached_attention(q, k, v, cache, step, self.heads));
        time(Op::AttnOut, || B::linear_layer(out, &self.o_proj))
    }
}
