//! burn-fusion over the wgpu cube backend, with the default [`DecodeOps`] bodies (plain Burn ops):
//! only for the suite's reproduction of burn-fusion's wrong cached decode steps (feature
//! `wgpu-fusion`), never a product backend. [`BREAKS`] cuts fusion at chosen points of a layer
//! (a round trip through the host) to find which fused sequence goes wrong.
use std::sync::atomic::{AtomicU32, Ordering};

use burn::tensor::Tensor;

use crate::families::Activation;
use crate::kv_cache::LayerKv;
use crate::ops::{default_attend, AttnSpec, DecodeOps, Linear, QkNorm, Step};
use crate::rope::RotaryEmbedding;

/// `Fusion<CubeBackend<WgpuRuntime, f32, i32, u32>>`: what `burn::backend::Wgpu` is when
/// burn-wgpu's own `fusion` feature is on.
pub type WgpuFusion = burn_fusion::Fusion<burn_cubecl::CubeBackend<cubecl::wgpu::WgpuRuntime, f32, i32, u32>>;

/// Where fusion is cut (bits): 1 the qkv rows, 2 q/k/v after RoPE, 4 the cache's keys/values
/// after the append, 8 the attention output (rows `[batch·seq, q·dim]`), 16 norms, 32 normed projections, 64 residual sums,
/// 128 gated activations, 256 projections before a residual add.
pub static BREAKS: AtomicU32 = AtomicU32::new(0);

fn brk<const D: usize>(bit: u32, t: Tensor<WgpuFusion, D>) -> Tensor<WgpuFusion, D> {
    if BREAKS.load(Ordering::Relaxed) & bit == 0 {
        return t;
    }
    let device = t.device();
    Tensor::from_data(t.into_data(), &device)
}

impl DecodeOps for WgpuFusion {
    fn norm_linear(
        x: Tensor<Self, 2>,
        gamma: &Tensor<Self, 1>,
        eps: f64,
        w: &Linear<Self>,
        gated: Option<Activation>,
    ) -> Tensor<Self, 2> {
        let x = brk(16, Self::rms_norm(x, gamma, eps));
        let y = brk(32, Self::linear_layer(x, w));
        match gated {
            Some(act) => brk(128, Self::gated_act(y, act)),
            None => y,
        }
    }

    fn linear_residual(x: Tensor<Self, 2>, w: &Linear<Self>, residual: Tensor<Self, 2>) -> Tensor<Self, 2> {
        let y = brk(256, Self::linear_layer(x, w));
        brk(64, residual + y)
    }

    fn rope_attention(
        qkv: Tensor<Self, 2>,
        step: &Step<Self>,
        rope: &RotaryEmbedding<Self>,
        qk_norm: Option<QkNorm<'_, Self>>,
        cache: Option<&mut LayerKv<Self>>,
        attn: &AttnSpec,
    ) -> Tensor<Self, 2> {
        let qkv = brk(1, qkv);
        let (q, k, v) = Self::split_rope(qkv, step, rope, attn.heads, qk_norm);
        let (q, k, v) = (brk(2, q), brk(2, k), brk(2, v));
        let (k, v) = match cache {
            Some(layer) => layer.append(k, v, step.past),
            None => (k, v),
        };
        brk(8, default_attend(q, brk(4, k), brk(4, v), step, attn))
    }
}
