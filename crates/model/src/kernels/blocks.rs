//! GGUF blocks as the cube backends keep them on the device (host side: the layout, the
//! conversion from the file's blocks, and its inverse for the reference path and the tests).
//!
//! Each block's scale (and offset) is widened to f32 and its quants kept as the file's packed
//! bytes, so every field is 4-byte aligned:
//! - 4-bit (Q4_0, Q4_1): 6 words per 32 values — `d`, `m`, then the file's 16 bytes of nibbles
//!   (value `j` in the low nibble of byte `j`, value `j + 16` in its high nibble); Q4_0's
//!   `d · (q − 8)` is stored as `d · q + m` with `m = −8 d`;
//! - 8-bit (Q8_0): 9 words per 32 values — `d`, then the 32 signed bytes.
//!
//! Rows come in groups of [`ROW_GROUP`] (the last one padded with zero blocks), and inside a
//! group the words are interleaved row by row: word `j` of block `b` of row `r` is at
//! `((r / 32 · blocks_per_row + b) · words_per_block + j) · 32 + r % 32` ([`word_index`]). The
//! 32 lanes of a kernel that give one output row each then read consecutive words (coalesced on
//! a GPU, one vector load on a CPU-emulated device) and share every input value.
use half::f16;

use crate::ggml::GgmlType;
use crate::kernels::QuantMatrix;

/// How a block type is laid out on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceLayout {
    /// 6 words per block: d, m, 16 bytes of nibbles.
    Q4,
    /// 9 words per block: d, 32 signed bytes.
    Q8,
}

impl DeviceLayout {
    pub fn of(ty: GgmlType) -> Option<Self> {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 => Some(Self::Q4),
            GgmlType::Q8_0 => Some(Self::Q8),
            _ => None,
        }
    }

    pub fn words_per_block(self) -> usize {
        match self {
            Self::Q4 => 6,
            Self::Q8 => 9,
        }
    }
}

/// Rows interleaved together on the device.
pub const ROW_GROUP: usize = 32;

/// Where word `j` of block `b` of row `r` lies (`nb` blocks per row, `wpb` words per block).
pub fn word_index(r: usize, b: usize, j: usize, nb: usize, wpb: usize) -> usize {
    ((r / ROW_GROUP * nb + b) * wpb + j) * ROW_GROUP + r % ROW_GROUP
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

fn words_of(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// One block of the file as its device words (`d`, [`m`,] quants), or `None` for a type without
/// a device layout.
fn block_words(ty: GgmlType, blk: &[u8]) -> Option<Vec<u32>> {
    let mut out = Vec::with_capacity(9);
    match ty {
        GgmlType::Q4_0 => {
            let d = f16_at(blk, 0);
            out.extend([d.to_bits(), (-8.0 * d).to_bits()]);
            out.extend(words_of(&blk[2..18]));
        }
        GgmlType::Q4_1 => {
            out.extend([f16_at(blk, 0).to_bits(), f16_at(blk, 2).to_bits()]);
            out.extend(words_of(&blk[4..20]));
        }
        GgmlType::Q8_0 => {
            out.push(f16_at(blk, 0).to_bits());
            out.extend(words_of(&blk[2..34]));
        }
        _ => return None,
    }
    Some(out)
}

/// The device words of `q` (row groups of interleaved blocks), or `None` for a type without a
/// device layout.
pub fn device_words(q: &QuantMatrix) -> Option<(DeviceLayout, Vec<u32>)> {
    let layout = DeviceLayout::of(q.ty())?;
    let q = q.to_rows();
    let (_, block_bytes) = q.ty().block();
    let wpb = layout.words_per_block();
    let (rows, nb) = (q.rows(), q.cols() / 32);
    let mut out = vec![0u32; rows.div_ceil(ROW_GROUP) * ROW_GROUP * nb * wpb];
    for (i, blk) in q.data().chunks_exact(block_bytes).enumerate() {
        let (r, b) = (i / nb, i % nb);
        for (j, w) in block_words(q.ty(), blk)?.into_iter().enumerate() {
            out[word_index(r, b, j, nb, wpb)] = w;
        }
    }
    Some((layout, out))
}

/// The values of device words (`rows · cols`, row-major): the inverse of [`device_words`].
pub fn dequantize_words(layout: DeviceLayout, words: &[u32], rows: usize, cols: usize) -> Vec<f32> {
    let wpb = layout.words_per_block();
    let nb = cols / 32;
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for b in 0..nb {
            let blk: Vec<u32> = (0..wpb).map(|j| words[word_index(r, b, j, nb, wpb)]).collect();
            let d = f32::from_bits(blk[0]);
            let first = match layout {
                DeviceLayout::Q4 => 2,
                DeviceLayout::Q8 => 1,
            };
            let bytes: Vec<u8> = blk[first..].iter().flat_map(|w| w.to_le_bytes()).collect();
            match layout {
                DeviceLayout::Q4 => {
                    let m = f32::from_bits(blk[1]);
                    out.extend(bytes.iter().map(|b| d * (b & 15) as f32 + m));
                    out.extend(bytes.iter().map(|b| d * (b >> 4) as f32 + m));
                }
                DeviceLayout::Q8 => out.extend(bytes.iter().map(|&b| d * b as i8 as f32)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every supported type round-trips: the device words hold the file's values exactly.
    #[test]
    fn device_words_hold_the_file_values() {
        let (rows, cols) = (35, 64);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let q = QuantMatrix::quantize(ty, rows, cols, &w).unwrap();
            let (layout, words) = device_words(&q).unwrap();
            assert_eq!(words.len(), rows.div_ceil(ROW_GROUP) * ROW_GROUP * cols / 32 * layout.words_per_block());
            let back = dequantize_words(layout, &words, rows, cols);
            let want = q.dequantize();
            assert_eq!(back.len(), want.len());
            for (i, (a, b)) in back.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{ty:?} value {i}: {a} vs {b}");
            }
        }
        assert!(device_words(&QuantMatrix::quantize(GgmlType::F32, 1, 32, &w[..32]).unwrap()).is_none());
    }
}
