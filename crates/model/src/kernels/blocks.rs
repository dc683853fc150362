//! GGUF blocks as the cube backends keep them on the device (host side: the layout, the
//! conversion from the file's blocks, and its inverse for the reference path and the tests).
//!
//! Every block covers 32 values; its scales (and offset) are widened to f32 — for the K-quants,
//! the file's f16 super-block scale times the sub-block's small integer scale, exact in f32 —
//! and its quants kept as small integers, so every field is 4-byte aligned and every value is
//! the file's ([`DeviceLayout`]):
//! - 4-bit (Q4_0, Q4_1, Q4_K): 6 words — scale, offset, 16 bytes of nibbles (value `j` in the
//!   low nibble of byte `j`, value `j + 16` in its high nibble); Q4_0's `d · (q − 8)` is stored
//!   as `d · q + m` with `m = −8 d`, Q4_K's `d·sc · q − dmin·m` with offset `−dmin·m`;
//! - 8-bit (Q8_0, Q5_0 as `d · (q − 16)`): 9 words — scale, 32 signed bytes;
//! - 8-bit with two half-block scales and an offset (Q5_1, Q5_K, and Q6_K, whose scales cover
//!   16 values): 11 words.
//!
//! A file block of 256 values (K-quants) becomes 8 device blocks. Other types (Q2_K, Q3_K, f16,
//! bf16) stay dense.
//!
//! Rows come in groups of [`ROW_GROUP`] (the last one padded with zero blocks), and inside a
//! group the words are interleaved row by row: word `j` of block `b` of row `r` is at
//! `((r / 32 · blocks_per_row + b) · words_per_block + j) · 32 + r % 32` ([`word_index`]). The
//! 32 lanes of a kernel that give one output row each then read consecutive words (coalesced on
//! a GPU, one vector load on a CPU-emulated device) and share every input value.

use crate::ggml::GgmlType;
use crate::kernels::igemm;
use crate::kernels::QuantMatrix;

/// How a block type is laid out on the device (every block 32 values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceLayout {
    /// 6 words per block: scale, offset, 16 bytes of nibbles (value `scale · q + offset`):
    /// Q4_0, Q4_1, Q4_K (each of its 32-value sub-blocks).
    Q4,
    /// 9 words per block: scale, 32 signed bytes (value `scale · q`): Q8_0, Q5_0.
    Q8,
    /// 11 words per block: the scales of values 0–15 and of 16–31, an offset, 32 signed bytes
    /// (value `scale · q + offset`): Q5_1, Q5_K, Q6_K (whose scales cover 16 values).
    Q8Split,
}

impl DeviceLayout {
    pub fn of(ty: GgmlType) -> Option<Self> {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4K => Some(Self::Q4),
            GgmlType::Q8_0 | GgmlType::Q5_0 => Some(Self::Q8),
            GgmlType::Q5_1 | GgmlType::Q5K | GgmlType::Q6K => Some(Self::Q8Split),
            _ => None,
        }
    }

    pub fn words_per_block(self) -> usize {
        match self {
            Self::Q4 => 6,
            Self::Q8 => 9,
            Self::Q8Split => 11,
        }
    }

    /// The kernels' comptime code of the layout (0, 1, 2 in declaration order).
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// Rows interleaved together on the device.
pub const ROW_GROUP: usize = 32;

/// Where word `j` of block `b` of row `r` lies (`nb` blocks per row, `wpb` words per block).
pub fn word_index(r: usize, b: usize, j: usize, nb: usize, wpb: usize) -> usize {
    ((r / ROW_GROUP * nb + b) * wpb + j) * ROW_GROUP + r % ROW_GROUP
}

/// One 32-value block as the device holds it: value `j` is `scale[j / 16] · q[j] + offset`.
struct DevBlock {
    scale: [f32; 2],
    offset: f32,
    q: [i8; 32],
}

impl DevBlock {
    fn words(&self, layout: DeviceLayout) -> Vec<u32> {
        let bytes = |q: &[i8]| -> Vec<u32> {
            q.chunks_exact(4).map(|c| u32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8])).collect()
        };
        let mut out = Vec::with_capacity(layout.words_per_block());
        match layout {
            DeviceLayout::Q4 => {
                out.extend([self.scale[0].to_bits(), self.offset.to_bits()]);
                let nib: Vec<i8> = (0..16).map(|j| (self.q[j] as u8 | (self.q[j + 16] as u8) << 4) as i8).collect();
                out.extend(bytes(&nib));
            }
            DeviceLayout::Q8 => {
                out.push(self.scale[0].to_bits());
                out.extend(bytes(&self.q));
            }
            DeviceLayout::Q8Split => {
                out.extend([self.scale[0].to_bits(), self.scale[1].to_bits(), self.offset.to_bits()]);
                out.extend(bytes(&self.q));
            }
        }
        out
    }
}

/// One block of the file as 32-value device blocks with the same values (one, or eight for the
/// 256-value K-quants), or `None` for a type without a device layout: the CPU GEMM's unpacker
/// ([`igemm::unpack`]: scales the file's f16 times the small integer sub-scale, exact in f32),
/// with Q4_0's `d · (q − 8)` stored as `d · q − 8 d` (the device's 4-bit layout keeps nibbles
/// unsigned).
fn dev_blocks(ty: GgmlType, b: &[u8]) -> Option<Vec<DevBlock>> {
    DeviceLayout::of(ty)?;
    let mut out = Vec::with_capacity(8);
    igemm::unpack(ty, b, &mut |_, scale, offset, q| {
        let mut block = DevBlock { scale, offset, q: *q };
        if ty == GgmlType::Q4_0 {
            block.q.iter_mut().for_each(|v| *v += 8);
            block.offset = -8.0 * scale[0];
        }
        out.push(block);
    });
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
    let mut i = 0;
    for blk in q.data().chunks_exact(block_bytes) {
        for dev in dev_blocks(q.ty(), blk)? {
            let (r, b) = (i / nb, i % nb);
            for (j, w) in dev.words(layout).into_iter().enumerate() {
                out[word_index(r, b, j, nb, wpb)] = w;
            }
            i += 1;
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
            let f = |j: usize| f32::from_bits(blk[j]);
            let (scale, offset, first) = match layout {
                DeviceLayout::Q4 => ([f(0), f(0)], f(1), 2),
                DeviceLayout::Q8 => ([f(0), f(0)], 0.0, 1),
                DeviceLayout::Q8Split => ([f(0), f(1)], f(2), 3),
            };
            let bytes: Vec<u8> = blk[first..].iter().flat_map(|w| w.to_le_bytes()).collect();
            let q: Vec<i32> = match layout {
                DeviceLayout::Q4 => {
                    bytes.iter().map(|b| (b & 15) as i32).chain(bytes.iter().map(|b| (b >> 4) as i32)).collect()
                }
                _ => bytes.iter().map(|&b| b as i8 as i32).collect(),
            };
            out.extend(q.iter().enumerate().map(|(j, &q)| scale[j / 16] * q as f32 + offset));
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
            round_trip(&q);
        }
        // the other types from random blocks (finite scales): 2 K-quant blocks per row
        for ty in [GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
            round_trip(&QuantMatrix::random_blocks(ty, 35, 512, 7));
        }
        assert!(device_words(&QuantMatrix::quantize(GgmlType::F32, 1, 32, &w[..32]).unwrap()).is_none());
        assert!(device_words(&QuantMatrix::random_blocks(GgmlType::Q3K, 1, 256, 1)).is_none());
    }

    /// The device words of `q` dequantize to the reference dequantization of the file's blocks.
    fn round_trip(q: &QuantMatrix) {
        let (ty, rows, cols) = (q.ty(), q.rows(), q.cols());
        let (layout, words) = device_words(q).unwrap();
        assert_eq!(words.len(), rows.div_ceil(ROW_GROUP) * ROW_GROUP * cols / 32 * layout.words_per_block());
        let back = dequantize_words(layout, &words, rows, cols);
        let want = q.dequantize();
        assert_eq!(back.len(), want.len());
        // exact but for Q4_0's `d · q − 8 d` (one rounding of its own)
        let tol = if ty == GgmlType::Q4_0 { 1e-6 } else { 0.0 };
        for (i, (a, b)) in back.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= tol * b.abs().max(1.0), "{ty:?} value {i}: {a} vs {b}");
        }
    }
}
