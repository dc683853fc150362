//! Hand-written x86-64 dot products for the block types most GGUF files use (Q4_0, Q4_1, Q8_0),
//! with f32 activations: nibbles/bytes widened to i32, converted, fused multiply-add with the
//! activations, one scale per block (the `Σx` offset terms come from [`XSums`]).
//! AVX2+FMA+F16C (8 lanes) and AVX-512 (16 lanes) flavours; each is only called from code
//! compiled for (and dispatched to) that instruction set.
#![allow(unsafe_op_in_unsafe_fn)]
use std::arch::x86_64::*;

use super::act::XSums;

/// Bytes ahead of the current block that the decode kernels prefetch: a matrix is read once, in
/// order, and the hardware prefetchers alone left decode at 5–8 GB/s of the ~20 a long stream
/// gets (the matrices are 1–2 MB, read by several short tasks).
const PREFETCH: usize = 1024;

/// Prefetch the `len` bytes [`PREFETCH`] bytes past `p` (a pointer never dereferenced: past the
/// end of the weights it is a no-op).
#[inline(always)]
unsafe fn prefetch_ahead(p: *const u8, len: usize) {
    let mut line = 0;
    while line < len {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH + line) as *const i8);
        line += 64;
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 8 unsigned bytes → 8 f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn u8x8_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
}

/// Σ over one block of 32 nibble values (low nibbles = elements 0..16, high = 16..32) × x.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles_dot_avx2(qs: *const u8, x: *const f32) -> __m256 {
    let m4 = _mm_set1_epi8(0x0F);
    let q = _mm_loadu_si128(qs as *const __m128i);
    let lo = _mm_and_si128(q, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    let a = _mm256_mul_ps(u8x8_f32(lo), _mm256_loadu_ps(x));
    let a = _mm256_fmadd_ps(u8x8_f32(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x.add(8)), a);
    let a = _mm256_fmadd_ps(u8x8_f32(hi), _mm256_loadu_ps(x.add(16)), a);
    _mm256_fmadd_ps(u8x8_f32(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x.add(24)), a)
}

/// Q4_0 (`d`, 16 bytes of nibbles, value = d·(q − 8)).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_0_avx2(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
    let nb = x.len() / 32;
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut off = 0f32;
    let (rp, xp) = (row.as_ptr(), x.as_ptr());
    let mut b = 0;
    while b + 1 < nb {
        let (p0, p1) = (rp.add(b * 18), rp.add((b + 1) * 18));
        let (d0, d1) = (f16_at(p0), f16_at(p1));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d0), nibbles_dot_avx2(p0.add(2), xp.add(b * 32)), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(d1), nibbles_dot_avx2(p1.add(2), xp.add((b + 1) * 32)), acc1);
        off -= 8.0 * (d0 * xs.s32[b] + d1 * xs.s32[b + 1]);
        b += 2;
    }
    if b < nb {
        let p0 = rp.add(b * 18);
        let d0 = f16_at(p0);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d0), nibbles_dot_avx2(p0.add(2), xp.add(b * 32)), acc0);
        off -= 8.0 * d0 * xs.s32[b];
    }
    hsum256(_mm256_add_ps(acc0, acc1)) + off
}

/// Q4_1 (`d`, `m`, 16 bytes of nibbles, value = d·q + m).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_1_avx2(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
    let nb = x.len() / 32;
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut off = 0f32;
    let (rp, xp) = (row.as_ptr(), x.as_ptr());
    let mut b = 0;
    while b + 1 < nb {
        let (p0, p1) = (rp.add(b * 20), rp.add((b + 1) * 20));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(p0)), nibbles_dot_avx2(p0.add(4), xp.add(b * 32)), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(p1)), nibbles_dot_avx2(p1.add(4), xp.add((b + 1) * 32)), acc1);
        off += f16_at(p0.add(2)) * xs.s32[b] + f16_at(p1.add(2)) * xs.s32[b + 1];
        b += 2;
    }
    if b < nb {
        let p0 = rp.add(b * 20);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(p0)), nibbles_dot_avx2(p0.add(4), xp.add(b * 32)), acc0);
        off += f16_at(p0.add(2)) * xs.s32[b];
    }
    hsum256(_mm256_add_ps(acc0, acc1)) + off
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn i8x8_f32(p: *const u8) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
}

/// Q8_0 (`d`, 32 signed bytes, value = d·q).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_0_avx2(row: &[u8], x: &[f32]) -> f32 {
    let nb = x.len() / 32;
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let (rp, xp) = (row.as_ptr(), x.as_ptr());
    for b in 0..nb {
        let p = rp.add(b * 34);
        let q = p.add(2);
        let xb = xp.add(b * 32);
        let s0 = _mm256_mul_ps(i8x8_f32(q), _mm256_loadu_ps(xb));
        let s1 = _mm256_mul_ps(i8x8_f32(q.add(8)), _mm256_loadu_ps(xb.add(8)));
        let s0 = _mm256_fmadd_ps(i8x8_f32(q.add(16)), _mm256_loadu_ps(xb.add(16)), s0);
        let s1 = _mm256_fmadd_ps(i8x8_f32(q.add(24)), _mm256_loadu_ps(xb.add(24)), s1);
        let d = _mm256_set1_ps(f16_at(p));
        if b % 2 == 0 {
            acc0 = _mm256_fmadd_ps(d, _mm256_add_ps(s0, s1), acc0);
        } else {
            acc1 = _mm256_fmadd_ps(d, _mm256_add_ps(s0, s1), acc1);
        }
    }
    hsum256(_mm256_add_ps(acc0, acc1))
}

// ---- AVX-512: 16 lanes, one block = two vectors ----

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn nibbles_dot_avx512(qs: *const u8, x: *const f32) -> __m512 {
    let m4 = _mm_set1_epi8(0x0F);
    let q = _mm_loadu_si128(qs as *const __m128i);
    let lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(q, m4)));
    let hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), m4)));
    _mm512_fmadd_ps(hi, _mm512_loadu_ps(x.add(16)), _mm512_mul_ps(lo, _mm512_loadu_ps(x)))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q4_0_avx512(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
    let nb = x.len() / 32;
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut off = 0f32;
    let (rp, xp) = (row.as_ptr(), x.as_ptr());
    let mut b = 0;
    while b + 1 < nb {
        let (p0, p1) = (rp.add(b * 18), rp.add((b + 1) * 18));
        let (d0, d1) = (f16_at(p0), f16_at(p1));
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(d0), nibbles_dot_avx512(p0.add(2), xp.add(b * 32)), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_set1_ps(d1), nibbles_dot_avx512(p1.add(2), xp.add((b + 1) * 32)), acc1);
        off -= 8.0 * (d0 * xs.s32[b] + d1 * xs.s32[b + 1]);
        b += 2;
    }
    if b < nb {
        let p0 = rp.add(b * 18);
        let d0 = f16_at(p0);
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(d0), nibbles_dot_avx512(p0.add(2), xp.add(b * 32)), acc0);
        off -= 8.0 * d0 * xs.s32[b];
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + off
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q4_1_avx512(row: &[u8], x: &[f32], xs: &XSums) -> f32 {
    let nb = x.len() / 32;
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut off = 0f32;
    let (rp, xp) = (row.as_ptr(), x.as_ptr());
    let mut b = 0;
    while b + 1 < nb {
        let (p0, p1) = (rp.add(b * 20), rp.add((b + 1) * 20));
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(f16_at(p0)), nibbles_dot_avx512(p0.add(4), xp.add(b * 32)), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_set1_ps(f16_at(p1)), nibbles_dot_avx512(p1.add(4), xp.add((b + 1) * 32)), acc1);
        off += f16_at(p0.add(2)) * xs.s32[b] + f16_at(p1.add(2)) * xs.s32[b + 1];
        b += 2;
    }
    if b < nb {
        let p0 = rp.add(b * 20);
        acc0 = _mm512_fmadd_ps(_mm512_set1_ps(f16_at(p0)), nibbles_dot_avx512(p0.add(4), xp.add(b * 32)), acc0);
        off += f16_at(p0.add(2)) * xs.s32[b];
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + off
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q8_0_avx512(row: &[u8], x: &[f32]) -> f32 {
    let nb = x.len() / 32;
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let (rp, xp) = (row.as_ptr(), x.as_ptr());
    for b in 0..nb {
        let p = rp.add(b * 34);
        let xb = xp.add(b * 32);
        let lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(2) as *const __m128i)));
        let hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(18) as *const __m128i)));
        let s = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xb.add(16)), _mm512_mul_ps(lo, _mm512_loadu_ps(xb)));
        let d = _mm512_set1_ps(f16_at(p));
        if b % 2 == 0 {
            acc0 = _mm512_fmadd_ps(d, s, acc0);
        } else {
            acc1 = _mm512_fmadd_ps(d, s, acc1);
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
}

/// f32 dot product, 2×16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn f32_avx512(a: *const f32, x: &[f32]) -> f32 {
    let n = x.len();
    let xp = x.as_ptr();
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    while i + 32 <= n {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i)), _mm512_loadu_ps(xp.add(i)), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i + 16)), _mm512_loadu_ps(xp.add(i + 16)), acc1);
        i += 32;
    }
    let mut s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    while i < n {
        s += a.add(i).read_unaligned() * x[i];
        i += 1;
    }
    s
}

/// f32 dot product, 2×8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f32_avx2(a: *const f32, x: &[f32]) -> f32 {
    let n = x.len();
    let xp = x.as_ptr();
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(xp.add(i)), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i + 8)), _mm256_loadu_ps(xp.add(i + 8)), acc1);
        i += 16;
    }
    let mut s = hsum256(_mm256_add_ps(acc0, acc1));
    while i < n {
        s += a.add(i).read_unaligned() * x[i];
        i += 1;
    }
    s
}

// ---- int8 activations (llama.cpp's `vec_dot_q4_1_q8_1` & co.): integer dot products per block,
// one f32 multiply-add per block ----

use super::act::Q8View;

/// 32 unsigned nibble values of a Q4 block in element order: `[lo 16 | hi 16]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_bytes_avx2(qs: *const u8) -> __m256i {
    let m4 = _mm_set1_epi8(0x0F);
    let q = _mm_loadu_si128(qs as *const __m128i);
    let lo = _mm_and_si128(q, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    _mm256_set_m128i(hi, lo)
}

/// Σ u8·i8 of 32 pairs as 8 i32 → f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_u8i8_avx2(u: __m256i, s: __m256i) -> __m256 {
    let p16 = _mm256_maddubs_epi16(u, s);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
}

/// Q4_0 / Q4_1 rows × Q8 activations. `min` = Q4_1 (`d`, `m` header) else Q4_0 (`d`, q − 8).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_q8_avx2(row: &[u8], xq: &Q8View<'_>, min: bool) -> f32 {
    let nb = xq.d.len();
    let (bs, hdr) = if min { (20, 4) } else { (18, 2) };
    let mut acc = _mm256_setzero_ps();
    let mut off = 0f32;
    let rp = row.as_ptr();
    for b in 0..nb {
        let p = rp.add(b * bs);
        let d = f16_at(p);
        let u = q4_bytes_avx2(p.add(hdr));
        let s = _mm256_loadu_si256(xq.qs.as_ptr().add(b * 32) as *const __m256i);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * xq.d[b]), dot_u8i8_avx2(u, s), acc);
        off += if min { f16_at(p.add(2)) * xq.s[b] } else { -8.0 * d * xq.s[b] };
    }
    hsum256(acc) + off
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_q8_avx2(row: &[u8], xq: &Q8View<'_>) -> f32 {
    let nb = xq.d.len();
    let mut acc = _mm256_setzero_ps();
    let rp = row.as_ptr();
    for b in 0..nb {
        let p = rp.add(b * 34);
        let w = _mm256_loadu_si256(p.add(2) as *const __m256i);
        let x = _mm256_loadu_si256(xq.qs.as_ptr().add(b * 32) as *const __m256i);
        let v = dot_u8i8_avx2(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(p) * xq.d[b]), v, acc);
    }
    hsum256(acc)
}

/// Q4 rows × int8 activations with 256-bit VNNI (`vpdpbusd` on ymm: three vector ports on
/// recent Intel cores, against two for 512-bit), four independent accumulators.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q4_q8_avx512(row: &[u8], xq: &Q8View<'_>, min: bool) -> f32 {
    let nb = xq.d.len();
    let (bs, hdr) = if min { (20, 4) } else { (18, 2) };
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut off = 0f32;
    let rp = row.as_ptr();
    let xp = xq.qs.as_ptr();
    let m4 = _mm_set1_epi8(0x0F);
    for b in 0..nb {
        let p = rp.add(b * bs);
        let q = _mm_loadu_si128(p.add(hdr) as *const __m128i);
        let u = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
        let s = _mm256_loadu_si256(xp.add(b * 32) as *const __m256i);
        let v = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s));
        let d = f16_at(p);
        let dx = *xq.d.get_unchecked(b);
        acc[b & 3] = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), v, acc[b & 3]);
        let sb = *xq.s.get_unchecked(b);
        off += if min { f16_at(p.add(2)) * sb } else { -8.0 * d * sb };
    }
    hsum256(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))) + off
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q8_q8_avx512(row: &[u8], xq: &Q8View<'_>) -> f32 {
    let nb = xq.d.len();
    let mut acc = [_mm256_setzero_ps(); 4];
    let rp = row.as_ptr();
    let xp = xq.qs.as_ptr();
    for b in 0..nb {
        let p = rp.add(b * 34);
        let w = _mm256_loadu_si256(p.add(2) as *const __m256i);
        let x = _mm256_loadu_si256(xp.add(b * 32) as *const __m256i);
        let v = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(
            _mm256_setzero_si256(),
            _mm256_sign_epi8(w, w),
            _mm256_sign_epi8(x, w),
        ));
        let d = f16_at(p) * *xq.d.get_unchecked(b);
        acc[b & 3] = _mm256_fmadd_ps(_mm256_set1_ps(d), v, acc[b & 3]);
    }
    hsum256(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])))
}

// ---- interleaved groups of 8 rows × int8 activations: lane j of every vector is row j ----

use crate::ggml::GgmlType;

/// `Σ u8·i8` over groups of 4 bytes into i32 lanes: VNNI where the level has it.
///
/// Q8_0 weights are signed: with VNNI (`$sign_trick` false) the dot runs on `w + 128` as u8 and
/// subtracts `128·Σx`; AVX2's `maddubs` would saturate its i16 pair sums on `(w + 128)·x`, so
/// there (`$sign_trick` true) it runs on `|w|` against `x·sign(w)` (llama.cpp's AVX2 Q8_0 trick:
/// pairs ≤ 2·128·127 < 2¹⁵; activations lie in [-127, 127]). Both give the same integer sums.
macro_rules! group8_kernel {
    ($name:ident, $feat:literal, $dot:ident, $sign_trick:literal) => {
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn $name<const M: usize>(ty: GgmlType, group: &[u8], xq: &[Q8View<'_>], out: &mut [f32]) {
            let nb = xq[0].d.len();
            let gp = group.as_ptr();
            let mut acc = [_mm256_setzero_ps(); M];
            let mut off = [_mm256_setzero_ps(); M];
            match ty {
                GgmlType::Q4_0 | GgmlType::Q4_1 => {
                    let min = ty == GgmlType::Q4_1;
                    let hdr = if min { 32 } else { 16 };
                    let gb = hdr + 128;
                    let m4 = _mm256_set1_epi8(0x0F);
                    for b in 0..nb {
                        let p = gp.add(b * gb);
                        prefetch_ahead(p, gb);
                        let d8 = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
                        let q = p.add(hdr);
                        let mut lo = [_mm256_setzero_si256(); 4];
                        let mut hi = [_mm256_setzero_si256(); 4];
                        for c in 0..4 {
                            let v = _mm256_loadu_si256(q.add(32 * c) as *const __m256i);
                            lo[c] = _mm256_and_si256(v, m4);
                            hi[c] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                        }
                        let m8 = if min { _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i)) } else { d8 };
                        for i in 0..M {
                            let x = xq.get_unchecked(i);
                            let xb = x.qs.as_ptr().add(b * 32) as *const i32;
                            let mut s0 = _mm256_setzero_si256();
                            let mut s1 = _mm256_setzero_si256();
                            for c in 0..4 {
                                s0 = $dot(s0, lo[c], _mm256_set1_epi32(xb.add(c).read_unaligned()));
                                s1 = $dot(s1, hi[c], _mm256_set1_epi32(xb.add(c + 4).read_unaligned()));
                            }
                            let v = _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1));
                            let dx = *x.d.get_unchecked(b);
                            acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(d8, _mm256_set1_ps(dx)), v, acc[i]);
                            let sx = *x.s.get_unchecked(b);
                            off[i] = _mm256_fmadd_ps(m8, _mm256_set1_ps(if min { sx } else { -8.0 * sx }), off[i]);
                        }
                    }
                }
                _ => {
                    // Q8_0: weights stored signed (see above for the two ways).
                    let gb = 16 + 256;
                    let flip = _mm256_set1_epi8(-128);
                    for b in 0..nb {
                        let p = gp.add(b * gb);
                        prefetch_ahead(p, gb);
                        let d8 = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
                        let q = p.add(16);
                        let mut w = [_mm256_setzero_si256(); 8];
                        let mut sg = [_mm256_setzero_si256(); 8];
                        for c in 0..8 {
                            let v = _mm256_loadu_si256(q.add(32 * c) as *const __m256i);
                            if $sign_trick {
                                w[c] = _mm256_sign_epi8(v, v);
                                sg[c] = v;
                            } else {
                                w[c] = _mm256_xor_si256(v, flip);
                            }
                        }
                        for i in 0..M {
                            let x = xq.get_unchecked(i);
                            let xb = x.qs.as_ptr().add(b * 32) as *const i32;
                            let mut s0 = _mm256_setzero_si256();
                            let mut s1 = _mm256_setzero_si256();
                            for c in 0..4 {
                                let (x0, x1) = (
                                    _mm256_set1_epi32(xb.add(c).read_unaligned()),
                                    _mm256_set1_epi32(xb.add(c + 4).read_unaligned()),
                                );
                                if $sign_trick {
                                    s0 = $dot(s0, w[c], _mm256_sign_epi8(x0, sg[c]));
                                    s1 = $dot(s1, w[c + 4], _mm256_sign_epi8(x1, sg[c + 4]));
                                } else {
                                    s0 = $dot(s0, w[c], x0);
                                    s1 = $dot(s1, w[c + 4], x1);
                                }
                            }
                            let total = _mm256_add_epi32(s0, s1);
                            let v = _mm256_cvtepi32_ps(if $sign_trick {
                                total
                            } else {
                                _mm256_sub_epi32(total, _mm256_set1_epi32(128 * *x.isum.get_unchecked(b)))
                            });
                            acc[i] =
                                _mm256_fmadd_ps(_mm256_mul_ps(d8, _mm256_set1_ps(*x.d.get_unchecked(b))), v, acc[i]);
                        }
                    }
                }
            }
            for i in 0..M {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc[i], off[i]));
                for (lane, v) in lanes.iter().enumerate() {
                    *out.get_unchecked_mut(lane * M + i) = *v;
                }
            }
        }
    };
}

/// `u8 × i8` products summed by 4 into i32 lanes, AVX2 (no VNNI): `maddubs` + `madd`. The
/// pair sums stay below i16 saturation for Q4 (u ≤ 15) and for Q8_0's `|w|` (≤ 128) × 127.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_avx2(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot4_vnni(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, u, s)
}

group8_kernel!(group8_avx2_m, "avx2,fma,f16c", dot4_avx2, true);
group8_kernel!(group8_avx512_m, "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c", dot4_vnni, false);

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn group8_q8_avx2(ty: GgmlType, group: &[u8], xq: &[Q8View<'_>], out: &mut [f32]) {
    if ty != GgmlType::Q8_0 {
        return rows_to_lanes(xq.len(), out, |tmp| group8_q8_many_avx2(ty, group, xq, tmp, 8));
    }
    match xq.len() {
        1 => group8_avx2_m::<1>(ty, group, xq, out),
        2 => group8_avx2_m::<2>(ty, group, xq, out),
        3 => group8_avx2_m::<3>(ty, group, xq, out),
        _ => group8_avx2_m::<4>(ty, group, xq, out),
    }
}

/// Interleaved Q4_0 / Q4_1 groups × int8 activations on AVX2 (no VNNI), for `M` activation
/// rows, each row's 8 outputs stored at `out[i · n ..]`.
///
/// `maddubs` of the unsigned nibbles (≤ 15) and the activations (|x| ≤ 127, [`Q8Act`]) gives
/// pair sums of at most 2·15·127 = 3,810, so a block's 8 of them per lane add up in i16 without
/// saturating (≤ 30,480) and one `madd` by 1 per block widens each row's 4 lanes' total to i32:
/// 9 multiplies per block and row instead of 16 (`maddubs` + `madd` per 4 values, as the VNNI
/// kernels' `dpbusd` fallback does). The same integer sums and f32 steps as [`group8_kernel`]:
/// bit-identical results. A block is unpacked one chunk at a time, so `M` i16 sums, the chunk
/// and the broadcasts fit in AVX2's 16 registers up to 8 rows.
///
/// [`Q8Act`]: super::act::Q8Act
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group8_q4_q8_avx2_rows<const M: usize>(
    ty: GgmlType,
    group: &[u8],
    xq: &[Q8View<'_>],
    out: *mut f32,
    n: usize,
) {
    let nb = xq[0].d.len();
    let gp = group.as_ptr();
    let min = ty == GgmlType::Q4_1;
    let (hdr, gb) = group_bytes(ty);
    let m4 = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); M];
    let mut off = [_mm256_setzero_ps(); M];
    let xp: [*const i32; M] = std::array::from_fn(|i| xq.get_unchecked(i).qs.as_ptr() as *const i32);
    for b in 0..nb {
        let p = gp.add(b * gb);
        prefetch_ahead(p, gb);
        let q = p.add(hdr);
        let mut s = [_mm256_setzero_si256(); M];
        for c in 0..4 {
            let v = _mm256_loadu_si256(q.add(32 * c) as *const __m256i);
            let lo = _mm256_and_si256(v, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            for i in 0..M {
                let xl = _mm256_set1_epi32(xp[i].add(b * 8 + c).read_unaligned());
                let xh = _mm256_set1_epi32(xp[i].add(b * 8 + c + 4).read_unaligned());
                s[i] = _mm256_add_epi16(
                    s[i],
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_maddubs_epi16(hi, xh)),
                );
            }
        }
        let d8 = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        let m8 = if min { _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i)) } else { d8 };
        for i in 0..M {
            let x = xq.get_unchecked(i);
            let v = _mm256_cvtepi32_ps(_mm256_madd_epi16(s[i], ones));
            let dx = *x.d.get_unchecked(b);
            acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(d8, _mm256_set1_ps(dx)), v, acc[i]);
            let sx = *x.s.get_unchecked(b);
            off[i] = _mm256_fmadd_ps(m8, _mm256_set1_ps(if min { sx } else { -8.0 * sx }), off[i]);
        }
    }
    for i in 0..M {
        _mm256_storeu_ps(out.add(i * n), _mm256_add_ps(acc[i], off[i]));
    }
}

/// [`group8_q8_avx2`] over every activation row of `xq`, each row's 8 outputs written in place
/// at `out[i · n ..]`: Q4_0 / Q4_1 in tiles of up to 8 rows ([`group8_q4_q8_avx2_rows`]), Q8_0
/// in tiles of 4.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn group8_q8_many_avx2(ty: GgmlType, group: &[u8], xq: &[Q8View<'_>], out: *mut f32, n: usize) {
    if ty != GgmlType::Q8_0 {
        return row_tiles!(group8_q4_q8_avx2_rows(ty, group, xq, out, n); 1 2 3 4 5 6 7 8);
    }
    let mut tmp = [0f32; 32];
    for (ti, tile) in xq.chunks(4).enumerate() {
        let mc = tile.len();
        group8_q8_avx2(ty, group, tile, &mut tmp[..8 * mc]);
        for i in 0..mc {
            let o = out.add((ti * 4 + i) * n);
            for lane in 0..8 {
                *o.add(lane) = tmp[lane * mc + i];
            }
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn group8_q8_avx512(ty: GgmlType, group: &[u8], xq: &[Q8View<'_>], out: &mut [f32]) {
    match xq.len() {
        1 => group8_avx512_m::<1>(ty, group, xq, out),
        2 => group8_avx512_m::<2>(ty, group, xq, out),
        3 => group8_avx512_m::<3>(ty, group, xq, out),
        _ => group8_avx512_m::<4>(ty, group, xq, out),
    }
}

// ---- interleaved groups × int16 activations: the weights widened to i16, `pmaddwd`-style
// products of pairs; lanes hold (row, pair) partial sums, folded to one lane per row per block ----

use super::act::Q16View;

macro_rules! group8_q16_kernel {
    ($name:ident, $feat:literal, $dot:ident) => {
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn $name<const M: usize>(ty: GgmlType, group: &[u8], xq: &[Q16View<'_>], out: &mut [f32]) {
            let nb = xq[0].d.len();
            let gp = group.as_ptr();
            let mut acc = [_mm256_setzero_ps(); M];
            let mut off = [_mm256_setzero_ps(); M];
            // hadd of (rows 0-3, rows 4-7) pair sums gives rows [0, 1, 4, 5, 2, 3, 6, 7]
            let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
            let is_q8 = ty == GgmlType::Q8_0;
            let min = ty == GgmlType::Q4_1;
            let (hdr, gb) = match ty {
                GgmlType::Q8_0 => (16, 16 + 256),
                GgmlType::Q4_1 => (32, 32 + 128),
                _ => (16, 16 + 128),
            };
            let m4 = _mm256_set1_epi8(0x0F);
            for b in 0..nb {
                let p = gp.add(b * gb);
                prefetch_ahead(p, gb);
                let d8 = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
                let q = p.add(hdr);
                // 8 groups of 4 k (k-group g = k 4g..4g+4) × 8 rows, as two i16 halves each
                let mut w = [[_mm256_setzero_si256(); 2]; 8];
                if is_q8 {
                    for g in 0..8 {
                        let v = _mm256_loadu_si256(q.add(32 * g) as *const __m256i);
                        w[g][0] = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v));
                        w[g][1] = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1));
                    }
                } else {
                    for c in 0..4 {
                        let v = _mm256_loadu_si256(q.add(32 * c) as *const __m256i);
                        let lo = _mm256_and_si256(v, m4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                        w[c][0] = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(lo));
                        w[c][1] = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(lo, 1));
                        w[c + 4][0] = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(hi));
                        w[c + 4][1] = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(hi, 1));
                    }
                }
                let m8 = if min { _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i)) } else { d8 };
                for i in 0..M {
                    let x = xq.get_unchecked(i);
                    let xb = x.qs.as_ptr().add(b * 32) as *const i64;
                    let (mut s0, mut s1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                    for g in 0..8 {
                        let xv = _mm256_set1_epi64x(xb.add(g).read_unaligned());
                        s0 = $dot(s0, w[g][0], xv);
                        s1 = $dot(s1, w[g][1], xv);
                    }
                    let rows = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(s0, s1), order);
                    let dx = *x.d.get_unchecked(b);
                    acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(d8, _mm256_set1_ps(dx)), _mm256_cvtepi32_ps(rows), acc[i]);
                    if !is_q8 {
                        let xs = *x.xsum.get_unchecked(b);
                        off[i] = _mm256_fmadd_ps(m8, _mm256_set1_ps(if min { xs } else { -8.0 * xs }), off[i]);
                    }
                }
            }
            for i in 0..M {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc[i], off[i]));
                for (lane, v) in lanes.iter().enumerate() {
                    *out.get_unchecked_mut(lane * M + i) = *v;
                }
            }
        }
    };
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot2_vnni(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    _mm256_dpwssd_epi32(acc, w, x)
}

group8_q16_kernel!(group8_q16_avx512_m, "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c", dot2_vnni);

/// AVX2's [`group8_q16_kernel`] for several activation rows: a block's chunks are unpacked one at
/// a time (two or four registers) and used for every row before the next, so the `M` rows' pair
/// sums (2·M registers) stay in registers where the whole unpacked block (16) would not fit
/// beside them in AVX2's 16. The same integer sums and the same f32 operations per row and
/// block as the one-row kernel: bit-identical results.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn group8_q16_avx2_rows<const M: usize>(
    ty: GgmlType,
    group: &[u8],
    xq: &[Q16View<'_>],
    out: *mut f32,
    n: usize,
) {
    let nb = xq[0].d.len();
    let gp = group.as_ptr();
    let mut acc = [_mm256_setzero_ps(); M];
    let mut off = [_mm256_setzero_ps(); M];
    let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    let is_q8 = ty == GgmlType::Q8_0;
    let min = ty == GgmlType::Q4_1;
    let (hdr, gb) = group_bytes(ty);
    let m4 = _mm256_set1_epi8(0x0F);
    let xp: [*const i64; M] = std::array::from_fn(|i| xq.get_unchecked(i).qs.as_ptr() as *const i64);
    for b in 0..nb {
        let p = gp.add(b * gb);
        prefetch_ahead(p, gb);
        let q = p.add(hdr);
        let mut s0 = [_mm256_setzero_si256(); M];
        let mut s1 = [_mm256_setzero_si256(); M];
        if is_q8 {
            for g in 0..8 {
                let v = _mm256_loadu_si256(q.add(32 * g) as *const __m256i);
                let w0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v));
                let w1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1));
                for i in 0..M {
                    let xv = _mm256_set1_epi64x(xp[i].add(b * 8 + g).read_unaligned());
                    s0[i] = _mm256_add_epi32(s0[i], _mm256_madd_epi16(w0, xv));
                    s1[i] = _mm256_add_epi32(s1[i], _mm256_madd_epi16(w1, xv));
                }
            }
        } else {
            for c in 0..4 {
                let v = _mm256_loadu_si256(q.add(32 * c) as *const __m256i);
                let lo = _mm256_and_si256(v, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                let (l0, l1) = (
                    _mm256_cvtepu8_epi16(_mm256_castsi256_si128(lo)),
                    _mm256_cvtepu8_epi16(_mm256_extracti128_si256(lo, 1)),
                );
                let (h0, h1) = (
                    _mm256_cvtepu8_epi16(_mm256_castsi256_si128(hi)),
                    _mm256_cvtepu8_epi16(_mm256_extracti128_si256(hi, 1)),
                );
                for i in 0..M {
                    let xl = _mm256_set1_epi64x(xp[i].add(b * 8 + c).read_unaligned());
                    let xh = _mm256_set1_epi64x(xp[i].add(b * 8 + c + 4).read_unaligned());
                    s0[i] =
                        _mm256_add_epi32(s0[i], _mm256_add_epi32(_mm256_madd_epi16(l0, xl), _mm256_madd_epi16(h0, xh)));
                    s1[i] =
                        _mm256_add_epi32(s1[i], _mm256_add_epi32(_mm256_madd_epi16(l1, xl), _mm256_madd_epi16(h1, xh)));
                }
            }
        }
        let d8 = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        let m8 = if min { _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i)) } else { d8 };
        for i in 0..M {
            let x = xq.get_unchecked(i);
            let rows = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(s0[i], s1[i]), order);
            let dx = *x.d.get_unchecked(b);
            acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(d8, _mm256_set1_ps(dx)), _mm256_cvtepi32_ps(rows), acc[i]);
            if !is_q8 {
                let xs = *x.xsum.get_unchecked(b);
                off[i] = _mm256_fmadd_ps(m8, _mm256_set1_ps(if min { xs } else { -8.0 * xs }), off[i]);
            }
        }
    }
    for i in 0..M {
        _mm256_storeu_ps(out.add(i * n), _mm256_add_ps(acc[i], off[i]));
    }
}

/// `out[i · n + r]` for the 8 rows `r` of one interleaved group and every activation row `i` of
/// `xq`, in tiles of up to 4 rows ([`group8_q16_avx2_rows`]), written in place.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn group8_q16_many_avx2(ty: GgmlType, group: &[u8], xq: &[Q16View<'_>], out: *mut f32, n: usize) {
    row_tiles!(group8_q16_avx2_rows(ty, group, xq, out, n); 1 2 3 4)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn group8_q16_avx2(ty: GgmlType, group: &[u8], xq: &[Q16View<'_>], out: &mut [f32]) {
    rows_to_lanes(xq.len(), out, |tmp| group8_q16_many_avx2(ty, group, xq, tmp, 8))
}

/// A many-rows kernel's `[m, 8]` results (`many` writes them at the pointer it gets) in the
/// `[8, m]` order of the `Isa` group kernels, for up to 4 activation rows.
#[inline(always)]
fn rows_to_lanes(m: usize, out: &mut [f32], many: impl FnOnce(*mut f32)) {
    assert!(m <= 4 && out.len() >= 8 * m, "group kernels: up to 4 rows");
    let mut tmp = [0f32; 32];
    many(tmp.as_mut_ptr());
    for i in 0..m {
        for lane in 0..8 {
            out[lane * m + i] = tmp[i * 8 + lane];
        }
    }
}

/// `$kernel::<M>(ty, group, rows, out, n)` over the activation rows `$xq` in tiles of up to the
/// last of the listed `M`s, each tile's outputs at `$out + i0 · n`.
macro_rules! row_tiles {
    ($kernel:ident($ty:expr, $group:expr, $xq:expr, $out:expr, $n:expr); $($m:literal)+) => {{
        let (xq, max) = ($xq, [$($m),+].into_iter().max().unwrap_or(1));
        let mut i0 = 0;
        while i0 < xq.len() {
            let (t, o) = (&xq[i0..], $out.add(i0 * $n));
            let tile = (xq.len() - i0).min(max);
            match tile {
                $($m => $kernel::<$m>($ty, $group, t, o, $n),)+
                _ => unreachable!("tile of {tile} rows"),
            }
            i0 += tile;
        }
    }};
}
use row_tiles;

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn group8_q16_avx512(ty: GgmlType, group: &[u8], xq: &[Q16View<'_>], out: &mut [f32]) {
    match xq.len() {
        1 => group8_q16_avx512_m::<1>(ty, group, xq, out),
        2 => group8_q16_avx512_m::<2>(ty, group, xq, out),
        3 => group8_q16_avx512_m::<3>(ty, group, xq, out),
        _ => group8_q16_avx512_m::<4>(ty, group, xq, out),
    }
}

// ---- interleaved groups × many int16 activation rows (batched decode, short prefills): a
// block's 8 rows × 32 values unpacked once into eight 512-bit registers of i16 pairs and used for
// every activation row of the tile, so the unpacking is paid once per M rows ----

/// Interleaved group column bytes: (the 8 rows' scale header, header + quants).
fn group_bytes(ty: GgmlType) -> (usize, usize) {
    match ty {
        GgmlType::Q8_0 => (16, 16 + 256),
        GgmlType::Q4_1 => (32, 32 + 128),
        _ => (16, 16 + 128),
    }
}

/// Each accumulator's lanes `2r + 2r+1` summed into row `r`, the 8 rows stored at
/// `out[i · n ..]` for activation row `i`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
unsafe fn store_pair_sums(acc: &[__m512], out: *mut f32, n: usize) {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0);
    for (i, a) in acc.iter().enumerate() {
        let pairs = _mm512_add_ps(*a, _mm512_permute_ps::<0b10_11_00_01>(*a));
        _mm256_storeu_ps(out.add(i * n), _mm512_castps512_ps256(_mm512_permutexvar_ps(even, pairs)));
    }
}

/// A many-row kernel over `xq` in tiles of up to 8 rows: `$wide::<M>(ty, group, tile, out, n)`.
macro_rules! tiles_of_8 {
    ($wide:ident, $ty:expr, $group:expr, $xq:expr, $out:expr, $n:expr) => {{
        let (ty, group, xq, out, n) = ($ty, $group, $xq, $out, $n);
        let m = xq.len();
        let mut i0 = 0;
        while i0 < m {
            let (t, o) = (&xq[i0..], out.add(i0 * n));
            let tile = (m - i0).min(8);
            match tile {
                1 => $wide::<1>(ty, group, t, o, n),
                2 => $wide::<2>(ty, group, t, o, n),
                3 => $wide::<3>(ty, group, t, o, n),
                4 => $wide::<4>(ty, group, t, o, n),
                5 => $wide::<5>(ty, group, t, o, n),
                6 => $wide::<6>(ty, group, t, o, n),
                7 => $wide::<7>(ty, group, t, o, n),
                _ => $wide::<8>(ty, group, t, o, n),
            }
            i0 += tile;
        }
    }};
}

/// The many-row kernels' per-block scale lanes: each row's scale on its even lane (where the
/// pair's integer total is), its offset scale (`m` for Q4_1, `d` for Q4_0) on its odd lane, so
/// the odd lanes accumulate the offset terms apart and the final pair sum is `acc + off` — the
/// same operations, in the same order, as the one-row kernels (results bit-identical to them).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
unsafe fn scale_lanes(p: *const u8, d8: __m256, min: bool) -> (__m512, __m512) {
    let dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    let m8 = if min { _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i)) } else { d8 };
    (
        _mm512_maskz_permutexvar_ps(0x5555, dup, _mm512_castps256_ps512(d8)),
        _mm512_maskz_permutexvar_ps(0xAAAA, dup, _mm512_castps256_ps512(m8)),
    )
}

/// `out[i · n + r]` for the 8 rows `r` of one interleaved group (Q4_0, Q4_1, Q8_0; `group`
/// holds all its block columns) and the `M` activation rows `xq`, 512-bit.
///
/// Per block: chunk `c` of the group (4 bytes of each row's quants) widened to i16 gives one
/// register whose dword lanes are (row `r`, values `2j, 2j + 1` of the chunk's 4) for lane
/// `2r + j`; `vpdpwssd` against the activation's 4 values broadcast as a qword sums pairs, so
/// lanes `2r` and `2r + 1` together hold row `r`'s products: their integer total is formed per
/// block on the even lane and scaled there, the odd lane accumulates the offset term (`m·Σx`, or
/// `-8·d·Σx` for Q4_0; [`scale_lanes`]). The `M` rows' sums are independent chains, interleaved
/// so the multiply-adds' latency overlaps.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn group8_q16_wide<const M: usize>(ty: GgmlType, group: &[u8], xq: &[Q16View<'_>], out: *mut f32, n: usize) {
    let nb = xq[0].d.len();
    let gp = group.as_ptr();
    let is_q8 = ty == GgmlType::Q8_0;
    let min = ty == GgmlType::Q4_1;
    let (hdr, gb) = group_bytes(ty);
    let mut xp = [std::ptr::null::<i16>(); M];
    let mut dp = [std::ptr::null::<f32>(); M];
    let mut sp = [std::ptr::null::<f32>(); M];
    for i in 0..M {
        let x = xq.get_unchecked(i);
        (xp[i], dp[i], sp[i]) = (x.qs.as_ptr(), x.d.as_ptr(), x.xsum.as_ptr());
    }
    let m4 = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); M];
    for b in 0..nb {
        let p = gp.add(b * gb);
        prefetch_ahead(p, gb);
        let d8 = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        let (dpat, opat) = scale_lanes(p, d8, min);
        let q = p.add(hdr);
        let mut s = [_mm512_setzero_si512(); M];
        // register c holds values 4c..4c + 4 (Q8_0: chunk c; Q4: chunk c's low nibbles for
        // c < 4, chunk c - 4's high nibbles, values 16 + 4(c - 4), after)
        for c in 0..8 {
            let wc = if is_q8 {
                _mm512_cvtepi8_epi16(_mm256_loadu_si256(q.add(32 * c) as *const __m256i))
            } else {
                let v = _mm256_loadu_si256(q.add(32 * (c % 4)) as *const __m256i);
                let v = if c < 4 { v } else { _mm256_srli_epi16(v, 4) };
                _mm512_cvtepu8_epi16(_mm256_and_si256(v, m4))
            };
            for i in 0..M {
                let xv = _mm512_set1_epi64((xp[i].add(b * 32 + 4 * c) as *const i64).read_unaligned());
                // as asm: LLVM splits the intrinsic into `vpmaddwd` + `vpaddd` here (two uops)
                std::arch::asm!("vpdpwssd {s}, {w}, {x}", s = inout(zmm_reg) s[i], w = in(zmm_reg) wc,
                    x = in(zmm_reg) xv, options(pure, nomem, nostack));
            }
        }
        for i in 0..M {
            let t = _mm512_add_epi32(s[i], _mm512_shuffle_epi32::<0b10_11_00_01>(s[i]));
            let dx = _mm512_set1_ps(*dp[i].add(b));
            acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(dpat, dx), _mm512_cvtepi32_ps(t), acc[i]);
            if !is_q8 {
                let xs = *sp[i].add(b);
                acc[i] = _mm512_fmadd_ps(opat, _mm512_set1_ps(if min { xs } else { -8.0 * xs }), acc[i]);
            }
        }
    }
    store_pair_sums(&acc, out, n);
}

/// [`group8_q16_wide`] over any number of activation rows in tiles of up to 8 (the group's
/// blocks stay in L1 between tiles): `out[i · n + r]` for the group's rows `r` in 0..8.
///
/// # Safety
/// AVX-512 VNNI; `out` valid for `xq.len()` rows of stride `n` from the group's first row.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn group8_q16_many_avx512(ty: GgmlType, group: &[u8], xq: &[Q16View<'_>], out: *mut f32, n: usize) {
    tiles_of_8!(group8_q16_wide, ty, group, xq, out, n)
}

/// [`group8_q16_wide`] with int8 activations (`vpdpbusd`, llama.cpp's arithmetic): chunks `c` and
/// `c + 1` of the group loaded as one register, their dwords interleaved so lane `2r + j` holds
/// row `r`'s 4 values of chunk `c + j` (unsigned: Q4 nibbles as they are, Q8_0 bytes `+ 128`),
/// against the activation's 8 values broadcast as a qword; per block the pair's integer total
/// (Q8_0's minus `128·Σq_x`) scaled on the even lane, the offset terms (`m·s`, `-8·d·s` with
/// `s = d_x·Σq_x`) on the odd lane, as the one-row kernel computes them.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn group8_q8_wide<const M: usize>(ty: GgmlType, group: &[u8], xq: &[Q8View<'_>], out: *mut f32, n: usize) {
    let nb = xq[0].d.len();
    let gp = group.as_ptr();
    let is_q8 = ty == GgmlType::Q8_0;
    let min = ty == GgmlType::Q4_1;
    let (hdr, gb) = group_bytes(ty);
    let mut xp = [std::ptr::null::<i8>(); M];
    let mut dp = [std::ptr::null::<f32>(); M];
    let mut sp = [std::ptr::null::<f32>(); M];
    let mut ip = [std::ptr::null::<i32>(); M];
    for i in 0..M {
        let x = xq.get_unchecked(i);
        (xp[i], dp[i], sp[i], ip[i]) = (x.qs.as_ptr(), x.d.as_ptr(), x.s.as_ptr(), x.isum.as_ptr());
    }
    let zip = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); M];
    for b in 0..nb {
        let p = gp.add(b * gb);
        prefetch_ahead(p, gb);
        let d8 = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
        let (dpat, opat) = scale_lanes(p, d8, min);
        let q = p.add(hdr);
        // register j holds values 8j..8j + 8 (Q8_0: chunks 2j, 2j + 1; Q4: low nibbles of chunks
        // 2j, 2j + 1 for j < 2, the high nibbles of chunks 2(j - 2), 2(j - 2) + 1 after)
        let mut w = [_mm512_setzero_si512(); 4];
        for (j, wj) in w.iter_mut().enumerate() {
            let v = if is_q8 {
                _mm512_xor_si512(_mm512_loadu_si512(q.add(64 * j) as *const _), _mm512_set1_epi8(-128))
            } else {
                let v = _mm512_loadu_si512(q.add(64 * (j % 2)) as *const _);
                let v = if j < 2 { v } else { _mm512_srli_epi16(v, 4) };
                _mm512_and_si512(v, m4)
            };
            *wj = _mm512_permutexvar_epi32(zip, v);
        }
        let mut s = [_mm512_setzero_si512(); M];
        for (j, wj) in w.iter().enumerate() {
            for i in 0..M {
                let xv = _mm512_set1_epi64((xp[i].add(b * 32 + 8 * j) as *const i64).read_unaligned());
                // as asm, like the int16 kernel's (one uop, no split)
                std::arch::asm!("vpdpbusd {s}, {w}, {x}", s = inout(zmm_reg) s[i], w = in(zmm_reg) *wj,
                    x = in(zmm_reg) xv, options(pure, nomem, nostack));
            }
        }
        for i in 0..M {
            let mut t = _mm512_add_epi32(s[i], _mm512_shuffle_epi32::<0b10_11_00_01>(s[i]));
            if is_q8 {
                t = _mm512_sub_epi32(t, _mm512_set1_epi32(128 * *ip[i].add(b)));
            }
            let dx = _mm512_set1_ps(*dp[i].add(b));
            acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(dpat, dx), _mm512_cvtepi32_ps(t), acc[i]);
            if !is_q8 {
                let sx = *sp[i].add(b);
                acc[i] = _mm512_fmadd_ps(opat, _mm512_set1_ps(if min { sx } else { -8.0 * sx }), acc[i]);
            }
        }
    }
    store_pair_sums(&acc, out, n);
}

/// [`group8_q8_wide`] over any number of activation rows in tiles of up to 8.
///
/// # Safety
/// AVX-512 VNNI; `out` valid for `xq.len()` rows of stride `n` from the group's first row.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn group8_q8_many_avx512(ty: GgmlType, group: &[u8], xq: &[Q8View<'_>], out: *mut f32, n: usize) {
    tiles_of_8!(group8_q8_wide, ty, group, xq, out, n)
}

// ---- row-major K-quant / Q5 rows × int16 activations (decode): each 32-value sub-block unpacked
// to 32 i16 in one register, one `vpdpwssd` with the activations, one conversion and
// multiply-add with its scale; lanes summed once per row ----

/// Whether [`q16_row_avx512`] has a kernel for `ty`.
pub fn has_q16_row(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q5_0 | GgmlType::Q4K | GgmlType::Q6K)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn f16_at512(p: *const u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes([*p, *p.add(1)]) as i32)))
}

/// `Σ w·x` for one row of `ty` blocks ([`has_q16_row`]) and int16 activations.
///
/// # Safety
/// AVX-512 (F, BW, DQ, VL, VNNI) must be present; `row` holds the blocks of `x`'s elements.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q16_row_avx512(ty: GgmlType, row: &[u8], x: &Q16View<'_>) -> f32 {
    let nb = x.d.len();
    let xq = x.qs.as_ptr();
    // two accumulators (even and odd sub-blocks) so consecutive multiply-adds do not wait on
    // each other
    let mut acc = [_mm512_setzero_ps(); 2];
    let mut off = 0f32;
    let m4 = _mm256_set1_epi8(0x0F);
    // the int32 lanes of one sub-block's products, times `scale` (f32 ×16) into `acc`
    macro_rules! sub {
        ($w16:expr, $b:expr, $scale:expr) => {{
            let xv = _mm512_loadu_si512(xq.add($b * 32) as *const __m512i);
            let isum = _mm512_dpwssd_epi32(_mm512_setzero_si512(), $w16, xv);
            let s = _mm512_mul_ps($scale, _mm512_set1_ps(*x.d.get_unchecked($b)));
            let a = &mut acc[$b & 1];
            *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), s, *a);
        }};
    }
    match ty {
        GgmlType::Q5_0 => {
            let p = row.as_ptr();
            let sixteen = _mm256_set1_epi8(16);
            // low nibbles (values 0–15) in the low 128-bit lane, high nibbles (16–31) in the high
            let shifts = _mm256_setr_epi64x(0, 0, 4, 4);
            for b in 0..nb {
                let blk = p.add(b * 22);
                // the next rows' blocks: decode streams the matrix once from memory
                prefetch_ahead(blk, 22);
                let d = f16_at512(blk);
                let qh = (blk.add(2) as *const u32).read_unaligned();
                let qs = _mm256_broadcastsi128_si256(_mm_loadu_si128(blk.add(6) as *const __m128i));
                let q = _mm256_and_si256(_mm256_srlv_epi64(qs, shifts), m4);
                // (q | fifth bit) − 16 = q − 16 where the fifth bit is clear, q where it is set
                let q = _mm256_mask_sub_epi8(q, !qh, q, sixteen);
                sub!(_mm512_cvtepi8_epi16(q), b, _mm512_set1_ps(d));
            }
        }
        GgmlType::Q4K => {
            for (sb, blk) in row.chunks_exact(144).enumerate() {
                let p = blk.as_ptr();
                prefetch_ahead(p, 144);
                let (d, dmin) = (f16_at512(p), f16_at512(p.add(2)));
                let scales = &blk[4..16];
                for k in 0..8 {
                    let (sc, mn) = crate::ggml::scale_min_k4(k, scales);
                    let raw = _mm256_loadu_si256(p.add(16 + k / 2 * 32) as *const __m256i);
                    let q = if k % 2 == 0 { raw } else { _mm256_srli_epi16(raw, 4) };
                    let q = _mm256_and_si256(q, m4);
                    let b = sb * 8 + k;
                    sub!(_mm512_cvtepu8_epi16(q), b, _mm512_set1_ps(d * sc as f32));
                    off -= dmin * mn as f32 * *x.xsum.get_unchecked(b);
                }
            }
        }
        GgmlType::Q6K => {
            let thirty_two = _mm256_set1_epi8(32);
            let m3 = _mm256_set1_epi8(3);
            for (sb, blk) in row.chunks_exact(210).enumerate() {
                let p = blk.as_ptr();
                prefetch_ahead(p, 210);
                let d = f16_at512(p.add(208));
                for k in 0..8 {
                    let (n, g) = (k / 4, k % 4);
                    let ql = _mm256_loadu_si256(p.add(n * 64 + 32 * (g % 2)) as *const __m256i);
                    let ql = if g / 2 == 0 { ql } else { _mm256_srli_epi16(ql, 4) };
                    let ql = _mm256_and_si256(ql, m4);
                    let qh = _mm256_loadu_si256(p.add(128 + n * 32) as *const __m256i);
                    let qh = match g {
                        0 => qh,
                        1 => _mm256_srli_epi16(qh, 2),
                        2 => _mm256_srli_epi16(qh, 4),
                        _ => _mm256_srli_epi16(qh, 6),
                    };
                    let qh = _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4);
                    let q = _mm256_sub_epi8(_mm256_or_si256(ql, qh), thirty_two);
                    let sc = p.add(192 + n * 8 + 2 * g);
                    let (s0, s1) = (d * (*sc as i8) as f32, d * (*sc.add(1) as i8) as f32);
                    // lanes 0–7 hold values 0–15 (pairs), lanes 8–15 values 16–31
                    let scale = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(s0), _mm512_set1_ps(s1));
                    sub!(_mm512_cvtepi8_epi16(q), sb * 8 + k, scale);
                }
            }
        }
        other => unreachable!("no int16 row kernel for {other:?}"),
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) + off
}

/// 16 consecutive values of a KV cache's rows, widened to f32: f32 as stored, f16 (as bits), or
/// q8_0 blocks (34 bytes per 32 values; 16 values never straddle a block).
pub trait Row16: Copy {
    /// # Safety
    /// Values `at..at + 16` lie in the rows; the CPU has AVX-512F.
    unsafe fn load16(self, at: usize) -> __m512;
}

impl Row16 for *const f32 {
    #[inline(always)]
    unsafe fn load16(self, at: usize) -> __m512 {
        _mm512_loadu_ps(self.add(at))
    }
}

impl Row16 for *const u16 {
    #[inline(always)]
    unsafe fn load16(self, at: usize) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(self.add(at) as *const __m256i))
    }
}

/// q8_0 rows.
#[derive(Clone, Copy)]
pub struct Q8Rows(pub *const u8);

impl Q8Rows {
    /// The f16 scale (as f32) of value `at`'s block and a pointer to that value's quant.
    #[inline(always)]
    unsafe fn block(self, at: usize) -> (f32, *const u8) {
        let blk = self.0.add(at / 32 * 34);
        let scale = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128((blk as *const u16).read_unaligned() as i32)));
        (scale, blk.add(2 + at % 32))
    }
}

impl Row16 for Q8Rows {
    #[inline(always)]
    unsafe fn load16(self, at: usize) -> __m512 {
        let (scale, q) = self.block(at);
        let q = _mm_loadu_si128(q as *const __m128i);
        _mm512_mul_ps(_mm512_set1_ps(scale), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)))
    }
}

/// The four sums of four keys' registers stored as `out[0..4]`: 128-bit lanes summed pairwise
/// across the keys, then within each lane.
#[inline(always)]
unsafe fn sum4_store(s: &[__m512; 4], out: *mut f32) {
    let t0 = _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(s[0], s[1]), _mm512_shuffle_f32x4::<0xEE>(s[0], s[1]));
    let t1 = _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(s[2], s[3]), _mm512_shuffle_f32x4::<0xEE>(s[2], s[3]));
    let u = _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(t0, t1), _mm512_shuffle_f32x4::<0xDD>(t0, t1));
    // u: lane r holds four partial sums of key r
    let v = _mm512_add_ps(u, _mm512_permute_ps::<0x4E>(u));
    let w = _mm512_add_ps(v, _mm512_permute_ps::<0xB1>(v));
    let idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, w)));
}

/// Scores of `Q` queries (`q` as `[Q, d]`, `d` a multiple of 16) over `n` keys into `out` (`[Q,
/// stride]`): four keys at a time, their four sums reduced together (one dependent chain per four
/// keys, not per key); each key's 16 values are loaded (widened) once for all the queries —
/// grouped-query attention reads a tile once per K/V head instead of once per query head. Each
/// (query, key) sum is formed in the same order whatever `Q`: the same bits.
#[inline(always)]
unsafe fn dots_q_avx512<R: Row16, const Q: usize>(
    k: R,
    q: *const f32,
    d: usize,
    n: usize,
    out: *mut f32,
    stride: usize,
) {
    let mut j = 0;
    while j + 4 <= n {
        let mut s = [[_mm512_setzero_ps(); 4]; Q];
        let mut i = 0;
        while i < d {
            let kv =
                [k.load16(j * d + i), k.load16((j + 1) * d + i), k.load16((j + 2) * d + i), k.load16((j + 3) * d + i)];
            for (qi, sq) in s.iter_mut().enumerate() {
                let qv = _mm512_loadu_ps(q.add(qi * d + i));
                for (r, sr) in sq.iter_mut().enumerate() {
                    *sr = _mm512_fmadd_ps(kv[r], qv, *sr);
                }
            }
            i += 16;
        }
        for (qi, sq) in s.iter().enumerate() {
            sum4_store(sq, out.add(qi * stride + j));
        }
        j += 4;
    }
    while j < n {
        let mut s = [_mm512_setzero_ps(); Q];
        let mut i = 0;
        while i < d {
            let kv = k.load16(j * d + i);
            for (qi, sq) in s.iter_mut().enumerate() {
                *sq = _mm512_fmadd_ps(kv, _mm512_loadu_ps(q.add(qi * d + i)), *sq);
            }
            i += 16;
        }
        for (qi, sq) in s.iter().enumerate() {
            *out.add(qi * stride + j) = _mm512_reduce_add_ps(*sq);
        }
        j += 1;
    }
}

/// [`axpy_avx512`] for `Q` queries at once: `acc[qi·acc_stride + c] += Σ_j p[qi·p_stride + j] ·
/// v[j·d + c]` over `n` value rows, each row's 16 values loaded (widened) once for all the
/// queries; every sum in the one-query kernel's order (the same bits). `d` a multiple of 64.
#[inline(always)]
unsafe fn axpy_q_avx512<R: Row16, const Q: usize>(
    acc: *mut f32,
    acc_stride: usize,
    d: usize,
    p: *const f32,
    p_stride: usize,
    n: usize,
    v: R,
) {
    let mut c = 0;
    while c < d {
        let mut r = [[_mm512_setzero_ps(); 4]; Q];
        for (qi, rq) in r.iter_mut().enumerate() {
            for (i, ri) in rq.iter_mut().enumerate() {
                *ri = _mm512_loadu_ps(acc.add(qi * acc_stride + c + 16 * i));
            }
        }
        for j in 0..n {
            let vv =
                [v.load16(j * d + c), v.load16(j * d + c + 16), v.load16(j * d + c + 32), v.load16(j * d + c + 48)];
            for (qi, rq) in r.iter_mut().enumerate() {
                let pv = _mm512_set1_ps(*p.add(qi * p_stride + j));
                for (i, ri) in rq.iter_mut().enumerate() {
                    *ri = _mm512_fmadd_ps(pv, vv[i], *ri);
                }
            }
        }
        for (qi, rq) in r.iter().enumerate() {
            for (i, ri) in rq.iter().enumerate() {
                _mm512_storeu_ps(acc.add(qi * acc_stride + c + 16 * i), *ri);
            }
        }
        c += 64;
    }
}

/// Attention's scores of `nq` queries (`q` as `[nq, d]`, `d` a multiple of 16) over `n` key
/// rows of a tile into `out` (`[nq, stride]`), up to four queries per pass over the tile.
///
/// # Safety
/// AVX-512F and F16C; `k` holds `n` rows of `d` values.
#[target_feature(enable = "avx512f,f16c")]
pub unsafe fn scores_many<R: Row16>(k: R, q: &[f32], d: usize, n: usize, out: &mut [f32], stride: usize) {
    let nq = q.len() / d;
    assert!(d.is_multiple_of(16) && stride >= n && out.len() >= nq.saturating_sub(1) * stride + n);
    let mut qi = 0;
    while qi < nq {
        let (qp, op) = (q.as_ptr().add(qi * d), out.as_mut_ptr().add(qi * stride));
        match nq - qi {
            1 => dots_q_avx512::<R, 1>(k, qp, d, n, op, stride),
            2 => dots_q_avx512::<R, 2>(k, qp, d, n, op, stride),
            3 => dots_q_avx512::<R, 3>(k, qp, d, n, op, stride),
            _ => dots_q_avx512::<R, 4>(k, qp, d, n, op, stride),
        }
        qi += 4;
    }
}

/// Attention's value sums of `nq` queries: `acc[qi·acc_stride + c] += Σ_j p[qi·p_stride + j] ·
/// v_j[c]` for `c < d` (a multiple of 64) over `n` value rows, up to four queries per pass.
///
/// # Safety
/// AVX-512F and F16C; `v` holds `n` rows of `d` values.
#[target_feature(enable = "avx512f,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn value_sums<R: Row16>(
    acc: &mut [f32],
    acc_stride: usize,
    nq: usize,
    d: usize,
    p: &[f32],
    p_stride: usize,
    n: usize,
    v: R,
) {
    assert!(
        d.is_multiple_of(64) && nq > 0 && acc.len() >= (nq - 1) * acc_stride + d && p.len() >= (nq - 1) * p_stride + n
    );
    let mut qi = 0;
    while qi < nq {
        let (a, pp) = (acc.as_mut_ptr().add(qi * acc_stride), p.as_ptr().add(qi * p_stride));
        match nq - qi {
            1 => axpy_q_avx512::<R, 1>(a, acc_stride, d, pp, p_stride, n, v),
            2 => axpy_q_avx512::<R, 2>(a, acc_stride, d, pp, p_stride, n, v),
            3 => axpy_q_avx512::<R, 3>(a, acc_stride, d, pp, p_stride, n, v),
            _ => axpy_q_avx512::<R, 4>(a, acc_stride, d, pp, p_stride, n, v),
        }
        qi += 4;
    }
}

/// `acc[c] += Σ_j p[j] · v[j·d + c]` with `d = acc.len()` a multiple of 16: the value sum of
/// attention over a tile of keys, up to 64 columns at a time held in registers over every key.
#[inline(always)]
unsafe fn axpy_avx512<R: Row16>(acc: &mut [f32], p: &[f32], v: R) {
    let d = acc.len();
    let a = acc.as_mut_ptr();
    let mut c = 0;
    while c < d {
        let w = (d - c).min(64) / 16;
        let mut r = [_mm512_setzero_ps(); 4];
        if w == 4 {
            // the common head dims (64, 128, 256): four registers, no per-register tests per key
            for (i, ri) in r.iter_mut().enumerate() {
                *ri = _mm512_loadu_ps(a.add(c + 16 * i));
            }
            for (j, &pj) in p.iter().enumerate() {
                let pv = _mm512_set1_ps(pj);
                for (i, ri) in r.iter_mut().enumerate() {
                    *ri = _mm512_fmadd_ps(pv, v.load16(j * d + c + 16 * i), *ri);
                }
            }
            for (i, ri) in r.iter().enumerate() {
                _mm512_storeu_ps(a.add(c + 16 * i), *ri);
            }
        } else {
            for (i, ri) in r.iter_mut().enumerate().take(w) {
                *ri = _mm512_loadu_ps(a.add(c + 16 * i));
            }
            for (j, &pj) in p.iter().enumerate() {
                let pv = _mm512_set1_ps(pj);
                for (i, ri) in r.iter_mut().enumerate().take(w) {
                    *ri = _mm512_fmadd_ps(pv, v.load16(j * d + c + 16 * i), *ri);
                }
            }
            for (i, ri) in r.iter().enumerate().take(w) {
                _mm512_storeu_ps(a.add(c + 16 * i), *ri);
            }
        }
        c += 64;
    }
}

/// Attention's value sum over a tile of f32 / f16 / q8_0 value rows ([`axpy_avx512`]).
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn axpy_f32_avx512(acc: &mut [f32], p: &[f32], v: &[f32]) {
    axpy_avx512(acc, p, v.as_ptr())
}

#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn axpy_f16_avx512(acc: &mut [f32], p: &[f32], v: *const u16) {
    axpy_avx512(acc, p, v)
}

#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn axpy_q8_avx512(acc: &mut [f32], p: &[f32], v: &[u8]) {
    axpy_avx512(acc, p, Q8Rows(v.as_ptr()))
}

// ---- decode attention on AVX2 (no AVX-512): f32 / f16 rows read in place, 8 values per load ----

/// Rows of f32 or f16 values loaded 8 at a time (f16 widened by F16C).
pub trait Row8: Copy {
    /// # Safety
    /// Values `at..at + 8` lie in the rows; the CPU has AVX2 and F16C.
    unsafe fn load8(self, at: usize) -> __m256;
}

impl Row8 for *const f32 {
    #[inline(always)]
    unsafe fn load8(self, at: usize) -> __m256 {
        _mm256_loadu_ps(self.add(at))
    }
}

impl Row8 for *const u16 {
    #[inline(always)]
    unsafe fn load8(self, at: usize) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(self.add(at) as *const __m128i))
    }
}

impl Row8 for Q8Rows {
    #[inline(always)]
    unsafe fn load8(self, at: usize) -> __m256 {
        let (scale, q) = self.block(at);
        let q = _mm_loadl_epi64(q as *const __m128i);
        _mm256_mul_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)))
    }
}

/// The four 8-lane sums of `s` reduced together: `out[r] = Σ lanes of s[r]`.
#[inline(always)]
unsafe fn sum4_store_avx2(s: &[__m256; 4], out: *mut f32) {
    let t01 = _mm256_hadd_ps(s[0], s[1]);
    let t23 = _mm256_hadd_ps(s[2], s[3]);
    let u = _mm256_hadd_ps(t01, t23);
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps::<1>(u)));
}

/// Scores of `Q` queries (`[Q, d]`, `d` a multiple of 8) over `n` keys into `out` (`[Q,
/// stride]`), four keys per pass reduced together; each key's values loaded once for all the
/// queries, each (query, key) sum in the same order whatever `Q` (the same bits).
#[inline(always)]
unsafe fn dots_q_avx2<R: Row8, const Q: usize>(k: R, q: *const f32, d: usize, n: usize, out: *mut f32, stride: usize) {
    let mut j = 0;
    while j + 4 <= n {
        let mut s = [[_mm256_setzero_ps(); 4]; Q];
        let mut i = 0;
        while i < d {
            let kv = [k.load8(j * d + i), k.load8((j + 1) * d + i), k.load8((j + 2) * d + i), k.load8((j + 3) * d + i)];
            for (qi, sq) in s.iter_mut().enumerate() {
                let qv = _mm256_loadu_ps(q.add(qi * d + i));
                for (r, sr) in sq.iter_mut().enumerate() {
                    *sr = _mm256_fmadd_ps(kv[r], qv, *sr);
                }
            }
            i += 8;
        }
        for (qi, sq) in s.iter().enumerate() {
            sum4_store_avx2(sq, out.add(qi * stride + j));
        }
        j += 4;
    }
    while j < n {
        let mut s = [_mm256_setzero_ps(); Q];
        let mut i = 0;
        while i < d {
            let kv = k.load8(j * d + i);
            for (qi, sq) in s.iter_mut().enumerate() {
                *sq = _mm256_fmadd_ps(kv, _mm256_loadu_ps(q.add(qi * d + i)), *sq);
            }
            i += 8;
        }
        for (qi, sq) in s.iter().enumerate() {
            *out.add(qi * stride + j) = hsum256(*sq);
        }
        j += 1;
    }
}

/// Attention's scores of `nq` queries (`q` as `[nq, d]`, `d` a multiple of 8) over `n` key rows
/// into `out` (`[nq, stride]`), up to two queries per pass over the tile (AVX2's 16 registers).
///
/// # Safety
/// AVX2, FMA and F16C; `k` holds `n` rows of `d` values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scores_many_avx2<R: Row8>(k: R, q: &[f32], d: usize, n: usize, out: &mut [f32], stride: usize) {
    let nq = q.len() / d;
    assert!(d.is_multiple_of(8) && stride >= n && out.len() >= nq.saturating_sub(1) * stride + n);
    let mut qi = 0;
    while qi < nq {
        let (qp, op) = (q.as_ptr().add(qi * d), out.as_mut_ptr().add(qi * stride));
        if nq - qi == 1 {
            dots_q_avx2::<R, 1>(k, qp, d, n, op, stride);
        } else {
            dots_q_avx2::<R, 2>(k, qp, d, n, op, stride);
        }
        qi += 2;
    }
}

/// Attention's value sums of `nq` queries: `acc[qi·acc_stride + c] += Σ_j p[qi·p_stride + j] ·
/// v_j[c]` for `c < d` (a multiple of 32) over `n` value rows, 32 columns of up to two queries
/// held in registers over every row; each sum in the same order whatever `nq` (the same bits).
///
/// # Safety
/// AVX2, FMA and F16C; `v` holds `n` rows of `d` values.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn value_sums_avx2<R: Row8>(
    acc: &mut [f32],
    acc_stride: usize,
    nq: usize,
    d: usize,
    p: &[f32],
    p_stride: usize,
    n: usize,
    v: R,
) {
    assert!(
        d.is_multiple_of(32) && nq > 0 && acc.len() >= (nq - 1) * acc_stride + d && p.len() >= (nq - 1) * p_stride + n
    );
    let mut qi = 0;
    while qi < nq {
        let (a, pp) = (acc.as_mut_ptr().add(qi * acc_stride), p.as_ptr().add(qi * p_stride));
        if nq - qi == 1 {
            axpy_q_avx2::<R, 1>(a, acc_stride, d, pp, p_stride, n, v);
        } else {
            axpy_q_avx2::<R, 2>(a, acc_stride, d, pp, p_stride, n, v);
        }
        qi += 2;
    }
}

#[inline(always)]
unsafe fn axpy_q_avx2<R: Row8, const Q: usize>(
    acc: *mut f32,
    acc_stride: usize,
    d: usize,
    p: *const f32,
    p_stride: usize,
    n: usize,
    v: R,
) {
    let mut c = 0;
    while c < d {
        let mut r = [[_mm256_setzero_ps(); 4]; Q];
        for (qi, rq) in r.iter_mut().enumerate() {
            for (i, ri) in rq.iter_mut().enumerate() {
                *ri = _mm256_loadu_ps(acc.add(qi * acc_stride + c + 8 * i));
            }
        }
        for j in 0..n {
            let vv = [v.load8(j * d + c), v.load8(j * d + c + 8), v.load8(j * d + c + 16), v.load8(j * d + c + 24)];
            for (qi, rq) in r.iter_mut().enumerate() {
                let pv = _mm256_set1_ps(*p.add(qi * p_stride + j));
                for (i, ri) in rq.iter_mut().enumerate() {
                    *ri = _mm256_fmadd_ps(pv, vv[i], *ri);
                }
            }
        }
        for (qi, rq) in r.iter().enumerate() {
            for (i, ri) in rq.iter().enumerate() {
                _mm256_storeu_ps(acc.add(qi * acc_stride + c + 8 * i), *ri);
            }
        }
        c += 32;
    }
}
