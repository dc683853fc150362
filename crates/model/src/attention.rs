//! Grouped-query self-attention with RoPE and an optional KV cache.
//!
//! GQA without materialising repeated K/V: the `n_rep` query heads that share a K/V head are
//! stacked along the sequence axis (`[B, kv, n_rep*T, hd]`), so one fused
//! `burn::tensor::module::attention` call per layer serves them all.
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};

use crate::kv_cache::LayerKv;
use crate::rope::RopeSlice;

/// Configuration of [`Attention`].
#[derive(burn::config::Config, Debug)]
pub struct AttentionConfig {
    pub hidden_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    #[config(default = false)]
    pub bias: bool,
}

/// Llama self-attention with HF parameter names.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Linear<B>, // weight [hidden, heads*head_dim]
    pub k_proj: Linear<B>, // weight [hidden, kv_heads*head_dim]
    pub v_proj: Linear<B>, // weight [hidden, kv_heads*head_dim]
    pub o_proj: Linear<B>, // weight [heads*head_dim, hidden]
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        let lin = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        let (h, kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        Attention {
            q_proj: lin(self.hidden_size, h * d, self.bias),
            k_proj: lin(self.hidden_size, kv * d, self.bias),
            v_proj: lin(self.hidden_size, kv * d, self.bias),
            o_proj: lin(h * d, self.hidden_size, false),
            num_heads: h,
            num_kv_heads: kv,
            head_dim: d,
        }
    }
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - x: `[batch, seq, hidden]`
    /// - mask: `[batch, kv_heads, n_rep*seq, keys]`, `true` = masked out (None: attend to all keys)
    /// - output: `[batch, seq, hidden]`
    ///
    /// With a cache, keys are the `past_len` cached positions plus `seq` new ones.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeSlice<B>,
        mask: Option<Tensor<B, 4, Bool>>,
        cache: Option<(&mut LayerKv<B>, usize)>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let (h, kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let n_rep = h / kv;
        let q = self.q_proj.forward(x.clone()).reshape([b, t, h, d]).swap_dims(1, 2);
        let k = self.k_proj.forward(x.clone()).reshape([b, t, kv, d]).swap_dims(1, 2);
        let v = self.v_proj.forward(x).reshape([b, t, kv, d]).swap_dims(1, 2);
        let q = rope.apply(q); // [b, h, t, d]
        let k = rope.apply(k); // [b, kv, t, d]
        let (k, v) = match cache {
            Some((layer, past)) => layer.append(k, v, past),
            None => (k, v),
        };
        let q = q.reshape([b, kv, n_rep * t, d]);
        let opts = AttentionModuleOptions { scale: None, softcap: None, is_causal: false };
        let out = attention(q, k, v, mask, None, opts); // [b, kv, n_rep*t, d]
        let out = out.reshape([b, h, t, d]).swap_dims(1, 2).reshape([b, t, h * d]);
        self.o_proj.forward(out)
    }
}
