//! Hand-written x86-64 dot products for the block types most GGUF files use (Q4_0, Q4_1, Q8_0),
//! with f32 activations: nibbles/bytes widened to i32, converted, fused multiply-add with the
//! activations, one scale per block (the `Σx` offset terms come from [`XSums`]).
//! AVX2+FMA+F16C (8 lanes) and AVX-512 (16 lanes) flavours; each is only called from code
//! compiled for (and dispatched to) that instruction set.
#![allow(unsafe_op_in_unsafe_fn)]
use std::arch::x86_64::*;

use super::dot::XSums;

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

use super::dot::Q8View;

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

/// Two Q4 blocks as 64 unsigned bytes `[A lo | A hi | B lo | B hi]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q4_pair_avx512(qa: *const u8, qb: *const u8) -> __m512i {
    let m4 = _mm256_set1_epi8(0x0F);
    let v = _mm256_set_m128i(_mm_loadu_si128(qb as *const __m128i), _mm_loadu_si128(qa as *const __m128i));
    let lo = _mm256_and_si256(v, m4); // [A lo, B lo]
    let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4); // [A hi, B hi]
    let z = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); // [A lo, B lo, A hi, B hi]
    _mm512_shuffle_i64x2(z, z, 0b11_01_10_00)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn scales2(a: f32, b: f32) -> __m512 {
    _mm512_insertf32x8(_mm512_set1_ps(a), _mm256_set1_ps(b), 1)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q4_q8_avx512(row: &[u8], xq: &Q8View<'_>, min: bool) -> f32 {
    let nb = xq.d.len();
    let (bs, hdr) = if min { (20, 4) } else { (18, 2) };
    let mut acc = _mm512_setzero_ps();
    let mut off = 0f32;
    let rp = row.as_ptr();
    let mut b = 0;
    while b + 1 < nb {
        let (pa, pb) = (rp.add(b * bs), rp.add((b + 1) * bs));
        let (da, db) = (f16_at(pa), f16_at(pb));
        let u = q4_pair_avx512(pa.add(hdr), pb.add(hdr));
        let s = _mm512_loadu_si512(xq.qs.as_ptr().add(b * 32) as *const __m512i);
        let v = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s));
        acc = _mm512_fmadd_ps(scales2(da * xq.d[b], db * xq.d[b + 1]), v, acc);
        off += if min {
            f16_at(pa.add(2)) * xq.s[b] + f16_at(pb.add(2)) * xq.s[b + 1]
        } else {
            -8.0 * (da * xq.s[b] + db * xq.s[b + 1])
        };
        b += 2;
    }
    let mut tail = 0f32;
    if b < nb {
        tail = q4_q8_avx2(&row[b * bs..], &xq.tail(b), min);
    }
    _mm512_reduce_add_ps(acc) + off + tail
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q8_q8_avx512(row: &[u8], xq: &Q8View<'_>) -> f32 {
    let nb = xq.d.len();
    let mut acc = _mm512_setzero_ps();
    let rp = row.as_ptr();
    let zero = _mm512_setzero_si512();
    let mut b = 0;
    while b + 1 < nb {
        let (pa, pb) = (rp.add(b * 34), rp.add((b + 1) * 34));
        let w = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256(pa.add(2) as *const __m256i)),
            _mm256_loadu_si256(pb.add(2) as *const __m256i),
            1,
        );
        let x = _mm512_loadu_si512(xq.qs.as_ptr().add(b * 32) as *const __m512i);
        let neg = _mm512_movepi8_mask(w);
        let sx = _mm512_mask_sub_epi8(x, neg, zero, x);
        let v = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, _mm512_abs_epi8(w), sx));
        acc = _mm512_fmadd_ps(scales2(f16_at(pa) * xq.d[b], f16_at(pb) * xq.d[b + 1]), v, acc);
        b += 2;
    }
    let mut tail = 0f32;
    if b < nb {
        tail = q8_q8_avx2(&row[b * 34..], &xq.tail(b));
    }
    _mm512_reduce_add_ps(acc) + tail
}
