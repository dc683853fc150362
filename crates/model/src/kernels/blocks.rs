//! GGUF blocks as the cube backends keep them on the device (host side: the layout, the
//! conversion from the file's blocks, and its inverse for the reference path and the tests).
//!
//! Every block covers 32 values, `scale · q + offset` with a small unsigned integer `q` (signed
//! for Q8_0), and every value is the file's. Each layout ([`DeviceLayout`]) is a few header words
//! (scales and offset), then the quants' high bits where they have any, then the quants:
//! - the file's f16 scale and offset packed in one word where f16 holds them exactly (Q4_0's
//!   `d · (q − 8)` is stored as `d · q − 8 d`, Q5_0's with `− 16 d`: exact unless `8 d` or `16 d`
//!   overflows f16, when the matrix takes the f32 layout instead);
//! - f32 scales where a scale is the product of the file's f16 super-block scale and a small
//!   integer sub-scale (the K-quants: exact in f32, not in f16);
//! - quants as the file stores them: 16 bytes of nibbles (value `j` in the low nibble of byte
//!   `j`, value `j + 16` in its high nibble), a word of fifth bits (bit `j` for value `j`), or two
//!   words of fifth and sixth bits (bits `2 (j % 16)` and up of word `j / 16` for value `j`);
//!   Q8_0's 32 signed bytes.
//!
//! | layout | words | types | bytes / file bytes |
//! |---|---|---|---|
//! | `Q4Half` | 5: `d \| m` (f16 pair), 4 nibble words | Q4_0, Q4_1 | 1.11, 1.0 |
//! | `Q5Half` | 6: `d \| m`, fifth bits, 4 nibble words | Q5_0, Q5_1 | 1.09, 1.0 |
//! | `Q4` | 6: `d`, `m` (f32), 4 nibble words | Q4_K (and Q4_0 on f16 overflow) | 1.33 |
//! | `Q5` | 7: `d`, `m`, fifth bits, 4 nibble words | Q5_K (and Q5_0 on f16 overflow) | 1.27 |
//! | `Q6` | 8: `d` of values 0–15, of 16–31, 2 high-pair words, 4 nibble words; value `d · (q − 32)` | Q6_K | 1.22 |
//! | `Q8` | 9: `d` (f32), 32 signed bytes | Q8_0 | 1.06 |
//!
//! A file block of 256 values (K-quants) becomes 8 device blocks. Other types (Q2_K, Q3_K, f16,
//! bf16) stay dense.
//!
//! Rows come in groups of [`ROW_GROUP`] (the last one padded with zero blocks), and inside a
//! group the words are interleaved row by row: word `j` of block `b` of row `r` is at
//! `((r / 32 · blocks_per_row + b) · words_per_block + j) · 32 + r % 32` ([`word_index`]). The
//! 32 lanes of a kernel that give one output row each then read consecutive words (coalesced on
//! a GPU, one vector load on a CPU-emulated device) and share every input value.

use half::f16;

use crate::ggml::GgmlType;
use crate::kernels::igemm;
use crate::kernels::QuantMatrix;

/// How a block type is laid out on the device (every block 32 values; the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceLayout {
    /// f32 scale and offset, nibbles: Q4_K (Q4_0 when f16 cannot hold `−8 d`).
    Q4,
    /// f32 scale, 32 signed bytes: Q8_0.
    Q8,
    /// f16 scale and offset in one word, nibbles: Q4_0, Q4_1.
    Q4Half,
    /// f16 scale and offset in one word, fifth bits, nibbles: Q5_0, Q5_1.
    Q5Half,
    /// f32 scale and offset, fifth bits, nibbles: Q5_K (Q5_0 when f16 cannot hold `−16 d`).
    Q5,
    /// f32 scales of values 0–15 and 16–31, fifth/sixth bits, nibbles; value `d · (q − 32)`:
    /// Q6_K.
    Q6,
}

impl DeviceLayout {
    /// The layout of `ty`: the compact one (f16 scale and offset in one word) when `half`.
    fn of(ty: GgmlType, half: bool) -> Option<Self> {
        Some(match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 if half => Self::Q4Half,
            GgmlType::Q5_0 | GgmlType::Q5_1 if half => Self::Q5Half,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4K => Self::Q4,
            GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5K => Self::Q5,
            GgmlType::Q6K => Self::Q6,
            GgmlType::Q8_0 => Self::Q8,
            _ => return None,
        })
    }

    /// Header words (scales, offset), words of high bits, words of quants.
    pub fn parts(self) -> (usize, usize, usize) {
        match self {
            Self::Q4 => (2, 0, 4),
            Self::Q8 => (1, 0, 8),
            Self::Q4Half => (1, 0, 4),
            Self::Q5Half => (1, 1, 4),
            Self::Q5 => (2, 1, 4),
            Self::Q6 => (2, 2, 4),
        }
    }

    pub fn words_per_block(self) -> usize {
        let (h, b, q) = self.parts();
        h + b + q
    }

    /// The kernels' comptime code of the layout (0–5 in declaration order).
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The layout of a kernel's comptime [`Self::code`].
    pub fn from_code(code: u32) -> Self {
        [Self::Q4, Self::Q8, Self::Q4Half, Self::Q5Half, Self::Q5, Self::Q6][code as usize]
    }

    /// The quants' bias: value `scale · (q − bias) + offset` (Q6_K's unsigned 6-bit quants); the
    /// kernels read it at comptime.
    pub fn bias(self) -> i32 {
        if self == Self::Q6 {
            32
        } else {
            0
        }
    }
}

/// Rows interleaved together on the device.
pub const ROW_GROUP: usize = 32;

/// Where word `j` of block `b` of row `r` lies (`nb` blocks per row, `wpb` words per block).
pub fn word_index(r: usize, b: usize, j: usize, nb: usize, wpb: usize) -> usize {
    ((r / ROW_GROUP * nb + b) * wpb + j) * ROW_GROUP + r % ROW_GROUP
}

/// One 32-value block as the device holds it: value `j` is `scale[j / 16] · (q[j] − bias) +
/// offset` (`q` unsigned but for Q8_0).
struct DevBlock {
    scale: [f32; 2],
    offset: f32,
    q: [i32; 32],
}

/// `v` as f16 bits when f16 holds it exactly.
fn exact_half(v: f32) -> Option<u32> {
    let h = f16::from_f32(v);
    (h.is_finite() && h.to_f32() == v).then_some(h.to_bits() as u32)
}

impl DevBlock {
    /// Whether the compact layouts (f16 scale and offset) hold this block exactly.
    fn fits_half(&self) -> bool {
        exact_half(self.scale[0]).is_some() && exact_half(self.offset).is_some()
    }

    fn words(&self, layout: DeviceLayout) -> Vec<u32> {
        let mut out = Vec::with_capacity(layout.words_per_block());
        match layout {
            DeviceLayout::Q4Half | DeviceLayout::Q5Half => {
                let (d, m) = (exact_half(self.scale[0]), exact_half(self.offset));
                out.push(d.expect("f16 scale") | m.expect("f16 offset") << 16);
            }
            DeviceLayout::Q4 | DeviceLayout::Q5 => out.extend([self.scale[0].to_bits(), self.offset.to_bits()]),
            DeviceLayout::Q6 => out.extend([self.scale[0].to_bits(), self.scale[1].to_bits()]),
            DeviceLayout::Q8 => out.push(self.scale[0].to_bits()),
        }
        let q = self.q.map(|v| v as u32);
        match layout.parts().1 {
            1 => out.push((0..32).fold(0, |w, j| w | (q[j] >> 4 & 1) << j)),
            2 => out.extend((0..2).map(|h| (0..16).fold(0, |w, j| w | (q[16 * h + j] >> 4 & 3) << (2 * j)))),
            _ => {}
        }
        if layout == DeviceLayout::Q8 {
            out.extend(q.chunks_exact(4).map(|c| c.iter().rev().fold(0, |w, &v| w << 8 | (v & 255))));
        } else {
            out.extend((0..4).map(|w| {
                (0..4).fold(0, |acc, k| acc | ((q[4 * w + k] & 15) | (q[16 + 4 * w + k] & 15) << 4) << (8 * k))
            }));
        }
        out
    }
}

/// One block of the file as 32-value device blocks with the same values (one, or eight for the
/// 256-value K-quants): the CPU GEMM's unpacker ([`igemm::unpack`]: scales the file's f16 times
/// the small integer sub-scale, exact in f32), its signed quants made unsigned (Q4_0's `d · (q −
/// 8)` as `d · q − 8 d`, Q5_0's likewise with 16, Q6_K's `q − 32` by the layout's bias).
fn dev_blocks(ty: GgmlType, b: &[u8], put: &mut impl FnMut(DevBlock)) {
    let bias = match ty {
        GgmlType::Q4_0 => 8,
        GgmlType::Q5_0 => 16,
        GgmlType::Q6K => 32,
        _ => 0,
    };
    igemm::unpack(ty, b, &mut |_, scale, offset, q| {
        let offset = if ty == GgmlType::Q6K { offset } else { offset - bias as f32 * scale[0] };
        put(DevBlock { scale, offset, q: q.map(|v| v as i32 + bias) })
    });
}

/// The device words of `q` (row groups of interleaved blocks), or `None` for a type without a
/// device layout.
pub fn device_words(q: &QuantMatrix) -> Option<(DeviceLayout, Vec<u32>)> {
    DeviceLayout::of(q.ty(), false)?;
    let q = q.to_rows();
    let (_, block_bytes) = q.ty().block();
    let mut half = true;
    if DeviceLayout::of(q.ty(), true) != DeviceLayout::of(q.ty(), false) {
        for blk in q.data().chunks_exact(block_bytes) {
            dev_blocks(q.ty(), blk, &mut |d| half &= d.fits_half());
        }
    }
    let layout = DeviceLayout::of(q.ty(), half)?;
    let wpb = layout.words_per_block();
    let (rows, nb) = (q.rows(), q.cols() / 32);
    let mut out = vec![0u32; rows.div_ceil(ROW_GROUP) * ROW_GROUP * nb * wpb];
    let mut i = 0;
    for blk in q.data().chunks_exact(block_bytes) {
        dev_blocks(q.ty(), blk, &mut |dev| {
            let (r, b) = (i / nb, i % nb);
            for (j, w) in dev.words(layout).into_iter().enumerate() {
                out[word_index(r, b, j, nb, wpb)] = w;
            }
            i += 1;
        });
    }
    Some((layout, out))
}

/// The values of device words (`rows · cols`, row-major): the inverse of [`device_words`].
pub fn dequantize_words(layout: DeviceLayout, words: &[u32], rows: usize, cols: usize) -> Vec<f32> {
    let wpb = layout.words_per_block();
    let (header, high, _) = layout.parts();
    let nb = cols / 32;
    let half = |bits: u32| f16::from_bits(bits as u16).to_f32();
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for b in 0..nb {
            let w = |j: usize| words[word_index(r, b, j, nb, wpb)];
            let f = |j: usize| f32::from_bits(w(j));
            let (scale, offset) = match layout {
                DeviceLayout::Q4Half | DeviceLayout::Q5Half => ([half(w(0) & 0xffff); 2], half(w(0) >> 16)),
                DeviceLayout::Q4 | DeviceLayout::Q5 => ([f(0); 2], f(1)),
                DeviceLayout::Q6 => ([f(0), f(1)], 0.0),
                DeviceLayout::Q8 => ([f(0); 2], 0.0),
            };
            let quant = |j: usize| -> i32 {
                let q = header + high;
                if layout == DeviceLayout::Q8 {
                    return (w(q + j / 4) >> (8 * (j % 4))) as u8 as i8 as i32;
                }
                let nib = (w(q + j % 16 / 4) >> (8 * (j % 4) + 4 * (j / 16))) & 15;
                let top = match high {
                    1 => (w(header) >> j & 1) << 4,
                    2 => (w(header + j / 16) >> (2 * (j % 16)) & 3) << 4,
                    _ => 0,
                };
                (nib | top) as i32 - layout.bias()
            };
            out.extend((0..32).map(|j| scale[j / 16] * quant(j) as f32 + offset));
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
        for (ty, layout) in [
            (GgmlType::Q4_0, DeviceLayout::Q4Half),
            (GgmlType::Q4_1, DeviceLayout::Q4Half),
            (GgmlType::Q8_0, DeviceLayout::Q8),
        ] {
            let q = QuantMatrix::quantize(ty, rows, cols, &w).unwrap();
            assert_eq!(round_trip(&q), layout, "{ty:?}");
        }
        // the other types from random blocks (finite scales): 2 K-quant blocks per row
        for (ty, layout) in [
            (GgmlType::Q5_0, DeviceLayout::Q5Half),
            (GgmlType::Q5_1, DeviceLayout::Q5Half),
            (GgmlType::Q4K, DeviceLayout::Q4),
            (GgmlType::Q5K, DeviceLayout::Q5),
            (GgmlType::Q6K, DeviceLayout::Q6),
        ] {
            assert_eq!(round_trip(&QuantMatrix::random_blocks(ty, 35, 512, 7)), layout, "{ty:?}");
        }
        // a scale whose `−8 d` / `−16 d` overflows f16: the f32 layouts, still exact
        for (ty, layout) in [(GgmlType::Q4_0, DeviceLayout::Q4), (GgmlType::Q5_0, DeviceLayout::Q5)] {
            let mut data = QuantMatrix::random_blocks(ty, 3, 64, 9).data().to_vec();
            data[..2].copy_from_slice(&f16::from_f32(9000.0).to_le_bytes());
            let q = QuantMatrix::new(ty, 3, 64, data).unwrap();
            assert_eq!(round_trip(&q), layout, "{ty:?} with d = 9000");
        }
        assert!(device_words(&QuantMatrix::quantize(GgmlType::F32, 1, 32, &w[..32]).unwrap()).is_none());
        assert!(device_words(&QuantMatrix::random_blocks(GgmlType::Q3K, 1, 256, 1)).is_none());
    }

    /// The device words of `q` dequantize to the reference dequantization of the file's blocks;
    /// returns the layout chosen.
    fn round_trip(q: &QuantMatrix) -> DeviceLayout {
        let (ty, rows, cols) = (q.ty(), q.rows(), q.cols());
        let (layout, words) = device_words(q).unwrap();
        assert_eq!(words.len(), rows.div_ceil(ROW_GROUP) * ROW_GROUP * cols / 32 * layout.words_per_block());
        let back = dequantize_words(layout, &words, rows, cols);
        let want = q.dequantize();
        assert_eq!(back.len(), want.len());
        // exact but for Q4_0's `d · q − 8 d` and Q5_0's `d · q − 16 d` (one rounding of their own)
        let tol = if matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_0) { 1e-6 } else { 0.0 };
        for (i, (a, b)) in back.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= tol * b.abs().max(1.0), "{ty:?} value {i}: {a} vs {b}");
        }
        layout
    }
}
