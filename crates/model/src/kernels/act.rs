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

    pub fn view(&self) -> Q16View<'_> {
        Q16View { qs: &self.qs, d: &self.d, xsum: &self.xsum }
    }
}
