//! ggml block types as GGUF files store them, and their dequantization to f32 (llama.cpp's
//! `dequantize_row_*` reference code): below both the CPU kernels and the loaders.
use half::{bf16, f16};

/// The ggml tensor types Demiurgic reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    BF16,
}

const QK_K: usize = 256;

impl GgmlType {
    pub fn from_u32(t: u32) -> Option<Self> {
        Some(match t {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    pub fn supported_list() -> &'static str {
        "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K"
    }

    /// (elements per block, bytes per block)
    pub const fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q2K => (QK_K, 84),
            Self::Q3K => (QK_K, 110),
            Self::Q4K => (QK_K, 144),
            Self::Q5K => (QK_K, 176),
            Self::Q6K => (QK_K, 210),
        }
    }
}

fn h(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantize `n` elements stored as `ty` in `bytes`.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    let (be, bb) = ty.block();
    if !n.is_multiple_of(be) {
        return Err(format!("{n} elements is not a multiple of the {ty:?} block size {be}"));
    }
    let need = n / be * bb;
    if bytes.len() < need {
        return Err(format!("{need} bytes needed for {n} {ty:?} elements, {} available", bytes.len()));
    }
    let bytes = &bytes[..need];
    let mut out = Vec::with_capacity(n);
    match ty {
        GgmlType::F32 => out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())),
        GgmlType::BF16 => out.extend(bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        _ => {
            for blk in bytes.chunks_exact(bb) {
                let start = out.len();
                out.resize(start + be, 0.0);
                let y = &mut out[start..];
                match ty {
                    GgmlType::Q4_0 => q4_0(blk, y),
                    GgmlType::Q4_1 => q4_1(blk, y),
                    GgmlType::Q5_0 => q5_0(blk, y),
                    GgmlType::Q5_1 => q5_1(blk, y),
                    GgmlType::Q8_0 => q8_0(blk, y),
                    GgmlType::Q2K => q2_k(blk, y),
                    GgmlType::Q3K => q3_k(blk, y),
                    GgmlType::Q4K => q4_k(blk, y),
                    GgmlType::Q5K => q5_k(blk, y),
                    GgmlType::Q6K => q6_k(blk, y),
                    GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => unreachable!(),
                }
            }
        }
    }
    Ok(out)
}

fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (h(b, 0), h(b, 2));
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0F) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as i32;
        let xh1 = ((qh >> (j + 12)) & 0x10) as i32;
        y[j] = (((qs[j] & 0x0F) as i32 | xh0) - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) as i32 | xh1) - 16) as f32 * d;
    }
}

fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (h(b, 0), h(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let xh0 = ((qh >> j) << 4) & 0x10;
        let xh1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((qs[j] as u32 & 0x0F) | xh0) as f32 * d + m;
        y[j + 16] = ((qs[j] as u32 >> 4) | xh1) as f32 * d + m;
    }
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = h(b, 0);
    for j in 0..32 {
        y[j] = (b[2 + j] as i8) as f32 * d;
    }
}

fn q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let (d, dmin) = (h(b, 80), h(b, 82));
    let mut yi = 0;
    let mut is = 0;
    for n in 0..2 {
        let q = &qs[n * 32..n * 32 + 32];
        let mut shift = 0;
        for _ in 0..4 {
            for half in 0..2 {
                let sc = scales[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0xF) as f32, dmin * (sc >> 4) as f32);
                for l in 0..16 {
                    y[yi] = dl * ((q[l + 16 * half] >> shift) & 3) as f32 - ml;
                    yi += 1;
                }
            }
            shift += 2;
        }
    }
}

fn q3_k(b: &[u8], y: &mut [f32]) {
    let hm = &b[0..32];
    let qs = &b[32..96];
    let sc_raw = &b[96..108];
    let d_all = h(b, 108);
    let (kmask1, kmask2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
    let mut aux = [0u32; 4];
    for i in 0..3 {
        aux[i] = u32::from_le_bytes([sc_raw[4 * i], sc_raw[4 * i + 1], sc_raw[4 * i + 2], sc_raw[4 * i + 3]]);
    }
    let tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
    aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
    aux[0] = (aux[0] & kmask2) | ((tmp & kmask1) << 4);
    aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
    let mut scales = [0i8; 16];
    for i in 0..4 {
        for (k, byte) in aux[i].to_le_bytes().iter().enumerate() {
            scales[4 * i + k] = *byte as i8;
        }
    }
    let mut yi = 0;
    let mut is = 0;
    let mut m = 1u8;
    for n in 0..2 {
        let q = &qs[n * 32..n * 32 + 32];
        let mut shift = 0;
        for _ in 0..4 {
            for half in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for l in 0..16 {
                    let idx = l + 16 * half;
                    let hi = if hm[idx] & m != 0 { 0 } else { 4 };
                    y[yi] = dl * (((q[idx] >> shift) & 3) as i32 - hi) as f32;
                    yi += 1;
                }
            }
            shift += 2;
            m <<= 1;
        }
    }
}

/// (scale, min) `j` of a Q4_K/Q5_K block's 12 packed 6-bit scales (ggml's `get_scale_min_k4`).
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (h(b, 0), h(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    let mut yi = 0;
    for (blk, is) in (0..4).map(|i| (i, 2 * i)) {
        let q = &qs[blk * 32..blk * 32 + 32];
        let (sc1, m1) = scale_min_k4(is, scales);
        let (sc2, m2) = scale_min_k4(is + 1, scales);
        let (d1, mm1, d2, mm2) = (d * sc1 as f32, dmin * m1 as f32, d * sc2 as f32, dmin * m2 as f32);
        for l in 0..32 {
            y[yi + l] = d1 * (q[l] & 0xF) as f32 - mm1;
            y[yi + 32 + l] = d2 * (q[l] >> 4) as f32 - mm2;
        }
        yi += 64;
    }
}

fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (h(b, 0), h(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    let mut yi = 0;
    let (mut u1, mut u2) = (1u8, 2u8);
    for blk in 0..4 {
        let is = 2 * blk;
        let ql = &qs[blk * 32..blk * 32 + 32];
        let (sc1, m1) = scale_min_k4(is, scales);
        let (sc2, m2) = scale_min_k4(is + 1, scales);
        let (d1, mm1, d2, mm2) = (d * sc1 as f32, dmin * m1 as f32, d * sc2 as f32, dmin * m2 as f32);
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[yi + l] = d1 * ((ql[l] & 0xF) + h1) as f32 - mm1;
            y[yi + 32 + l] = d2 * ((ql[l] >> 4) + h2) as f32 - mm2;
        }
        yi += 64;
        u1 <<= 2;
        u2 <<= 2;
    }
}

fn q6_k(b: &[u8], y: &mut [f32]) {
    let ql_all = &b[0..128];
    let qh_all = &b[128..192];
    let sc_all = &b[192..208];
    let d = h(b, 208);
    for n in 0..2 {
        let ql = &ql_all[n * 64..n * 64 + 64];
        let qh = &qh_all[n * 32..n * 32 + 32];
        let sc = &sc_all[n * 8..n * 8 + 8];
        let y = &mut y[n * 128..n * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// Blocks of `ty` rewritten as Q8_0 without changing a value: Q4_0 and Q5_0 store `d · k` with a
/// small integer `k` and one f16 scale per 32 values, which Q8_0 stores as `d` and `k` itself
/// (Q8_0 is returned as is). `None` for the types Q8_0 cannot hold exactly (offsets, other
/// block sizes). Used where parts of different types are fused into one matrix.
pub fn to_q8_0_exact(ty: GgmlType, data: &[u8]) -> Option<Vec<u8>> {
    let (be, bb) = ty.block();
    if be != 32 || !data.len().is_multiple_of(bb) {
        return None;
    }
    let unpack: fn(&[u8], &mut [i8; 32]) = match ty {
        GgmlType::Q8_0 => return Some(data.to_vec()),
        GgmlType::Q4_0 => |b, k| {
            for j in 0..16 {
                k[j] = (b[2 + j] & 0x0F) as i8 - 8;
                k[j + 16] = (b[2 + j] >> 4) as i8 - 8;
            }
        },
        GgmlType::Q5_0 => |b, k| {
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            for j in 0..16 {
                let xh0 = (((qh >> j) << 4) & 0x10) as u8;
                let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
                k[j] = ((b[6 + j] & 0x0F) | xh0) as i8 - 16;
                k[j + 16] = ((b[6 + j] >> 4) | xh1) as i8 - 16;
            }
        },
        _ => return None,
    };
    let mut out = Vec::with_capacity(data.len() / bb * 34);
    let mut k = [0i8; 32];
    for b in data.chunks_exact(bb) {
        unpack(b, &mut k);
        out.extend_from_slice(&b[..2]);
        out.extend(k.iter().map(|&x| x as u8));
    }
    Some(out)
}
