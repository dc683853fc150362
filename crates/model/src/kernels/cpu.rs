//! Host kernels behind the CPU specialisation of [`DecodeOps`](crate::ops::DecodeOps): linear
//! layers over block weights (multi-threaded over output rows at small batch, dequantized tiles
//! and `gemm` for prefill), RMSNorm, RoPE, SwiGLU and attention that reads the KV cache in place.
//! Plain slices in, plain slices out: the backend glue wraps them into tensors.
use rayon::prelude::*;

use super::dot::{
    dot_f32_slices, dot_row, dot_row_q8, has_q8_kernel, level, Level, Q16Act, Q16View, Q8Act, Q8View, XSums,
};
use super::igemm;
use super::quant::{ActQuant, QuantMatrix, RowLayout};
use crate::families::Activation;
use crate::ggml::GgmlType;

/// Up to this many activation rows, a linear layer runs row dot products over the blocks
/// (weights read once per call from memory, each row decoded per activation row); above it,
/// tiles of rows are dequantized once and multiplied with `gemm`. With int8 activations on
/// interleaved blocks every batch size takes the integer kernels.
pub const SMALL_M: usize = 4;

/// Quantized activations on interleaved groups use the group kernels up to this many rows
/// (batched decode); more rows take the integer GEMM (`igemm`) where AVX-512 VNNI is, else the
/// f32 tiles (int16) or still the group kernels (int8).
pub const SMALL_M_INT16: usize = 16;

/// With AVX2 and no AVX-512 VNNI, the 256-bit group kernels keep interleaved int16 products up to
/// this many rows instead of [`SMALL_M_INT16`] (2-core AMD EPYC, Zen 3, without AVX-512, `kbench
/// BATCH=48`, two runs, with the group kernels writing in place: SmolLM2's q/k/v 0.48 ms against
/// the f32 tiles' 0.71–0.84, gate/up 1.3–1.4 against 2.0–2.7, down 0.87–0.99 against 1.2–1.3,
/// Gemma 3's 262k head 113–115 against 196–208; at 64 rows the small matrices are even, at 128
/// the tiles win on them).
pub const AVX2_MAX_ROWS: usize = 48;

/// The most rows interleaved int16 products take the group kernels for at `level` when it has no
/// integer GEMM (more take the f32 tiles): [`AVX2_MAX_ROWS`] on AVX2, [`SMALL_M_INT16`] otherwise.
pub fn group_rows_without_gemm(level: Level) -> usize {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => AVX2_MAX_ROWS,
        _ => SMALL_M_INT16,
    }
}

/// Rows from which the prefix cache recomputes a prompt's tail ([`crate::engine::prefix_recompute`]
/// is one more): without AVX-512 VNNI, products of more rows than this take the f32 tiles (other
/// arithmetic than the group kernels), so a recomputed tail must be longer; with VNNI, as before,
/// [`SMALL_M_INT16`].
pub fn group_rows_before_prefill() -> usize {
    group_rows_without_gemm(level())
}

/// With AVX-512 VNNI the 512-bit many-row group kernels keep interleaved products up to this
/// many rows (measured at 64 rows on a Xeon, 2 threads: the SmolLM2 head 11.7 ms against the
/// integer GEMM's 22.3 (int16), 9.4 against 18.2 (int8); at 128 rows they are even).
pub const WIDE_MAX_ROWS: usize = 64;

/// From this many activation rows, interleaved groups with int16 activations take the 512-bit
/// kernel that unpacks each block once for a tile of up to 8 rows (`x86::group8_q16_many_avx512`).
pub const WIDE_MIN_ROWS: usize = 2;

/// Rows per parallel task: a few tasks per thread so uneven finishing evens out, never tiny.
fn rows_per_task(n: usize, row_cost: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_threads = n.div_ceil(threads * 4);
    // at least ~32 KiB of weights per task
    let min_rows = (32 * 1024 / row_cost.max(1)).max(1);
    by_threads.max(min_rows).min(n.max(1))
}

/// Which kernels a linear layer's product takes.
enum Path {
    /// Row (or interleaved group) kernels over the blocks, each activation row in turn.
    Rows,
    /// The integer GEMM over unpacked panels (`igemm`).
    Gemm,
    /// Dequantized tiles and the f32 `gemm` crate.
    Tiles,
}

/// `out[m, n] = x[m, k] · wᵀ (+ bias)` where `w` is `[n, k]` in any native block type.
pub fn linear(w: &QuantMatrix, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
    linear_at(level(), w, x, m, bias)
}

/// [`linear`] with the kernels of an explicit instruction-set level (tests compare them).
pub fn linear_at(level: Level, w: &QuantMatrix, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
    assert!(
        level == super::dot::level() || super::dot::available_levels().contains(&level),
        "kernel level {level:?} is not supported by this CPU"
    );
    let (n, k) = (w.rows(), w.cols());
    assert_eq!(x.len(), m * k, "linear: activation length");
    let mut out = vec![0f32; m * n];
    // Quantized activations (int16, or int8 as llama.cpp): interleaved groups take their group
    // kernels up to SMALL_M_INT16 rows (AVX2_MAX_ROWS with AVX2, WIDE_MAX_ROWS with AVX-512
    // VNNI), the integer GEMM above (int8 keeps the group kernels where the GEMM has no SIMD
    // kernel); row-major block matrices take the GEMM from a few rows
    // on (`igemm::min_rows`; int8 types with row kernels from SMALL_M + 1). Exact f32
    // activations: row kernels at small batch, dequantized tiles + f32 gemm above.
    let act = w.activations();
    let gemm = act != ActQuant::F32 && igemm::supported(w.ty()) && igemm::fast_on(level);
    let int8_rows = act == ActQuant::Int8 && has_q8_kernel(w.ty());
    let path = if w.layout() == RowLayout::Interleaved8 && act != ActQuant::F32 {
        let group_max = if igemm::fast_on(level) { WIDE_MAX_ROWS } else { group_rows_without_gemm(level) };
        if m <= group_max || (act == ActQuant::Int8 && !gemm) {
            Path::Rows
        } else if gemm {
            Path::Gemm
        } else {
            Path::Tiles
        }
    } else if (gemm && m >= igemm::min_rows(w.ty()) && !(int8_rows && m <= SMALL_M)) || avx2_int16_gemm(level, w, m) {
        Path::Gemm
    } else if m <= SMALL_M {
        Path::Rows
    } else {
        Path::Tiles
    };
    match path {
        Path::Rows => small_m(level, w, x, m, &mut out),
        Path::Gemm => igemm::gemm_at(level, w, x, m, &mut out),
        Path::Tiles => tiled_gemm(w, x, m, &mut out),
    }
    if let Some(b) = bias {
        for row in out.chunks_exact_mut(n) {
            for (o, bi) in row.iter_mut().zip(b) {
                *o += bi;
            }
        }
    }
    out
}

/// Whether a row-major product takes the integer GEMM's AVX2 kernel (no VNNI): int16 activations
/// from [`igemm::min_rows`] to [`AVX2_MAX_ROWS`] rows — batched decode, where the matrix keeps its
/// unpacked panels ([`igemm::KEEP_PANELS_AFTER`]); longer prompts keep the f32 tiles, whose
/// dequantization per call costs less than AVX2's unpacking (so the prefix cache's recomputed
/// tail, [`group_rows_before_prefill`], still takes the arithmetic of a whole prompt).
fn avx2_int16_gemm(level: Level, w: &QuantMatrix, m: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        level == Level::Avx2
            && w.activations() == ActQuant::Int16
            && w.layout() == RowLayout::Rows
            && igemm::supported(w.ty())
            && (igemm::min_rows(w.ty())..=AVX2_MAX_ROWS).contains(&m)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (level, w, m);
        false
    }
}

fn small_m(level: Level, w: &QuantMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    let (n, k) = (w.rows(), w.cols());
    if w.int8_activations() && has_q8_kernel(w.ty()) {
        return small_m_q8(level, w, x, m, out);
    }
    if w.activations() == ActQuant::Int16 && w.layout() == RowLayout::Interleaved8 {
        return small_m_q16(level, w, x, m, out);
    }
    #[cfg(target_arch = "x86_64")]
    if w.activations() != ActQuant::F32
        && w.layout() == RowLayout::Rows
        && level == Level::Avx512
        && super::x86::has_q16_row(w.ty())
    {
        return small_m_rows_q16(w, x, m, out);
    }
    let rows_copy;
    let w = if w.layout() == RowLayout::Rows {
        w
    } else {
        // exact activations on interleaved blocks: not a configuration the loaders make
        rows_copy = w.to_rows();
        &rows_copy
    };
    let xs: Vec<XSums> = x.chunks_exact(k).map(XSums::new).collect();
    let (ty, rb) = (w.ty(), w.row_bytes());
    row_tasks(w, m, rows_per_task(n, rb), out, |w_rows, o| rows_dot(level, ty, w_rows, rb, x, k, &xs, o));
}

/// [`small_m`] on row-major K-quant / Q5_0 blocks with int16 activations (AVX-512 VNNI row
/// kernels; int8-mode matrices of these types take them too, more exact than int8).
#[cfg(target_arch = "x86_64")]
fn small_m_rows_q16(w: &QuantMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    let (n, k) = (w.rows(), w.cols());
    let xq: Vec<Q16Act> = x.chunks_exact(k).map(Q16Act::new).collect();
    let views: Vec<Q16View<'_>> = xq.iter().map(Q16Act::view).collect();
    let (ty, rb) = (w.ty(), w.row_bytes());
    row_tasks(w, m, rows_per_task(n, rb), out, |w_rows, o| {
        for (r, row) in w_rows.chunks_exact(rb).enumerate() {
            for (i, xv) in views.iter().enumerate() {
                // SAFETY: the caller checked the AVX-512 level; `row` holds `k` values' blocks.
                o[r * m + i] = unsafe { super::x86::q16_row_avx512(ty, row, xv) };
            }
        }
    });
}

/// The row kernels' driver: `task(weight bytes, results)` over ranges of `per_task` weight rows
/// (in parallel when there are several), each writing its rows' results `[rows, m]` into a
/// contiguous part of `[n, m]`, then transposed into `out` `[m, n]`.
fn row_tasks(w: &QuantMatrix, m: usize, per_task: usize, out: &mut [f32], task: impl Fn(&[u8], &mut [f32]) + Sync) {
    let (n, rb, data) = (w.rows(), w.row_bytes(), w.data());
    let mut out_t = vec![0f32; n * m];
    let run = |(ti, o): (usize, &mut [f32])| {
        let r0 = ti * per_task;
        task(&data[r0 * rb..(r0 + o.len() / m) * rb], o)
    };
    if n <= per_task {
        out_t.chunks_mut(per_task * m).enumerate().for_each(run);
    } else {
        out_t.par_chunks_mut(per_task * m).enumerate().for_each(run);
    }
    if m == 1 {
        out.copy_from_slice(&out_t);
        return;
    }
    for r in 0..n {
        for i in 0..m {
            out[i * n + r] = out_t[r * m + i];
        }
    }
}

/// Interleaved groups in parallel tasks of `per` whole groups: `task(groups, out)` with the
/// task's groups' bytes and `out` at its first group's first row (each task writes only its
/// groups' outputs of every activation row).
#[cfg(target_arch = "x86_64")]
fn group_tasks(w: &QuantMatrix, per: usize, out: &mut [f32], task: impl Fn(&[u8], *mut f32) + Sync) {
    let (groups, gb) = (w.rows() / 8, w.row_bytes() * 8);
    let (data, o) = (w.data(), SendPtr(out.as_mut_ptr()));
    let o = &o;
    let run = |t: usize| {
        let (g0, g1) = (t * per, ((t + 1) * per).min(groups));
        task(&data[g0 * gb..g1 * gb], o.0.wrapping_add(g0 * 8));
    };
    let tasks = groups.div_ceil(per);
    if tasks == 1 {
        run(0);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}

/// Interleaved groups in parallel tasks of `per_task` rows, `kernel(group, out)` writing the
/// group's 8 outputs of every activation row in place (`out` at the group's first row, row
/// stride `n`): the 512-bit many-row kernels.
#[cfg(target_arch = "x86_64")]
fn wide_groups(w: &QuantMatrix, per_task: usize, out: &mut [f32], kernel: impl Fn(&[u8], *mut f32) + Sync) {
    let gb = w.row_bytes() * 8;
    group_tasks(w, per_task / 8, out, |groups, o| {
        for (g, group) in groups.chunks_exact(gb).enumerate() {
            kernel(group, o.wrapping_add(g * 8));
        }
    });
}

/// [`small_m`] with int8 activations.
fn small_m_q8(level: Level, w: &QuantMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    let (n, k) = (w.rows(), w.cols());
    let xq: Vec<Q8Act> = x.chunks_exact(k).map(Q8Act::new).collect();
    let views: Vec<Q8View<'_>> = xq.iter().map(Q8Act::view).collect();
    // interleaved groups of 8 rows: tasks own whole groups
    let interleaved = w.layout() == RowLayout::Interleaved8;
    let per_task =
        if interleaved { rows_per_task(n, w.row_bytes()).div_ceil(8) * 8 } else { rows_per_task(n, w.row_bytes()) };
    let (ty, rb) = (w.ty(), w.row_bytes());
    #[cfg(target_arch = "x86_64")]
    if interleaved && level == Level::Avx512 && m >= WIDE_MIN_ROWS {
        // SAFETY: AVX-512 VNNI checked; the driver hands each group its own output rows.
        return wide_groups(w, per_task, out, |group, o| unsafe {
            super::x86::group8_q8_many_avx512(ty, group, &views, o, n)
        });
    }
    #[cfg(target_arch = "x86_64")]
    if interleaved && level == Level::Avx2 && m >= 2 {
        // SAFETY: AVX2 checked; the driver hands each group its own output rows.
        return wide_groups(w, per_task, out, |group, o| unsafe {
            super::x86::group8_q8_many_avx2(ty, group, &views, o, n)
        });
    }
    row_tasks(w, m, per_task, out, |w_rows, o| {
        if interleaved {
            groups_q8(level, ty, w_rows, rb * 8, &views, o);
        } else {
            rows_dot_q8(level, ty, w_rows, rb, &views, o);
        }
    });
}

/// [`small_m`] with int16 activations (interleaved groups only).
fn small_m_q16(level: Level, w: &QuantMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    let (n, k) = (w.rows(), w.cols());
    let xq: Vec<Q16Act> = x.chunks_exact(k).map(Q16Act::new).collect();
    let views: Vec<Q16View<'_>> = xq.iter().map(Q16Act::view).collect();
    let per_task = rows_per_task(n, w.row_bytes()).div_ceil(8) * 8;
    let (ty, rb) = (w.ty(), w.row_bytes());
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 && ty == GgmlType::Q8_0 && m >= AMX_MIN_ROWS && super::amx::available() {
        return amx_groups(w, &views, per_task, out);
    }
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 && m >= WIDE_MIN_ROWS {
        // SAFETY: AVX-512 VNNI checked; the driver hands each group its own output rows.
        return wide_groups(w, per_task, out, |group, o| unsafe {
            super::x86::group8_q16_many_avx512(ty, group, &views, o, n)
        });
    }
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx2 && m >= 2 {
        // SAFETY: AVX2 checked; the driver hands each group its own output rows.
        return wide_groups(w, per_task, out, |group, o| unsafe {
            super::x86::group8_q16_many_avx2(ty, group, &views, o, n)
        });
    }
    row_tasks(w, m, per_task, out, |w_rows, o| groups_q16(level, ty, w_rows, rb * 8, &views, o));
}

/// From this many activation rows, interleaved Q8_0 with int16 activations takes the AMX tiles
/// where the CPU has them ([`super::amx`]; below, the group kernels read the weights at the
/// memory's pace anyway).
pub const AMX_MIN_ROWS: usize = 12;

/// [`super::amx::q8_0_groups`] over tasks of whole pairs of groups.
///
/// # Panics
/// Where [`super::amx::available`] is false.
#[cfg(target_arch = "x86_64")]
pub fn amx_groups(w: &QuantMatrix, views: &[Q16View<'_>], per_task: usize, out: &mut [f32]) {
    assert!(super::amx::available(), "amx_groups: no AMX here");
    assert!(w.ty() == GgmlType::Q8_0 && w.layout() == RowLayout::Interleaved8, "amx_groups: interleaved Q8_0 only");
    let n = w.rows();
    assert_eq!(out.len(), views.len() * n, "amx_groups: output length");
    let x = super::amx::SplitAct::new(views);
    let gb = w.row_bytes() * 8;
    // SAFETY: AMX checked above; each task writes only its groups' outputs of each row.
    group_tasks(w, per_task.div_ceil(16).max(1) * 2, out, |groups, o| unsafe {
        super::amx::q8_0_groups(groups, gb, &x, o, n)
    });
}

fn groups_q16(level: Level, ty: GgmlType, groups: &[u8], gb: usize, xq: &[Q16View<'_>], o: &mut [f32]) {
    crate::dispatch!(level; <I> (ty: GgmlType, groups: &[u8], gb: usize, xq: &[Q16View<'_>], o: &mut [f32]) -> () {
        let m = xq.len();
        let mut tmp = [0f32; 32];
        for (g, group) in groups.chunks_exact(gb).enumerate() {
            let og = &mut o[g * 8 * m..(g + 1) * 8 * m];
            if m <= 4 {
                I::group8_q16(ty, group, xq, og);
                continue;
            }
            for (ci, chunk) in xq.chunks(4).enumerate() {
                let mc = chunk.len();
                I::group8_q16(ty, group, chunk, &mut tmp[..8 * mc]);
                for lane in 0..8 {
                    for i in 0..mc {
                        og[lane * m + ci * 4 + i] = tmp[lane * mc + i];
                    }
                }
            }
        }
    })
}

/// Interleaved groups of 8 rows (`gb` bytes each) × int8 activations, `o` as `[rows, m]`.
fn groups_q8(level: Level, ty: GgmlType, groups: &[u8], gb: usize, xq: &[Q8View<'_>], o: &mut [f32]) {
    crate::dispatch!(level; <I> (ty: GgmlType, groups: &[u8], gb: usize, xq: &[Q8View<'_>], o: &mut [f32]) -> () {
        // activation rows in chunks of up to 4 (the kernels' register budget); a group's
        // blocks (a few KiB) stay in L1 across the chunks
        let m = xq.len();
        let mut tmp = [0f32; 32];
        for (g, group) in groups.chunks_exact(gb).enumerate() {
            let og = &mut o[g * 8 * m..(g + 1) * 8 * m];
            if m <= 4 {
                I::group8_q8(ty, group, xq, og);
                continue;
            }
            for (ci, chunk) in xq.chunks(4).enumerate() {
                let mc = chunk.len();
                I::group8_q8(ty, group, chunk, &mut tmp[..8 * mc]);
                for lane in 0..8 {
                    for i in 0..mc {
                        og[lane * m + ci * 4 + i] = tmp[lane * mc + i];
                    }
                }
            }
        }
    })
}

fn rows_dot_q8(level: Level, ty: GgmlType, w_rows: &[u8], rb: usize, xq: &[Q8View<'_>], o: &mut [f32]) {
    crate::dispatch!(level; <I> (ty: GgmlType, w_rows: &[u8], rb: usize, xq: &[Q8View<'_>], o: &mut [f32]) -> () {
        let m = xq.len();
        for (r, row) in w_rows.chunks_exact(rb).enumerate() {
            for i in 0..m {
                o[r * m + i] = dot_row_q8::<I>(ty, row, &xq[i]);
            }
        }
    })
}

/// `o[r * m + i] = row_r · x_i` for the rows in `w_rows`.
#[allow(clippy::too_many_arguments)]
fn rows_dot(level: Level, ty: GgmlType, w_rows: &[u8], rb: usize, x: &[f32], k: usize, xs: &[XSums], o: &mut [f32]) {
    crate::dispatch!(level; <I> (ty: GgmlType, w_rows: &[u8], rb: usize, x: &[f32], k: usize, xs: &[XSums], o: &mut [f32]) -> () {
        let m = xs.len();
        for (r, row) in w_rows.chunks_exact(rb).enumerate() {
            for i in 0..m {
                o[r * m + i] = dot_row::<I>(ty, row, &x[i * k..(i + 1) * k], &xs[i]);
            }
        }
    })
}

pub(crate) struct SendPtr(pub(crate) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Prefill path: tiles of `TILE` weight rows dequantized into a scratch buffer (in cache), then
/// one single-threaded `gemm` per tile; tiles run in parallel and write disjoint output columns.
fn tiled_gemm(w: &QuantMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    const TILE: usize = 64;
    let (n, k) = (w.rows(), w.cols());
    if w.ty() == GgmlType::F32 && w.layout() == RowLayout::Rows {
        // dense f32: one multi-threaded gemm straight on the weights (wᵀ as a strided view)
        let threads = rayon::current_num_threads();
        // SAFETY: `out` is [m, n], `x` [m, k], the weights [n, k] f32 (64-byte aligned storage).
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                w.data().as_ptr() as *const f32,
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None },
            );
        }
        return;
    }
    let tiles = n.div_ceil(TILE);
    let dst = SendPtr(out.as_mut_ptr());
    let dst = &dst;
    (0..tiles).into_par_iter().for_each_init(
        || vec![0f32; TILE * k],
        |scratch, ti| {
            let r0 = ti * TILE;
            let rows = TILE.min(n - r0);
            w.dequantize_rows(r0, &mut scratch[..rows * k]);
            // SAFETY: tile `ti` writes only columns r0..r0+rows of `out` ([m, n], row-major);
            // tiles are disjoint and `out` outlives the parallel loop.
            unsafe {
                gemm::gemm(
                    m,
                    rows,
                    k,
                    dst.0.add(r0),
                    1,
                    n as isize,
                    false,
                    x.as_ptr(),
                    1,
                    k as isize,
                    scratch.as_ptr(),
                    k as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        },
    );
}

/// RMSNorm of each row: `x / sqrt(mean(x²) + eps) * gamma` (as HF's `LlamaRMSNorm` in f32).
pub fn rms_norm(x: &[f32], gamma: &[f32], eps: f64) -> Vec<f32> {
    let d = gamma.len();
    let mut out = vec![0f32; x.len()];
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss = dot_f32_slices(xr, xr) / d as f32;
        let r = 1.0 / (ss + eps as f32).sqrt();
        for ((o, xv), g) in or.iter_mut().zip(xr).zip(gamma) {
            *o = xv * r * g;
        }
    }
    out
}

/// `tanh(x)` in f32 as Eigen's `generic_fast_tanh_float` (also MLAS's and XLA's): a 13/6
/// rational approximation on `[-7.9, 7.9]`, within a few ulps of libm's `tanhf`, written without
/// branches or calls so that loops over it vectorise (libm's `tanh` is a call per element; so is
/// `f32::mul_add` without the FMA target feature, hence plain multiply-adds).
#[inline(always)]
pub fn fast_tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = -2.760_768_5e-16f32;
    p = p * x2 + 2.000_188e-13;
    p = p * x2 + -8.604_672e-11;
    p = p * x2 + 5.122_297e-8;
    p = p * x2 + 1.485_722_4e-5;
    p = p * x2 + 6.372_619_3e-4;
    p = p * x2 + 4.893_524_6e-3;
    let mut q = 1.198_258_4e-6f32;
    q = q * x2 + 1.185_347_1e-4;
    q = q * x2 + 2.268_434_6e-3;
    q = q * x2 + 4.893_525e-3;
    x * p / q
}

/// `act(gate) * up` of each row of `[gate | up]`: SwiGLU, or GeGLU with tanh GELU as PyTorch's
/// `gelu(approximate="tanh")` (its tanh as [`fast_tanh`]). Rows run in parallel when there are
/// enough of them (prefill).
pub fn gated_act(gu: &[f32], inter: usize, act: Activation) -> Vec<f32> {
    let m = gu.len() / (2 * inter);
    let mut out = vec![0f32; m * inter];
    const BETA: f32 = std::f32::consts::SQRT_2 * std::f32::consts::FRAC_2_SQRT_PI * 0.5;
    let row = |(row, o): (&[f32], &mut [f32])| {
        let (g, u) = row.split_at(inter);
        match act {
            Activation::Silu => {
                for j in 0..inter {
                    let s = g[j] / (1.0 + (-g[j]).exp());
                    o[j] = s * u[j];
                }
            }
            Activation::GeluTanh => {
                for ((o, &x), &u) in o.iter_mut().zip(g).zip(u) {
                    let inner = BETA * (x + 0.044715 * (x * x * x));
                    *o = 0.5 * x * (1.0 + fast_tanh(inner)) * u;
                }
            }
        }
    };
    if m * inter >= 1 << 15 {
        gu.par_chunks_exact(2 * inter).zip(out.par_chunks_exact_mut(inter)).for_each(row);
    } else {
        gu.chunks_exact(2 * inter).zip(out.chunks_exact_mut(inter)).for_each(row);
    }
    out
}

/// RMSNorm of one row into `dst`.
fn rms_row(src: &[f32], gamma: &[f32], eps: f32, dst: &mut [f32]) {
    let ss = dot_f32_slices(src, src) / src.len() as f32;
    let r = 1.0 / (ss + eps).sqrt();
    for ((o, x), g) in dst.iter_mut().zip(src).zip(gamma) {
        *o = x * r * g;
    }
}

/// Split `[m = b·t, (h + 2·kv)·d]` rows of fused q/k/v into head-major q `[b, h, t, d]`,
/// k `[b, kv, t, d]`, v `[b, kv, t, d]`, rotating q and k (HF half-split) with the rows of
/// `cos` / `sin_signed` (`[m, d]`, the sine's first half negated); with `qk_norm` (q weights,
/// k weights, eps) each q and k head is RMS-normalised first.
#[allow(clippy::too_many_arguments)]
pub fn split_rope(
    qkv: &[f32],
    b: usize,
    t: usize,
    h: usize,
    kv: usize,
    d: usize,
    cos: &[f32],
    sin: &[f32],
    qk_norm: Option<(&[f32], &[f32], f32)>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let width = (h + 2 * kv) * d;
    let half = d / 2;
    let mut q = vec![0f32; b * h * t * d];
    let mut k = vec![0f32; b * kv * t * d];
    let mut v = vec![0f32; b * kv * t * d];
    let mut normed = vec![0f32; d];
    let mut rot = |src: &[f32], gamma: Option<&[f32]>, eps: f32, dst: &mut [f32], c: &[f32], s: &[f32]| {
        let src = match gamma {
            Some(g) => {
                rms_row(src, g, eps, &mut normed);
                &normed[..]
            }
            None => src,
        };
        for j in 0..d {
            let r = if j < half { src[j + half] } else { src[j - half] };
            dst[j] = src[j] * c[j] + r * s[j];
        }
    };
    let eps = qk_norm.map_or(0.0, |n| n.2);
    for bi in 0..b {
        for ti in 0..t {
            let row = bi * t + ti;
            let src = &qkv[row * width..(row + 1) * width];
            let (c, s) = (&cos[row * d..(row + 1) * d], &sin[row * d..(row + 1) * d]);
            for hi in 0..h {
                let o = ((bi * h + hi) * t + ti) * d;
                rot(&src[hi * d..(hi + 1) * d], qk_norm.map(|n| n.0), eps, &mut q[o..o + d], c, s);
            }
            for g in 0..kv {
                let o = ((bi * kv + g) * t + ti) * d;
                rot(&src[(h + g) * d..(h + g + 1) * d], qk_norm.map(|n| n.1), eps, &mut k[o..o + d], c, s);
                v[o..o + d].copy_from_slice(&src[(h + kv + g) * d..(h + kv + g + 1) * d]);
            }
        }
    }
    (q, k, v)
}

/// Rows `ids` of an embedding table `[vocab, d]`.
pub fn embed(table: &QuantMatrix, ids: &[u32]) -> Vec<f32> {
    let d = table.cols();
    let mut out = vec![0f32; ids.len() * d];
    for (i, &id) in ids.iter().enumerate() {
        table.dequantize_row(id as usize, &mut out[i * d..(i + 1) * d]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rational tanh within a few f32 ulps of the exact one, saturating to ±1, odd.
    #[test]
    fn fast_tanh_matches_tanh() {
        let mut worst = 0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4; // [-20, 20]
            let got = fast_tanh(x) as f64;
            let want = (x as f64).tanh();
            worst = worst.max((got - want).abs());
            assert_eq!(fast_tanh(-x), -fast_tanh(x));
            assert!(got.abs() <= 1.0, "{x}: {got}");
        }
        assert!(worst < 1e-6, "largest error {worst}");
        assert_eq!(fast_tanh(0.0), 0.0);
    }

    fn lcg(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn reference(wd: &[f32], x: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for r in 0..n {
                out[i * n + r] = (0..k).map(|j| wd[r * k + j] as f64 * x[i * k + j] as f64).sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn linear_matches_dequantized_reference_small_and_tiled() {
        let (n, k) = (70, 96);
        let w = lcg(1, n * k);
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            let q = QuantMatrix::quantize(ty, n, k, &w).unwrap();
            let wd = q.dequantize();
            for m in [1, 3, 9] {
                let x = lcg(7 + m as u64, m * k);
                let got = linear(&q, &x, m, None);
                let want = reference(&wd, &x, m, n, k);
                assert_eq!(got.len(), want.len(), "{ty:?} m={m}: output length");
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{ty:?} m={m}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn int8_activations_stay_close_to_exact() {
        let (n, k) = (33, 128);
        let w = lcg(3, n * k);
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            let q = QuantMatrix::quantize(ty, n, k, &w).unwrap();
            let q8 = q.clone().with_int8_activations(true);
            for m in [1, 2] {
                let x = lcg(11 + m as u64, m * k);
                let exact = linear(&q, &x, m, None);
                let approx = linear(&q8, &x, m, None);
                let scale = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
                assert_eq!(approx.len(), exact.len(), "{ty:?} m={m}: output length");
                for (a, b) in approx.iter().zip(&exact) {
                    assert!((a - b).abs() < 0.02 * scale, "{ty:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn int16_activations_are_within_float_noise() {
        let (n, k) = (40, 128);
        let w = lcg(5, n * k);
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            let q = QuantMatrix::quantize(ty, n, k, &w).unwrap();
            let q16 = q.clone().with_activations(ActQuant::Int16).interleave8();
            let wd = q.dequantize();
            for m in [1, 3, 6] {
                let x = lcg(21 + m as u64, m * k);
                let want = reference(&wd, &x, m, n, k);
                // the scale of the summed products: int16 steps are 1/65534 of a block's largest x
                let mags: Vec<f32> = (0..m * n)
                    .map(|o| (0..k).map(|j| (wd[(o % n) * k + j] * x[(o / n) * k + j]).abs()).sum())
                    .collect();
                for &level in &super::super::dot::available_levels() {
                    let got = linear_at(level, &q16, &x, m, None);
                    assert_eq!((got.len(), mags.len()), (want.len(), want.len()), "{ty:?} m={m}: output length");
                    for ((a, b), mag) in got.iter().zip(&want).zip(&mags) {
                        assert!((a - b).abs() < 1e-4 * mag, "{ty:?} m={m} {level:?}: {a} vs {b} (scale {mag})");
                    }
                }
            }
        }
    }

    /// The int8 group kernels of every level against the portable ones on weights and activations
    /// at the ends of their ranges: Q8_0 quants of -128, -127, 126, 127 against activations of
    /// ±127, where AVX2's `maddubs` on `w + 128` would saturate its i16 pair sums (the sign trick
    /// must not); Q4 blocks of all-15 nibbles against whole rows of +127 and of -127, where AVX2
    /// adds a block's 8 `maddubs` pair sums in i16 (at most 30,480: must not wrap). The same
    /// integer sums, so only the f32 scaling's order may differ.
    #[test]
    fn int8_group_kernels_match_portable_at_range_ends() {
        let mut cases = 0;
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let (n, k) = (24, 128);
            let w = QuantMatrix::random_blocks(ty, n, k, 29);
            let bb = w.row_bytes() / (k / 32);
            // the quants are a block's last 32 (Q8_0) or 16 (Q4: two nibbles each) bytes
            let qn = if ty == GgmlType::Q8_0 { 32 } else { 16 };
            let mut data = w.data().to_vec();
            for (b, blk) in data.chunks_exact_mut(bb).enumerate() {
                for (j, q) in blk[bb - qn..].iter_mut().enumerate() {
                    *q = if ty == GgmlType::Q8_0 {
                        [-128i8, -127, 127, 126][(b + j / 3) % 4] as u8
                    } else if b % 2 == 0 {
                        0xFF
                    } else {
                        *q
                    };
                }
            }
            let wq = QuantMatrix::new(ty, n, k, data).unwrap().with_activations(ActQuant::Int8).interleave8();
            for m in [1, 3, 4, 5, 9] {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| match i / k {
                        0 => 1.0,
                        1 => -1.0,
                        _ if (i / 2 + i / 7) % 3 == 0 => -1.0,
                        _ => 1.0,
                    })
                    .collect();
                let want = linear_at(Level::Portable, &wq, &x, m, None);
                let scale = want.iter().fold(1f32, |a, v| a.max(v.abs()));
                for &level in &super::super::dot::available_levels() {
                    let got = linear_at(level, &wq, &x, m, None);
                    assert_eq!(got.len(), want.len(), "{ty:?} m={m} {level:?}: output length");
                    for (o, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!((a - b).abs() <= 1e-6 * scale, "{ty:?} m={m} {level:?} out {o}: {a} vs {b}");
                    }
                    cases += 1;
                }
            }
        }
        assert!(cases >= 3 * 5, "{cases} cases");
    }

    /// Every path a linear layer can take (row and group kernels, the integer GEMM, f32 tiles)
    /// for batch sizes 1–33, int16 and int8 activations, every block type in the layout the
    /// loader gives it: within the activations' quantization error of the exact product.
    #[test]
    fn linear_paths_agree_with_the_reference_for_batches_1_to_33() {
        let mut cases = 0;
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
        ] {
            let (n, k) = (40, if ty.block().0 == 256 { 256 } else { 64 });
            let w = QuantMatrix::random_blocks(ty, n, k, 17);
            let wd = w.dequantize();
            for (act, tol) in [(ActQuant::Int16, 1e-4f32), (ActQuant::Int8, 0.02)] {
                let wq = w.clone().with_activations(act);
                let wq = if has_q8_kernel(ty) { wq.interleave8() } else { wq };
                for m in 1..=33 {
                    let x = lcg(40 + m as u64, m * k);
                    let want = reference(&wd, &x, m, n, k);
                    let got = linear(&wq, &x, m, None);
                    assert_eq!(got.len(), want.len(), "{ty:?} {act:?} m={m}: output length");
                    for (o, (a, b)) in got.iter().zip(&want).enumerate() {
                        let mag: f32 = (0..k).map(|j| (wd[(o % n) * k + j] * x[(o / n) * k + j]).abs()).sum();
                        assert!((a - b).abs() <= tol * mag + 1e-6, "{ty:?} {act:?} m={m} out {o}: {a} vs {b} ({mag})");
                    }
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 8 * 2 * 33);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod amx_tests {
    use super::*;

    /// The AMX tiles give bit for bit the 512-bit group kernels' results (the same integer sums,
    /// the same f32 scaling), for odd group counts, padded row tiles and several tasks.
    #[test]
    fn amx_is_the_group_kernel() {
        if !super::super::amx::available() || level() != Level::Avx512 {
            eprintln!("no AMX (or no AVX-512 VNNI) here: nothing to compare");
            return;
        }
        let mut cases = 0;
        for (n, k) in [(8usize, 64usize), (24, 96), (40, 640), (4096, 640)] {
            let w = QuantMatrix::random_blocks(GgmlType::Q8_0, n, k, n as u64)
                .with_activations(ActQuant::Int16)
                .interleave8();
            for m in [1usize, 7, 16, 17, 33] {
                let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 2003) as f32 / 1001.5 - 1.0) * 4.0).collect();
                let xq: Vec<Q16Act> = x.chunks_exact(k).map(Q16Act::new).collect();
                let views: Vec<Q16View<'_>> = xq.iter().map(Q16Act::view).collect();
                for per_task in [8, 16, n] {
                    let mut want = vec![f32::NAN; m * n];
                    // SAFETY: AVX-512 VNNI checked above.
                    wide_groups(&w, per_task, &mut want, |group, o| unsafe {
                        super::super::x86::group8_q16_many_avx512(GgmlType::Q8_0, group, &views, o, n)
                    });
                    let mut got = vec![f32::NAN; m * n];
                    amx_groups(&w, &views, per_task, &mut got);
                    let bits = |v: &[f32]| v.iter().map(|x| (x + 0.0).to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "n={n} k={k} m={m} per_task={per_task}");
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 4 * 5 * 3);
    }
}
