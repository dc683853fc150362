//! Dot products of one weight row, stored as GGUF blocks, with f32 activations — llama.cpp's
//! `ggml_vec_dot_*` over the blocks as the file stores them, without dequantizing the row.
//!
//! Every block type contributes `scale · Σ q·x + offset · Σ x` per sub-block, so the activation
//! sums per 32 (and per 16, for Q6_K) are computed once per activation row (`XSums`) and the
//! inner loops are plain 16-lane multiply-adds on small integers. The loops are written for the
//! compiler to vectorise; `dispatch!` compiles them three times (AVX-512, AVX2+FMA+F16C,
//! portable) and picks one at run time from the CPU's features.
use half::f16;

use crate::ggml::GgmlType;

pub use super::act::{Q16Act, Q16View, Q8Act, Q8View, XSums};

/// Portable int16 group dot (the reference of the SIMD ones): per lane, the row's blocks.
fn group8_q16_portable(ty: GgmlType, group: &[u8], xq: &[Q16View<'_>], out: &mut [f32]) {
    let m = xq.len();
    let nb = xq[0].d.len();
    let mut blk = Vec::new();
    for lane in 0..8 {
        for (i, x) in xq.iter().enumerate() {
            let mut sum = 0f32;
            for b in 0..nb {
                group_block(ty, group, b, lane, &mut blk);
                let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                let xs = &x.qs[b * 32..b * 32 + 32];
                let isum: i64 = match ty {
                    GgmlType::Q8_0 => (0..32).map(|j| (blk[2 + j] as i8) as i64 * xs[j] as i64).sum(),
                    _ => {
                        let hdr = if ty == GgmlType::Q4_1 { 4 } else { 2 };
                        (0..16)
                            .map(|j| {
                                (blk[hdr + j] & 15) as i64 * xs[j] as i64
                                    + (blk[hdr + j] >> 4) as i64 * xs[j + 16] as i64
                            })
                            .sum()
                    }
                };
                sum += d * x.d[b] * isum as f32;
                match ty {
                    GgmlType::Q4_1 => sum += f16::from_le_bytes([blk[2], blk[3]]).to_f32() * x.xsum[b],
                    GgmlType::Q4_0 => sum -= 8.0 * d * x.xsum[b],
                    _ => {}
                }
            }
            out[lane * m + i] = sum;
        }
    }
}

/// Whether `ty` has an int8-activation kernel.
pub fn has_q8_kernel(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
}

/// `Σ w·x` for one row of `ty` blocks with int8 activations (types of [`has_q8_kernel`]).
///
/// # Safety
/// `I` must match the running CPU; `row` holds the blocks of `xq`'s elements.
#[inline(always)]
pub unsafe fn dot_row_q8<I: Isa>(ty: GgmlType, row: &[u8], xq: &Q8View<'_>) -> f32 {
    match ty {
        GgmlType::Q4_0 => I::q4_q8(row, xq, false),
        GgmlType::Q4_1 => I::q4_q8(row, xq, true),
        GgmlType::Q8_0 => I::q8_q8(row, xq),
        other => unreachable!("no int8-activation kernel for {other:?}"),
    }
}

/// Portable integer block dots (the reference of the SIMD ones).
fn q4_q8_portable(row: &[u8], xq: &Q8View<'_>, min: bool) -> f32 {
    let (bs, hdr) = if min { (20, 4) } else { (18, 2) };
    let mut sum = 0f32;
    for (b, blk) in row.chunks_exact(bs).enumerate().take(xq.d.len()) {
        let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        let qs = &blk[hdr..hdr + 16];
        let x = &xq.qs[b * 32..b * 32 + 32];
        let mut isum = 0i32;
        for j in 0..16 {
            isum += (qs[j] & 15) as i32 * x[j] as i32 + (qs[j] >> 4) as i32 * x[j + 16] as i32;
        }
        sum += d * xq.d[b] * isum as f32;
        sum += if min { f16::from_le_bytes([blk[2], blk[3]]).to_f32() * xq.s[b] } else { -8.0 * d * xq.s[b] };
    }
    sum
}

fn q8_q8_portable(row: &[u8], xq: &Q8View<'_>) -> f32 {
    let mut sum = 0f32;
    for (b, blk) in row.chunks_exact(34).enumerate().take(xq.d.len()) {
        let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        let isum: i32 = (0..32).map(|j| (blk[2 + j] as i8) as i32 * xq.qs[b * 32 + j] as i32).sum();
        sum += d * xq.d[b] * isum as f32;
    }
    sum
}

/// Bytes of one q8_0 block of 32 values (an f16 scale, then 32 signed bytes).
pub(crate) const Q8_BLOCK: usize = GgmlType::Q8_0.block().1;

/// A tile of KV cache rows as stored (see `kernels::kv`): f32, f16, or q8_0 blocks
/// ([`Q8_BLOCK`] bytes per 32 values).
#[derive(Clone, Copy)]
pub enum KvTile<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Q8(&'a [u8]),
}

impl KvTile<'_> {
    /// Row `j` (of `d` values) widened to f32 into `dst`.
    ///
    /// # Safety
    /// The CPU has `I`'s instruction set.
    #[inline(always)]
    pub unsafe fn row<I: Isa>(&self, j: usize, d: usize, dst: &mut [f32]) {
        match *self {
            Self::F32(s) => dst.copy_from_slice(&s[j * d..(j + 1) * d]),
            Self::F16(s) => I::f16s_to_f32(&s[j * d..(j + 1) * d], dst),
            Self::Q8(s) => {
                let blocks = &s[j * d / 32 * Q8_BLOCK..(j + 1) * d / 32 * Q8_BLOCK];
                for (blk, out) in blocks.chunks_exact(Q8_BLOCK).zip(dst.chunks_exact_mut(32)) {
                    let sc = I::f16(u16::from_le_bytes([blk[0], blk[1]]));
                    for (o, &q) in out.iter_mut().zip(&blk[2..]) {
                        *o = sc * q as i8 as f32;
                    }
                }
            }
        }
    }
}

/// `f` with a scratch row of `d` values: on the stack up to 256 (every head dim of the supported
/// families), else on the heap.
#[inline(always)]
fn with_row<R>(d: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    if d <= 256 {
        f(&mut [0f32; 256][..d])
    } else {
        f(&mut vec![0f32; d])
    }
}

/// [`Isa::scores`] one widened row at a time (any head dim).
///
/// # Safety
/// As [`Isa::scores`].
#[inline(always)]
unsafe fn scores_by_row<I: Isa>(k: KvTile<'_>, q: &[f32], out: &mut [f32]) {
    let d = q.len();
    with_row(d, |row| {
        for (j, o) in out.iter_mut().enumerate() {
            k.row::<I>(j, d, row);
            *o = dot_f32_slices(row, q);
        }
    })
}

/// [`Isa::value_sum`] one widened row at a time (any head dim).
///
/// # Safety
/// As [`Isa::value_sum`].
#[inline(always)]
unsafe fn value_sum_by_row<I: Isa>(acc: &mut [f32], p: &[f32], v: KvTile<'_>) {
    let d = acc.len();
    with_row(d, |row| {
        for (j, &pj) in p.iter().enumerate() {
            v.row::<I>(j, d, row);
            for (a, x) in acc.iter_mut().zip(row.iter()) {
                *a += pj * x;
            }
        }
    })
}

/// [`Isa::scores_many`] one query at a time through [`Isa::scores`].
///
/// # Safety
/// As [`Isa::scores_many`].
#[inline(always)]
unsafe fn scores_each<I: Isa>(k: KvTile<'_>, q: &[f32], d: usize, n: usize, out: &mut [f32], stride: usize) {
    for (qi, qv) in q.chunks_exact(d).enumerate() {
        I::scores(k, qv, &mut out[qi * stride..qi * stride + n]);
    }
}

/// [`Isa::value_sums`] one query at a time through [`Isa::value_sum`].
///
/// # Safety
/// As [`Isa::value_sums`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn value_sums_each<I: Isa>(
    acc: &mut [f32],
    acc_stride: usize,
    nq: usize,
    d: usize,
    p: &[f32],
    p_stride: usize,
    n: usize,
    v: KvTile<'_>,
) {
    for qi in 0..nq {
        I::value_sum(&mut acc[qi * acc_stride..][..d], &p[qi * p_stride..][..n], v);
    }
}

/// Instruction-set flavour: the generic (auto-vectorised) kernels, with hand-written ones where
/// a flavour has them.
pub trait Isa: Copy {
    /// # Safety
    /// The CPU must have the instruction set this flavour is compiled for.
    unsafe fn f16(bits: u16) -> f32;
    /// `dst[i] = src[i]` widened to f32.
    ///
    /// # Safety
    /// As [`Isa::f16`]; `dst` holds `src.len()` values.
    #[inline(always)]
    unsafe fn f16s_to_f32(src: &[f16], dst: &mut [f32]) {
        for (o, h) in dst.iter_mut().zip(src) {
            *o = Self::f16(h.to_bits());
        }
    }
    /// Attention's scores over a tile of cache rows: `out[j] = Σ_i q[i]·k_j[i]` for each key row
    /// `j < out.len()` of `k` (`d = q.len()` values per row).
    ///
    /// # Safety
    /// As [`Isa::f16`]; `k` holds `out.len()` rows.
    #[inline(always)]
    unsafe fn scores(k: KvTile<'_>, q: &[f32], out: &mut [f32]) {
        scores_by_row::<Self>(k, q, out)
    }
    /// Attention's value sum over a tile: `acc[c] += Σ_j p[j]·v_j[c]` for `d = acc.len()`.
    ///
    /// # Safety
    /// As [`Isa::scores`]; `v` holds `p.len()` rows.
    #[inline(always)]
    unsafe fn value_sum(acc: &mut [f32], p: &[f32], v: KvTile<'_>) {
        value_sum_by_row::<Self>(acc, p, v)
    }
    /// [`Isa::scores`] of the queries `q` (`[nq, d]`) over the tile's first `n` rows into `out`
    /// (`[nq, stride]`): flavours that can read the tile once for several queries do.
    ///
    /// # Safety
    /// As [`Isa::scores`]; `out` holds `nq` rows of `stride ≥ n`.
    #[inline(always)]
    unsafe fn scores_many(k: KvTile<'_>, q: &[f32], d: usize, n: usize, out: &mut [f32], stride: usize) {
        scores_each::<Self>(k, q, d, n, out, stride)
    }
    /// [`Isa::value_sum`] of `nq` queries: `acc[qi·acc_stride..][..d] += Σ_j p[qi·p_stride + j]·v_j`
    /// over the tile's first `n` rows.
    ///
    /// # Safety
    /// As [`Isa::value_sum`]; `acc` and `p` hold `nq` rows of their strides.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn value_sums(
        acc: &mut [f32],
        acc_stride: usize,
        nq: usize,
        d: usize,
        p: &[f32],
        p_stride: usize,
        n: usize,
        v: KvTile<'_>,
    ) {
        value_sums_each::<Self>(acc, acc_stride, nq, d, p, p_stride, n, v)
    }
    /// `Σ w·x` for a row of little-endian f16 values.
    ///
    /// # Safety
    /// As [`Isa::f16`]; `row` holds `2 * x.len()` bytes.
    #[inline(always)]
    unsafe fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
        let mut s = 0f32;
        for (i, xi) in x.iter().enumerate() {
            s += Self::f16(u16_at(row, 2 * i)) * xi;
        }
        s
    }
    /// # Safety
    /// As [`Isa::f16`]; `row` holds `4 * x.len()` bytes.
    #[inline(always)]
    unsafe fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
        dot_f32(row, x)
    }
    /// # Safety
    /// As [`Isa::f16`]; `row` holds the blocks of `x.len()` elements.
    #[inline(always)]
    unsafe fn dot_q4_0(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
        dot_q4_0::<Self>(row, x, xs)
    }
    /// # Safety
    /// As [`Isa::dot_q4_0`].
    #[inline(always)]
    unsafe fn dot_q4_1(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
        dot_q4_1::<Self>(row, x, xs)
    }
    /// # Safety
    /// As [`Isa::dot_q4_0`].
    #[inline(always)]
    unsafe fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
        dot_q8_0::<Self>(row, x)
    }
    /// Q4_0 (`min` false) or Q4_1 (`min` true) row × int8 activations.
    ///
    /// # Safety
    /// As [`Isa::dot_q4_0`].
    #[inline(always)]
    unsafe fn q4_q8(row: &[u8], xq: &Q8View<'_>, min: bool) -> f32 {
        q4_q8_portable(row, xq, min)
    }
    /// Q8_0 row × int8 activations.
    ///
    /// # Safety
    /// As [`Isa::dot_q4_0`].
    #[inline(always)]
    unsafe fn q8_q8(row: &[u8], xq: &Q8View<'_>) -> f32 {
        q8_q8_portable(row, xq)
    }
    /// One group of 8 interleaved rows ([`RowLayout::Interleaved8`](super::RowLayout)) ×
    /// `xq.len()` (1..=4) activation rows: `out[lane * xq.len() + i]`.
    ///
    /// # Safety
    /// As [`Isa::dot_q4_0`]; `group` holds the group's blocks for `xq`'s length.
    #[inline(always)]
    unsafe fn group8_q8(ty: GgmlType, group: &[u8], xq: &[Q8View<'_>], out: &mut [f32]) {
        group8_q8_portable(ty, group, xq, out)
    }
    /// As [`Isa::group8_q8`] with int16 activations.
    ///
    /// # Safety
    /// As [`Isa::group8_q8`].
    #[inline(always)]
    unsafe fn group8_q16(ty: GgmlType, group: &[u8], xq: &[Q16View<'_>], out: &mut [f32]) {
        group8_q16_portable(ty, group, xq, out)
    }
}

/// Block `b` of lane `lane` of an interleaved group, in the file's layout.
fn group_block(ty: GgmlType, group: &[u8], b: usize, lane: usize, out: &mut Vec<u8>) {
    let (hdr, qb) = match ty {
        GgmlType::Q4_0 => (2, 16),
        GgmlType::Q4_1 => (4, 16),
        _ => (2, 32),
    };
    let base = b * 8 * (hdr + qb);
    out.clear();
    for h in (0..hdr).step_by(2) {
        let o = base + h * 8 + lane * 2;
        out.extend_from_slice(&group[o..o + 2]);
    }
    for c in 0..qb / 4 {
        let o = base + 8 * hdr + c * 32 + lane * 4;
        out.extend_from_slice(&group[o..o + 4]);
    }
}

fn group8_q8_portable(ty: GgmlType, group: &[u8], xq: &[Q8View<'_>], out: &mut [f32]) {
    let m = xq.len();
    let nb = xq[0].d.len();
    let mut blk = Vec::new();
    for lane in 0..8 {
        let mut row = Vec::new();
        for b in 0..nb {
            group_block(ty, group, b, lane, &mut blk);
            row.extend_from_slice(&blk);
        }
        for (i, x) in xq.iter().enumerate() {
            out[lane * m + i] = match ty {
                GgmlType::Q8_0 => q8_q8_portable(&row, x),
                _ => q4_q8_portable(&row, x, ty == GgmlType::Q4_1),
            };
        }
    }
}

#[derive(Clone, Copy)]
pub struct Portable;
impl Isa for Portable {
    #[inline(always)]
    unsafe fn f16(bits: u16) -> f32 {
        f16::from_bits(bits).to_f32()
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct X86Avx2;
#[cfg(target_arch = "x86_64")]
impl Isa for X86Avx2 {
    #[inline(always)]
    unsafe fn f16(bits: u16) -> f32 {
        f16_f16c(bits)
    }
    #[inline(always)]
    unsafe fn f16s_to_f32(src: &[f16], dst: &mut [f32]) {
        f16s_to_f32_f16c(src, dst)
    }
    // decode attention over f32 / f16 / q8_0 rows read in place; the one-query value sum is the
    // many-query kernel with one query, so both give the same bits
    #[inline(always)]
    unsafe fn value_sum(acc: &mut [f32], p: &[f32], v: KvTile<'_>) {
        let (d, n) = (acc.len(), p.len());
        if !d.is_multiple_of(32) {
            return value_sum_by_row::<Self>(acc, p, v);
        }
        Self::value_sums(acc, d, 1, d, p, n, n, v)
    }
    #[inline(always)]
    unsafe fn scores_many(k: KvTile<'_>, q: &[f32], d: usize, n: usize, out: &mut [f32], stride: usize) {
        if !d.is_multiple_of(8) {
            return scores_each::<Self>(k, q, d, n, out, stride);
        }
        match k {
            KvTile::F32(k) => super::x86::scores_many_avx2(k.as_ptr(), q, d, n, out, stride),
            KvTile::F16(k) => super::x86::scores_many_avx2(k.as_ptr().cast::<u16>(), q, d, n, out, stride),
            KvTile::Q8(k) => super::x86::scores_many_avx2(super::x86::Q8Rows(k.as_ptr()), q, d, n, out, stride),
        }
    }
    #[inline(always)]
    unsafe fn value_sums(
        acc: &mut [f32],
        acc_stride: usize,
        nq: usize,
        d: usize,
        p: &[f32],
        p_stride: usize,
        n: usize,
        v: KvTile<'_>,
    ) {
        if !d.is_multiple_of(32) {
            return value_sums_each::<Self>(acc, acc_stride, nq, d, p, p_stride, n, v);
        }
        match v {
            KvTile::F32(v) => super::x86::value_sums_avx2(acc, acc_stride, nq, d, p, p_stride, n, v.as_ptr()),
            KvTile::F16(v) => {
                super::x86::value_sums_avx2(acc, acc_stride, nq, d, p, p_stride, n, v.as_ptr().cast::<u16>())
            }
            KvTile::Q8(v) => {
                super::x86::value_sums_avx2(acc, acc_stride, nq, d, p, p_stride, n, super::x86::Q8Rows(v.as_ptr()))
            }
        }
    }
    #[inline(always)]
    unsafe fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
        dot_f16_f16c(row, x)
    }
    #[inline(always)]
    unsafe fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
        super::x86::f32_avx2(row.as_ptr() as *const f32, x)
    }
    #[inline(always)]
    unsafe fn dot_q4_0(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
        super::x86::q4_0_avx2(row, x, xs)
    }
    #[inline(always)]
    unsafe fn dot_q4_1(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
        super::x86::q4_1_avx2(row, x, xs)
    }
    #[inline(always)]
    unsafe fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
        super::x86::q8_0_avx2(row, x)
    }
    #[inline(always)]
    unsafe fn q4_q8(row: &[u8], xq: &Q8View<'_>, min: bool) -> f32 {
        super::x86::q4_q8_avx2(row, xq, min)
    }
    #[inline(always)]
    unsafe fn q8_q8(row: &[u8], xq: &Q8View<'_>) -> f32 {
        super::x86::q8_q8_avx2(row, xq)
    }
    #[inline(always)]
    unsafe fn group8_q8(ty: GgmlType, group: &[u8], xq: &[Q8View<'_>], out: &mut [f32]) {
        super::x86::group8_q8_avx2(ty, group, xq, out)
    }
    #[inline(always)]
    unsafe fn group8_q16(ty: GgmlType, group: &[u8], xq: &[Q16View<'_>], out: &mut [f32]) {
        super::x86::group8_q16_avx2(ty, group, xq, out)
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct X86Avx512;
#[cfg(target_arch = "x86_64")]
impl Isa for X86Avx512 {
    #[inline(always)]
    unsafe fn f16(bits: u16) -> f32 {
        f16_f16c(bits)
    }
    #[inline(always)]
    unsafe fn value_sum(acc: &mut [f32], p: &[f32], v: KvTile<'_>) {
        if !acc.len().is_multiple_of(16) {
            return value_sum_by_row::<Self>(acc, p, v);
        }
        match v {
            KvTile::F32(v) => super::x86::axpy_f32_avx512(acc, p, v),
            KvTile::F16(v) => super::x86::axpy_f16_avx512(acc, p, v.as_ptr().cast::<u16>()),
            KvTile::Q8(v) => super::x86::axpy_q8_avx512(acc, p, v),
        }
    }
    #[inline(always)]
    unsafe fn scores_many(k: KvTile<'_>, q: &[f32], d: usize, n: usize, out: &mut [f32], stride: usize) {
        if !d.is_multiple_of(16) {
            return scores_each::<Self>(k, q, d, n, out, stride);
        }
        match k {
            KvTile::F32(k) => super::x86::scores_many(k.as_ptr(), q, d, n, out, stride),
            KvTile::F16(k) => super::x86::scores_many(k.as_ptr().cast::<u16>(), q, d, n, out, stride),
            KvTile::Q8(k) => super::x86::scores_many(super::x86::Q8Rows(k.as_ptr()), q, d, n, out, stride),
        }
    }
    #[inline(always)]
    unsafe fn value_sums(
        acc: &mut [f32],
        acc_stride: usize,
        nq: usize,
        d: usize,
        p: &[f32],
        p_stride: usize,
        n: usize,
        v: KvTile<'_>,
    ) {
        if !d.is_multiple_of(64) {
            return value_sums_each::<Self>(acc, acc_stride, nq, d, p, p_stride, n, v);
        }
        match v {
            KvTile::F32(v) => super::x86::value_sums(acc, acc_stride, nq, d, p, p_stride, n, v.as_ptr()),
            KvTile::F16(v) => super::x86::value_sums(acc, acc_stride, nq, d, p, p_stride, n, v.as_ptr().cast::<u16>()),
            KvTile::Q8(v) => {
                super::x86::value_sums(acc, acc_stride, nq, d, p, p_stride, n, super::x86::Q8Rows(v.as_ptr()))
            }
        }
    }
    #[inline(always)]
    unsafe fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
        dot_f16_f16c(row, x)
    }
    #[inline(always)]
    unsafe fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
        super::x86::f32_avx512(row.as_ptr() as *const f32, x)
    }
    #[inline(always)]
    unsafe fn dot_q4_0(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
        super::x86::q4_0_avx512(row, x, xs)
    }
    #[inline(always)]
    unsafe fn dot_q4_1(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
        super::x86::q4_1_avx512(row, x, xs)
    }
    #[inline(always)]
    unsafe fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
        super::x86::q8_0_avx512(row, x)
    }
    #[inline(always)]
    unsafe fn q4_q8(row: &[u8], xq: &Q8View<'_>, min: bool) -> f32 {
        super::x86::q4_q8_avx512(row, xq, min)
    }
    #[inline(always)]
    unsafe fn q8_q8(row: &[u8], xq: &Q8View<'_>) -> f32 {
        super::x86::q8_q8_avx512(row, xq)
    }
    #[inline(always)]
    unsafe fn group8_q8(ty: GgmlType, group: &[u8], xq: &[Q8View<'_>], out: &mut [f32]) {
        super::x86::group8_q8_avx512(ty, group, xq, out)
    }
    #[inline(always)]
    unsafe fn group8_q16(ty: GgmlType, group: &[u8], xq: &[Q16View<'_>], out: &mut [f32]) {
        super::x86::group8_q16_avx512(ty, group, xq, out)
    }
}

#[inline(always)]
fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

#[inline(always)]
fn hsum(acc: [f32; 16]) -> f32 {
    let mut a8 = [0f32; 8];
    for j in 0..8 {
        a8[j] = acc[j] + acc[j + 8];
    }
    let mut a4 = [0f32; 4];
    for j in 0..4 {
        a4[j] = a8[j] + a8[j + 4];
    }
    (a4[0] + a4[2]) + (a4[1] + a4[3])
}

/// `Σ w·x` for one row of `ty` blocks.
///
/// # Safety
/// `I` must match the running CPU; `row` holds `x.len()` elements of `ty`.
#[inline(always)]
pub unsafe fn dot_row<I: Isa>(ty: GgmlType, row: &[u8], x: &[f32], xs: &XSums) -> f32 {
    match ty {
        GgmlType::F32 => I::dot_f32(row, x),
        GgmlType::F16 => I::dot_f16(row, x),
        GgmlType::Q4_0 => I::dot_q4_0(row, x, xs),
        GgmlType::Q4_1 => I::dot_q4_1(row, x, xs),
        GgmlType::Q5_0 => dot_q5_0::<I>(row, x, xs),
        GgmlType::Q5_1 => dot_q5_1::<I>(row, x, xs),
        GgmlType::Q8_0 => I::dot_q8_0(row, x),
        GgmlType::Q4K => dot_q4_k::<I>(row, x, xs),
        GgmlType::Q5K => dot_q5_k::<I>(row, x, xs),
        GgmlType::Q6K => dot_q6_k::<I>(row, x, xs),
        other => unreachable!("{other:?} rows are converted at load"),
    }
}

/// Plain f32 dot product with 16 lanes of partial sums.
#[inline(always)]
pub fn dot_f32_slices(a: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let n16 = a.len() / 16 * 16;
    for (ca, cx) in a[..n16].chunks_exact(16).zip(x[..n16].chunks_exact(16)) {
        for j in 0..16 {
            acc[j] += ca[j] * cx[j];
        }
    }
    let mut s = hsum(acc);
    for i in n16..a.len() {
        s += a[i] * x[i];
    }
    s
}

#[inline(always)]
fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let n16 = x.len() / 16 * 16;
    for (cw, cx) in row[..n16 * 4].chunks_exact(64).zip(x[..n16].chunks_exact(16)) {
        for j in 0..16 {
            let w = f32::from_le_bytes([cw[4 * j], cw[4 * j + 1], cw[4 * j + 2], cw[4 * j + 3]]);
            acc[j] += w * cx[j];
        }
    }
    let mut s = hsum(acc);
    for i in n16..x.len() {
        let c = &row[4 * i..4 * i + 4];
        s += f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * x[i];
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "f16c")]
#[inline]
unsafe fn f16_f16c(bits: u16) -> f32 {
    use std::arch::x86_64::{_mm_cvtph_ps, _mm_cvtsi32_si128, _mm_cvtss_f32};
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn f16s_to_f32_f16c(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n8 = src.len() / 8 * 8;
    let mut i = 0;
    while i < n8 {
        let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
        _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        i += 8;
    }
    for j in n8..src.len() {
        dst[j] = f16_f16c(src[j].to_bits());
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot_f16_f16c(row: &[u8], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n8 = x.len() / 8 * 8;
    let mut acc0 = _mm256_setzero_ps();
    let mut i = 0;
    while i < n8 {
        let h = _mm_loadu_si128(row.as_ptr().add(2 * i) as *const __m128i);
        let w = _mm256_cvtph_ps(h);
        acc0 = _mm256_add_ps(acc0, _mm256_mul_ps(w, _mm256_loadu_ps(x.as_ptr().add(i))));
        i += 8;
    }
    let mut buf = [0f32; 8];
    _mm256_storeu_ps(buf.as_mut_ptr(), acc0);
    let mut s: f32 = buf.iter().sum();
    for j in n8..x.len() {
        s += f16_f16c(u16_at(row, 2 * j)) * x[j];
    }
    s
}

#[inline(always)]
unsafe fn dot_q4_0<I: Isa>(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
    let mut acc = [0f32; 16];
    let mut off = 0f32;
    for (b, blk) in row.chunks_exact(18).enumerate() {
        let d = I::f16(u16_at(blk, 0));
        let qs = &blk[2..18];
        let xb = &x[b * 32..b * 32 + 32];
        for j in 0..16 {
            let q = qs[j];
            acc[j] += d * ((q & 15) as f32 * xb[j] + (q >> 4) as f32 * xb[16 + j]);
        }
        off -= 8.0 * d * xs.s32[b];
    }
    hsum(acc) + off
}

#[inline(always)]
unsafe fn dot_q4_1<I: Isa>(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
    let mut acc = [0f32; 16];
    let mut off = 0f32;
    for (b, blk) in row.chunks_exact(20).enumerate() {
        let d = I::f16(u16_at(blk, 0));
        let m = I::f16(u16_at(blk, 2));
        let qs = &blk[4..20];
        let xb = &x[b * 32..b * 32 + 32];
        for j in 0..16 {
            let q = qs[j];
            acc[j] += d * ((q & 15) as f32 * xb[j] + (q >> 4) as f32 * xb[16 + j]);
        }
        off += m * xs.s32[b];
    }
    hsum(acc) + off
}

#[inline(always)]
unsafe fn dot_q5_0<I: Isa>(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
    let mut acc = [0f32; 16];
    let mut off = 0f32;
    for (b, blk) in row.chunks_exact(22).enumerate() {
        let d = I::f16(u16_at(blk, 0));
        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
        let qs = &blk[6..22];
        let xb = &x[b * 32..b * 32 + 32];
        for j in 0..16 {
            let q = qs[j] as u32;
            let lo = (q & 15) | (((qh >> j) & 1) << 4);
            let hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4);
            acc[j] += d * (lo as f32 * xb[j] + hi as f32 * xb[16 + j]);
        }
        off -= 16.0 * d * xs.s32[b];
    }
    hsum(acc) + off
}

#[inline(always)]
unsafe fn dot_q5_1<I: Isa>(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
    let mut acc = [0f32; 16];
    let mut off = 0f32;
    for (b, blk) in row.chunks_exact(24).enumerate() {
        let d = I::f16(u16_at(blk, 0));
        let m = I::f16(u16_at(blk, 2));
        let qh = u32::from_le_bytes([blk[4], blk[5], blk[6], blk[7]]);
        let qs = &blk[8..24];
        let xb = &x[b * 32..b * 32 + 32];
        for j in 0..16 {
            let q = qs[j] as u32;
            let lo = (q & 15) | (((qh >> j) & 1) << 4);
            let hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4);
            acc[j] += d * (lo as f32 * xb[j] + hi as f32 * xb[16 + j]);
        }
        off += m * xs.s32[b];
    }
    hsum(acc) + off
}

#[inline(always)]
unsafe fn dot_q8_0<I: Isa>(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (b, blk) in row.chunks_exact(34).enumerate() {
        let d = I::f16(u16_at(blk, 0));
        let qs = &blk[2..34];
        let xb = &x[b * 32..b * 32 + 32];
        for j in 0..16 {
            acc[j] += d * ((qs[j] as i8) as f32 * xb[j] + (qs[16 + j] as i8) as f32 * xb[16 + j]);
        }
    }
    hsum(acc)
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K super-block.
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    let (sc, m) = crate::ggml::scale_min_k4(j, q);
    (sc as f32, m as f32)
}

#[inline(always)]
unsafe fn dot_q4_k<I: Isa>(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
    let mut acc = [0f32; 16];
    let mut off = 0f32;
    for (sb, blk) in row.chunks_exact(144).enumerate() {
        let d = I::f16(u16_at(blk, 0));
        let dmin = I::f16(u16_at(blk, 2));
        let scales = &blk[4..16];
        for g in 0..4 {
            let q = &blk[16 + g * 32..16 + g * 32 + 32];
            let (sc1, m1) = scale_min_k4(2 * g, scales);
            let (sc2, m2) = scale_min_k4(2 * g + 1, scales);
            let (d1, d2) = (d * sc1, d * sc2);
            let base = sb * 256 + g * 64;
            let xb = &x[base..base + 64];
            for j in 0..16 {
                let (qa, qb) = (q[j], q[16 + j]);
                acc[j] += d1 * ((qa & 15) as f32 * xb[j] + (qb & 15) as f32 * xb[16 + j])
                    + d2 * ((qa >> 4) as f32 * xb[32 + j] + (qb >> 4) as f32 * xb[48 + j]);
            }
            let s = sb * 8 + 2 * g;
            off -= dmin * (m1 * xs.s32[s] + m2 * xs.s32[s + 1]);
        }
    }
    hsum(acc) + off
}

#[inline(always)]
unsafe fn dot_q5_k<I: Isa>(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
    let mut acc = [0f32; 16];
    let mut off = 0f32;
    for (sb, blk) in row.chunks_exact(176).enumerate() {
        let d = I::f16(u16_at(blk, 0));
        let dmin = I::f16(u16_at(blk, 2));
        let scales = &blk[4..16];
        let qh = &blk[16..48];
        for g in 0..4 {
            let ql = &blk[48 + g * 32..48 + g * 32 + 32];
            let (sc1, m1) = scale_min_k4(2 * g, scales);
            let (sc2, m2) = scale_min_k4(2 * g + 1, scales);
            let (d1, d2) = (d * sc1, d * sc2);
            let (u1, u2) = (2 * g as u32, 2 * g as u32 + 1);
            let base = sb * 256 + g * 64;
            let xb = &x[base..base + 64];
            for j in 0..16 {
                let (qa, qb) = (ql[j] as u32, ql[16 + j] as u32);
                let (ha, hb) = (qh[j] as u32, qh[16 + j] as u32);
                let a_lo = (qa & 15) | (((ha >> u1) & 1) << 4);
                let b_lo = (qb & 15) | (((hb >> u1) & 1) << 4);
                let a_hi = (qa >> 4) | (((ha >> u2) & 1) << 4);
                let b_hi = (qb >> 4) | (((hb >> u2) & 1) << 4);
                acc[j] += d1 * (a_lo as f32 * xb[j] + b_lo as f32 * xb[16 + j])
                    + d2 * (a_hi as f32 * xb[32 + j] + b_hi as f32 * xb[48 + j]);
            }
            let s = sb * 8 + 2 * g;
            off -= dmin * (m1 * xs.s32[s] + m2 * xs.s32[s + 1]);
        }
    }
    hsum(acc) + off
}

#[inline(always)]
unsafe fn dot_q6_k<I: Isa>(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
    let mut acc = [0f32; 16];
    let mut off = 0f32;
    for (sb, blk) in row.chunks_exact(210).enumerate() {
        let d = I::f16(u16_at(blk, 208));
        for n in 0..2 {
            let ql = &blk[n * 64..n * 64 + 64];
            let qh = &blk[128 + n * 32..128 + n * 32 + 32];
            let sc = &blk[192 + n * 8..192 + n * 8 + 8];
            let base = sb * 256 + n * 128;
            for half in 0..2 {
                let s = |k: usize| d * (sc[half + 2 * k] as i8) as f32;
                let (s1, s2, s3, s4) = (s(0), s(1), s(2), s(3));
                let l0 = half * 16;
                for j in 0..16 {
                    let l = l0 + j;
                    let (a, b, h) = (ql[l] as u32, ql[l + 32] as u32, qh[l] as u32);
                    let q1 = (a & 15) | ((h & 3) << 4);
                    let q2 = (b & 15) | (((h >> 2) & 3) << 4);
                    let q3 = (a >> 4) | (((h >> 4) & 3) << 4);
                    let q4 = (b >> 4) | (((h >> 6) & 3) << 4);
                    acc[j] += s1 * q1 as f32 * x[base + l]
                        + s2 * q2 as f32 * x[base + 32 + l]
                        + s3 * q3 as f32 * x[base + 64 + l]
                        + s4 * q4 as f32 * x[base + 96 + l];
                }
                let i16 = (base + l0) / 16;
                off -= 32.0 * (s1 * xs.s16[i16] + s2 * xs.s16[i16 + 2] + s3 * xs.s16[i16 + 4] + s4 * xs.s16[i16 + 6]);
            }
        }
    }
    hsum(acc) + off
}

/// Which compiled flavour of the kernels this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The AVX-512 level needs F, BW, DQ, VL and VNNI (Ice Lake and later, Zen 4 and later).
#[cfg(target_arch = "x86_64")]
fn avx512_ok() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// The levels this CPU can run, best last (tests compare every one with the reference).
pub fn available_levels() -> Vec<Level> {
    #[allow(unused_mut)]
    let mut v = vec![Level::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 =
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
        if avx2 {
            v.push(Level::Avx2);
            if avx512_ok() {
                v.push(Level::Avx512);
            }
        }
    }
    v
}

/// Detected once; `DEMIURGIC_KERNELS=portable|avx2|avx512` caps it (for tests and comparisons).
pub fn level() -> Level {
    use std::sync::OnceLock;
    static L: OnceLock<Level> = OnceLock::new();
    *L.get_or_init(|| {
        let cap = std::env::var("DEMIURGIC_KERNELS").unwrap_or_default();
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 =
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            let avx512 = avx2 && avx512_ok();
            match cap.as_str() {
                "portable" => return Level::Portable,
                "avx2" if avx2 => return Level::Avx2,
                _ => {}
            }
            if avx512 {
                return Level::Avx512;
            }
            if avx2 {
                return Level::Avx2;
            }
        }
        let _ = cap;
        Level::Portable
    })
}

/// Compile `$body` (an expression using the type parameter name `$isa: Isa`) once per
/// instruction-set level and run the one this CPU supports.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch {
    ($level:expr; <$isa:ident> ($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty $body:block) => {{
        #[inline(always)]
        unsafe fn inner<$isa: $crate::kernels::dot::Isa>($($arg: $ty),*) -> $ret $body
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c,bmi2")]
        unsafe fn avx512($($arg: $ty),*) -> $ret { inner::<$crate::kernels::dot::X86Avx512>($($arg),*) }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma,f16c,bmi2")]
        unsafe fn avx2($($arg: $ty),*) -> $ret { inner::<$crate::kernels::dot::X86Avx2>($($arg),*) }
        fn portable($($arg: $ty),*) -> $ret { unsafe { inner::<$crate::kernels::dot::Portable>($($arg),*) } }
        match $level {
            // SAFETY: the level was detected from this CPU's features.
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::dot::Level::Avx512 => unsafe { avx512($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::dot::Level::Avx2 => unsafe { avx2($($arg),*) },
            $crate::kernels::dot::Level::Portable => portable($($arg),*),
        }
    }};
}
