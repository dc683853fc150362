//! The cube backends (wgpu, cuda: `CubeBackend<R, f32, i32, u32>`): GGUF blocks kept on the
//! device and CubeCL kernels over them, one source for every runtime.
//!
//! GGUF matrices of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K are uploaded block by
//! block in the layouts of [`crate::kernels::blocks`] (per block type: f16 or f32 scales, the
//! file's 4-, 5-, 6- or 8-bit quants packed as in the file; rows interleaved in groups of 32);
//! other types stay dense f32. The SmolLM2 file (Q4_1 layers, Q8_0 embeddings) takes 98.3 MB on
//! the device (1.17x its 84 MB, the Q4_1 blocks at the file's 20 bytes) instead of 538 MB as f32;
//! Gemma 3 270M Q4_K_M 270 MB for its 247 MB file.
//!
//! Kernels: [`matvec`] for the few rows of a decode step (a cube of 32 × `splits` units gives
//! 32 outputs of one input row, one per lane, the `splits` units of a lane splitting its blocks;
//! the input row, normalised when the RMSNorm is fused, staged in shared memory), and
//! [`dequantize`] (rows of the matrix as f32: embeddings, and a dense matrix for Burn's matmul
//! when many rows come at once on a GPU; CPU emulation takes no Burn matmul: [`gpu`]).
use std::sync::Arc;

use burn::tensor::ops::IntTensorOps;
use burn::tensor::{s, Tensor, TensorData};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime};
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, CubeCount, CubeDim};

use crate::families::Activation;
use crate::kernels::blocks::{device_words, DeviceLayout, ROW_GROUP};
use crate::kernels::cube_layers::{self as layers, empty, float, gated_value, gpu, prim, row_rms, Cube};
use crate::kernels::QuantMatrix;
use crate::kv_cache::LayerKv;
use crate::ops::{AttnSpec, DecodeOps, DeviceBlocks, Heads, Linear, Matrix, QkNorm, Step};
use crate::rope::RotaryEmbedding;

/// Input rows at most this many go through [`matvec`]; more are multiplied by Burn's matmul
/// against the dequantized matrix on a GPU ([`gpu`]).
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

/// Where block `b` of row `r` starts in the device layout (its word `j` is `32 · j` further:
/// [`word_index`](crate::kernels::blocks::word_index)).
#[cube]
fn block_base(r: usize, b: usize, nb: usize, #[comptime] wpb: usize) -> usize {
    (r / 32 * nb + b) * wpb * 32 + r % 32
}

/// The low 16 bits of `h` as the f16 they hold, in f32 (exact for every finite f16, subnormals
/// included: the device may lack f16 arithmetic).
#[cube]
fn half_to_f32(h: u32) -> f32 {
    let exp = (h >> 10u32) & 31u32;
    let man = h & 1023u32;
    // 2^-24: a subnormal f16 is `man · 2^-24`
    let mut mag = f32::cast_from(man) * 0.000000059604645f32;
    if exp != 0u32 {
        mag = f32::reinterpret(((exp + 112u32) << 23u32) | (man << 13u32));
    }
    if (h & 32768u32) != 0u32 {
        mag = -mag;
    }
    mag
}

/// The scale of values `16 · half` to `16 · half + 15` of the block at `base`, in device
/// layout `layout` ([`DeviceLayout::code`]).
#[cube]
fn block_scale(w: &Array<u32>, base: usize, half: usize, #[comptime] layout: u32) -> f32 {
    let mut d = f32::reinterpret(w[base]);
    if comptime!(layout == DeviceLayout::Q4Half.code() || layout == DeviceLayout::Q5Half.code()) {
        d = half_to_f32(w[base] & 65535u32);
    }
    if comptime!(layout == DeviceLayout::Q6.code()) {
        d = f32::reinterpret(w[base + half * 32]);
    }
    d
}

/// The offset of the block at `base` (0 for the layouts without one).
#[cube]
fn block_offset(w: &Array<u32>, base: usize, #[comptime] layout: u32) -> f32 {
    let mut m = 0.0f32;
    if comptime!(layout == DeviceLayout::Q4Half.code() || layout == DeviceLayout::Q5Half.code()) {
        m = half_to_f32(w[base] >> 16u32);
    }
    if comptime!(layout == DeviceLayout::Q4.code() || layout == DeviceLayout::Q5.code()) {
        m = f32::reinterpret(w[base + 32]);
    }
    m
}

/// Block `b` of weight row `r` against the matching 32 values of `x`, in device layout `layout`
/// ([`DeviceLayout::code`]; the layouts of [`crate::kernels::blocks`]). The block's `Σ x` (for
/// the offset) comes from `sums` when `staged`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn block_dot(
    x: &Slice<f32>,
    sums: &Slice<f32>,
    w: &Array<u32>,
    r: usize,
    b: usize,
    nb: usize,
    #[comptime] layout: u32,
    #[comptime] staged: bool,
) -> f32 {
    let (header, high, _) = comptime!(DeviceLayout::from_code(layout).parts());
    let base = block_base(r, b, nb, comptime!(DeviceLayout::from_code(layout).words_per_block()));
    let xb = b * 32;
    let mut out = 0.0f32;
    if comptime!(layout == DeviceLayout::Q8.code()) {
        let mut sq = 0.0f32;
        #[unroll]
        for j in 0..8usize {
            let word = w[base + (1 + j) * 32];
            #[unroll]
            for k in 0..4usize {
                sq += x[xb + j * 4 + k] * signed(byte_of(word, k));
            }
        }
        out += f32::reinterpret(w[base]) * sq;
    } else {
        let mut h0 = 0u32;
        let mut h1 = 0u32;
        if comptime!(high >= 1) {
            h0 = w[base + header * 32];
        }
        if comptime!(high == 2) {
            h1 = w[base + (header + 1) * 32];
        }
        let mut lo = 0.0f32;
        let mut hi = 0.0f32;
        let mut sx = 0.0f32;
        #[unroll]
        for j in 0..4usize {
            let word = w[base + (header + high + j) * 32];
            #[unroll]
            for k in 0..4usize {
                let byte = byte_of(word, k);
                let at = comptime!((j * 4 + k) as u32);
                let mut q_lo = byte & 15u32;
                let mut q_hi = byte >> 4u32;
                if comptime!(high == 1) {
                    q_lo |= ((h0 >> at) & 1u32) << 4u32;
                    q_hi |= ((h0 >> (at + 16u32)) & 1u32) << 4u32;
                }
                if comptime!(high == 2) {
                    q_lo |= ((h0 >> (2u32 * at)) & 3u32) << 4u32;
                    q_hi |= ((h1 >> (2u32 * at)) & 3u32) << 4u32;
                }
                let a = x[xb + j * 4 + k];
                let c = x[xb + 16 + j * 4 + k];
                if comptime!(layout == DeviceLayout::Q6.code()) {
                    let bias = comptime!(DeviceLayout::from_code(layout).bias() as f32);
                    lo += a * (f32::cast_from(q_lo) - bias);
                    hi += c * (f32::cast_from(q_hi) - bias);
                } else {
                    lo += a * f32::cast_from(q_lo) + c * f32::cast_from(q_hi);
                    if !staged {
                        sx += a + c;
                    }
                }
            }
        }
        if comptime!(layout == DeviceLayout::Q6.code()) {
            out += block_scale(w, base, 0, layout) * lo + block_scale(w, base, 1, layout) * hi;
        } else {
            if staged {
                sx = sums[b];
            }
            out += block_scale(w, base, 0, layout) * lo + block_offset(w, base, layout) * sx;
        }
    }
    out
}

/// Row `r` of the matrix against `x` over the blocks `split`, `split + splits`, … (0 when not
/// `live`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn row_dot(
    x: &Slice<f32>,
    sums: &Slice<f32>,
    w: &Array<u32>,
    r: usize,
    live: bool,
    nb: usize,
    split: usize,
    #[comptime] splits: usize,
    #[comptime] layout: u32,
    #[comptime] staged: bool,
) -> f32 {
    let mut acc = 0.0f32;
    if live {
        let mut b = split;
        while b < nb {
            acc += block_dot(x, sums, w, r, b, nb, layout, staged);
            b += splits;
        }
    }
    acc
}

/// `y[i, o] = Σ_c x̂[i, c] · W[o, c]` over blocks on the device, with optional fused steps:
/// - `norm`: `x̂ = x / sqrt(mean(x²) + eps) · gamma`, the RMSNorm of the input row (otherwise
///   `x̂ = x`);
/// - `gated` (`gelu`: tanh GELU, else SiLU): `W` holds `[gate | up]` rows and `y[i, o] =
///   act(gate_o · x̂) · (up_o · x̂)` for `o < rows`;
/// - `residual`: `res[i, o]` added to the output.
///
/// `W` may be one chunk of a matrix's rows: its outputs go to columns `row0..row0 + rows` of
/// `y` (`out_cols` wide).
///
/// Cube: 32 × `splits` units for 32 outputs of input row `CUBE_POS_Y`: lane `x` takes output
/// `32 · CUBE_POS_X + x` (the 32 lanes read consecutive words and share every input value),
/// and the `splits` units of an output split its blocks (their sums added in shared memory).
/// When `stage` (= `cols`, at most [`NORM_MAX_COLS`]) the cube first writes `x̂` and each
/// block's `Σ x̂` to shared memory (the norm needs it; the 4-bit dot then takes the block sums
/// from there instead of every lane adding them); `norm` needs `stage`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn matvec_blocks(
    x: &Array<f32>,
    gamma: &Array<f32>,
    res: &Array<f32>,
    w: &Array<u32>,
    y: &mut Array<f32>,
    rows: usize,
    cols: usize,
    out_cols: usize,
    row0: usize,
    eps: f32,
    #[comptime] layout: u32,
    #[comptime] gated: bool,
    #[comptime] gelu: bool,
    #[comptime] residual: bool,
    #[comptime] splits: usize,
    #[comptime] norm: bool,
    #[comptime] stage: usize,
) {
    let lane = UNIT_POS_X as usize;
    let split = UNIT_POS_Y as usize;
    let unit = split * 32 + lane;
    let units = comptime!(splits * 32);
    let o = CUBE_POS_X as usize * 32 + lane;
    let i = CUBE_POS_Y as usize;
    let xrow = i * cols;
    let nb = cols / 32;
    let live = o < rows;
    let mut g = 0.0f32;
    let mut u = 0.0f32;
    if comptime!(stage > 0) {
        let mut xs = SharedMemory::<f32>::new(stage);
        let mut sums = SharedMemory::<f32>::new(comptime!(stage.div_ceil(32)));
        if norm {
            let rms = row_rms(x, xrow, cols, eps, unit, units);
            let mut c = unit;
            while c < cols {
                xs[c] = x[xrow + c] / rms * gamma[c];
                c += units;
            }
        } else {
            let mut c = unit;
            while c < cols {
                xs[c] = x[xrow + c];
                c += units;
            }
        }
        sync_cube();
        if comptime!(layout != DeviceLayout::Q8.code() && layout != DeviceLayout::Q6.code()) {
            let mut b = unit;
            while b < nb {
                let mut s = 0.0f32;
                for k in 0..32usize {
                    s += xs[b * 32 + k];
                }
                sums[b] = s;
                b += units;
            }
            sync_cube();
        }
        let xsl = xs.to_slice();
        let ssl = sums.to_slice();
        g += row_dot(&xsl, &ssl, w, o, live, nb, split, splits, layout, true);
        if gated {
            u += row_dot(&xsl, &ssl, w, rows + o, live, nb, split, splits, layout, true);
        }
    } else {
        let xsl = x.slice(xrow, xrow + cols);
        g += row_dot(&xsl, &xsl, w, o, live, nb, split, splits, layout, false);
        if gated {
            u += row_dot(&xsl, &xsl, w, rows + o, live, nb, split, splits, layout, false);
        }
    }
    if comptime!(splits > 1) {
        let mut part = SharedMemory::<f32>::new(comptime!(splits * 64));
        part[unit] = g;
        part[units + unit] = u;
        sync_cube();
        if split == 0 {
            for s in 1..splits {
                g += part[s * 32 + lane];
                u += part[units + s * 32 + lane];
            }
        }
    }
    if split == 0 && live {
        let mut v = g;
        if gated {
            v = gated_value(g, u, gelu);
        }
        if residual {
            v += res[i * out_cols + row0 + o];
        }
        y[i * out_cols + row0 + o] = v;
    }
}

/// `out[r, c] = W[ids[r], c]` (or `W[r, c]` when `by_id` is 0) over blocks in device layout
/// `layout` (as [`block_dot`]); one unit per output value. `w` holds rows `row0..row0 +
/// chunk_rows` of the matrix: with ids, only the ids among them are written; without, those
/// rows of `out`.
#[cube(launch)]
fn dequantize_blocks(
    w: &Array<u32>,
    ids: &Array<u32>,
    out: &mut Array<f32>,
    cols: usize,
    n: usize,
    by_id: u32,
    row0: usize,
    chunk_rows: usize,
    #[comptime] layout: u32,
) {
    let pos = ABSOLUTE_POS;
    if pos >= n * cols {
        terminate!();
    }
    let mut r = pos / cols;
    let mut at = row0 * cols + pos;
    if by_id != 0u32 {
        let id = usize::cast_from(ids[pos / cols]);
        if id < row0 || id >= row0 + chunk_rows {
            terminate!();
        }
        r = id - row0;
        at = pos;
    }
    let c = pos % cols;
    let k = c % 32;
    let nb = cols / 32;
    let (header, high, _) = comptime!(DeviceLayout::from_code(layout).parts());
    let base = block_base(r, c / 32, nb, comptime!(DeviceLayout::from_code(layout).words_per_block()));
    if comptime!(layout == DeviceLayout::Q8.code()) {
        out[at] = f32::reinterpret(w[base]) * signed(byte_of(w[base + (1 + k / 4) * 32], k % 4));
    } else {
        let byte_at = k % 16;
        let byte = byte_of(w[base + (header + high + byte_at / 4) * 32], byte_at % 4);
        let mut q = byte & 15u32;
        if k >= 16 {
            q = byte >> 4u32;
        }
        let kk = k as u32;
        if comptime!(high == 1) {
            q |= ((w[base + header * 32] >> kk) & 1u32) << 4u32;
        }
        if comptime!(high == 2) {
            q |= ((w[base + (header + k / 16) * 32] >> (2u32 * (kk % 16u32))) & 3u32) << 4u32;
        }
        let mut v = f32::cast_from(q);
        if comptime!(layout == DeviceLayout::Q6.code()) {
            v -= comptime!(DeviceLayout::from_code(layout).bias() as f32);
        }
        out[at] = block_scale(w, base, k / 16, layout) * v + block_offset(w, base, layout);
    }
}

/// What [`matvec`] fuses around the product.
pub struct Fused<'a, R: CubeRuntime, BT: BoolElement> {
    /// RMSNorm of the input rows first: `(gamma, eps)` (inputs at most [`NORM_MAX_COLS`] wide).
    pub norm: Option<(&'a Tensor<Cube<R, BT>, 1>, f64)>,
    /// The matrix holds `[gate | up]` rows: output `act(gate) · up`.
    pub gated: Option<Activation>,
    /// Added to the output.
    pub residual: Option<Tensor<Cube<R, BT>, 2>>,
}

impl<R: CubeRuntime, BT: BoolElement> Default for Fused<'_, R, BT> {
    fn default() -> Self {
        Self { norm: None, gated: None, residual: None }
    }
}

/// Widest input [`matvec`] stages (and normalises) in shared memory (with its reduction
/// buffers, within wgpu's default 16 KiB of workgroup storage).
pub const NORM_MAX_COLS: usize = 3072;

/// `y[i, o] = Σ_c x[i, c] · w[o, c]`: one unit per output, the sum in column order.
#[cube(launch)]
fn dense_rows(x: &Array<f32>, w: &Array<f32>, y: &mut Array<f32>, m: usize, rows: usize, cols: usize) {
    let gid = ABSOLUTE_POS;
    if gid >= m * rows {
        terminate!();
    }
    let xb = gid / rows * cols;
    let wb = gid % rows * cols;
    let mut acc = 0.0f32;
    for c in 0..cols {
        acc += x[xb + c] * w[wb + c];
    }
    y[gid] = acc;
}

/// `x · wᵀ` for a dense matrix without Burn's matmul (CPU emulation: see [`gpu`]).
///
/// # Shapes
/// - x: `[m, cols]`, w: `[rows, cols]` → `[m, rows]`
pub fn dense_product<R: CubeRuntime, BT: BoolElement>(
    x: Tensor<Cube<R, BT>, 2>,
    w: Tensor<Cube<R, BT>, 2>,
) -> Tensor<Cube<R, BT>, 2> {
    let [m, cols] = x.dims();
    let [rows, wcols] = w.dims();
    assert_eq!(cols, wcols, "dense_product: x has {cols} columns, the matrix {wcols}");
    let (x, w) = (prim(x), prim(w));
    let y = empty(&x, &[m, rows]);
    let client = x.client.clone();
    let n = (m * rows).max(1);
    let dim = CubeDim::new(&client, n);
    dense_rows::launch::<R>(
        &client,
        calculate_cube_count_elemwise(&client, n, dim),
        dim,
        x.into_array_arg(),
        w.into_array_arg(),
        y.clone().into_array_arg(),
        m,
        rows,
        cols,
    );
    float(y)
}

/// Units splitting one output's blocks. On a GPU (a device with plane operations) enough that
/// each unit takes at most two blocks: a GPU hides a load's latency behind other warps, not behind
/// a unit's own serial loop (H200: decode 4.9 → 2.2 ms per step); a power of two (the row
/// norm's tree), at most 16 and within the device's units per cube. On a device without plane
/// operations (CPU emulation: lavapipe, where every barrier of a larger cube costs) few, for
/// long rows only.
fn splits_for(blocks: usize, max_units_per_cube: usize, gpu: bool) -> usize {
    if !gpu {
        return match blocks {
            0..32 => 1,
            32..64 => 2,
            _ => 4,
        };
    }
    let cap = (max_units_per_cube / 32).clamp(1, 16);
    let cap = 1 << cap.ilog2();
    blocks.div_ceil(2).next_power_of_two().min(cap)
}

/// `x · Wᵀ` for blocks on the device, `x` of at most [`MATVEC_MAX_ROWS`] rows, with the steps
/// `fused` asks for, in one launch.
///
/// # Shapes
/// - x: `[m, cols]` → `[m, rows]` (`[m, rows / 2]` when gated); residual: the output's shape
pub fn matvec<R: CubeRuntime, BT: BoolElement>(
    x: Tensor<Cube<R, BT>, 2>,
    w: &DeviceBlocks<Cube<R, BT>>,
    fused: Fused<'_, R, BT>,
) -> Tensor<Cube<R, BT>, 2> {
    let [m, cols] = x.dims();
    assert!(fused.norm.is_none() || cols <= NORM_MAX_COLS, "matvec: a fused norm over {cols} columns");
    assert!(fused.gated.is_none() || w.words.len() == 1, "matvec: a gated matrix in chunks");
    let rows = if fused.gated.is_some() { w.rows / 2 } else { w.rows };
    let x = prim(x);
    let y = empty(&x, &[m, rows]);
    let client = x.client.clone();
    let stage = if cols <= NORM_MAX_COLS { cols } else { 0 };
    let hw = &client.properties().hardware;
    let mut splits = splits_for(w.cols / 32, hw.max_units_per_cube as usize, gpu(&client));
    // shared memory: the staged row and its block sums, the norm's tree, the splits' partials
    let shared = |s: usize| 4 * (stage + stage.div_ceil(32) + 32 * s + 64 * s);
    while splits > 1 && shared(splits) > hw.max_shared_memory_size {
        splits /= 2;
    }
    let dim = CubeDim::new_2d(32, splits as u32);
    let residual = fused.residual.is_some();
    let res = fused.residual.map_or_else(|| x.clone(), prim);
    let norm = fused.norm.is_some();
    let (gamma, eps) = match fused.norm {
        Some((g, eps)) => (prim(g.clone()), eps as f32),
        None => (x.clone(), 0.0),
    };
    for (c, words) in w.words.iter().enumerate() {
        let row0 = c * w.chunk_rows;
        let chunk = if fused.gated.is_some() { rows } else { w.chunk_rows.min(rows - row0) };
        let words: CubeTensor<R> = words.clone().into_primitive();
        matvec_blocks::launch::<R>(
            &client,
            CubeCount::Static(chunk.div_ceil(32) as u32, m as u32, 1),
            dim,
            x.clone().into_array_arg(),
            gamma.clone().into_array_arg(),
            res.clone().into_array_arg(),
            words.into_array_arg(),
            y.clone().into_array_arg(),
            chunk,
            w.cols,
            rows,
            row0,
            eps,
            w.layout.code(),
            fused.gated.is_some(),
            fused.gated == Some(Activation::GeluTanh),
            residual,
            splits,
            norm,
            stage,
        );
    }
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
    let id_data = ids.map_or_else(|| vec![0u32], <[u32]>::to_vec);
    let id_len = id_data.len();
    let ids_t: CubeTensor<R> = Cube::<R, BT>::int_from_data(TensorData::new(id_data, [id_len]), device);
    let out = empty(&ids_t, &[ids.map_or(w.rows, <[u32]>::len), w.cols]);
    let client = ids_t.client.clone();
    let by_id = u32::from(ids.is_some());
    for (c, words) in w.words.iter().enumerate() {
        let row0 = c * w.chunk_rows;
        let chunk_rows = w.chunk_rows.min(w.rows - row0);
        let n = ids.map_or(chunk_rows, <[u32]>::len);
        let total = n * w.cols;
        let dim = CubeDim::new(&client, total);
        let count = calculate_cube_count_elemwise(&client, total, dim);
        let words: CubeTensor<R> = words.clone().into_primitive();
        dequantize_blocks::launch::<R>(
            &client,
            count,
            dim,
            words.into_array_arg(),
            ids_t.clone().into_array_arg(),
            out.clone().into_array_arg(),
            w.cols,
            n,
            by_id,
            row0,
            chunk_rows,
            w.layout.code(),
        );
    }
    float(out)
}

/// The largest buffer the device allocates, in bytes.
fn max_buffer_bytes<R: CubeRuntime>(device: &R::Device) -> usize {
    R::client(device).properties().memory.max_page_size as usize
}

/// Whether the f32 values of `w` fit one device buffer (Burn's matmul over them).
fn dequantizable<R: CubeRuntime, BT: BoolElement>(w: &DeviceBlocks<Cube<R, BT>>, device: &R::Device) -> bool {
    w.rows * w.cols * 4 <= max_buffer_bytes::<R>(device)
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
        // whole row groups per chunk, each within the device's largest buffer
        let group_words = ROW_GROUP * q.cols() / 32 * layout.words_per_block();
        let max_words = max_buffer_bytes::<R>(device) / 4;
        let chunk_rows = (max_words / group_words).max(1) * ROW_GROUP;
        let words = words
            .chunks(chunk_rows / ROW_GROUP * group_words)
            .map(|c| Tensor::from_primitive(Self::int_from_data(TensorData::new(c.to_vec(), [c.len()]), device)))
            .collect();
        Some(Matrix::Device(DeviceBlocks { ty: q.ty(), layout, rows: q.rows(), cols: q.cols(), words, chunk_rows }))
    }

    fn linear_layer(x: Tensor<Self, 2>, w: &Linear<Self>) -> Tensor<Self, 2> {
        let device = x.device();
        let emulated = !gpu(&R::client(&device));
        let m = x.dims()[0];
        let y = match &w.weight {
            Matrix::Device(blocks) if m <= MATVEC_MAX_ROWS => matvec(x, blocks, Fused::default()),
            Matrix::Device(blocks) if !emulated && dequantizable(blocks, &device) => {
                x.matmul(dequantize(blocks, None, &device).transpose())
            }
            Matrix::Device(blocks) => {
                // too large to dequantize at once (a 262k-row head), or CPU emulation (no Burn
                // matmul: see `gpu`): the matvec, a few rows at a time
                let parts = (0..m)
                    .step_by(MATVEC_MAX_ROWS)
                    .map(|i| matvec(x.clone().slice(s![i..(i + MATVEC_MAX_ROWS).min(m), ..]), blocks, Fused::default()))
                    .collect();
                Tensor::cat(parts, 0)
            }
            _ if !emulated => return crate::ops::default_linear(x, w),
            Matrix::Dense(t) => dense_product(x, t.clone()),
            other => dense_product(x, other.to_dense(&device)),
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
        if let Some(blocks) = fusable(&x, w).filter(|_| x.dims()[1] <= NORM_MAX_COLS) {
            return matvec(x, blocks, Fused { norm: Some((gamma, eps)), gated, residual: None });
        }
        let x = layers::rms_norm(x, gamma, eps);
        match (fusable(&x, w), gated) {
            (Some(blocks), _) => matvec(x, blocks, Fused { norm: None, gated, residual: None }),
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

    fn rope_attention(
        qkv: Tensor<Self, 2>,
        step: &Step<Self>,
        rope: &RotaryEmbedding<Self>,
        qk_norm: Option<QkNorm<'_, Self>>,
        cache: Option<&mut LayerKv<Self>>,
        attn: &AttnSpec,
    ) -> Tensor<Self, 2> {
        layers::rope_attention(qkv, step, rope, qk_norm, cache, attn)
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

#[cfg(test)]
mod tests {
    use super::splits_for;

    #[test]
    fn matvec_splits_per_device_kind() {
        // a GPU: powers of two, at most two blocks per unit unless capped (16, or the cube's units)
        for max_units in [256usize, 1024] {
            let cap = (max_units / 32).min(16);
            for blocks in 1..200 {
                let s = splits_for(blocks, max_units, true);
                assert!(s.is_power_of_two() && s <= cap, "{blocks} blocks: {s} splits");
                assert!(s == cap || blocks.div_ceil(s) <= 2, "{blocks} blocks: {s} splits");
            }
        }
        assert_eq!(splits_for(18, 1024, true), 16); // SmolLM2's 576 columns on the H200
        assert_eq!(splits_for(48, 256, true), 8);
        // CPU emulation (no plane operations): the few splits lavapipe runs best with
        assert_eq!([1, 18, 48, 100].map(|b| splits_for(b, 1024, false)), [1, 1, 2, 4]);
    }
}
