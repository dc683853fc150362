//! CubeCL kernels for the decoder's non-linear steps on the cube backends (wgpu, cuda), each one
//! launch where the default bodies take several Burn ops: RMSNorm of rows, the gated activation,
//! split + q/k norm + RoPE of the fused q/k/v rows, and attention over the KV cache in place
//! (scores, then softmax and the weighted sum of values). Tested against the default bodies
//! (`decode_ops_match_ndarray`).
use burn::tensor::{DType, Int, Shape, Tensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime};
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, CubeCount, CubeDim};

use crate::families::Activation;
use crate::kv_cache::LayerKv;
use crate::ops::{AttnSpec, Heads, QkNorm, Step};
use crate::profile::{time, Op};
use crate::rope::RotaryEmbedding;

/// Every cube backend with f32 floats (what the decoder runs).
pub(crate) type Cube<R, BT> = CubeBackend<R, f32, i32, BT>;

/// The score of a hidden key (its softmax weight underflows to 0).
const HIDDEN: f32 = -1.0e30;

/// Units of the per-row reduction cubes.
const LANES: u32 = 32;

/// Most cubes along one dimension of a launch (wgpu's limit); more rows spill into `y`.
const MAX_CUBES_X: usize = 65_535;

/// The row a per-row cube works on (rows spread over x, then y).
#[cube]
fn cube_row() -> usize {
    CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize
}

fn row_count(rows: usize) -> CubeCount {
    let x = rows.clamp(1, MAX_CUBES_X);
    CubeCount::Static(x as u32, rows.div_ceil(x).max(1) as u32, 1)
}

/// `sqrt(mean(x²) + eps)` of the `cols` values of `x` from `base`, by the cube's `units` units
/// (a power of two; `unit` is this one's index; every unit gets the result).
#[cube]
pub(crate) fn row_rms(
    x: &Array<f32>,
    base: usize,
    cols: usize,
    eps: f32,
    unit: usize,
    #[comptime] units: usize,
) -> f32 {
    let mut ss = 0.0f32;
    let mut c = unit;
    while c < cols {
        let v = x[base + c];
        ss += v * v;
        c += units;
    }
    let mut part = SharedMemory::<f32>::new(units);
    part[unit] = ss;
    sync_cube();
    // a tree over shared memory (log2(units) barriers, not `units` serial reads per unit)
    let mut s = 0usize;
    s += comptime!(units / 2);
    while s > 0 {
        if unit < s {
            part[unit] += part[unit + s];
        }
        sync_cube();
        s /= 2;
    }
    f32::sqrt(part[0] / f32::cast_from(cols) + eps)
}

/// `y = x / sqrt(mean(x²) + eps) · gamma` per row. Cube: [`LANES`] units per row.
#[cube(launch)]
fn rms_norm_rows(x: &Array<f32>, gamma: &Array<f32>, y: &mut Array<f32>, rows: usize, cols: usize, eps: f32) {
    let r = cube_row();
    if r >= rows {
        terminate!();
    }
    let lane = UNIT_POS_X as usize;
    let base = r * cols;
    let rms = row_rms(x, base, cols, eps, lane, 32usize);
    let mut c = lane;
    while c < cols {
        y[base + c] = x[base + c] / rms * gamma[c];
        c += 32;
    }
}

/// `act(g) · u`: SiLU, or GELU with the tanh approximation when `gelu`.
#[cube]
pub(crate) fn gated_value(g: f32, u: f32, #[comptime] gelu: bool) -> f32 {
    let mut a = g / (1.0f32 + f32::exp(-g));
    if gelu {
        // √(2/π)
        let inner = 0.797_884_6f32 * (g + 0.044715f32 * g * g * g);
        a = 0.5f32 * g * (1.0f32 + f32::tanh(inner));
    }
    a * u
}

/// `y[r, j] = act(gu[r, j]) · gu[r, inter + j]` ([`gated_value`]).
#[cube(launch)]
fn gated_rows(gu: &Array<f32>, y: &mut Array<f32>, inter: usize, n: usize, #[comptime] gelu: bool) {
    let pos = ABSOLUTE_POS;
    if pos >= n {
        terminate!();
    }
    let r = pos / inter;
    let j = pos % inter;
    y[pos] = gated_value(gu[r * 2 * inter + j], gu[r * 2 * inter + inter + j], gelu);
}

/// One unit per value of the fused q/k/v rows (row, head, dimension `c`): q and k heads
/// RMS-normalised (when `norm`; each unit sums its head's squares, unrolled over the comptime
/// head dim `d`) and rotated by the cos / signed-sin rows of their position (HF half split); q
/// written to `[b, hq, t, d]`, k and v to slots `past..past + t` of `[b, kv, cap, d]` (a KV
/// cache's buffers, or `cap = t` new ones). `n` counts the heads (rows · (hq + 2·kv)).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn split_rope_heads(
    qkv: &Array<f32>,
    cos: &Array<f32>,
    sin: &Array<f32>,
    pos: &Array<u32>,
    q_gamma: &Array<f32>,
    k_gamma: &Array<f32>,
    q: &mut Array<f32>,
    k: &mut Array<f32>,
    v: &mut Array<f32>,
    t: usize,
    hq: usize,
    kv: usize,
    n: usize,
    cap: usize,
    past: usize,
    norm: u32,
    eps: f32,
    #[comptime] d: usize,
    // on a GPU only, as `attend_rows`'s
    #[comptime] unroll: bool,
) {
    let gid = ABSOLUTE_POS;
    if gid >= n * d {
        terminate!();
    }
    let id = gid / d;
    let c = gid % d;
    let heads = hq + 2 * kv;
    let row = id / heads;
    let h = id % heads;
    let bi = row / t;
    let i = row % t;
    let src = row * heads * d + h * d;
    if h >= hq + kv {
        v[((bi * kv + (h - hq - kv)) * cap + past + i) * d + c] = qkv[src + c];
    } else {
        let half = comptime!(d / 2);
        let o = (c + half) % d;
        let mut x = qkv[src + c];
        let mut xo = qkv[src + o];
        let is_q = h < hq;
        if norm != 0u32 {
            let mut ss = 0.0f32;
            #[unroll(unroll)]
            for cc in 0..d {
                let y = qkv[src + cc];
                ss += y * y;
            }
            let rms = f32::sqrt(ss / f32::cast_from(d) + eps);
            if is_q {
                x = x / rms * q_gamma[c];
                xo = xo / rms * q_gamma[o];
            } else {
                x = x / rms * k_gamma[c];
                xo = xo / rms * k_gamma[o];
            }
        }
        let p = usize::cast_from(pos[row]) * d;
        let val = x * cos[p + c] + xo * sin[p + c];
        if is_q {
            q[((bi * hq + h) * t + i) * d + c] = val;
        } else {
            k[((bi * kv + (h - hq)) * cap + past + i) * d + c] = val;
        }
    }
}

/// One cube of `units` (≥ `d`) units per (row, q head, query): attention over the keys of the
/// buffers `kc` / `vc` (`[b, kv, cap, d]`, a KV cache read in place) in chunks of `units` keys
/// with a running max and sum (online softmax, as flash attention): unit `u` scores key
/// `start + u` of a chunk (`scale · q·k`, softcapped when `softcap > 0`), then unit `c < d` adds
/// the chunk's weighted values of dimension `c`. A key the default body's mask hides (after the
/// query, outside its window, padding other than the query's own slot) weighs 0; chunks wholly
/// before the window are skipped. Output `[b·t, hq·d]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments, clippy::collapsible_if)] // nested: `valid` is read only in bounds
fn attend_rows(
    q: &Array<f32>,
    kc: &Array<f32>,
    vc: &Array<f32>,
    valid: &Array<u32>,
    out: &mut Array<f32>,
    t: usize,
    keys: usize,
    past: usize,
    cap: usize,
    hq: usize,
    kv: usize,
    rows: usize,
    scale: f32,
    softcap: f32,
    window: usize,
    has_valid: u32,
    #[comptime] d: usize,
    #[comptime] units: usize,
    // on a GPU ([`gpu`]) only: CPU emulation (lavapipe) compiles each kernel with LLVM at its
    // first launch, and Gemma 3's 256-wide heads unrolled made a 12,000-line shader (minutes)
    #[comptime] unroll: bool,
) {
    let qrow = cube_row();
    if qrow >= rows {
        terminate!();
    }
    let u = UNIT_POS_X as usize;
    let i = qrow % t;
    let h = (qrow / t) % hq;
    let bi = qrow / (t * hq);
    let g = h / (hq / kv);
    let slot = past + i;
    let qbase = qrow * d;
    let kvbase = (bi * kv + g) * cap * d;
    let mut p = SharedMemory::<f32>::new(units);
    let mut m = 0.0f32;
    m += HIDDEN;
    let mut l = 0.0f32;
    let mut acc = 0.0f32;
    let mut start = 0usize;
    if window > 0 && slot + 1 > window {
        start += (slot + 1 - window) / units * units;
    }
    while start <= slot {
        // scores of the chunk's keys
        let j = start + u;
        let mut visible = j <= slot;
        if window > 0 && j + window <= slot {
            visible = false;
        }
        if visible && has_valid != 0u32 && j != slot {
            if valid[bi * keys + j] == 0u32 {
                visible = false;
            }
        }
        let mut score = 0.0f32;
        if visible {
            let kbase = kvbase + j * d;
            // unrolled over the comptime head dim on a GPU: every load in flight at once
            #[unroll(unroll)]
            for c in 0..d {
                score += q[qbase + c] * kc[kbase + c];
            }
            score *= scale;
            if softcap > 0.0f32 {
                score = softcap * f32::tanh(score / softcap);
            }
        } else {
            score = HIDDEN;
        }
        p[u] = score;
        sync_cube();
        let mut top = m;
        #[unroll(unroll)]
        for jj in 0..units {
            let sc = p[jj];
            if sc > top {
                top = sc;
            }
        }
        sync_cube();
        // weights of the chunk (hidden keys 0)
        let mut e = 0.0f32;
        if visible {
            e += f32::exp(score - top);
        }
        p[u] = e;
        sync_cube();
        let alpha = f32::exp(m - top);
        let mut cl = 0.0f32;
        let mut ca = 0.0f32;
        #[unroll(unroll)]
        for jj in 0..units {
            let wt = p[jj];
            cl += wt;
            if u < d && start + jj <= slot {
                ca += wt * vc[kvbase + (start + jj) * d + u];
            }
        }
        l = l * alpha + cl;
        acc = acc * alpha + ca;
        m = top;
        sync_cube();
        start += units;
    }
    if u < d {
        out[((bi * t + i) * hq + h) * d + u] = acc / l;
    }
}

/// The contiguous device tensor behind a float tensor.
pub(crate) fn prim<R: CubeRuntime, BT: BoolElement, const D: usize>(t: Tensor<Cube<R, BT>, D>) -> CubeTensor<R> {
    into_contiguous(t.into_primitive().tensor())
}

/// An uninitialised f32 tensor of `dims` on `like`'s device.
pub(crate) fn empty<R: CubeRuntime>(like: &CubeTensor<R>, dims: &[usize]) -> CubeTensor<R> {
    let handle = like.client.empty(dims.iter().product::<usize>() * 4);
    CubeTensor::new_contiguous(like.client.clone(), like.device.clone(), Shape::from(dims.to_vec()), handle, DType::F32)
}

/// A kernel's output as a float tensor.
pub(crate) fn float<R: CubeRuntime, BT: BoolElement, const D: usize>(t: CubeTensor<R>) -> Tensor<Cube<R, BT>, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// Whether the device is a GPU (has plane operations) rather than CPU emulation of one
/// (lavapipe). Emulation compiles every kernel with LLVM at its first launch, and Burn's
/// autotuned matmul compiles and times several large candidate kernels for each new shape (20 to
/// 70 s each there, with a fresh shader cache): on emulation the linear layers take no Burn
/// matmul (`cube.rs`: many rows of a quantized matrix go through the block matvec a few rows at a
/// time, a dense matrix through `dense_product`).
pub(crate) fn gpu<R: Runtime>(client: &ComputeClient<R>) -> bool {
    client.properties().features.plane.contains(cubecl::features::Plane::Ops)
}

fn elemwise(client: &ComputeClient<impl Runtime>, n: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new(client, n.max(1));
    (calculate_cube_count_elemwise(client, n.max(1), dim), dim)
}

/// [`DecodeOps::rms_norm`](crate::ops::DecodeOps::rms_norm) in one launch.
///
/// # Shapes
/// - x: `[m, hidden]` → `[m, hidden]`
pub fn rms_norm<R: CubeRuntime, BT: BoolElement>(
    x: Tensor<Cube<R, BT>, 2>,
    gamma: &Tensor<Cube<R, BT>, 1>,
    eps: f64,
) -> Tensor<Cube<R, BT>, 2> {
    let [m, cols] = x.dims();
    let x = prim(x);
    let gamma = prim(gamma.clone());
    let y = empty(&x, &[m, cols]);
    let client = x.client.clone();
    rms_norm_rows::launch::<R>(
        &client,
        row_count(m),
        CubeDim::new_1d(LANES),
        x.into_array_arg(),
        gamma.into_array_arg(),
        y.clone().into_array_arg(),
        m,
        cols,
        eps as f32,
    );
    float(y)
}

/// [`DecodeOps::gated_act`](crate::ops::DecodeOps::gated_act) in one launch.
///
/// # Shapes
/// - gate_up: `[m, 2·inter]` → `[m, inter]`
pub fn gated_act<R: CubeRuntime, BT: BoolElement>(
    gate_up: Tensor<Cube<R, BT>, 2>,
    act: Activation,
) -> Tensor<Cube<R, BT>, 2> {
    let [m, w] = gate_up.dims();
    let inter = w / 2;
    let gu = prim(gate_up);
    let y = empty(&gu, &[m, inter]);
    let n = m * inter;
    let client = gu.client.clone();
    let (count, dim) = elemwise(&client, n);
    let gelu = act == Activation::GeluTanh;
    gated_rows::launch::<R>(&client, count, dim, gu.into_array_arg(), y.clone().into_array_arg(), inter, n, gelu);
    float(y)
}

/// Launch [`split_rope_heads`]: q into a new `[b, hq, t, d]` tensor (returned), k and v into
/// slots `past..past + t` of `k` / `v` (`[b, kv, cap, d]`).
#[allow(clippy::too_many_arguments)]
fn launch_split_rope<R: CubeRuntime, BT: BoolElement>(
    qkv: Tensor<Cube<R, BT>, 2>,
    step: &Step<Cube<R, BT>>,
    rope: &RotaryEmbedding<Cube<R, BT>>,
    heads: Heads,
    qk_norm: Option<QkNorm<'_, Cube<R, BT>>>,
    k: &CubeTensor<R>,
    v: &CubeTensor<R>,
    past: usize,
) -> CubeTensor<R> {
    let (b, t, d, hq, kv) = (step.batch, step.seq, heads.dim, heads.q, heads.kv);
    let cap = k.meta.shape()[2];
    assert!(past + t <= cap, "split_rope: slots {past}..{} past the cache's {cap}", past + t);
    let qkv = prim(qkv);
    let (cos, sin) = rope.tables();
    let (cos, sin) = (prim(cos.clone()), prim(sin.clone()));
    let pos: CubeTensor<R> = step.device_positions().into_primitive();
    let (qg, kg, eps) = match qk_norm {
        Some(ref n) => (prim(n.q.clone()), prim(n.k.clone()), n.eps as f32),
        None => (cos.clone(), cos.clone(), 0.0),
    };
    let q = empty(&qkv, &[b, hq, t, d]);
    let n = b * t * (hq + 2 * kv);
    let client = qkv.client.clone();
    let (count, dim) = elemwise(&client, n * d);
    split_rope_heads::launch::<R>(
        &client,
        count,
        dim,
        qkv.into_array_arg(),
        cos.into_array_arg(),
        sin.into_array_arg(),
        pos.into_array_arg(),
        qg.into_array_arg(),
        kg.into_array_arg(),
        q.clone().into_array_arg(),
        k.clone().into_array_arg(),
        v.clone().into_array_arg(),
        t,
        hq,
        kv,
        n,
        cap,
        past,
        u32::from(qk_norm.is_some()),
        eps,
        d,
        gpu(&client),
    );
    q
}

/// [`DecodeOps::split_rope`](crate::ops::DecodeOps::split_rope) in one launch (the cos / sin
/// tables stay on the device; the call's positions are uploaded once per step).
///
/// # Shapes
/// - qkv: `[batch·seq, (q + 2·kv)·dim]`
/// - output: q `[batch, q, seq, dim]`, k and v `[batch, kv, seq, dim]`
pub fn split_rope<R: CubeRuntime, BT: BoolElement>(
    qkv: Tensor<Cube<R, BT>, 2>,
    step: &Step<Cube<R, BT>>,
    rope: &RotaryEmbedding<Cube<R, BT>>,
    heads: Heads,
    qk_norm: Option<QkNorm<'_, Cube<R, BT>>>,
) -> (Tensor<Cube<R, BT>, 4>, Tensor<Cube<R, BT>, 4>, Tensor<Cube<R, BT>, 4>) {
    let (b, t, d, kv) = (step.batch, step.seq, heads.dim, heads.kv);
    let like = prim(qkv.clone());
    let k = empty(&like, &[b, kv, t, d]);
    let v = empty(&like, &[b, kv, t, d]);
    let q = launch_split_rope(qkv, step, rope, heads, qk_norm, &k, &v, 0);
    (float(q), float(k), float(v))
}

/// A tensor's device buffer for a kernel to write in place: its own, or a copy when another
/// tensor shares it (as Burn's in-place ops do).
fn writable<R: CubeRuntime, BT: BoolElement>(t: Tensor<Cube<R, BT>, 4>) -> CubeTensor<R> {
    let t = prim(t);
    if t.can_mut() {
        t
    } else {
        t.copy()
    }
}

/// [`DecodeOps::rope_attention`](crate::ops::DecodeOps::rope_attention) in two launches: split +
/// q/k norm + RoPE writing the new keys and values straight into the cache's slots, then
/// [`attention`] over the cache in place.
///
/// # Shapes
/// - qkv: `[batch·seq, (q + 2·kv)·dim]` → `[batch·seq, q·dim]`
pub fn rope_attention<R: CubeRuntime, BT: BoolElement>(
    qkv: Tensor<Cube<R, BT>, 2>,
    step: &Step<Cube<R, BT>>,
    rope: &RotaryEmbedding<Cube<R, BT>>,
    qk_norm: Option<QkNorm<'_, Cube<R, BT>>>,
    cache: Option<&mut LayerKv<Cube<R, BT>>>,
    attn: &AttnSpec,
) -> Tensor<Cube<R, BT>, 2> {
    let heads = attn.heads;
    let Some(layer) = cache else {
        let (q, k, v) = time(Op::Rope, || split_rope(qkv, step, rope, heads, qk_norm));
        return time(Op::Attention, || attention(q, k, v, step, attn));
    };
    let q = time(Op::Rope, || {
        let mut q = None;
        layer.k.inplace(|k| {
            let k = writable(k);
            layer.v.inplace(|v| {
                let v = writable(v);
                q = Some(launch_split_rope(qkv, step, rope, heads, qk_norm, &k, &v, step.past));
                float(v)
            });
            float(k)
        });
        float(q.expect("the rope kernel ran"))
    });
    time(Op::Attention, || attention(q, layer.k.clone(), layer.v.clone(), step, attn))
}

/// Attention of `q` over `keys` keys of the buffers `kc` / `vc` (`[b, kv, cap, d]`, read in
/// place) in one launch ([`attend_rows`]).
///
/// # Shapes
/// - q: `[batch, q, seq, dim]`; kc, vc: `[batch, kv, cap, dim]`
/// - output: `[batch·seq, q·dim]`
pub fn attention<R: CubeRuntime, BT: BoolElement>(
    q: Tensor<Cube<R, BT>, 4>,
    kc: Tensor<Cube<R, BT>, 4>,
    vc: Tensor<Cube<R, BT>, 4>,
    step: &Step<Cube<R, BT>>,
    attn: &AttnSpec,
) -> Tensor<Cube<R, BT>, 2> {
    let Heads { q: hq, kv, dim: d } = attn.heads;
    let (b, t) = (step.batch, step.seq);
    let cap = kc.dims()[2];
    let keys = step.keys();
    let (q, kc, vc) = (prim(q), prim(kc), prim(vc));
    let valid: Option<Tensor<Cube<R, BT>, 1, Int>> = step.device_key_valid();
    let has_valid = u32::from(valid.is_some());
    let valid: CubeTensor<R> = valid.unwrap_or_else(|| step.device_positions()).into_primitive();
    let rows = b * hq * t;
    assert!(d <= ATTENTION_MAX_DIM, "attention: heads of {d} dimensions (the cube kernel takes {ATTENTION_MAX_DIM})");
    let units = d.next_multiple_of(32);
    let out = empty(&q, &[b * t, hq * d]);
    let client = q.client.clone();
    attend_rows::launch::<R>(
        &client,
        row_count(rows),
        CubeDim::new_1d(units as u32),
        q.into_array_arg(),
        kc.into_array_arg(),
        vc.into_array_arg(),
        valid.into_array_arg(),
        out.clone().into_array_arg(),
        t,
        keys,
        step.past,
        cap,
        hq,
        kv,
        rows,
        attn.scale as f32,
        attn.softcap.unwrap_or(0.0) as f32,
        attn.window.unwrap_or(0),
        has_valid,
        d,
        units,
        gpu(&client),
    );
    float(out)
}

/// Widest head [`attention`] takes (one unit per dimension, within wgpu's 256 units per cube).
pub const ATTENTION_MAX_DIM: usize = 256;
