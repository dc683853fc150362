//! `DecodeOps`: the backend extension every hot operation of the decoder goes through.
//!
//! Each method has a default body written in plain Burn tensor ops — ndarray, wgpu and cuda run
//! those, and they are the reference the specialisations are tested against. A backend overrides
//! what pays on it: the CPU backend `flex` computes linear layers directly on GGUF blocks kept
//! as in the file, and fuses RMSNorm, RoPE, SwiGLU and attention over the KV cache in place
//! (`kernels::flex`).
use std::cell::RefCell;
use std::sync::Arc;

use burn::tensor::activation::{gelu_approximate, silu};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{s, Bool, DType, Int, Tensor, TensorData};

use crate::batch::attention_mask_data;
use crate::families::Activation;
use crate::ggml::GgmlType;
use crate::kernels::blocks::{dequantize_words, DeviceLayout};
use crate::kernels::QuantMatrix;
use crate::kv_cache::LayerKv;
use crate::profile::{time, Op};
use crate::rope::{RopeSlice, RotaryEmbedding};

/// A weight matrix `[out, in]` (rows = output features, as GGUF and PyTorch store it).
#[derive(Debug, Clone)]
pub enum Matrix<B: Backend> {
    /// A dense tensor on the device (any float dtype the backend supports).
    Dense(Tensor<B, 2>),
    /// Blocks on the host, exactly as the GGUF file stores them (or quantized at load); used by
    /// backends whose [`DecodeOps::host_weights`] is true.
    Host(Arc<QuantMatrix>),
    /// Blocks on the device (the cube backends' layout, [`crate::kernels::blocks`]).
    Device(DeviceBlocks<B>),
}

/// A block matrix on the device: its words in [`DeviceLayout`].
#[derive(Debug, Clone)]
pub struct DeviceBlocks<B: Backend> {
    /// The file's block type.
    pub ty: GgmlType,
    pub layout: DeviceLayout,
    pub rows: usize,
    pub cols: usize,
    /// `u32` words, in chunks of [`Self::chunk_rows`] rows (whole row groups) so that no buffer
    /// passes the device's largest allocation (a 262k-row embedding does on lavapipe); their
    /// concatenation is the whole matrix's layout.
    pub words: Vec<Tensor<B, 1, Int>>,
    /// Rows per chunk of `words` (the last chunk may hold fewer).
    pub chunk_rows: usize,
}

impl<B: Backend> DeviceBlocks<B> {
    /// The values on the host (the reference path: the words read back and dequantized).
    pub fn to_host(&self) -> Vec<f32> {
        let words: Vec<u32> = self.words.iter().flat_map(|w| w.to_data().iter::<u32>().collect::<Vec<_>>()).collect();
        dequantize_words(self.layout, &words, self.rows, self.cols)
    }
}

impl<B: Backend> Matrix<B> {
    /// `[out, in]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            Matrix::Dense(t) => t.dims(),
            Matrix::Host(q) => [q.rows(), q.cols()],
            Matrix::Device(d) => [d.rows, d.cols],
        }
    }

    /// Bytes the weights occupy.
    pub fn bytes(&self) -> usize {
        match self {
            Matrix::Dense(t) => t.shape().num_elements() * t.dtype().size(),
            Matrix::Host(q) => q.bytes(),
            Matrix::Device(d) => d.words.iter().map(|w| w.shape().num_elements() * 4).sum(),
        }
    }

    /// A description of the storage (`Q4_1`, `f32`, …).
    pub fn kind(&self) -> String {
        match self {
            Matrix::Dense(t) => format!("{:?}", t.dtype()).to_lowercase(),
            Matrix::Host(q) => format!("{:?}", q.ty()),
            Matrix::Device(d) => format!("{:?}", d.ty),
        }
    }

    /// The matrix as a dense f32 tensor on `device` (the reference path of [`Matrix::Host`]).
    pub fn to_dense(&self, device: &B::Device) -> Tensor<B, 2> {
        match self {
            Matrix::Dense(t) => t.clone().cast(DType::F32),
            Matrix::Host(q) => Tensor::from_data(TensorData::new(q.dequantize(), [q.rows(), q.cols()]), device),
            Matrix::Device(d) => Tensor::from_data(TensorData::new(d.to_host(), [d.rows, d.cols]), device),
        }
    }
}

/// A linear layer `y = x · Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Linear<B: Backend> {
    pub weight: Matrix<B>, // [out, in]
    pub bias: Option<Tensor<B, 1>>,
}

impl<B: Backend> Linear<B> {
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }
}

/// Head layout of the attention of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub q: usize,
    pub kv: usize,
    pub dim: usize,
}

/// How one layer attends: head layout, score scale, softcap, sliding window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnSpec {
    pub heads: Heads,
    /// Scores are `q·k · scale`.
    pub scale: f64,
    /// Scores capped as `cap · tanh(s / cap)` before the mask and softmax.
    pub softcap: Option<f64>,
    /// A query sees at most this many keys (itself included).
    pub window: Option<usize>,
}

impl AttnSpec {
    /// Full attention with the default scale `1/√dim`.
    pub fn plain(heads: Heads) -> Self {
        Self { heads, scale: 1.0 / (heads.dim as f64).sqrt(), softcap: None, window: None }
    }
}

/// Per-head RMSNorm weights of queries and keys (`[dim]` each).
#[derive(Debug)]
pub struct QkNorm<'a, B: Backend> {
    pub q: &'a Tensor<B, 1>,
    pub k: &'a Tensor<B, 1>,
    pub eps: f64,
}

// Copy for every backend (two references and a float; a derive would ask `B: Copy`).
impl<B: Backend> Clone for QkNorm<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for QkNorm<'_, B> {}

/// What one forward call computes: host-side ids, positions and key masks, with the device
/// tensors the default bodies need built on first use (a specialised backend never builds them).
pub struct Step<B: Backend> {
    pub batch: usize,
    /// New tokens per row.
    pub seq: usize,
    /// Cached positions before this call.
    pub past: usize,
    /// `[batch · seq]`, row-major.
    pub tokens: Vec<u32>,
    /// `[batch · seq]`.
    pub positions: Vec<usize>,
    /// Per row, for every key (cached + new): a real token? `None`: all are.
    pub key_valid: Option<Vec<Vec<bool>>>,
    pub device: B::Device,
    /// Per RoPE table (by key): the device rows of the default body, the host rows of kernels.
    rope: RefCell<Vec<(usize, RopeSlice<B>)>>,
    host_rope: RefCell<Vec<(usize, std::rc::Rc<(Vec<f32>, Vec<f32>)>)>>,
    /// Per (heads, window): the default body's mask.
    mask: RefCell<Vec<((usize, usize, Option<usize>), Option<Tensor<B, 4, Bool>>)>>,
    /// Kernels' uploads: positions, and the key mask (1 = real token) when some key is padding.
    device_positions: std::cell::OnceCell<Tensor<B, 1, Int>>,
    device_key_valid: std::cell::OnceCell<Option<Tensor<B, 1, Int>>>,
}

impl<B: Backend> Step<B> {
    /// `key_valid` covers `past + seq` keys per row; rows without padding may pass `None`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        batch: usize,
        seq: usize,
        past: usize,
        tokens: Vec<u32>,
        positions: Vec<usize>,
        key_valid: Option<Vec<Vec<bool>>>,
        device: &B::Device,
    ) -> Self {
        let key_valid = key_valid.filter(|kv| kv.iter().any(|r| r.iter().any(|&v| !v)));
        Self {
            batch,
            seq,
            past,
            tokens,
            positions,
            key_valid,
            device: device.clone(),
            rope: RefCell::new(vec![]),
            host_rope: RefCell::new(vec![]),
            mask: RefCell::new(vec![]),
            device_positions: std::cell::OnceCell::new(),
            device_key_valid: std::cell::OnceCell::new(),
        }
    }

    /// This call's positions on the device (`[batch · seq]`), uploaded on first use.
    pub fn device_positions(&self) -> Tensor<B, 1, Int> {
        self.device_positions
            .get_or_init(|| {
                let p: Vec<i32> = self.positions.iter().map(|&p| p as i32).collect();
                let n = p.len();
                Tensor::from_data(TensorData::new(p, [n]), &self.device)
            })
            .clone()
    }

    /// Per row, for every key, 1 for a real token and 0 for padding (`[batch · keys]`), on the
    /// device; `None` when every key is real.
    pub fn device_key_valid(&self) -> Option<Tensor<B, 1, Int>> {
        self.device_key_valid
            .get_or_init(|| {
                self.key_valid.as_ref().map(|kv| {
                    let v: Vec<i32> = kv.iter().flatten().map(|&b| i32::from(b)).collect();
                    let n = v.len();
                    Tensor::from_data(TensorData::new(v, [n]), &self.device)
                })
            })
            .clone()
    }

    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }

    pub fn keys(&self) -> usize {
        self.past + self.seq
    }

    /// cos / sin rows of this call's positions on the device, `[batch, 1, seq, head_dim]`.
    pub fn rope(&self, rope: &RotaryEmbedding<B>) -> RopeSlice<B> {
        if let Some((_, r)) = self.rope.borrow().iter().find(|(k, _)| *k == rope.key()) {
            return r.clone();
        }
        let pos: Vec<i64> = self.positions.iter().map(|&p| p as i64).collect();
        let pos = Tensor::<B, 2, Int>::from_data(TensorData::new(pos, [self.batch, self.seq]), &self.device);
        let r = rope.slice(pos);
        self.rope.borrow_mut().push((rope.key(), r.clone()));
        r
    }

    /// cos / signed-sin rows of this call's positions on the host, `[batch · seq, head_dim]` each.
    pub fn host_rope(&self, rope: &RotaryEmbedding<B>) -> std::rc::Rc<(Vec<f32>, Vec<f32>)> {
        if let Some((_, r)) = self.host_rope.borrow().iter().find(|(k, _)| *k == rope.key()) {
            return r.clone();
        }
        let r = std::rc::Rc::new(rope.host_rows(&self.positions));
        self.host_rope.borrow_mut().push((rope.key(), r.clone()));
        r
    }

    /// The attention mask of the default body, `[batch, kv, rep·seq, keys]`, `true` = hidden;
    /// `None` when nothing is hidden.
    pub fn mask(&self, heads: Heads, window: Option<usize>) -> Option<Tensor<B, 4, Bool>> {
        let key = (heads.q, heads.kv, window);
        if let Some((_, m)) = self.mask.borrow().iter().find(|(k, _)| *k == key) {
            return m.clone();
        }
        let (kv, rep) = (heads.kv, heads.q / heads.kv);
        let all_valid;
        let key_valid = match &self.key_valid {
            Some(k) => k,
            None => {
                all_valid = vec![vec![true; self.keys()]; self.batch];
                &all_valid
            }
        };
        let m = attention_mask_data(key_valid, self.seq, kv, rep, window).map(|m| {
            Tensor::<B, 4, Bool>::from_data(
                TensorData::new(m, [self.batch, kv, rep * self.seq, self.keys()]),
                &self.device,
            )
        });
        self.mask.borrow_mut().push((key, m.clone()));
        m
    }
}

/// The default body of [`DecodeOps::linear_layer`]: Burn's matmul against the dense matrix.
pub fn default_linear<B: Backend>(x: Tensor<B, 2>, w: &Linear<B>) -> Tensor<B, 2> {
    let y = match &w.weight {
        Matrix::Dense(t) => x.matmul(t.clone().transpose()),
        blocks => {
            let dense = blocks.to_dense(&x.device());
            x.matmul(dense.transpose())
        }
    };
    match &w.bias {
        Some(b) => y + b.clone().unsqueeze_dim(0),
        None => y,
    }
}

/// The default body of [`DecodeOps::embed`]: rows of the dense table.
pub fn default_embed<B: Backend>(ids: &[u32], table: &Matrix<B>, device: &B::Device) -> Tensor<B, 2> {
    let idx: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [ids.len()]), device);
    match table {
        Matrix::Dense(t) => t.clone().select(0, idx).cast(DType::F32),
        blocks => blocks.to_dense(device).select(0, idx),
    }
}

/// The decoder's hot operations, overridable per backend.
pub trait DecodeOps: Backend {
    /// Whether linear layers of this backend compute on [`Matrix::Host`] block weights (then
    /// loaders keep GGUF quantization). Default: weights become dense device tensors.
    fn host_weights() -> bool {
        false
    }

    /// The KV cache row types this backend's attention reads ([`crate::CacheType`]). Default:
    /// f32 (the default bodies append and read with plain tensor ops).
    fn cache_types() -> &'static [crate::CacheType] {
        &[crate::CacheType::F32]
    }

    /// Run one forward call. CPU backends with a thread pool run it on a pool thread, so their
    /// parallel kernels share the work with the calling thread instead of waking helpers while
    /// it sleeps (on 2 cores, a third thread only competes).
    fn run_step<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        f()
    }

    /// Whether [`DecodeOps::device_blocks`] keeps some block types on the device (then the
    /// loader keeps the file's blocks to offer them). Default: false.
    fn device_blocks_supported() -> bool {
        false
    }

    /// Keep `q` (blocks as the file stores them) on the device in this backend's layout, or
    /// `None` (then the loader uploads a dense matrix). Default: `None`.
    fn device_blocks(q: Arc<QuantMatrix>, device: &Self::Device) -> Option<Matrix<Self>> {
        let _ = (q, device);
        None
    }

    /// `x · Wᵀ + b`.
    ///
    /// # Shapes
    /// - x: `[m, in]` → `[m, out]`
    fn linear_layer(x: Tensor<Self, 2>, w: &Linear<Self>) -> Tensor<Self, 2> {
        default_linear(x, w)
    }

    /// `rms_norm(x) · Wᵀ + b`, then the gated activation of its `[gate | up]` halves when
    /// `gated` is given: the input norm of a projection (and the activation after gate/up) fused
    /// with it where the backend has a kernel for that.
    ///
    /// # Shapes
    /// - x: `[m, in]` → `[m, out]`, or `[m, out / 2]` when `gated`
    fn norm_linear(
        x: Tensor<Self, 2>,
        gamma: &Tensor<Self, 1>,
        eps: f64,
        w: &Linear<Self>,
        gated: Option<Activation>,
    ) -> Tensor<Self, 2> {
        let x = time(Op::Norm, || Self::rms_norm(x, gamma, eps));
        let y = Self::linear_layer(x, w);
        match gated {
            Some(act) => time(Op::GatedAct, || Self::gated_act(y, act)),
            None => y,
        }
    }

    /// `residual + x · Wᵀ + b` (a projection and the residual add after it, fused where the
    /// backend has a kernel for that).
    ///
    /// # Shapes
    /// - x: `[m, in]`; residual: `[m, out]` → `[m, out]`
    fn linear_residual(x: Tensor<Self, 2>, w: &Linear<Self>, residual: Tensor<Self, 2>) -> Tensor<Self, 2> {
        let y = Self::linear_layer(x, w);
        time(Op::Residual, || residual + y)
    }

    /// Rows `ids` of an embedding table `[vocab, hidden]`.
    ///
    /// # Shapes
    /// - output: `[ids, hidden]`
    fn embed(ids: &[u32], table: &Matrix<Self>, device: &Self::Device) -> Tensor<Self, 2> {
        default_embed(ids, table, device)
    }

    /// RMSNorm of each row: `x / sqrt(mean(x²) + eps) * gamma`.
    ///
    /// # Shapes
    /// - x: `[m, hidden]` → `[m, hidden]`
    fn rms_norm(x: Tensor<Self, 2>, gamma: &Tensor<Self, 1>, eps: f64) -> Tensor<Self, 2> {
        let rms = (x.clone().square().mean_dim(1) + eps).sqrt();
        (x / rms) * gamma.clone().unsqueeze_dim(0)
    }

    /// `act(gate) * up` of rows `[gate | up]` (SwiGLU, GeGLU with tanh GELU).
    ///
    /// # Shapes
    /// - gate_up: `[m, 2·inter]` → `[m, inter]`
    fn gated_act(gate_up: Tensor<Self, 2>, act: Activation) -> Tensor<Self, 2> {
        let [_, w] = gate_up.dims();
        let gate = gate_up.clone().slice(s![.., 0..w / 2]);
        let up = gate_up.slice(s![.., w / 2..w]);
        let gate = match act {
            Activation::Silu => silu(gate),
            Activation::GeluTanh => gelu_approximate(gate),
        };
        gate * up
    }

    /// A layer's attention from its fused q/k/v rows to the heads' outputs (before the output
    /// projection): [`Self::split_rope`], then [`Self::cached_attention`] with the new keys and
    /// values written into `cache` at `step.past`.
    ///
    /// # Shapes
    /// - qkv: `[batch·seq, (q + 2·kv)·dim]` → `[batch·seq, q·dim]`
    fn rope_attention(
        qkv: Tensor<Self, 2>,
        step: &Step<Self>,
        rope: &RotaryEmbedding<Self>,
        qk_norm: Option<QkNorm<'_, Self>>,
        cache: Option<&mut LayerKv<Self>>,
        attn: &AttnSpec,
    ) -> Tensor<Self, 2> {
        let (q, k, v) = time(Op::Rope, || Self::split_rope(qkv, step, rope, attn.heads, qk_norm));
        time(Op::Attention, || Self::cached_attention(q, k, v, cache, step, attn))
    }

    /// Split fused q/k/v rows into heads, RMS-normalise q and k per head when the layer has
    /// q/k norms, and rotate q and k (HF half-split RoPE).
    ///
    /// # Shapes
    /// - qkv: `[batch·seq, (q + 2·kv)·dim]`
    /// - output: q `[batch, q, seq, dim]`, k and v `[batch, kv, seq, dim]`
    fn split_rope(
        qkv: Tensor<Self, 2>,
        step: &Step<Self>,
        rope: &RotaryEmbedding<Self>,
        heads: Heads,
        qk_norm: Option<QkNorm<'_, Self>>,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>, Tensor<Self, 4>) {
        let (b, t, d) = (step.batch, step.seq, heads.dim);
        let (hq, kv) = (heads.q, heads.kv);
        let mut q = qkv.clone().slice(s![.., 0..hq * d]);
        let mut k = qkv.clone().slice(s![.., hq * d..(hq + kv) * d]);
        if let Some(n) = qk_norm {
            q = Self::rms_norm(q.reshape([b * t * hq, d]), n.q, n.eps).reshape([b * t, hq * d]);
            k = Self::rms_norm(k.reshape([b * t * kv, d]), n.k, n.eps).reshape([b * t, kv * d]);
        }
        let q = q.reshape([b, t, hq, d]).swap_dims(1, 2);
        let k = k.reshape([b, t, kv, d]).swap_dims(1, 2);
        let v = qkv.slice(s![.., (hq + kv) * d..(hq + 2 * kv) * d]).reshape([b, t, kv, d]).swap_dims(1, 2);
        let r = step.rope(rope);
        (r.apply(q), r.apply(k), v)
    }

    /// Causal attention (scaled, softcapped and windowed as `attn` says) of the new queries over the cached keys/values plus the new ones
    /// (written into the cache at `step.past` first). GQA: the query heads sharing a K/V head
    /// are stacked on the sequence axis for one fused call.
    ///
    /// # Shapes
    /// - q: `[batch, q, seq, dim]`; k, v: `[batch, kv, seq, dim]`
    /// - output: `[batch·seq, q·dim]`
    fn cached_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        cache: Option<&mut LayerKv<Self>>,
        step: &Step<Self>,
        attn: &AttnSpec,
    ) -> Tensor<Self, 2> {
        let (k, v) = match cache {
            Some(layer) => layer.append(k, v, step.past),
            None => (k, v),
        };
        default_attend(q, k, v, step, attn)
    }
}

/// The default body of [`DecodeOps::cached_attention`] after the cache append: Burn's attention
/// of the new queries over all keys/values (GQA heads stacked on the sequence axis).
///
/// # Shapes
/// - q: `[batch, q, seq, dim]`; k, v: `[batch, kv, keys, dim]`
/// - output: `[batch·seq, q·dim]`
pub fn default_attend<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    step: &Step<B>,
    attn: &AttnSpec,
) -> Tensor<B, 2> {
    let heads = attn.heads;
    let (b, t, d) = (step.batch, step.seq, heads.dim);
    let (hq, kv) = (heads.q, heads.kv);
    let q = q.reshape([b, kv, (hq / kv) * t, d]);
    let opts = AttentionModuleOptions { scale: Some(attn.scale), softcap: attn.softcap, is_causal: false };
    let out = attention(q, k, v, step.mask(heads, attn.window), None, opts);
    out.reshape([b, hq, t, d]).swap_dims(1, 2).reshape([b * t, hq * d])
}

#[cfg(any(test, feature = "ndarray"))]
impl DecodeOps for burn::backend::NdArray {}
// wgpu and cuda: `kernels::cube` (one impl for every `CubeBackend`)
