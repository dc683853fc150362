//! Integer GEMM over block weights with int16 activations, for products of many activation rows
//! (prefill, batched decode beyond the group kernels, speculative verification).
//!
//! Each call unpacks the weights panel by panel — [`NR`] output rows at a time — into int16
//! pairs with one f32 scale per 32 values (two for Q6_K, whose scales cover 16) and an f32
//! offset, so every value is exactly the file's `scale · q + offset` (the K-quants' sub-scales
//! folded into f32, exact). Activations are int16 per block of 32 ([`Q16Act`]: within float noise
//! of f32, the offset terms with exact f32 sums), so a block's products are exact in int32:
//! `vpdpwssd` (AVX-512 VNNI) multiplies a pair of k for 16 output rows at once, lanes never need a
//! horizontal sum, and one int→float conversion and multiply-add per block and row folds in the
//! scales. The panel (≤ 70 KB for k = 2048) stays in L2 while every activation row passes it:
//! twice the multiply-adds per instruction of the f32 GEMM it replaces, which dequantized tiles to
//! f32 on every call as well.
//!
//! Where AVX-512 VNNI is missing, AVX2's `pmaddwd` kernel (`x86::panel_product_avx2`: 16
//! multiply-adds per instruction and an add, as many per cycle as f32 FMA but without
//! dequantizing every call) serves row-major matrices with int16 activations at batched-decode
//! sizes (`cpu::avx2_int16_gemm`); longer prompts keep the dequantized-tile f32 GEMM there.
//! [`gemm_at`] with the portable level runs the same arithmetic in plain Rust (the tests'
//! reference).
use half::f16;
use rayon::prelude::*;

use super::act::{Q16Act, Q16View, Q8Act};
use super::dot::Level;
use super::quant::{QuantMatrix, RowLayout};
use crate::ggml::{scale_min_k4, GgmlType};

/// Output rows per panel (one 512-bit vector of int32 / f32 lanes).
pub const NR: usize = 16;

/// Whether the block type has an unpacker (the native block types but f16/f32).
pub fn supported(ty: GgmlType) -> bool {
    use GgmlType as G;
    matches!(ty, G::Q4_0 | G::Q4_1 | G::Q5_0 | G::Q5_1 | G::Q8_0 | G::Q4K | G::Q5K | G::Q6K)
}

/// Whether [`gemm`] has its SIMD kernel on this level (AVX-512 VNNI).
pub fn fast_on(level: Level) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        level == Level::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = level;
        false
    }
}

/// The fewest activation rows for which [`gemm`] beats the row kernels on row-major matrices:
/// unpacking a panel costs about one row kernel's pass over it, so the int16 row kernels of
/// Q5_0, Q4_K, Q6_K (and the int8 ones of Q4_0, Q4_1, Q8_0) keep up to 4 rows; types with only
/// f32 row kernels (Q5_1, Q5_K) take the GEMM from 2 (measured on a Xeon, Sapphire Rapids, 2
/// threads, Gemma 3 270M shapes).
pub fn min_rows(ty: GgmlType) -> usize {
    use GgmlType as G;
    match ty {
        G::Q5_0 | G::Q4K | G::Q6K | G::Q4_0 | G::Q4_1 | G::Q8_0 => 5,
        _ => 2,
    }
}

/// Two scales per 32 values (Q6_K's cover 16).
fn split_scales(ty: GgmlType) -> bool {
    ty == GgmlType::Q6K
}

/// An offset per 32 values (`scale · q + offset`).
fn has_offsets(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K)
}

/// [`NR`] weight rows unpacked: `q[(b · 16 + p) · NR + c]` holds values `2p, 2p + 1` of block
/// `b` of row `c` as two i16 (low half first); `scale[(b · 2 + h) · NR + c]` the scale of half
/// `h` (values `16h..16h + 16`); `offset[b · NR + c]`. Rows past the matrix are zero.
///
/// For int8 activations (`quads`) `q[(b · 8 + p) · NR + c]` holds values `4p..4p + 4` as bytes
/// `q + 128` (unsigned, for `vpdpbusd`; the kernel subtracts `128 · Σx`).
pub struct Panel {
    q: Vec<i32>,
    scale: Vec<f32>,
    offset: Vec<f32>,
    quads: bool,
}

impl Panel {
    fn new(nb: usize, quads: bool) -> Self {
        let words = if quads { nb * 8 * NR } else { nb * 16 * NR };
        Self { q: vec![0; words], scale: vec![0.0; nb * 2 * NR], offset: vec![0.0; nb * NR], quads }
    }

    /// Unpack rows `r0..r0 + NR` of `w` (fewer at the end, the rest zero): each row into
    /// `rows` (`[NR, k]` bytes, contiguous writes), then block by block transposed into pairs.
    fn fill(&mut self, level: Level, w: &QuantMatrix, r0: usize, rows_buf: &mut Vec<i8>) {
        let (nb, k) = (w.cols() / 32, w.cols());
        let rows = NR.min(w.rows() - r0);
        rows_buf.resize(NR * k, 0);
        if rows < NR {
            rows_buf.fill(0);
            self.scale.fill(0.0);
            self.offset.fill(0.0);
        }
        let (be, bb) = w.ty().block();
        let interleaved = w.layout() == RowLayout::Interleaved8;
        let mut native = [0u8; 34];
        for c in 0..rows {
            let rq = &mut rows_buf[c * k..(c + 1) * k];
            let (scale, offset) = (&mut self.scale, &mut self.offset);
            let mut put_scale = |b: usize, s: [f32; 2], o: f32| {
                scale[2 * b * NR + c] = s[0];
                scale[(2 * b + 1) * NR + c] = s[1];
                offset[b * NR + c] = o;
            };
            let mut put = |b: usize, s: [f32; 2], o: f32, q: &[i8; 32]| {
                rq[b * 32..b * 32 + 32].copy_from_slice(q);
                put_scale(b, s, o);
            };
            if interleaved {
                for b in 0..nb {
                    w.interleaved_block_into(r0 + c, b, &mut native[..bb]);
                    unpack(w.ty(), &native[..bb], &mut |j, s, o, q| put(b + j, s, o, q));
                }
            } else {
                let row = &w.data()[(r0 + c) * w.row_bytes()..(r0 + c + 1) * w.row_bytes()];
                #[cfg(target_arch = "x86_64")]
                if level == Level::Avx512 && x86::has_row_unpack(w.ty()) {
                    // SAFETY: the level was detected from this CPU's features; `row` holds the
                    // row's blocks, `rq` its k values.
                    unsafe { x86::unpack_row(w.ty(), row, rq, &mut |b, s, o| put_scale(b, s, o)) };
                    continue;
                }
                for (nbk, blk) in row.chunks_exact(bb).enumerate() {
                    let first = nbk * be / 32;
                    unpack(w.ty(), blk, &mut |j, s, o, q| put(first + j, s, o, q));
                }
            }
        }
        if self.quads {
            transpose_quads(level, rows_buf, k, nb, &mut self.q);
        } else {
            transpose_pairs(level, rows_buf, k, nb, &mut self.q);
        }
    }
}

/// Batched products of a row-major matrix after which [`gemm`] keeps its unpacked panels: one
/// long prompt's prefill (one call) or two never pay the memory; a server's or the eval's batched
/// decode (a call per step) pays it once instead of unpacking every panel on every step.
pub const KEEP_PANELS_AFTER: usize = 2;

/// The panels of a row-major matrix unpacked once ([`kept_panels`]): per panel and block 512
/// bytes of values — int8 pairs `[c0 v0, c0 v1, c1 v0, …]` (sign-extended to the int16 pairs of
/// [`Panel`] by one `vpmovsxbw`) or [`Panel`]'s biased quads as they are — then the scales and
/// offsets of [`Panel`]. 1.375 bytes per weight beside the file's blocks (Q5_0: 0.69, Q4_K: 0.56).
pub struct PackedPanels {
    quads: bool,
    nb: usize,
    q: Vec<u8>,
    scale: Vec<f32>,
    offset: Vec<f32>,
}

impl PackedPanels {
    fn build(level: Level, w: &QuantMatrix, quads: bool) -> Self {
        let (n, nb) = (w.rows(), w.cols() / 32);
        let panels = n.div_ceil(NR);
        let (mut q, mut scale, mut offset) =
            (vec![0u8; panels * nb * 512], vec![0f32; panels * nb * 2 * NR], vec![0f32; panels * nb * NR]);
        q.par_chunks_exact_mut(nb * 512)
            .zip(scale.par_chunks_exact_mut(nb * 2 * NR))
            .zip(offset.par_chunks_exact_mut(nb * NR))
            .enumerate()
            .for_each_init(
                || (Panel::new(nb, quads), Vec::new()),
                |(panel, rows), (pi, ((q, scale), offset))| {
                    panel.fill(level, w, pi * NR, rows);
                    if quads {
                        for (d, word) in q.chunks_exact_mut(4).zip(&panel.q) {
                            d.copy_from_slice(&word.to_le_bytes());
                        }
                    } else {
                        // each word holds two i16 values of i8 range (every block type's
                        // unpacked values are -128..=127): their low bytes
                        for (d, word) in q.chunks_exact_mut(2).zip(&panel.q) {
                            d.copy_from_slice(&[*word as u8, (*word >> 16) as u8]);
                        }
                    }
                    scale.copy_from_slice(&panel.scale);
                    offset.copy_from_slice(&panel.offset);
                },
            );
        Self { quads, nb, q, scale, offset }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.q.len() + 4 * (self.scale.len() + self.offset.len())
    }

    fn panel(&self, pi: usize) -> PanelRef {
        let nb = self.nb;
        // SAFETY: in bounds: `build` sized every part for all panels.
        unsafe {
            PanelRef {
                q: self.q.as_ptr().add(pi * nb * 512),
                scale: self.scale.as_ptr().add(pi * nb * 2 * NR),
                offset: self.offset.as_ptr().add(pi * nb * NR),
                narrow: !self.quads,
            }
        }
    }
}

/// The kept panels of `w` (in its [`QuantMatrix::derived`] slot), made now if this is its
/// [`KEEP_PANELS_AFTER`]`+1`-th batched product; `None` before.
fn kept_panels(level: Level, w: &QuantMatrix, quads: bool) -> Option<&PackedPanels> {
    w.derived().get_or_make(KEEP_PANELS_AFTER, || PackedPanels::build(level, w, quads)).filter(|p| p.quads == quads)
}

/// Bytes of `w`'s kept panels (0 before they are made).
pub fn kept_bytes(w: &QuantMatrix) -> usize {
    w.derived().get::<PackedPanels>().map_or(0, PackedPanels::bytes)
}

/// One panel's parts as the kernels read them: [`Panel`]'s (int16 pairs or quads as i32
/// words) or a [`PackedPanels`] panel's (`narrow`: int8 pairs).
#[derive(Clone, Copy)]
struct PanelRef {
    q: *const u8,
    scale: *const f32,
    offset: *const f32,
    narrow: bool,
}

impl PanelRef {
    /// Pair word `idx` of an int16 panel as its two values.
    ///
    /// # Safety
    /// `idx` is within the panel.
    unsafe fn pair(&self, idx: usize) -> (i32, i32) {
        if self.narrow {
            (*self.q.add(2 * idx) as i8 as i32, *self.q.add(2 * idx + 1) as i8 as i32)
        } else {
            let pair = (self.q as *const i32).add(idx).read_unaligned();
            (pair as i16 as i32, (pair >> 16) as i16 as i32)
        }
    }
}

impl Panel {
    fn as_ref(&self) -> PanelRef {
        PanelRef {
            q: self.q.as_ptr() as *const u8,
            scale: self.scale.as_ptr(),
            offset: self.offset.as_ptr(),
            narrow: false,
        }
    }
}

/// `q[(b · 16 + p) · NR + c]` = values `2p, 2p + 1` of block `b` of row `c` of `rows` as two i16.
fn transpose_pairs(level: Level, rows: &[i8], k: usize, nb: usize, q: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        // SAFETY: the level was detected from this CPU's features; lengths as asserted.
        assert!(rows.len() >= NR * k && q.len() >= nb * 16 * NR);
        return unsafe { x86::transpose_pairs(rows, k, nb, q) };
    }
    let _ = level;
    for b in 0..nb {
        for p in 0..16 {
            for c in 0..NR {
                let lo = rows[c * k + b * 32 + 2 * p] as i16 as u16 as u32;
                let hi = rows[c * k + b * 32 + 2 * p + 1] as i16 as u16 as u32;
                q[(b * 16 + p) * NR + c] = (lo | hi << 16) as i32;
            }
        }
    }
}

/// `q[(b · 8 + p) · NR + c]` = values `4p..4p + 4` of block `b` of row `c` as bytes `v + 128`.
fn transpose_quads(level: Level, rows: &[i8], k: usize, nb: usize, q: &mut [i32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        // SAFETY: the level was detected from this CPU's features; lengths as asserted.
        assert!(rows.len() >= NR * k && q.len() >= nb * 8 * NR);
        done = unsafe { x86::transpose_quads(rows, k, nb, q) };
    }
    let _ = level;
    for b in done..nb {
        for p in 0..8 {
            for c in 0..NR {
                let at = c * k + b * 32 + 4 * p;
                let v: [u8; 4] = std::array::from_fn(|j| (rows[at + j] as u8) ^ 0x80);
                q[(b * 8 + p) * NR + c] = i32::from_le_bytes(v);
            }
        }
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Byte `i` of entry `v` is `0x10` where bit `i` of `v` is set: a Q5 block's fifth bits, eight
/// values at a time.
const HIGH_BITS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut v = 0;
    while v < 256 {
        let mut i = 0;
        while i < 8 {
            if v >> i & 1 == 1 {
                t[v] |= 0x10 << (8 * i);
            }
            i += 1;
        }
        v += 1;
    }
    t
};

/// The 32-value blocks of one file block (one, or eight for the 256-value K-quants), each as
/// `put(j, [scale of values 0–15, of 16–31], offset, q)` with value `i` = `scale[i / 16] · q[i] +
/// offset`, exactly the reference dequantization's values (scales: the file's f16 times the
/// small integer sub-scale, exact in f32).
pub fn unpack(ty: GgmlType, b: &[u8], put: &mut impl FnMut(usize, [f32; 2], f32, &[i8; 32])) {
    let mut q = [0i8; 32];
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (d, m, bias, qs) = match ty {
                GgmlType::Q4_0 => (f16_at(b, 0), 0.0, 8, &b[2..18]),
                _ => (f16_at(b, 0), f16_at(b, 2), 0, &b[4..20]),
            };
            for j in 0..16 {
                q[j] = (qs[j] & 15) as i8 - bias;
                q[j + 16] = (qs[j] >> 4) as i8 - bias;
            }
            put(0, [d, d], m, &q);
        }
        GgmlType::Q8_0 => {
            for j in 0..32 {
                q[j] = b[2 + j] as i8;
            }
            let d = f16_at(b, 0);
            put(0, [d, d], 0.0, &q);
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let (d, m, bias, at) = match ty {
                GgmlType::Q5_0 => (f16_at(b, 0), 0.0, 16u8, 2),
                _ => (f16_at(b, 0), f16_at(b, 2), 0u8, 4),
            };
            // bit j of qh is the fifth bit of value j: spread 8 bits at a time to bytes
            let mut high = [0u8; 32];
            for (i, chunk) in high.chunks_exact_mut(8).enumerate() {
                chunk.copy_from_slice(&HIGH_BITS[b[at + i] as usize].to_le_bytes());
            }
            let qs = &b[at + 4..at + 20];
            for j in 0..16 {
                q[j] = ((qs[j] & 15) | high[j]).wrapping_sub(bias) as i8;
                q[j + 16] = ((qs[j] >> 4) | high[j + 16]).wrapping_sub(bias) as i8;
            }
            put(0, [d, d], m, &q);
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            let (qh, qs) = match ty {
                GgmlType::Q4K => (None, &b[16..144]),
                _ => (Some(&b[16..48]), &b[48..176]),
            };
            for k in 0..8 {
                let (sc, mn) = scale_min_k4(k, scales);
                let chunk = &qs[k / 2 * 32..k / 2 * 32 + 32];
                let shift = 4 * (k % 2);
                match qh {
                    None => {
                        for l in 0..32 {
                            q[l] = ((chunk[l] >> shift) & 15) as i8;
                        }
                    }
                    Some(h) => {
                        for l in 0..32 {
                            q[l] = (((chunk[l] >> shift) & 15) | (((h[l] >> k) & 1) << 4)) as i8;
                        }
                    }
                }
                let s = d * sc as f32;
                put(k, [s, s], -(dmin * mn as f32), &q);
            }
        }
        GgmlType::Q6K => {
            let d = f16_at(b, 208);
            for k in 0..8 {
                let (n, g) = (k / 4, k % 4);
                let ql = &b[n * 64 + 32 * (g % 2)..n * 64 + 32 * (g % 2) + 32];
                let qh = &b[128 + n * 32..128 + n * 32 + 32];
                let sc = &b[192 + n * 8..192 + n * 8 + 8];
                let shift = 4 * (g / 2);
                for l in 0..32 {
                    let low = (ql[l] >> shift) & 15;
                    let high = (qh[l] >> (2 * g)) & 3;
                    q[l] = ((low | high << 4) as i32 - 32) as i8;
                }
                let scale = |i: usize| d * (sc[i] as i8) as f32;
                put(k, [scale(2 * g), scale(2 * g + 1)], 0.0, &q);
            }
        }
        other => unreachable!("no int16 unpacker for {other:?}"),
    }
}

struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `out[m, n] = x[m, k] · wᵀ` with int16 activations (the kernel of this CPU's level).
pub fn gemm(w: &QuantMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    gemm_at(super::dot::level(), w, x, m, out)
}

/// [`gemm`] on an explicit level: AVX-512 VNNI, AVX2 (int16 activations; int8 ones take the
/// portable arithmetic there), or the portable arithmetic otherwise. Int8
/// activations (the matrix's [`ActQuant::Int8`](super::quant::ActQuant)) as llama.cpp quantizes
/// them, int16 otherwise. A row-major matrix keeps its unpacked panels from its
/// [`KEEP_PANELS_AFTER`]`+1`-th call on (the same values: the same results bit for bit).
pub fn gemm_at(level: Level, w: &QuantMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    let keep = w.layout() == RowLayout::Rows;
    gemm_kept(level, w, x, m, out, keep)
}

/// [`gemm_at`], keeping the unpacked panels (see [`kept_panels`]) only where `keep`.
fn gemm_kept(level: Level, w: &QuantMatrix, x: &[f32], m: usize, out: &mut [f32], keep: bool) {
    let (n, k) = (w.rows(), w.cols());
    assert!(supported(w.ty()), "igemm: {:?} has no unpacker", w.ty());
    assert_eq!((x.len(), out.len()), (m * k, m * n), "igemm: operand lengths");
    let quads = w.int8_activations();
    let packed = if keep { kept_panels(level, w, quads) } else { None };
    if quads {
        let xq: Vec<Act8> = quantize_rows(x, k, m, Act8::new);
        run_panels(level, w, packed, out, true, &|level, p, nb, split, offs, dst, n, cols| unsafe {
            // SAFETY: forwarded from `run_panels`.
            panel_product_i8(level, p, nb, split, offs, &xq, dst, n, cols)
        });
    } else {
        let xq: Vec<Q16Act> = quantize_rows(x, k, m, Q16Act::new);
        let views: Vec<Q16View<'_>> = xq.iter().map(Q16Act::view).collect();
        run_panels(level, w, packed, out, false, &|level, p, nb, split, offs, dst, n, cols| unsafe {
            // SAFETY: forwarded from `run_panels`.
            panel_product(level, p, nb, split, offs, &views, dst, n, cols)
        });
    }
}

/// Each activation row quantized (in parallel for prefill-sized inputs).
fn quantize_rows<T: Send>(x: &[f32], k: usize, m: usize, f: fn(&[f32]) -> T) -> Vec<T> {
    if m >= 32 {
        x.par_chunks_exact(k).map(f).collect()
    } else {
        x.chunks_exact(k).map(f).collect()
    }
}

/// A panel's product with every activation row: `(level, panel, nb, split, offsets, dst, n,
/// cols)`, writing `dst[i · n + c]` for `c < cols`.
type PanelFn<'a> = dyn Fn(Level, PanelRef, usize, bool, bool, *mut f32, usize, usize) + Sync + 'a;

/// Run `product` on each panel of `w` in parallel: the kept panels, or each unpacked now.
fn run_panels(
    level: Level,
    w: &QuantMatrix,
    packed: Option<&PackedPanels>,
    out: &mut [f32],
    quads: bool,
    product: &PanelFn<'_>,
) {
    let (n, nb) = (w.rows(), w.cols() / 32);
    let (split, offs) = (split_scales(w.ty()), has_offsets(w.ty()));
    let dst = SendPtr(out.as_mut_ptr());
    let dst = &dst;
    // panel `pi` writes only columns r0..r0 + cols of `out` ([m, n], row-major); panels are
    // disjoint and `out` outlives the parallel loop.
    let run = |p: PanelRef, pi: usize| {
        let r0 = pi * NR;
        product(level, p, nb, split, offs, unsafe { dst.0.add(r0) }, n, NR.min(n - r0));
    };
    let panels = n.div_ceil(NR);
    match packed {
        Some(kept) => (0..panels).into_par_iter().for_each(|pi| run(kept.panel(pi), pi)),
        None => (0..panels).into_par_iter().for_each_init(
            || (Panel::new(nb, quads), Vec::new()),
            |(panel, rows), pi| {
                panel.fill(level, w, pi * NR, rows);
                run(panel.as_ref(), pi);
            },
        ),
    }
}

/// One activation row quantized to int8 per block of 32 (llama.cpp's Q8_1: `d`, `s = d · Σq`
/// for the offset terms, and `Σq`, whose `128 · Σq` undoes the unsigned weights' bias), with the
/// integer sums of each half block for Q6_K's half-block scales.
pub struct Act8 {
    q: Q8Act,
    half: Vec<i32>,
}

impl Act8 {
    fn new(x: &[f32]) -> Self {
        let q = Q8Act::new(x);
        let half = q.qs.chunks_exact(16).map(|c| c.iter().map(|&v| v as i32).sum()).collect();
        Self { q, half }
    }
}

/// All activation rows × one panel, written to `dst[i · n + c]` for `c < cols`.
///
/// # Safety
/// `dst` is valid for those writes; `p` points at a whole panel of `nb` blocks.
#[allow(clippy::too_many_arguments)]
unsafe fn panel_product(
    level: Level,
    p: PanelRef,
    nb: usize,
    split: bool,
    offs: bool,
    xs: &[Q16View<'_>],
    dst: *mut f32,
    n: usize,
    cols: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        return x86::panel_product(p, nb, split, offs, xs, dst, n, cols);
    }
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx2 {
        return x86::panel_product_avx2(p, nb, split, offs, xs, dst, n, cols);
    }
    let _ = level;
    for (i, x) in xs.iter().enumerate() {
        let mut acc = [0f32; NR];
        for b in 0..nb {
            for c in 0..NR {
                let mut sum = 0f32;
                for h in 0..2 {
                    let mut isum = 0i32;
                    for pp in 8 * h..8 * h + 8 {
                        let (w0, w1) = p.pair((b * 16 + pp) * NR + c);
                        isum += w0 * x.qs[b * 32 + 2 * pp] as i32 + w1 * x.qs[b * 32 + 2 * pp + 1] as i32;
                    }
                    sum += isum as f32 * (*p.scale.add((2 * b + h) * NR + c) * x.d[b]);
                }
                acc[c] += sum + *p.offset.add(b * NR + c) * x.xsum[b];
            }
        }
        for (c, v) in acc.iter().enumerate().take(cols) {
            *dst.add(i * n + c) = *v;
        }
    }
}

/// [`panel_product`] with int8 activations.
///
/// # Safety
/// `dst` is valid for the writes; `p` points at a whole panel of `nb` blocks.
#[allow(clippy::too_many_arguments)]
unsafe fn panel_product_i8(
    level: Level,
    p: PanelRef,
    nb: usize,
    split: bool,
    offs: bool,
    xs: &[Act8],
    dst: *mut f32,
    n: usize,
    cols: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        return x86::panel_product_i8(p, nb, split, offs, xs, dst, n, cols);
    }
    let _ = (level, split);
    for (i, x) in xs.iter().enumerate() {
        let mut acc = [0f32; NR];
        for b in 0..nb {
            for c in 0..NR {
                let mut sum = 0f32;
                for h in 0..2 {
                    let mut isum = 0i32;
                    for qd in 4 * h..4 * h + 4 {
                        let w = p.q.add(4 * ((b * 8 + qd) * NR + c));
                        for j in 0..4 {
                            isum += *w.add(j) as i32 * x.q.qs[b * 32 + 4 * qd + j] as i32;
                        }
                    }
                    isum -= 128 * x.half[2 * b + h];
                    sum += isum as f32 * (*p.scale.add((2 * b + h) * NR + c) * x.q.d[b]);
                }
                acc[c] += sum + if offs { *p.offset.add(b * NR + c) * x.q.s[b] } else { 0.0 };
            }
        }
        for (c, v) in acc.iter().enumerate().take(cols) {
            *dst.add(i * n + c) = *v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::ggml::{scale_min_k4, GgmlType};

    /// Whether [`unpack_row`] has a SIMD unpacker for `ty` (the row-major types of K-quant files).
    pub fn has_row_unpack(ty: GgmlType) -> bool {
        matches!(ty, GgmlType::Q5_0 | GgmlType::Q4K | GgmlType::Q6K)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    unsafe fn f16_at(p: *const u8) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128((p as *const u16).read_unaligned() as i32)))
    }

    /// [`super::unpack`] of a whole row-major row, 32 values per register: the values into
    /// `rq` (`k` bytes), each 32-value block's scales and offset through `put(b, s, o)` (the
    /// same exact values as the scalar unpacker; tested against it).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
    pub unsafe fn unpack_row(ty: GgmlType, row: &[u8], rq: &mut [i8], put: &mut impl FnMut(usize, [f32; 2], f32)) {
        let out = rq.as_mut_ptr() as *mut __m256i;
        let m4 = _mm256_set1_epi8(0x0F);
        let (_, bb) = ty.block();
        match ty {
            GgmlType::Q5_0 => {
                for (b, blk) in row.chunks_exact(bb).enumerate() {
                    let p = blk.as_ptr();
                    let qh = (p.add(2) as *const u32).read_unaligned();
                    let qs = _mm_loadu_si128(p.add(6) as *const __m128i);
                    let v = _mm256_set_m128i(_mm_srli_epi16(qs, 4), qs);
                    let v = _mm256_or_si256(_mm256_and_si256(v, m4), _mm256_maskz_set1_epi8(qh, 0x10));
                    _mm256_storeu_si256(out.add(b), _mm256_sub_epi8(v, _mm256_set1_epi8(16)));
                    let d = f16_at(p);
                    put(b, [d, d], 0.0);
                }
            }
            GgmlType::Q4K => {
                for (sb, blk) in row.chunks_exact(bb).enumerate() {
                    let p = blk.as_ptr();
                    let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
                    let scales = &blk[4..16];
                    for n in 0..4 {
                        let v = _mm256_loadu_si256(p.add(16 + 32 * n) as *const __m256i);
                        _mm256_storeu_si256(out.add(sb * 8 + 2 * n), _mm256_and_si256(v, m4));
                        _mm256_storeu_si256(out.add(sb * 8 + 2 * n + 1), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
                    }
                    for k in 0..8 {
                        let (sc, mn) = scale_min_k4(k, scales);
                        let s = d * sc as f32;
                        put(sb * 8 + k, [s, s], -(dmin * mn as f32));
                    }
                }
            }
            GgmlType::Q6K => {
                let m2 = _mm256_set1_epi8(3);
                for (sb, blk) in row.chunks_exact(bb).enumerate() {
                    let p = blk.as_ptr();
                    let d = f16_at(p.add(208));
                    for k in 0..8 {
                        let (n, g) = (k / 4, k % 4);
                        let ql = _mm256_loadu_si256(p.add(n * 64 + 32 * (g % 2)) as *const __m256i);
                        let qh = _mm256_loadu_si256(p.add(128 + n * 32) as *const __m256i);
                        let low = _mm256_and_si256(_mm256_srl_epi16(ql, _mm_cvtsi32_si128(4 * (g / 2) as i32)), m4);
                        let high = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g as i32)), m2);
                        let v = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
                        _mm256_storeu_si256(out.add(sb * 8 + k), _mm256_sub_epi8(v, _mm256_set1_epi8(32)));
                        let sc = p.add(192 + n * 8);
                        let scale = |i: usize| d * (*sc.add(i) as i8) as f32;
                        put(sb * 8 + k, [scale(2 * g), scale(2 * g + 1)], 0.0);
                    }
                }
            }
            other => unreachable!("no SIMD row unpacker for {other:?}"),
        }
    }

    use super::Act8;

    use super::{PanelRef, Q16View, NR};

    /// Activation rows in tiles of the listed sizes (the largest that fits each time; the list ends
    /// with 1), each through `$tile::<[pre,] M, SPLIT, OFFS>`.
    macro_rules! tiles {
        // tile sizes from the largest down, ending with 1: each step takes the largest that fits
        ($tile:ident $pre:tt [$($size:literal),+], $p:expr, $nb:expr, $split:expr, $offs:expr, $xs:expr, $dst:expr, $n:expr, $cols:expr) => {{
            let (p, nb, xs, n, cols) = ($p, $nb, $xs, $n, $cols);
            let mut i = 0;
            while i < xs.len() {
                $(
                    if xs.len() - i >= $size {
                        let (d, x) = ($dst.add(i * n), &xs[i..i + $size]);
                        tiles!(@one $tile $pre $size, $split, $offs, p, nb, x, d, n, cols);
                        i += $size;
                        continue;
                    }
                )+
            }
        }};
        (@one $tile:ident [$($pre:tt)*] $size:literal, $split:expr, $offs:expr, $($arg:expr),+) => {
            match ($split, $offs) {
                (false, false) => $tile::<$($pre)* $size, false, false>($($arg),+),
                (false, true) => $tile::<$($pre)* $size, false, true>($($arg),+),
                (true, _) => $tile::<$($pre)* $size, true, false>($($arg),+),
            }
        };
    }

    /// 16 × 16 transpose of 32-bit lanes: `r[c]` holds row `c`; afterwards `r[j]` holds element
    /// `PAIR_OF[j]` of every row (pairs within rows, then quads, then 128-bit lanes).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
    unsafe fn transpose16(r: &mut [__m512i; 16]) {
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        for i in 0..4 {
            for j in 0..2 {
                r[4 * i + j] = _mm512_unpacklo_epi64(t[4 * i + j], t[4 * i + 2 + j]);
                r[4 * i + 2 + j] = _mm512_unpackhi_epi64(t[4 * i + j], t[4 * i + 2 + j]);
            }
        }
        for i in 0..2 {
            for s in 0..4 {
                t[8 * i + s] = _mm512_shuffle_i32x4::<0x88>(r[8 * i + s], r[8 * i + 4 + s]);
                t[8 * i + 4 + s] = _mm512_shuffle_i32x4::<0xDD>(r[8 * i + s], r[8 * i + 4 + s]);
            }
        }
        for s in 0..8 {
            let (a, c) = (t[s], t[8 + s]);
            r[s] = _mm512_shuffle_i32x4::<0x88>(a, c);
            r[8 + s] = _mm512_shuffle_i32x4::<0xDD>(a, c);
        }
    }

    /// [`super::transpose_pairs`]: per block, 16 rows of 32 bytes widened to 16 pairs of i16,
    /// transposed.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn transpose_pairs(rows: &[i8], k: usize, nb: usize, q: &mut [i32]) {
        let src = rows.as_ptr();
        let dst = q.as_mut_ptr();
        for b in 0..nb {
            let mut r: [__m512i; 16] = std::array::from_fn(|c| {
                _mm512_cvtepi8_epi16(_mm256_loadu_si256(src.add(c * k + b * 32) as *const __m256i))
            });
            transpose16(&mut r);
            for (j, v) in r.iter().enumerate() {
                _mm512_storeu_si512(dst.add((b * 16 + PAIR_OF[j]) * NR) as *mut __m512i, *v);
            }
        }
    }

    /// [`super::transpose_quads`] two blocks at a time (16 quads of 16 rows), biased to
    /// unsigned; returns the blocks done (an odd last one is left to the caller).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn transpose_quads(rows: &[i8], k: usize, nb: usize, q: &mut [i32]) -> usize {
        let src = rows.as_ptr();
        let dst = q.as_mut_ptr();
        let bias = _mm512_set1_epi8(-128);
        let mut b = 0;
        while b + 2 <= nb {
            let mut r: [__m512i; 16] = std::array::from_fn(|c| {
                _mm512_xor_si512(_mm512_loadu_si512(src.add(c * k + b * 32) as *const __m512i), bias)
            });
            transpose16(&mut r);
            for (j, v) in r.iter().enumerate() {
                _mm512_storeu_si512(dst.add((b * 8 + PAIR_OF[j]) * NR) as *mut __m512i, *v);
            }
            b += 2;
        }
        b
    }

    /// Which pair each transposed vector holds: after the 64-bit unpacks, vector `4i + s` holds
    /// pair `4l + [0, 2, 1, 3][s]` in 128-bit lane `l`; the lane shuffles then gather lane `l`.
    const PAIR_OF: [usize; 16] = [0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15];

    /// Rows in tiles of 8 (then 4, 2, 1): 8 int32 and 8 f32 accumulators of 16 output rows.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn panel_product(
        p: PanelRef,
        nb: usize,
        split: bool,
        offs: bool,
        xs: &[Q16View<'_>],
        dst: *mut f32,
        n: usize,
        cols: usize,
    ) {
        if p.narrow {
            tiles!(tile_rows [true,] [8, 4, 2, 1], p, nb, split, offs, xs, dst, n, cols);
        } else {
            tiles!(tile_rows [false,] [8, 4, 2, 1], p, nb, split, offs, xs, dst, n, cols);
        }
    }

    /// [`panel_product`] with int8 activations: `vpdpbusd` of 4 k at a time (unsigned weights
    /// `q + 128`, signed activations), `128 · Σx` subtracted per half block.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn panel_product_i8(
        p: PanelRef,
        nb: usize,
        split: bool,
        offs: bool,
        xs: &[Act8],
        dst: *mut f32,
        n: usize,
        cols: usize,
    ) {
        tiles!(tile_rows_i8 [] [8, 4, 2, 1], p, nb, split, offs, xs, dst, n, cols);
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
    unsafe fn tile_rows_i8<const M: usize, const SPLIT: bool, const OFFS: bool>(
        p: PanelRef,
        nb: usize,
        xs: &[Act8],
        dst: *mut f32,
        n: usize,
        cols: usize,
    ) {
        let mut facc = [_mm512_setzero_ps(); M];
        let wq = p.q as *const i32;
        let xq: [*const i8; M] = std::array::from_fn(|i| xs[i].q.qs.as_ptr());
        for b in 0..nb {
            let halves = if SPLIT { 2 } else { 1 };
            let per = 8 / halves;
            for h in 0..halves {
                let mut iacc = [_mm512_setzero_si512(); M];
                for qd in h * per..(h + 1) * per {
                    let w = _mm512_loadu_si512(wq.add((b * 8 + qd) * NR) as *const __m512i);
                    for i in 0..M {
                        let quad = (xq[i].add(b * 32 + 4 * qd) as *const i32).read_unaligned();
                        iacc[i] = _mm512_dpbusd_epi32(iacc[i], w, _mm512_set1_epi32(quad));
                    }
                }
                let s = _mm512_loadu_ps(p.scale.add((2 * b + h) * NR));
                for i in 0..M {
                    let x = &xs[i];
                    let bias = if SPLIT { *x.half.get_unchecked(2 * b + h) } else { *x.q.isum.get_unchecked(b) };
                    let v = _mm512_sub_epi32(iacc[i], _mm512_set1_epi32(128 * bias));
                    let sd = _mm512_mul_ps(s, _mm512_set1_ps(*x.q.d.get_unchecked(b)));
                    facc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), sd, facc[i]);
                }
            }
            if OFFS {
                let o = _mm512_loadu_ps(p.offset.add(b * NR));
                for i in 0..M {
                    facc[i] = _mm512_fmadd_ps(o, _mm512_set1_ps(*xs[i].q.s.get_unchecked(b)), facc[i]);
                }
            }
        }
        let mask: __mmask16 = if cols >= NR { 0xFFFF } else { (1u16 << cols) - 1 };
        for (i, acc) in facc.iter().enumerate() {
            _mm512_mask_storeu_ps(dst.add(i * n), mask, *acc);
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
    /// `NARROW`: the panel's pairs are int8 ([`super::PackedPanels`]), widened on load.
    unsafe fn tile_rows<const NARROW: bool, const M: usize, const SPLIT: bool, const OFFS: bool>(
        p: PanelRef,
        nb: usize,
        xs: &[Q16View<'_>],
        dst: *mut f32,
        n: usize,
        cols: usize,
    ) {
        let mut facc = [_mm512_setzero_ps(); M];
        let wq = p.q;
        let xq: [*const i16; M] = std::array::from_fn(|i| xs[i].qs.as_ptr());
        for b in 0..nb {
            let halves = if SPLIT { 2 } else { 1 };
            let per = 16 / halves;
            for h in 0..halves {
                let mut iacc = [_mm512_setzero_si512(); M];
                for pp in h * per..(h + 1) * per {
                    let w = if NARROW {
                        _mm512_cvtepi8_epi16(_mm256_loadu_si256(wq.add((b * 16 + pp) * NR * 2) as *const __m256i))
                    } else {
                        _mm512_loadu_si512((wq as *const i32).add((b * 16 + pp) * NR) as *const __m512i)
                    };
                    for i in 0..M {
                        let pair = (xq[i].add(b * 32 + 2 * pp) as *const i32).read_unaligned();
                        iacc[i] = _mm512_dpwssd_epi32(iacc[i], w, _mm512_set1_epi32(pair));
                    }
                }
                let s = _mm512_loadu_ps(p.scale.add((2 * b + h) * NR));
                for i in 0..M {
                    let sd = _mm512_mul_ps(s, _mm512_set1_ps(*xs[i].d.get_unchecked(b)));
                    facc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[i]), sd, facc[i]);
                }
            }
            if OFFS {
                let o = _mm512_loadu_ps(p.offset.add(b * NR));
                for i in 0..M {
                    facc[i] = _mm512_fmadd_ps(o, _mm512_set1_ps(*xs[i].xsum.get_unchecked(b)), facc[i]);
                }
            }
        }
        let mask: __mmask16 = if cols >= NR { 0xFFFF } else { (1u16 << cols) - 1 };
        for (i, acc) in facc.iter().enumerate() {
            _mm512_mask_storeu_ps(dst.add(i * n), mask, *acc);
        }
    }

    /// [`panel_product`] on AVX2 without VNNI (int16 activations): the panel's 16 output rows as
    /// two 256-bit halves, `pmaddwd` of a pair of k for 8 rows + an add per half, activation rows
    /// in tiles of 4 (then 3, 2, 1) — the same integer sums and f32 operations per block as the
    /// 512-bit kernel.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn panel_product_avx2(
        p: PanelRef,
        nb: usize,
        split: bool,
        offs: bool,
        xs: &[Q16View<'_>],
        dst: *mut f32,
        n: usize,
        cols: usize,
    ) {
        // AVX2's 16 registers: tiles of up to 4 activation rows
        if p.narrow {
            tiles!(tile_rows_avx2 [true,] [4, 3, 2, 1], p, nb, split, offs, xs, dst, n, cols);
        } else {
            tiles!(tile_rows_avx2 [false,] [4, 3, 2, 1], p, nb, split, offs, xs, dst, n, cols);
        }
    }

    /// `M` activation rows × one panel with 256-bit integer products (see [`panel_product_avx2`]);
    /// `NARROW`: the panel's pairs are int8 ([`super::PackedPanels`]), widened on load.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile_rows_avx2<const NARROW: bool, const M: usize, const SPLIT: bool, const OFFS: bool>(
        p: PanelRef,
        nb: usize,
        xs: &[Q16View<'_>],
        dst: *mut f32,
        n: usize,
        cols: usize,
    ) {
        let mut facc = [[_mm256_setzero_ps(); 2]; M];
        let wq = p.q;
        let xq: [*const i16; M] = std::array::from_fn(|i| xs[i].qs.as_ptr());
        for b in 0..nb {
            let halves = if SPLIT { 2 } else { 1 };
            let per = 16 / halves;
            for h in 0..halves {
                let mut iacc = [[_mm256_setzero_si256(); 2]; M];
                for pp in h * per..(h + 1) * per {
                    let (w0, w1) = if NARROW {
                        let v = _mm256_loadu_si256(wq.add((b * 16 + pp) * NR * 2) as *const __m256i);
                        (
                            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)),
                            _mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1)),
                        )
                    } else {
                        let at = (wq as *const i32).add((b * 16 + pp) * NR);
                        (_mm256_loadu_si256(at as *const __m256i), _mm256_loadu_si256(at.add(8) as *const __m256i))
                    };
                    for i in 0..M {
                        let pair = _mm256_set1_epi32((xq[i].add(b * 32 + 2 * pp) as *const i32).read_unaligned());
                        iacc[i][0] = _mm256_add_epi32(iacc[i][0], _mm256_madd_epi16(w0, pair));
                        iacc[i][1] = _mm256_add_epi32(iacc[i][1], _mm256_madd_epi16(w1, pair));
                    }
                }
                let sc = p.scale.add((2 * b + h) * NR);
                let s = [_mm256_loadu_ps(sc), _mm256_loadu_ps(sc.add(8))];
                for i in 0..M {
                    let dx = _mm256_set1_ps(*xs[i].d.get_unchecked(b));
                    for j in 0..2 {
                        let sd = _mm256_mul_ps(s[j], dx);
                        facc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[i][j]), sd, facc[i][j]);
                    }
                }
            }
            if OFFS {
                let oc = p.offset.add(b * NR);
                let o = [_mm256_loadu_ps(oc), _mm256_loadu_ps(oc.add(8))];
                for i in 0..M {
                    let xs_b = _mm256_set1_ps(*xs[i].xsum.get_unchecked(b));
                    for j in 0..2 {
                        facc[i][j] = _mm256_fmadd_ps(o[j], xs_b, facc[i][j]);
                    }
                }
            }
        }
        for (i, acc) in facc.iter().enumerate() {
            if cols >= NR {
                _mm256_storeu_ps(dst.add(i * n), acc[0]);
                _mm256_storeu_ps(dst.add(i * n + 8), acc[1]);
            } else {
                let mut lanes = [0f32; NR];
                _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
                for (c, v) in lanes.iter().enumerate().take(cols) {
                    *dst.add(i * n + c) = *v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::quant::ActQuant;
    use super::*;

    const TYPES: [GgmlType; 8] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];

    /// The SIMD row unpacker gives the scalar unpacker's values, scales and offsets.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_row_unpack_matches_scalar() {
        if super::super::dot::level() != Level::Avx512 {
            eprintln!("no AVX-512 VNNI here: the SIMD unpacker is not used, nothing to compare");
            return;
        }
        let mut checked = 0;
        for ty in TYPES.into_iter().filter(|t| x86::has_row_unpack(*t)) {
            let k = 512;
            let w = QuantMatrix::random_blocks(ty, 2, k, 11);
            for r in 0..2 {
                let row = &w.data()[r * w.row_bytes()..(r + 1) * w.row_bytes()];
                let (mut want_q, mut want_s) = (vec![0i8; k], vec![]);
                let (be, bb) = ty.block();
                for (nbk, blk) in row.chunks_exact(bb).enumerate() {
                    unpack(ty, blk, &mut |j, s, o, q| {
                        let b = nbk * be / 32 + j;
                        want_q[b * 32..b * 32 + 32].copy_from_slice(q);
                        want_s.push((b, s, o));
                    });
                }
                let (mut got_q, mut got_s) = (vec![0i8; k], vec![]);
                // SAFETY: AVX-512 checked above.
                unsafe { x86::unpack_row(ty, row, &mut got_q, &mut |b, s, o| got_s.push((b, s, o))) };
                assert_eq!(got_q, want_q, "{ty:?} row {r}: values");
                assert_eq!(got_s, want_s, "{ty:?} row {r}: scales and offsets");
                checked += 1;
            }
        }
        assert_eq!(checked, 6, "every type with a SIMD unpacker checked");
    }

    /// Unpacked blocks hold exactly the reference dequantization's values.
    #[test]
    fn unpacked_values_are_the_files() {
        for ty in TYPES {
            let w = QuantMatrix::random_blocks(ty, 3, 512, 9);
            let want = w.dequantize();
            let (be, bb) = ty.block();
            let mut got = Vec::new();
            for r in 0..3 {
                for native in w.row(r).chunks_exact(bb) {
                    let start = got.len();
                    got.resize(start + be, f32::NAN);
                    unpack(ty, native, &mut |j, s, o, q| {
                        for i in 0..32 {
                            got[start + 32 * j + i] = s[i / 16] * q[i] as f32 + o;
                        }
                    });
                }
            }
            assert_eq!(got.len(), want.len(), "{ty:?}");
            // Q4_0/Q5_0 as d·(q−k) (the reference rounds the same product); K-quants' scale·q −
            // dmin·m in one more rounding order than the reference's
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{ty:?} value {i}: {a} vs {b}");
            }
        }
    }

    fn reference(wd: &[f32], x: &[f32], m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
        let mut out = vec![0f32; m * n];
        let mut mag = vec![0f32; m * n];
        for i in 0..m {
            for r in 0..n {
                let (w, xr) = (&wd[r * k..(r + 1) * k], &x[i * k..(i + 1) * k]);
                out[i * n + r] = w.iter().zip(xr).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() as f32;
                mag[i * n + r] = w.iter().zip(xr).map(|(a, b)| (a * b).abs()).sum();
            }
        }
        (out, mag)
    }

    /// Every block type, both layouts of the interleavable ones, odd row counts (a partial
    /// panel), 1–33 activation rows (every tile size and remainder), on every level: within
    /// int16 activation noise of the f64 product of the dequantized weights.
    #[test]
    fn gemm_matches_the_dequantized_product_on_every_level() {
        let mut cases = 0;
        for ty in TYPES {
            let k = if ty.block().0 == 256 { 512 } else { 96 };
            for n in [37, 16] {
                let w = QuantMatrix::random_blocks(ty, n, k, 3 + n as u64);
                let wd = w.dequantize();
                let mut layouts = vec![w.clone()];
                if n % 8 == 0 && w.can_interleave8() {
                    layouts.push(w.clone().interleave8());
                }
                for m in [1, 2, 3, 5, 8, 9, 15, 16, 17, 33] {
                    let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 2003) as f32 / 1001.5 - 1.0) * 3.0).collect();
                    let (want, mag) = reference(&wd, &x, m, n, k);
                    for wl in &layouts {
                        for &level in &super::super::dot::available_levels() {
                            let mut got = vec![f32::NAN; m * n];
                            gemm_at(level, wl, &x, m, &mut got);
                            for (o, ((a, b), s)) in got.iter().zip(&want).zip(&mag).enumerate() {
                                assert!(
                                    (a - b).abs() <= 1e-4 * s + 1e-6,
                                    "{ty:?} {:?} n={n} m={m} {level:?} out {o}: {a} vs {b} (scale {s})",
                                    wl.layout()
                                );
                            }
                            cases += 1;
                        }
                    }
                    // int8 activations: every level within llama.cpp's int8 error of the exact
                    // product, and the levels within float rounding of each other
                    let w8 = w.clone().with_activations(ActQuant::Int8);
                    let mut first: Option<Vec<f32>> = None;
                    for &level in &super::super::dot::available_levels() {
                        let mut got = vec![f32::NAN; m * n];
                        gemm_at(level, &w8, &x, m, &mut got);
                        for (o, ((a, b), s)) in got.iter().zip(&want).zip(&mag).enumerate() {
                            assert!(
                                (a - b).abs() <= 0.02 * s + 1e-5,
                                "{ty:?} int8 n={n} m={m} {level:?} out {o}: {a} vs {b}"
                            );
                        }
                        match &first {
                            None => first = Some(got),
                            Some(f) => {
                                for (o, ((a, b), s)) in got.iter().zip(f).zip(&mag).enumerate() {
                                    assert!(
                                        (a - b).abs() <= 1e-5 * s + 1e-6,
                                        "{ty:?} int8 n={n} m={m} {level:?} out {o}: {a} vs {b}"
                                    );
                                }
                            }
                        }
                        cases += 1;
                    }
                }
            }
        }
        assert!(cases >= 8 * 2 * 10, "{cases} cases");
    }

    /// Kept panels give bit for bit the products of panels unpacked per call, on every level,
    /// type and activation kind, from the call that keeps them on; clones, other activations and
    /// interleaved matrices start (or stay) without.
    #[test]
    fn kept_panels_give_the_unpacked_results() {
        let mut cases = 0;
        for ty in TYPES {
            let k = if ty.block().0 == 256 { 512 } else { 96 };
            for n in [37, 16] {
                for act in [ActQuant::Int16, ActQuant::Int8] {
                    for &level in &super::super::dot::available_levels() {
                        let w = QuantMatrix::random_blocks(ty, n, k, 5 + n as u64).with_activations(act);
                        let ms = [1, 5, 17, 8];
                        let xs: Vec<Vec<f32>> = ms
                            .iter()
                            .map(|&m| (0..m * k).map(|i| ((i * 7919 % 2003) as f32 / 1001.5 - 1.0) * 2.0).collect())
                            .collect();
                        let want: Vec<Vec<f32>> = ms
                            .iter()
                            .zip(&xs)
                            .map(|(&m, x)| {
                                let mut out = vec![f32::NAN; m * n];
                                gemm_kept(level, &w, x, m, &mut out, false);
                                out
                            })
                            .collect();
                        assert_eq!(kept_bytes(&w), 0, "not kept without `keep`");
                        for round in 0..KEEP_PANELS_AFTER + 2 {
                            for ((&m, x), want) in ms.iter().zip(&xs).zip(&want) {
                                let mut got = vec![f32::NAN; m * n];
                                gemm_at(level, &w, x, m, &mut got);
                                let (got, want): (Vec<u32>, Vec<u32>) = (
                                    got.iter().map(|v| v.to_bits()).collect(),
                                    want.iter().map(|v| v.to_bits()).collect(),
                                );
                                assert_eq!(got, want, "{ty:?} {act:?} {level:?} n={n} m={m} round {round}");
                                cases += 1;
                            }
                        }
                        // a byte per weight (int8 pairs or biased quads) and the f32 scales
                        let bytes = kept_bytes(&w);
                        assert!(bytes > n * k, "{ty:?} {act:?}: kept {bytes} bytes");
                        assert_eq!(kept_bytes(&w.clone()), 0, "a clone starts empty");
                        let other = if act == ActQuant::Int8 { ActQuant::Int16 } else { ActQuant::Int8 };
                        assert_eq!(kept_bytes(&w.with_activations(other)), 0, "new activations, no panels");
                    }
                }
            }
        }
        assert!(cases >= 8 * 2 * 2 * 4 * (KEEP_PANELS_AFTER + 2), "{cases} cases");
        // interleaved matrices are read as they are: nothing kept
        let w = QuantMatrix::random_blocks(GgmlType::Q4_0, 16, 64, 1).interleave8();
        assert_eq!(w.layout(), RowLayout::Interleaved8);
        let x = vec![0.5f32; 5 * 64];
        for _ in 0..KEEP_PANELS_AFTER + 2 {
            gemm(&w, &x, 5, &mut vec![0.0; 5 * 16]);
        }
        assert_eq!(kept_bytes(&w), 0, "interleaved: no panels kept");
    }

    /// The SIMD transpose puts every pair where the portable one does.
    #[test]
    fn transposes_agree() {
        let (k, nb) = (64, 2);
        let rows: Vec<i8> = (0..NR * k).map(|i| (i * 37 % 255) as i8).collect();
        let mut want = vec![0i32; nb * 16 * NR];
        transpose_pairs(Level::Portable, &rows, k, nb, &mut want);
        assert!(want.iter().any(|&v| v != 0));
        for level in super::super::dot::available_levels() {
            let mut got = vec![0i32; nb * 16 * NR];
            transpose_pairs(level, &rows, k, nb, &mut got);
            assert_eq!(got, want, "{level:?}");
        }
        // quads: an odd block count leaves the last block to the portable loop
        for nb in [2, 3] {
            let k = nb * 32;
            let rows: Vec<i8> = (0..NR * k).map(|i| (i * 53 % 251) as i8).collect();
            let mut want = vec![0i32; nb * 8 * NR];
            transpose_quads(Level::Portable, &rows, k, nb, &mut want);
            for level in super::super::dot::available_levels() {
                let mut got = vec![0i32; nb * 8 * NR];
                transpose_quads(level, &rows, k, nb, &mut got);
                assert_eq!(got, want, "quads nb={nb} {level:?}");
            }
        }
    }
}
