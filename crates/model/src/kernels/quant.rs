//! Weight matrices kept in GGUF's block formats, exactly as the file stores them (llama.cpp's
//! `block_q4_1`, `block_q8_0`, `block_q4_K`, …), with their reference dequantization and the
//! quantizers used to make Q8_0 / Q4_0 weights from dense ones (`--quantize`).
use half::f16;

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::ggml::{dequantize, GgmlType};

/// Data a kernel derives from a matrix's blocks and keeps beside them (the integer GEMM's
/// unpacked panels): made once on the kernel's request, dropped with the matrix. A clone starts
/// empty — a matrix made from another, with other blocks or activations, must not share it.
#[derive(Default)]
pub struct DerivedCache {
    uses: AtomicUsize,
    slot: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Clone for DerivedCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl DerivedCache {
    /// Counts a use; from use `after + 1` on, the value `make` builds (once, by the first caller
    /// that gets there). `None` before, or when the slot holds another type.
    pub fn get_or_make<T: Any + Send + Sync>(&self, after: usize, make: impl FnOnce() -> T) -> Option<&T> {
        if self.slot.get().is_none() && self.uses.fetch_add(1, Ordering::Relaxed) < after {
            return None;
        }
        self.slot.get_or_init(|| Box::new(make())).downcast_ref()
    }

    /// The kept value, if one of type `T` was made.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.slot.get().and_then(|b| b.downcast_ref())
    }
}

/// A `[rows, cols]` matrix (rows = output features, cols = input features, as GGUF and PyTorch
/// store a linear layer's weight) whose rows are sequences of blocks of `ty`.
#[derive(Clone)]
pub struct QuantMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: AlignedBytes,
    /// How activations are quantized for this matrix's products.
    act: ActQuant,
    /// Rows stored one after the other (as in the file), or interleaved by groups of 8.
    layout: RowLayout,
    /// What a kernel derives from the blocks and keeps (the integer GEMM's unpacked panels).
    derived: DerivedCache,
}

/// How a linear layer quantizes its activations before the integer kernels (the row and group
/// kernels of Q4_0, Q4_1, Q8_0; with AVX-512 VNNI the int16 row kernels of Q5_0, Q4_K, Q6_K and
/// the integer GEMM of `igemm` for products of several rows, every block type; elsewhere
/// activations stay f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActQuant {
    /// f32 activations against the dequantized block values.
    #[default]
    F32,
    /// int16 per block of 32 (relative error ≤ 1/65534 of the block's largest value; the offset
    /// terms use exact f32 sums): integer dot products, results within float noise of f32.
    Int16,
    /// int8 per block of 32, llama.cpp's `Q8_0`/`Q8_1` activations: fastest, not exact.
    Int8,
}

/// How rows are laid out in memory. Both hold exactly the file's blocks (same bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowLayout {
    /// Row after row, each a sequence of blocks (the GGUF layout).
    Rows,
    /// Groups of 8 rows; per block column: the 8 rows' scales (`d` ×8, then `m` ×8 for Q4_1),
    /// then their quants in chunks of 32 bytes where chunk `c` holds bytes `4c..4c+4` of each
    /// row's quants (Q4: `qs`; Q8_0: `qs`, 8 chunks). One 32-byte load then feeds 8 rows'
    /// dot products lane by lane (llama.cpp's `block_q4_0x8` idea), with no horizontal sums.
    Interleaved8,
}

/// Byte sizes inside an interleaved group block column: (header of scales, quant bytes per row).
fn interleave_parts(ty: GgmlType) -> Option<(usize, usize)> {
    match ty {
        GgmlType::Q4_0 => Some((2, 16)),
        GgmlType::Q4_1 => Some((4, 16)),
        GgmlType::Q8_0 => Some((2, 32)),
        _ => None,
    }
}

impl std::fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuantMatrix({:?}, {}x{})", self.ty, self.rows, self.cols)
    }
}

/// Bytes in 64-byte-aligned storage (f32 matrices are read as `f32` by `gemm`; SIMD loads stay
/// within cache lines).
#[derive(Clone)]
struct AlignedBytes {
    words: Vec<[u64; 8]>,
    len: usize,
}

impl AlignedBytes {
    fn from_vec(v: Vec<u8>) -> Self {
        let mut words = vec![[0u64; 8]; v.len().div_ceil(64)];
        // SAFETY: `words` owns at least `v.len()` initialised bytes.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), words.as_mut_ptr() as *mut u8, v.len()) };
        Self { words, len: v.len() }
    }
}

impl std::ops::Deref for AlignedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }
}

/// The block types the CPU kernels compute on directly (others are converted at load).
pub fn is_native(ty: GgmlType) -> bool {
    use GgmlType as G;
    matches!(ty, G::F32 | G::F16 | G::Q4_0 | G::Q4_1 | G::Q5_0 | G::Q5_1 | G::Q8_0 | G::Q4K | G::Q5K | G::Q6K)
}

impl QuantMatrix {
    /// Wrap `data` (rows of blocks as in a GGUF file).
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self, String> {
        let (be, bb) = ty.block();
        if !cols.is_multiple_of(be) {
            return Err(format!("{cols} columns is not a multiple of the {ty:?} block size {be}"));
        }
        let row_bytes = cols / be * bb;
        if data.len() != rows * row_bytes {
            return Err(format!("{ty:?} matrix {rows}x{cols} needs {} bytes, got {}", rows * row_bytes, data.len()));
        }
        Ok(Self {
            ty,
            rows,
            cols,
            row_bytes,
            data: AlignedBytes::from_vec(data),
            act: ActQuant::F32,
            layout: RowLayout::Rows,
            derived: DerivedCache::default(),
        })
    }

    /// Quantize a dense row-major `[rows, cols]` matrix into `ty` (F32, F16, Q8_0, Q4_0).
    pub fn quantize(ty: GgmlType, rows: usize, cols: usize, w: &[f32]) -> Result<Self, String> {
        assert_eq!(w.len(), rows * cols, "quantize: data length");
        let data: Vec<u8> = match ty {
            GgmlType::F32 => w.iter().flat_map(|x| x.to_le_bytes()).collect(),
            GgmlType::F16 => w.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect(),
            GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 => {
                if !cols.is_multiple_of(32) {
                    return Err(format!("{cols} columns is not a multiple of the {ty:?} block size 32"));
                }
                let mut out = Vec::with_capacity(rows * cols / 32 * ty.block().1);
                for blk in w.chunks_exact(32) {
                    match ty {
                        GgmlType::Q8_0 => quantize_q8_0(blk, &mut out),
                        GgmlType::Q4_0 => quantize_q4_0(blk, &mut out),
                        _ => quantize_q4_1(blk, &mut out),
                    }
                }
                out
            }
            other => return Err(format!("quantizing to {other:?} is not supported (q8_0, q4_0, q4_1, f16, f32)")),
        };
        Self::new(ty, rows, cols, data)
    }

    /// `rows × cols` of random blocks of `ty` (a seeded LCG) whose f16 scales are small finite
    /// numbers: arbitrary quants of every block type, for kernel tests and micro-benchmarks.
    pub fn random_blocks(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Self {
        let (per_block, block_bytes) = ty.block();
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        };
        let scales: &[usize] = match ty {
            GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::Q4_0 => &[0],
            GgmlType::Q6K => &[208],
            GgmlType::Q3K => &[108],
            _ => &[0, 2],
        };
        let mut data = Vec::new();
        for _ in 0..rows * cols / per_block {
            let mut blk: Vec<u8> = (0..block_bytes).map(|_| next()).collect();
            for &at in scales {
                let v = f16::from_f32(0.001 + next() as f32 / 2048.0).to_le_bytes();
                blk[at..at + 2].copy_from_slice(&v);
            }
            data.extend(blk);
        }
        Self::new(ty, rows, cols, data).expect("whole blocks")
    }

    /// Compute products with int8-quantized activations where a kernel exists for the type
    /// (Q4_0, Q4_1, Q8_0): faster, not exact (llama.cpp's default).
    pub fn with_int8_activations(self, on: bool) -> Self {
        self.with_activations(if on { ActQuant::Int8 } else { ActQuant::F32 })
    }

    /// How this matrix's products quantize activations.
    pub fn with_activations(mut self, act: ActQuant) -> Self {
        self.act = act;
        self.derived = DerivedCache::default();
        self
    }

    /// Whether products use int8 activations (and the type has such a kernel).
    pub fn int8_activations(&self) -> bool {
        self.act == ActQuant::Int8
    }

    pub fn activations(&self) -> ActQuant {
        self.act
    }

    pub fn layout(&self) -> RowLayout {
        self.layout
    }

    /// What kernels derived from this matrix's blocks and keep ([`DerivedCache`]).
    pub fn derived(&self) -> &DerivedCache {
        &self.derived
    }

    /// Whether [`QuantMatrix::interleave8`] applies (Q4_0, Q4_1, Q8_0 with rows a multiple of 8).
    pub fn can_interleave8(&self) -> bool {
        interleave_parts(self.ty).is_some() && self.rows.is_multiple_of(8) && self.rows > 0
    }

    /// The same blocks in the [`RowLayout::Interleaved8`] layout (unchanged when not possible).
    pub fn interleave8(mut self) -> Self {
        if self.layout == RowLayout::Interleaved8 || !self.can_interleave8() {
            return self;
        }
        let (hdr, qb) = interleave_parts(self.ty).expect("checked");
        let bb = hdr + qb;
        let nb = self.cols / 32;
        let mut out = Vec::with_capacity(self.data.len());
        for g in 0..self.rows / 8 {
            for b in 0..nb {
                let blk = |r: usize| {
                    let o = (g * 8 + r) * self.row_bytes + b * bb;
                    &self.data[o..o + bb]
                };
                for h in (0..hdr).step_by(2) {
                    for r in 0..8 {
                        out.extend_from_slice(&blk(r)[h..h + 2]);
                    }
                }
                for c in 0..qb / 4 {
                    for r in 0..8 {
                        out.extend_from_slice(&blk(r)[hdr + 4 * c..hdr + 4 * c + 4]);
                    }
                }
            }
        }
        self.data = AlignedBytes::from_vec(out);
        self.layout = RowLayout::Interleaved8;
        self.derived = DerivedCache::default();
        self
    }

    /// The same blocks row after row ([`RowLayout::Rows`]).
    pub fn to_rows(&self) -> Self {
        match self.layout {
            RowLayout::Rows => self.clone(),
            RowLayout::Interleaved8 => {
                let mut data = Vec::with_capacity(self.data.len());
                for r in 0..self.rows {
                    data.extend_from_slice(&self.row(r));
                }
                Self { data: AlignedBytes::from_vec(data), layout: RowLayout::Rows, ..self.clone() }
            }
        }
    }

    /// Dequantize rows `r0..r0 + out.len() / cols` into `out` (fast for both layouts: an
    /// interleaved group's blocks are decoded in place, no row is rebuilt).
    pub fn dequantize_rows(&self, r0: usize, out: &mut [f32]) {
        let n = out.len() / self.cols;
        match self.layout {
            RowLayout::Rows => {
                for (i, o) in out.chunks_exact_mut(self.cols).enumerate() {
                    self.dequantize_row(r0 + i, o);
                }
            }
            RowLayout::Interleaved8 => {
                let (hdr, qb) = interleave_parts(self.ty).expect("interleaved types");
                let gsize = 8 * (hdr + qb);
                let nb = self.cols / 32;
                let h = |p: &[u8], o: usize| f16::from_le_bytes([p[o], p[o + 1]]).to_f32();
                for r in r0..r0 + n {
                    let (g, lane) = (r / 8, r % 8);
                    let o = &mut out[(r - r0) * self.cols..(r - r0 + 1) * self.cols];
                    for b in 0..nb {
                        let base = g * nb * gsize + b * gsize;
                        let blk = &self.data[base..base + gsize];
                        let d = h(blk, lane * 2);
                        let y = &mut o[b * 32..b * 32 + 32];
                        let q = |c: usize| &blk[8 * hdr + c * 32 + lane * 4..8 * hdr + c * 32 + lane * 4 + 4];
                        match self.ty {
                            GgmlType::Q8_0 => {
                                for c in 0..8 {
                                    for (j, &v) in q(c).iter().enumerate() {
                                        y[4 * c + j] = (v as i8) as f32 * d;
                                    }
                                }
                            }
                            ty => {
                                let (m, off) =
                                    if ty == GgmlType::Q4_1 { (h(blk, 16 + lane * 2), 0.0) } else { (0.0, -8.0) };
                                for c in 0..4 {
                                    for (j, &v) in q(c).iter().enumerate() {
                                        y[4 * c + j] = ((v & 15) as f32 + off) * d + m;
                                        y[16 + 4 * c + j] = ((v >> 4) as f32 + off) * d + m;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Rebuild the file bytes of block `b` of row `r` of an interleaved matrix into `out` (its
    /// block size), without allocating.
    pub fn interleaved_block_into(&self, r: usize, b: usize, out: &mut [u8]) {
        let (hdr, qb) = interleave_parts(self.ty).expect("interleaved types");
        let gsize = 8 * (hdr + qb);
        let base = (r / 8) * (self.cols / 32) * gsize + b * gsize;
        let lane = r % 8;
        let col = &self.data[base..base + gsize];
        for h in (0..hdr).step_by(2) {
            out[h..h + 2].copy_from_slice(&col[h * 8 + lane * 2..h * 8 + lane * 2 + 2]);
        }
        for c in 0..qb / 4 {
            let o = 8 * hdr + c * 32 + lane * 4;
            out[hdr + 4 * c..hdr + 4 * c + 4].copy_from_slice(&col[o..o + 4]);
        }
    }

    /// The file bytes of block `b` of row `r`, whatever the layout.
    pub fn block_bytes(&self, r: usize, b: usize, out: &mut Vec<u8>) {
        out.clear();
        match self.layout {
            RowLayout::Rows => {
                let bb = self.ty.block().1;
                let o = r * self.row_bytes + b * bb;
                out.extend_from_slice(&self.data[o..o + bb]);
            }
            RowLayout::Interleaved8 => {
                let (hdr, qb) = interleave_parts(self.ty).expect("interleaved types");
                let gsize = 8 * (hdr + qb);
                let base = (r / 8) * (self.cols / 32) * gsize + b * gsize;
                let lane = r % 8;
                for h in (0..hdr).step_by(2) {
                    let o = base + h * 8 + lane * 2;
                    out.extend_from_slice(&self.data[o..o + 2]);
                }
                for c in 0..qb / 4 {
                    let o = base + 8 * hdr + c * 32 + lane * 4;
                    out.extend_from_slice(&self.data[o..o + 4]);
                }
            }
        }
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// Bytes of the stored blocks.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The blocks of row `r` in the file's layout.
    pub fn row(&self, r: usize) -> std::borrow::Cow<'_, [u8]> {
        match self.layout {
            RowLayout::Rows => std::borrow::Cow::Borrowed(&self.data[r * self.row_bytes..(r + 1) * self.row_bytes]),
            RowLayout::Interleaved8 => {
                let mut row = Vec::with_capacity(self.row_bytes);
                let mut blk = Vec::new();
                for b in 0..self.cols / 32 {
                    self.block_bytes(r, b, &mut blk);
                    row.extend_from_slice(&blk);
                }
                std::borrow::Cow::Owned(row)
            }
        }
    }

    /// Dequantize row `r` into `out` (`cols` values).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let v = dequantize(self.ty, &self.row(r), self.cols).expect("row length checked at construction");
        out.copy_from_slice(&v);
    }

    /// The whole matrix as dense row-major f32 `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        match self.layout {
            RowLayout::Rows => {
                dequantize(self.ty, &self.data, self.rows * self.cols).expect("length checked at construction")
            }
            RowLayout::Interleaved8 => {
                let mut out = vec![0f32; self.rows * self.cols];
                for (r, o) in out.chunks_exact_mut(self.cols).enumerate() {
                    self.dequantize_row(r, o);
                }
                out
            }
        }
    }

    /// The rows in the order `perm` (row `i` of the result is row `perm[i]`): block rows move
    /// as bytes, nothing is re-quantized.
    pub fn permute_rows(&self, perm: &[usize]) -> Self {
        assert_eq!(perm.len(), self.rows, "permute_rows: one index per row");
        let mut data = Vec::with_capacity(self.data.len());
        for &p in perm {
            data.extend_from_slice(&self.row(p));
        }
        Self { data: AlignedBytes::from_vec(data), layout: RowLayout::Rows, ..self.clone() }
    }

    /// Stack matrices of the same type and width on the row axis (q/k/v → qkv, gate/up →
    /// gate_up). `None` when types or widths differ.
    pub fn concat_rows(parts: &[&QuantMatrix]) -> Option<Self> {
        let first = parts.first()?;
        if parts.iter().any(|p| p.ty != first.ty || p.cols != first.cols) {
            return None;
        }
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
        for p in parts {
            data.extend_from_slice(&p.data);
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        if parts.iter().any(|p| p.layout != RowLayout::Rows) {
            return None;
        }
        Some(Self {
            ty: first.ty,
            rows,
            cols: first.cols,
            row_bytes: first.row_bytes,
            data: AlignedBytes::from_vec(data),
            act: first.act,
            layout: RowLayout::Rows,
            derived: DerivedCache::default(),
        })
    }
}

/// llama.cpp's `quantize_row_q8_0_ref`: `d = max|x| / 127`, `q = round(x / d)`.
fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let n = out.len();
    out.resize(n + 34, 0);
    quantize_q8_0_into(x, &mut out[n..]);
}

/// [`quantize_q8_0`] of 32 values into the 34 bytes of `out`.
#[inline(always)]
pub(crate) fn quantize_q8_0_into(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (o, v) in out[2..34].iter_mut().zip(x) {
        *o = (v * id).round() as i8 as u8;
    }
}

/// llama.cpp's `quantize_row_q4_0_ref`: `d = max / -8` (signed value of largest magnitude),
/// `q = min(15, trunc(x / d + 8.5))`.
fn quantize_q4_0(x: &[f32], out: &mut Vec<u8>) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    for j in 0..16 {
        let q0 = ((x[j] * id + 8.5) as i32).min(15) as u8;
        let q1 = ((x[j + 16] * id + 8.5) as i32).min(15) as u8;
        out.push(q0 | (q1 << 4));
    }
}

/// llama.cpp's `quantize_row_q4_1_ref`: `d = (max − min) / 15`, `q = round((x − min) / d)`.
fn quantize_q4_1(x: &[f32], out: &mut Vec<u8>) {
    let min = x.iter().cloned().fold(f32::INFINITY, f32::min);
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
    for j in 0..16 {
        let q0 = (((x[j] - min) * id + 0.5) as i32).min(15) as u8;
        let q1 = (((x[j + 16] - min) * id + 0.5) as i32).min(15) as u8;
        out.push(q0 | (q1 << 4));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_round_trips_within_half_a_step() {
        let w: Vec<f32> = (0..64 * 3).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::F16, GgmlType::F32] {
            let q = QuantMatrix::quantize(ty, 3, 64, &w).unwrap();
            let back = q.dequantize();
            assert_eq!(back.len(), w.len(), "{ty:?}: dequantized length");
            for (blk_w, blk_b) in w.chunks(32).zip(back.chunks(32)) {
                let amax = blk_w.iter().fold(0f32, |m, v| m.max(v.abs()));
                let step = match ty {
                    GgmlType::Q8_0 => amax / 127.0,
                    GgmlType::Q4_0 => amax / 8.0,
                    GgmlType::Q4_1 => 2.0 * amax / 15.0 + 2e-3,
                    _ => amax * 1e-3,
                };
                for (a, b) in blk_w.iter().zip(blk_b) {
                    // Q4_0 codes -8..7: the value opposite the largest one may clip by a whole step
                    let k = if ty == GgmlType::Q4_0 { 1.0 } else { 0.5 };
                    assert!((a - b).abs() <= step * k + amax * 4e-3 + 1e-3, "{ty:?}: {a} vs {b} (step {step})");
                }
            }
        }
    }

    #[test]
    fn permute_and_concat_move_rows() {
        let w: Vec<f32> = (0..4 * 32).map(|i| i as f32).collect();
        let q = QuantMatrix::quantize(GgmlType::F32, 4, 32, &w).unwrap();
        let p = q.permute_rows(&[2, 0, 3, 1]).dequantize();
        assert_eq!(&p[..32], &w[64..96]);
        assert_eq!(&p[32..64], &w[..32]);
        let c = QuantMatrix::concat_rows(&[&q, &q]).unwrap();
        let q8 =
            QuantMatrix::quantize(GgmlType::Q4_1, 16, 64, &(0..16 * 64).map(|i| (i % 23) as f32).collect::<Vec<_>>())
                .unwrap();
        let il = q8.clone().interleave8();
        assert_eq!(il.layout(), RowLayout::Interleaved8);
        assert_eq!(il.dequantize(), q8.dequantize());
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let m = QuantMatrix::quantize(
                ty,
                16,
                64,
                &(0..16 * 64).map(|i| ((i * 7) % 31) as f32 - 15.0).collect::<Vec<_>>(),
            )
            .unwrap();
            let mut fast = vec![0f32; 5 * 64];
            m.clone().interleave8().dequantize_rows(9, &mut fast);
            assert_eq!(fast, m.dequantize()[9 * 64..14 * 64].to_vec(), "{ty:?}");
        }
        for r in 0..16 {
            assert_eq!(il.row(r), q8.row(r));
        }
        assert_eq!(c.rows(), 8);
        assert_eq!(&c.dequantize()[128..], &w[..]);
        let other = QuantMatrix::quantize(GgmlType::F16, 4, 32, &w).unwrap();
        assert!(QuantMatrix::concat_rows(&[&q, &other]).is_none());
    }
}
