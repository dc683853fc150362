//! Activation rows as the block kernels read them: per-block sums of f32 rows ([`XSums`]) and
//! rows quantized per block of 32 to int8 ([`Q8Act`], llama.cpp's `quantize_row_q8_1`) or int16
//! ([`Q16Act`]), with borrowed views the SIMD code takes.

/// Per-block sums of one activation row.
pub struct XSums {
    /// Σ x over each block of 32.
    pub s32: Vec<f32>,
    /// Σ x over each block of 16.
    pub s16: Vec<f32>,
}

impl XSums {
    pub fn new(x: &[f32]) -> Self {
        let s16: Vec<f32> = x.chunks(16).map(|c| c.iter().sum()).collect();
        let s32 = s16.chunks(2).map(|c| c.iter().sum()).collect();
        Self { s32, s16 }
    }
}

/// One activation row quantized to int8 per block of 32 (llama.cpp's Q8_0/Q8_1 activations):
/// `x ≈ d · q`, with `s = d · Σq` per block for the types with an offset term.
pub struct Q8Act {
    pub qs: Vec<i8>,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
    /// Σq per block (integer).
    pub isum: Vec<i32>,
}

/// A borrowed [`Q8Act`] (or a tail of one).
#[derive(Clone, Copy)]
pub struct Q8View<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    pub s: &'a [f32],
    pub isum: &'a [i32],
}

impl Q8Act {
    /// llama.cpp's `quantize_row_q8_1`: `d = max|x| / 127`, `q = round(x / d)`.
    pub fn new(x: &[f32]) -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the feature was detected on this CPU.
            return unsafe { Self::new_avx2(x) };
        }
        Self::new_portable(x)
    }

    /// [`Q8Act::new`] in plain Rust.
    pub fn new_portable(x: &[f32]) -> Self {
        let nb = x.len() / 32;
        let mut qs = Vec::with_capacity(x.len());
        let (mut d, mut s, mut isum) = (Vec::with_capacity(nb), Vec::with_capacity(nb), Vec::with_capacity(nb));
        for blk in x.chunks_exact(32) {
            let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
            let db = amax / 127.0;
            let id = if db != 0.0 { 1.0 / db } else { 0.0 };
            let mut sum = 0i32;
            for v in blk {
                // round half away from zero, as `roundf` (without the libm call)
                let q = (v * id + 0.5f32.copysign(*v)) as i32;
                sum += q;
                qs.push(q as i8);
            }
            d.push(db);
            s.push(db * sum as f32);
            isum.push(sum);
        }
        Self { qs, d, s, isum }
    }

    /// [`Q8Act::new_portable`] 8 values per register (AVX2): the same scales, quantized values
    /// (round half away from zero) and integer sums, so the same `s`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn new_avx2(x: &[f32]) -> Self {
        use std::arch::x86_64::*;
        let nb = x.len() / 32;
        let mut qs = vec![0i8; nb * 32];
        let (mut d, mut s, mut isum) = (Vec::with_capacity(nb), Vec::with_capacity(nb), Vec::with_capacity(nb));
        for (b, blk) in x.chunks_exact(32).enumerate() {
            let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(blk.as_ptr().add(8 * i)));
            let amax = hmax_abs_avx2(&v);
            let db = amax / 127.0;
            let id = _mm256_set1_ps(if db != 0.0 { 1.0 / db } else { 0.0 });
            let q: [__m256i; 4] = std::array::from_fn(|i| round_scaled_avx2(v[i], id));
            // packs work per 128-bit lane: [a0-3 b0-3 | a4-7 b4-7] twice, then bytes
            // [a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7]; a dword permute restores the order
            let w = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            let w = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(qs.as_mut_ptr().add(b * 32) as *mut __m256i, w);
            let t = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let t4 = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t));
            let t2 = _mm_add_epi32(t4, _mm_unpackhi_epi64(t4, t4));
            let sum = _mm_cvtsi128_si32(_mm_add_epi32(t2, _mm_shuffle_epi32::<1>(t2)));
            d.push(db);
            s.push(db * sum as f32);
            isum.push(sum);
        }
        Self { qs, d, s, isum }
    }

    pub fn view(&self) -> Q8View<'_> {
        Q8View { qs: &self.qs, d: &self.d, s: &self.s, isum: &self.isum }
    }
}

impl<'a> Q8View<'a> {
    /// Blocks `b..`.
    pub fn tail(&self, b: usize) -> Q8View<'a> {
        Q8View { qs: &self.qs[b * 32..], d: &self.d[b..], s: &self.s[b..], isum: &self.isum[b..] }
    }
}

/// One activation row quantized to int16 per block of 32 (`x ≈ d · q`, `d = max|x| / 32767`),
/// with the exact f32 sum of each block for the offset terms.
pub struct Q16Act {
    pub qs: Vec<i16>,
    pub d: Vec<f32>,
    pub xsum: Vec<f32>,
}

/// A borrowed [`Q16Act`].
#[derive(Clone, Copy)]
pub struct Q16View<'a> {
    pub qs: &'a [i16],
    pub d: &'a [f32],
    pub xsum: &'a [f32],
}

impl Q16Act {
    pub fn new(x: &[f32]) -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the features were detected on this CPU.
            return unsafe { Self::new_avx512(x) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the feature was detected on this CPU.
            return unsafe { Self::new_avx2(x) };
        }
        Self::new_portable(x)
    }

    /// [`Q16Act::new`] in plain Rust (the blocks' sums in order).
    pub fn new_portable(x: &[f32]) -> Self {
        let nb = x.len() / 32;
        let mut qs = Vec::with_capacity(x.len());
        let (mut d, mut xsum) = (Vec::with_capacity(nb), Vec::with_capacity(nb));
        for blk in x.chunks_exact(32) {
            let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
            let db = amax / 32767.0;
            let id = if db != 0.0 { 1.0 / db } else { 0.0 };
            for v in blk {
                qs.push((v * id + 0.5f32.copysign(*v)) as i32 as i16);
            }
            d.push(db);
            xsum.push(blk.iter().sum());
        }
        Self { qs, d, xsum }
    }

    /// [`Q16Act::new_portable`] 32 values at a time: the same scales and quantized values (round
    /// half away from zero), each block's sum as a tree of the 16 lane pairs.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn new_avx512(x: &[f32]) -> Self {
        use std::arch::x86_64::*;
        let nb = x.len() / 32;
        let mut qs = vec![0i16; nb * 32];
        let (mut d, mut xsum) = (Vec::with_capacity(nb), Vec::with_capacity(nb));
        let sign = _mm512_set1_ps(-0.0);
        let half = _mm512_set1_ps(0.5);
        for (b, blk) in x.chunks_exact(32).enumerate() {
            let v0 = _mm512_loadu_ps(blk.as_ptr());
            let v1 = _mm512_loadu_ps(blk.as_ptr().add(16));
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1)));
            let db = amax / 32767.0;
            let id = _mm512_set1_ps(if db != 0.0 { 1.0 / db } else { 0.0 });
            let q = |v: __m512| {
                let r = _mm512_add_ps(_mm512_mul_ps(v, id), _mm512_or_ps(half, _mm512_and_ps(sign, v)));
                _mm512_cvtepi32_epi16(_mm512_cvttps_epi32(r))
            };
            let out = qs.as_mut_ptr().add(b * 32) as *mut __m256i;
            _mm256_storeu_si256(out, q(v0));
            _mm256_storeu_si256(out.add(1), q(v1));
            d.push(db);
            xsum.push(_mm512_reduce_add_ps(_mm512_add_ps(v0, v1)));
        }
        Self { qs, d, xsum }
    }

    /// [`Q16Act::new_portable`] 8 values per register (AVX2): the same scales and quantized
    /// values, each block's sum as a tree of its four registers' lanes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn new_avx2(x: &[f32]) -> Self {
        use std::arch::x86_64::*;
        let nb = x.len() / 32;
        let mut qs = vec![0i16; nb * 32];
        let (mut d, mut xsum) = (Vec::with_capacity(nb), Vec::with_capacity(nb));
        for (b, blk) in x.chunks_exact(32).enumerate() {
            let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(blk.as_ptr().add(8 * i)));
            let amax = hmax_abs_avx2(&v);
            let db = amax / 32767.0;
            let id = _mm256_set1_ps(if db != 0.0 { 1.0 / db } else { 0.0 });
            let q = |v: __m256| round_scaled_avx2(v, id);
            // packs works per 128-bit lane: [a0-3 b0-3 | a4-7 b4-7] → element order by a permute
            let pack = |a: __m256i, c: __m256i| _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(a, c));
            let out = qs.as_mut_ptr().add(b * 32) as *mut __m256i;
            _mm256_storeu_si256(out, pack(q(v[0]), q(v[1])));
            _mm256_storeu_si256(out.add(1), pack(q(v[2]), q(v[3])));
            d.push(db);
            let t = _mm256_add_ps(_mm256_add_ps(v[0], v[1]), _mm256_add_ps(v[2], v[3]));
            let t4 = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t));
            let t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
            xsum.push(_mm_cvtss_f32(_mm_add_ss(t2, _mm_shuffle_ps::<1>(t2, t2))));
        }
        Self { qs, d, xsum }
    }

    pub fn view(&self) -> Q16View<'_> {
        Q16View { qs: &self.qs, d: &self.d, xsum: &self.xsum }
    }
}

/// The largest `|x|` of a block's 32 values in four registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn hmax_abs_avx2(v: &[std::arch::x86_64::__m256; 4]) -> f32 {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    let m = _mm256_max_ps(
        _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
        _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
    );
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps::<1>(m2, m2)))
}

/// `round(v · id)` half away from zero (as `roundf`, without the libm call), as i32 lanes: the
/// portable quantizers' `(v * id + 0.5f32.copysign(v)) as i32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn round_scaled_avx2(v: std::arch::x86_64::__m256, id: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let half = _mm256_or_ps(_mm256_set1_ps(0.5), _mm256_and_ps(_mm256_set1_ps(-0.0), v));
    _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(v, id), half))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks with a zero block, a mixed one and values near rounding ties.
    fn rows() -> Vec<f32> {
        let mut x: Vec<f32> = (0..32 * 7).map(|i| ((i * 7919 % 2003) as f32 / 1001.5 - 1.0) * 3.0).collect();
        x[40..72].fill(0.0); // a zero block: scale 0
        x[80] = 32767.0 / 2.0 * (x[81].abs().max(1e-3) / 32767.0); // arbitrary, keeps a mixed block
        x[100] = -8.0;
        x[101] = 4.0; // -8 / 32767 scale: 4 lands near a tie
        x[130] = -127.0;
        x[131] = 64.5; // an exact tie at the int8 scale 1: rounds away from zero
        x[132] = -0.5;
        x
    }

    /// The SIMD int8 quantizer gives the portable one's scales, values, integer sums and `s`,
    /// bit for bit.
    #[test]
    fn q8_simd_matches_portable() {
        let x = rows();
        let want = Q8Act::new_portable(&x);
        #[allow(unused_mut)]
        let mut flavours = vec![("best", Q8Act::new(&x))];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: detected above.
            flavours.push(("avx2", unsafe { Q8Act::new_avx2(&x) }));
        }
        assert!(want.qs.contains(&65) && want.qs.contains(&-127), "the tie cases are in the rows");
        for (name, got) in flavours {
            assert_eq!(got.qs, want.qs, "{name}");
            assert_eq!(got.d, want.d, "{name}");
            assert_eq!(got.isum, want.isum, "{name}");
            assert_eq!(got.s, want.s, "{name}");
        }
    }

    /// The SIMD quantizer gives the portable one's scales and values (ties at .5 included) and
    /// its sums within f32 reassociation.
    #[test]
    fn q16_simd_matches_portable() {
        let x = rows();
        let want = Q16Act::new_portable(&x);
        #[allow(unused_mut)]
        let mut flavours = vec![("best", Q16Act::new(&x))];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: detected above.
            flavours.push(("avx2", unsafe { Q16Act::new_avx2(&x) }));
        }
        for (name, got) in flavours {
            assert_eq!(got.qs, want.qs, "{name}");
            assert_eq!(got.d, want.d, "{name}");
            assert_eq!(got.xsum.len(), want.xsum.len(), "{name}");
            for (g, w) in got.xsum.iter().zip(&want.xsum) {
                assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{name}: {g} vs {w}");
            }
        }
    }
}
