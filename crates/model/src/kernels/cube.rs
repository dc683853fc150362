//! The cube backends (wgpu, cuda: `CubeBackend<R, f32, i32, u32>`): GGUF blocks kept on the
//! device and CubeCL kernels over them, one source for every runtime.
//!
//! Q4_0, Q4_1 and Q8_0 matrices are uploaded block by block, each block's scale (and offset)
//! widened to f32 and its quants kept as packed bytes, so every field is 4-byte aligned:
//! - 4-bit (Q4_0, Q4_1): 6 words per 32 values — `d`, `m`, then the file's 16 bytes of nibbles
//!   (value `j` in the low nibble of byte `j`, value `j + 16` in its high nibble); Q4_0's
//!   `d · (q − 8)` is stored as `d · q + m` with `m = −8 d`;
//! - 8-bit (Q8_0): 9 words per 32 values — `d`, then the 32 signed bytes.
//!
//! The SmolLM2 file (Q4_1 layers, Q8_0 embeddings) takes 1.15x its bytes on the device instead
//! of 6.4x as f32. Other block types stay dense f32 (dequantized at load).
//!
//! Kernels: [`matvec`] for the few rows of a decode step (a cube of 32 × 4 units computes 4
//! outputs of one input row; the 32 units of an output split its blocks and add their sums in
//! shared memory), and [`dequantize`] (rows of the matrix as f32: embeddings, and a dense
//! matrix for Burn's matmul when many rows come at once).
use std::sync::Arc;

use burn::tensor::ops::IntTensorOps;
use burn::tensor::{Int, Tensor, TensorData};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime};
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, CubeCount, CubeDim};

use crate::families::Activation;
use crate::kernels::blocks::{device_words, DeviceLayout};
use crate::kernels::cube_layers::{self as layers, empty, float, gated_value, prim, Cube};
use crate::kernels::QuantMatrix;
use crate::kv_cache::LayerKv;
use crate::ops::{AttnSpec, DecodeOps, DeviceBlocks, Heads, Linear, Matrix, QkNorm, Step};
use crate::rope::RotaryEmbedding;

/// Input rows at most this many go through [`matvec`]; more are multiplied by Burn's matmul
/// against the dequantized matrix.
const MATVEC_MAX_ROWS: usize = 16;

/// Byte `k` (0–3, little-endian) of a word.
#[cube]
fn byte_of(word: u32, k: usize) -> u32 {
    (word >> (8 * k as u32)) & 255u32
}

/// A byte as the signed 8-bit quant it stores.
#[cube]
fn signed(byte: u32) -> f32 {
    let mut q = f32::cast_from(byte);
    if byte >= 128u32 {
        q -= 256.0f32;
    }
    q
}

/// The matrix row output value `pos` of a dequantize kernel comes from: `ids[pos / cols]`, or
/// `pos / cols` itself when `by_id` is 0.
#[cube]
fn source_row(pos: usize, cols: usize, ids: &Array<u32>, by_id: u32) -> usize {
    let mut r = pos / cols;
    if by_id != 0u32 {
        r = usize::cast_from(ids[r]);
    }
    r
}

/// Block `b` of weight row `r` against the matching 32 inputs of row `xrow`: 4-bit blocks
/// (`q8` 0: 6 words, `d · q + m`) or 8-bit ones (9 words, `d · q`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn block_dot(x: &Array<f32>, w: &Array<u32>, xrow: usize, r: usize, b: usize, nb: usize, #[comptime] q8: bool) -> f32 {
    let mut out = 0.0f32;
    if !q8 {
        let base = (r * nb + b) * 6;
        let d = f32::reinterpret(w[base]);
        let m = f32::reinterpret(w[base + 1]);
        let mut sq = 0.0f32;
        let mut sx = 0.0f32;
        for j in 0..4usize {
            let word = w[base + 2 + j];
            for k in 0..4usize {
                let byte = byte_of(word, k);
                let at = xrow + b * 32 + j * 4 + k;
                let lo = x[at];
                let hi = x[at + 16];
                sq += lo * f32::cast_from(byte & 15u32) + hi * f32::cast_from(byte >> 4u32);
                sx += lo + hi;
            }
        }
        out += d * sq + m * sx;
    } else {
        let base = (r * nb + b) * 9;
        let d = f32::reinterpret(w[base]);
        let mut sq = 0.0f32;
        for j in 0..8usize {
            let word = w[base + 1 + j];
            for k in 0..4usize {
                sq += x[xrow + b * 32 + j * 4 + k] * signed(byte_of(word, k));
            }
        }
        out += d * sq;
    }
    out
}

/// `y[i, o] = Σ_c x[i, c] · W[o, c]` over blocks on the device, with optional fused steps:
/// - `gated` (1: SiLU, 2: tanh GELU): `W` holds `[gate | up]` rows and `y[i, o] =
///   act(gate_o · x) · (up_o · x)` for `o < rows`;
/// - `residual`: `res[i, o]` added to the output.
///
/// Cube: 32 × 4 units, 4 outputs of input row `CUBE_POS_Y`; the 32 lanes of an output split
/// its blocks and add their sums in shared memory.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn matvec_blocks(
    x: &Array<f32>,
    res: &Array<f32>,
    w: &Array<u32>,
    y: &mut Array<f32>,
    rows: usize,
    cols: usize,
    #[comptime] q8: bool,
    #[comptime] gated: bool,
    #[comptime] gelu: bool,
    #[comptime] residual: bool,
) {
    let lane = UNIT_POS_X as usize;
    let unit = UNIT_POS_Y as usize * 32 + lane;
    let o = CUBE_POS_X as usize * 4 + UNIT_POS_Y as usize;
    let i = CUBE_POS_Y as usize;
    let xrow = i * cols;
    let nb = cols / 32;
    let mut acc = 0.0f32;
    let mut acc_up = 0.0f32;
    if o < rows {
        let mut b = lane;
        while b < nb {
            acc += block_dot(x, w, xrow, o, b, nb, q8);
            b += 32;
        }
        if gated {
            let mut b = lane;
            while b < nb {
                acc_up += block_dot(x, w, xrow, rows + o, b, nb, q8);
                b += 32;
            }
        }
    }
    let mut part = SharedMemory::<f32>::new(256usize);
    part[unit] = acc;
    part[128 + unit] = acc_up;
    sync_cube();
    if lane == 0 && o < rows {
        let row = UNIT_POS_Y as usize * 32;
        let mut g = 0.0f32;
        let mut u = 0.0f32;
        for t in 0..32usize {
            g += part[row + t];
            u += part[128 + row + t];
        }
        let mut v = g;
        if gated {
            v = gated_value(g, u, gelu);
        }
        if residual {
            v += res[i * rows + o];
        }
        y[i * rows + o] = v;
    }
}

/// `out[r, c] = W[ids[r], c]` (or `W[r, c]` when `by_id` is 0) over 4-bit blocks (6 words,
/// `d · q + m`) or, when `q8`, 8-bit ones (9 words, `d · q`); one unit per output value.
#[cube(launch)]
fn dequantize_blocks(
    w: &Array<u32>,
    ids: &Array<u32>,
    out: &mut Array<f32>,
    cols: usize,
    n: usize,
    by_id: u32,
    #[comptime] q8: bool,
) {
    let pos = ABSOLUTE_POS;
    if pos >= n * cols {
        terminate!();
    }
    let r = source_row(pos, cols, ids, by_id);
    let c = pos % cols;
    let k = c % 32;
    if q8 {
        let base = (r * (cols / 32) + c / 32) * 9;
        let d = f32::reinterpret(w[base]);
        out[pos] = d * signed(byte_of(w[base + 1 + k / 4], k % 4));
    } else {
        let base = (r * (cols / 32) + c / 32) * 6;
        let d = f32::reinterpret(w[base]);
        let m = f32::reinterpret(w[base + 1]);
        let byte_at = k % 16;
        let byte = byte_of(w[base + 2 + byte_at / 4], byte_at % 4);
        let mut q = byte & 15u32;
        if k >= 16 {
            q = byte >> 4u32;
        }
        out[pos] = d * f32::cast_from(q) + m;
    }
}

/// What [`matvec`] fuses around the product.
pub struct Fused<R: CubeRuntime, BT: BoolElement> {
    /// The matrix holds `[gate | up]` rows: output `act(gate) · up`.
    pub gated: Option<Activation>,
    /// Added to the output.
    pub residual: Option<Tensor<Cube<R, BT>, 2>>,
}

impl<R: CubeRuntime, BT: BoolElement> Default for Fused<R, BT> {
    fn default() -> Self {
        Self { gated: None, residual: None }
    }
}

/// `x · Wᵀ` for blocks on the device, `x` of at most [`MATVEC_MAX_ROWS`] rows, with the steps
/// `fused` asks for, in one launch.
///
/// # Shapes
/// - x: `[m, cols]` → `[m, rows]` (`[m, rows / 2]` when gated); residual: the output's shape
pub fn matvec<R: CubeRuntime, BT: BoolElement>(
    x: Tensor<Cube<R, BT>, 2>,
    w: &DeviceBlocks<Cube<R, BT>>,
    fused: Fused<R, BT>,
) -> Tensor<Cube<R, BT>, 2> {
    let [m, _] = x.dims();
    let rows = if fused.gated.is_some() { w.rows / 2 } else { w.rows };
    let x = prim(x);
    let words: CubeTensor<R> = w.words.clone().into_primitive();
    let y = empty(&x, &[m, rows]);
    let count = CubeCount::Static(rows.div_ceil(4) as u32, m as u32, 1);
    let dim = CubeDim::new_2d(32, 4);
    let client = x.client.clone();
    let residual = fused.residual.is_some();
    let res = fused.residual.map_or_else(|| x.clone(), prim);
    matvec_blocks::launch::<R>(
        &client,
        count,
        dim,
        x.clone().into_array_arg(),
        res.into_array_arg(),
        words.into_array_arg(),
        y.clone().into_array_arg(),
        rows,
        w.cols,
        w.layout == DeviceLayout::Q8,
        fused.gated.is_some(),
        fused.gated == Some(Activation::GeluTanh),
        residual,
    );
    float(y)
}

/// Rows `ids` of the matrix as f32 (every row when `ids` is `None`).
///
/// # Shapes
/// - output: `[ids or rows, cols]`
pub fn dequantize<R: CubeRuntime, BT: BoolElement>(
    w: &DeviceBlocks<Cube<R, BT>>,
    ids: Option<&[u32]>,
    device: &R::Device,
) -> Tensor<Cube<R, BT>, 2> {
    let n = ids.map_or(w.rows, <[u32]>::len);
    let id_data = ids.map_or_else(|| vec![0u32], <[u32]>::to_vec);
    let id_len = id_data.len();
    let ids_t: CubeTensor<R> = Cube::<R, BT>::int_from_data(TensorData::new(id_data, [id_len]), device);
    let words: CubeTensor<R> = w.words.clone().into_primitive();
    let out = empty(&words, &[n, w.cols]);
    let total = n * w.cols;
    let dim = CubeDim::new(&words.client, total);
    let count = calculate_cube_count_elemwise(&words.client, total, dim);
    let client = words.client.clone();
    let by_id = u32::from(ids.is_some());
    dequantize_blocks::launch::<R>(
        &client,
        count,
        dim,
        words.into_array_arg(),
        ids_t.into_array_arg(),
        out.clone().into_array_arg(),
        w.cols,
        n,
        by_id,
        w.layout == DeviceLayout::Q8,
    );
    float(out)
}

/// The device blocks of `w` when [`matvec`] can compute `x · Wᵀ` with fused steps: blocks on
/// the device, no bias, few input rows.
fn fusable<'a, R: CubeRuntime, BT: BoolElement>(
    x: &Tensor<Cube<R, BT>, 2>,
    w: &'a Linear<Cube<R, BT>>,
) -> Option<&'a DeviceBlocks<Cube<R, BT>>> {
    match &w.weight {
        Matrix::Device(blocks) if w.bias.is_none() && x.dims()[0] <= MATVEC_MAX_ROWS => Some(blocks),
        _ => None,
    }
}

impl<R: CubeRuntime, BT: BoolElement> DecodeOps for Cube<R, BT> {
    fn device_blocks_supported() -> bool {
        true
    }

    fn device_blocks(q: Arc<QuantMatrix>, device: &Self::Device) -> Option<Matrix<Self>> {
        let (layout, words) = device_words(&q)?;
        let n = words.len();
        let words: Tensor<Self, 1, Int> =
            Tensor::from_primitive(Self::int_from_data(TensorData::new(words, [n]), device));
        Some(Matrix::Device(DeviceBlocks { ty: q.ty(), layout, rows: q.rows(), cols: q.cols(), words }))
    }

    fn linear_layer(x: Tensor<Self, 2>, w: &Linear<Self>) -> Tensor<Self, 2> {
        let Matrix::Device(blocks) = &w.weight else {
            return crate::ops::default_linear(x, w);
        };
        let y = if x.dims()[0] <= MATVEC_MAX_ROWS {
            matvec(x, blocks, Fused::default())
        } else {
            let device = x.device();
            x.matmul(dequantize(blocks, None, &device).transpose())
        };
        match &w.bias {
            Some(b) => y + b.clone().unsqueeze_dim(0),
            None => y,
        }
    }

    fn embed(ids: &[u32], table: &Matrix<Self>, device: &Self::Device) -> Tensor<Self, 2> {
        match table {
            Matrix::Device(blocks) => dequantize(blocks, Some(ids), device),
            other => crate::ops::default_embed(ids, other, device),
        }
    }

    fn norm_linear(
        x: Tensor<Self, 2>,
        gamma: &Tensor<Self, 1>,
        eps: f64,
        w: &Linear<Self>,
        gated: Option<Activation>,
    ) -> Tensor<Self, 2> {
        // the norm stays its own launch: in the matvec prologue every cube recomputes the row's
        // norm (two barriers), measured 2.4x slower on lavapipe
        let x = layers::rms_norm(x, gamma, eps);
        match (fusable(&x, w), gated) {
            (Some(blocks), _) => matvec(x, blocks, Fused { gated, residual: None }),
            (None, Some(act)) => layers::gated_act(Self::linear_layer(x, w), act),
            (None, None) => Self::linear_layer(x, w),
        }
    }

    fn linear_residual(x: Tensor<Self, 2>, w: &Linear<Self>, residual: Tensor<Self, 2>) -> Tensor<Self, 2> {
        match fusable(&x, w) {
            Some(blocks) => matvec(x, blocks, Fused { residual: Some(residual), ..Fused::default() }),
            None => residual + Self::linear_layer(x, w),
        }
    }

    fn rms_norm(x: Tensor<Self, 2>, gamma: &Tensor<Self, 1>, eps: f64) -> Tensor<Self, 2> {
        layers::rms_norm(x, gamma, eps)
    }

    fn gated_act(gate_up: Tensor<Self, 2>, act: Activation) -> Tensor<Self, 2> {
        layers::gated_act(gate_up, act)
    }

    fn split_rope(
        qkv: Tensor<Self, 2>,
        step: &Step<Self>,
        rope: &RotaryEmbedding<Self>,
        heads: Heads,
        qk_norm: Option<QkNorm<'_, Self>>,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>, Tensor<Self, 4>) {
        layers::split_rope(qkv, step, rope, heads, qk_norm)
    }

    fn cached_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        cache: Option<&mut LayerKv<Self>>,
        step: &Step<Self>,
        attn: &AttnSpec,
    ) -> Tensor<Self, 2> {
        let (kc, vc) = match cache {
            Some(layer) => {
                // the new rows written into the cache, then every key read from it in place
                layer.append(k, v, step.past);
                (layer.k.clone(), layer.v.clone())
            }
            None => (k, v),
        };
        layers::attention(q, kc, vc, step, attn)
    }
}
