//! The KV cache's host rows ([`CacheType`]: f32, f16, q8_0) and the attention that reads them.
//!
//! Decode and short multi-token steps (speculative verification) stream the cache once per step:
//! one task per (batch row, K/V head, span of keys) reads each key and value row once for every
//! query head of its group and every new query, with the scores, an online softmax and the
//! value sum fused over tiles of keys (flash-decoding); the spans' partial results are then
//! combined. Both threads work even at batch 1 with one K/V head (Gemma 3 270M). Prefill-sized
//! steps take the two-GEMM path ([`attend_gemm`], on an f32 copy of the visible rows when the
//! cache is f16 or q8_0).
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::cpu::SendPtr;
use super::dot::{level, Isa, Q8_BLOCK};
use super::quant::quantize_q8_0_into;
use crate::kv_cache::CacheType;

/// Keys or values of a cache buffer `[b, kv, cap, d]` as stored (q8_0: blocks of 32 values, a
/// little-endian f16 scale then 32 signed bytes).
pub use super::dot::KvTile as KvRows;

/// A cache buffer `[b, kv, cap, d]` to write rows into.
pub enum KvRowsMut<'a> {
    F32(&'a mut [f32]),
    F16(&'a mut [f16]),
    Q8(&'a mut [u8]),
}

impl KvRows<'_> {
    pub fn cache_type(&self) -> CacheType {
        match self {
            Self::F32(_) => CacheType::F32,
            Self::F16(_) => CacheType::F16,
            Self::Q8(_) => CacheType::Q8_0,
        }
    }

    /// Rows `row..row + n` (each `d` values) decoded to f32 into `dst` (`n·d` values).
    pub fn decode(&self, row: usize, n: usize, d: usize, dst: &mut [f32]) {
        let rows = self;
        crate::dispatch!(level(); <I> (rows: &KvRows<'_>, row: usize, n: usize, d: usize, dst: &mut [f32]) -> () {
            rows.decode_with::<I>(row, n, d, dst)
        })
    }

    /// [`Self::decode`] with the instruction set `I`.
    ///
    /// # Safety
    /// The CPU has `I`'s instruction set.
    #[inline(always)]
    unsafe fn decode_with<I: Isa>(&self, row: usize, n: usize, d: usize, dst: &mut [f32]) {
        for (j, out) in dst.chunks_exact_mut(d).take(n).enumerate() {
            self.row::<I>(row + j, d, out);
        }
    }

    /// Rows `row..row + n` (each `d` values) as stored.
    #[inline(always)]
    fn tile(&self, row: usize, n: usize, d: usize) -> KvRows<'_> {
        match *self {
            Self::F32(s) => Self::F32(&s[row * d..(row + n) * d]),
            Self::F16(s) => Self::F16(&s[row * d..(row + n) * d]),
            Self::Q8(s) => Self::Q8(&s[row * d / 32 * Q8_BLOCK..(row + n) * d / 32 * Q8_BLOCK]),
        }
    }

    /// The first `keys` positions of every (row, head) as f32 `[b, kv, keys, d]`.
    fn to_f32(self, s: &AttnShape, keys: usize) -> Vec<f32> {
        let mut out = vec![0f32; s.b * s.kv * keys * s.d];
        for (bg, dst) in out.chunks_exact_mut(keys * s.d).enumerate() {
            self.decode(bg * s.cap, keys, s.d, dst);
        }
        out
    }
}

/// Copy new keys or values `[b, kv, t, d]` into a cache buffer `[b, kv, cap, d]` at `past`,
/// converted to the cache's rows.
#[allow(clippy::too_many_arguments)]
pub fn cache_write(
    cache: KvRowsMut<'_>,
    new: &[f32],
    b: usize,
    kv: usize,
    cap: usize,
    t: usize,
    d: usize,
    past: usize,
) {
    let mut cache = cache;
    for bg in 0..b * kv {
        let src = &new[bg * t * d..(bg + 1) * t * d];
        let (o, n) = ((bg * cap + past) * d, t * d);
        match &mut cache {
            KvRowsMut::F32(c) => c[o..o + n].copy_from_slice(src),
            KvRowsMut::F16(c) => c[o..o + n].convert_from_f32_slice(src),
            KvRowsMut::Q8(c) => {
                let dst = &mut c[o / 32 * Q8_BLOCK..(o + n) / 32 * Q8_BLOCK];
                for (x, blk) in src.chunks_exact(32).zip(dst.chunks_exact_mut(Q8_BLOCK)) {
                    quantize_q8_0_into(x, blk);
                }
            }
        }
    }
}

/// Causal attention of `q` `[b, h, t, d]` over the first `past + t` positions of the caches
/// `[b, kv, cap, d]`, query heads grouped over K/V heads (GQA); out `[b, t, h·d]`.
pub fn attention(q: &[f32], kc: KvRows<'_>, vc: KvRows<'_>, s: &AttnShape, mask: &KeyMask<'_>) -> Vec<f32> {
    if s.t >= GEMM_ATTENTION_MIN_T {
        return match (kc, vc) {
            (KvRows::F32(k), KvRows::F32(v)) => attention_gemm(q, k, v, s, mask),
            _ => {
                let keys = s.past + s.t;
                let (k, v) = (kc.to_f32(s, keys), vc.to_f32(s, keys));
                attention_gemm(q, &k, &v, &AttnShape { cap: keys, ..*s }, mask)
            }
        };
    }
    stream(q, kc, vc, s, mask)
}

/// Which keys a query may see, and how scores are computed.
pub struct KeyMask<'a> {
    /// Per row, for every key (cached + new): a real token? `None`: all are.
    pub key_valid: Option<&'a [Vec<bool>]>,
    /// Sliding window: a query at slot `s` sees keys `> s - window`. `None`: no limit.
    pub window: Option<usize>,
    /// Scores are `q·k · scale`, then capped as `cap · tanh(s / cap)` with `softcap`.
    pub scale: f32,
    pub softcap: Option<f32>,
}

impl KeyMask<'_> {
    /// Every key visible, scale `1/√d`, no cap.
    pub fn all(d: usize) -> Self {
        Self { key_valid: None, window: None, scale: 1.0 / (d as f32).sqrt(), softcap: None }
    }
}

/// Dimensions of one attention call.
#[derive(Clone, Copy)]
pub struct AttnShape {
    pub b: usize,
    pub h: usize,
    pub kv: usize,
    pub t: usize,
    pub d: usize,
    pub cap: usize,
    pub past: usize,
}

/// [`attention`] for prefill-sized steps: [`attend_gemm`] per (row, head), in parallel.
fn attention_gemm(q: &[f32], kc: &[f32], vc: &[f32], s: &AttnShape, mask: &KeyMask<'_>) -> Vec<f32> {
    let (b, h, t, d) = (s.b, s.h, s.t, s.d);
    let mut out = vec![0f32; b * t * h * d];
    // one task per (row, head); each writes its own (strided) rows of `out`
    let dst = SendPtr(out.as_mut_ptr());
    let dst = &dst;
    (0..b * h).into_par_iter().for_each(|bh| {
        // SAFETY: head `bh` writes only `out[((bi·t + ti)·h + hi)·d ..][..d]`, disjoint from
        // every other head's rows; `out` outlives the loop.
        let o = unsafe { std::slice::from_raw_parts_mut(dst.0, b * t * h * d) };
        attend_gemm(q, kc, vc, s, mask, bh, o);
    });
    out
}

/// From this many queries per (row, head) on (prefill), attention runs as two f32 GEMMs:
/// scores `Q · Kᵀ` for every query at once, the masked softmax per query, then `P · V`.
const GEMM_ATTENTION_MIN_T: usize = 8;

/// Queries per block of [`attend_gemm`]: its scores `[QUERY_BLOCK, keys]` stay in cache.
const QUERY_BLOCK: usize = 64;

/// Attention of many queries of (row, head) `bh`, a block of [`QUERY_BLOCK`] queries at a time:
/// `S = Q · Kᵀ · scale` with the `gemm` crate over the keys the block can see (causal: none
/// after its last query; window: none before its first query's), per query the padding / window /
/// causal mask, softcap and softmax (invisible keys get probability 0), then `out = P · V`.
fn attend_gemm(q: &[f32], kc: &[f32], vc: &[f32], s: &AttnShape, mask: &KeyMask<'_>, bh: usize, out: &mut [f32]) {
    crate::dispatch!(level(); <I> (q: &[f32], kc: &[f32], vc: &[f32], s: &AttnShape, mask: &KeyMask<'_>, bh: usize, out: &mut [f32]) -> () {
    let _ = std::marker::PhantomData::<I>;
    let (h, kv, t, d, cap, past) = (s.h, s.kv, s.t, s.d, s.cap, s.past);
    let (bi, hi) = (bh / h, bh % h);
    let g = hi / (h / kv);
    let kbase = (bi * kv + g) * cap * d;
    let qbase = ((bi * h + hi) * t) * d;
    let mut p = vec![0f32; QUERY_BLOCK.min(t) * (past + t)];
    for t0 in (0..t).step_by(QUERY_BLOCK) {
        let n = QUERY_BLOCK.min(t - t0);
        let lo_of = |slot: usize| mask.window.map_or(0, |w| (slot + 1).saturating_sub(w));
        let (k0, k1) = (lo_of(past + t0), past + t0 + n);
        let w = k1 - k0;
        let p = &mut p[..n * w];
        // SAFETY: S [n, w] row-major; Q rows `qbase + (t0 + i)·d`; Kᵀ (d × w) read as the cache
        // rows `kbase + (k0 + j)·d` with column stride d; all within their slices.
        unsafe {
            gemm::gemm(
                n,
                w,
                d,
                p.as_mut_ptr(),
                1,
                w as isize,
                false,
                q[qbase + t0 * d..].as_ptr(),
                1,
                d as isize,
                kc[kbase + k0 * d..kbase + k1 * d].as_ptr(),
                d as isize,
                1,
                0.0,
                mask.scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        for (i, row) in p.chunks_exact_mut(w).enumerate() {
            let slot = past + t0 + i;
            let lo = lo_of(slot);
            let mut mx = f32::NEG_INFINITY;
            for (j, sc) in (k0..).zip(row.iter_mut()) {
                let visible = j >= lo && j <= slot && (j == slot || mask.key_valid.is_none_or(|kvd| kvd[bi][j]));
                if visible {
                    if let Some(c) = mask.softcap {
                        *sc = (*sc / c).tanh() * c;
                    }
                    mx = mx.max(*sc);
                } else {
                    *sc = f32::NEG_INFINITY;
                }
            }
            let mut sum = 0f32;
            for sc in row.iter_mut() {
                *sc = exp_or_zero(*sc - mx);
                sum += *sc;
            }
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|sc| *sc *= inv);
        }
        // SAFETY: out rows `((bi·t + t0 + i)·h + hi)·d` (row stride h·d) of `out`; P [n, w]; V
        // rows `kbase + (k0 + j)·d` of the value cache.
        unsafe {
            gemm::gemm(
                n,
                d,
                w,
                out[((bi * t + t0) * h + hi) * d..].as_mut_ptr(),
                1,
                (h * d) as isize,
                false,
                p.as_ptr(),
                1,
                w as isize,
                vc[kbase + k0 * d..kbase + k1 * d].as_ptr(),
                1,
                d as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
    })
}

/// `e^x` for softmax weights (`x ≤ 0`), 0 for `x = −∞`: `2^n · e^r` with `n = round(x / ln 2)`,
/// `r = x − n·ln 2` (ln 2 in two parts, exact products) and a degree-7 Taylor polynomial for
/// `e^r`, `|r| ≤ ½ ln 2` (within 5e-7 relative of `exp`); unlike libm's `expf` it vectorizes.
#[inline(always)]
pub fn exp_or_zero(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.max(-87.0);
    let n = (xc * std::f32::consts::LOG2_E).round_ties_even();
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let e = f32::from_bits(((n as i32 + 127) as u32) << 23) * p;
    if x == f32::NEG_INFINITY {
        0.0
    } else {
        e
    }
}

/// Keys per tile of the streaming kernel: one max and one rescale of the sums per tile.
const TILE: usize = 32;

/// Below this much work (`b·h·t·keys·d` multiply-adds) one task does it all.
const PARALLEL_WORK: usize = 1 << 16;

/// The streaming attention (module docs): tasks over (row, K/V head, key span), then the spans'
/// partial softmax sums combined.
fn stream(q: &[f32], kc: KvRows<'_>, vc: KvRows<'_>, s: &AttnShape, mask: &KeyMask<'_>) -> Vec<f32> {
    let (b, h, kv, t, d) = (s.b, s.h, s.kv, s.t, s.d);
    let keys = s.past + t;
    let groups = b * kv;
    // per row, the first key any of its queries may see: keys before it are padding (a row that
    // joined a running batch later) or outside every query's window, and no task reads them
    let window = mask.window.map_or(0, |w| (s.past + 1).saturating_sub(w));
    let first: Vec<usize> = (0..b)
        .map(|bi| {
            let valid = mask.key_valid.map_or(0, |kvd| kvd[bi].iter().position(|&v| v).unwrap_or(s.past));
            window.max(valid).min(s.past)
        })
        .collect();
    let seen: usize = first.iter().map(|f| keys - f).sum();
    let longest = first.iter().map(|f| keys - f).max().unwrap_or(0);
    let spans = if h * t * seen * d < PARALLEL_WORK {
        1
    } else {
        // two tasks per thread, spans of at least 4 tiles
        (2 * rayon::current_num_threads()).div_ceil(groups).clamp(1, longest.div_ceil(4 * TILE))
    };
    let nq = h / kv * t;
    let lvl = level();
    let task = |i: usize| {
        let (bg, c) = (i / spans, i % spans);
        let start = first[bg / kv];
        let span = (keys - start).div_ceil(spans).div_ceil(TILE) * TILE;
        let keys_range = (start + c * span).min(keys)..(start + (c + 1) * span).min(keys);
        span_task(lvl, q, kc, vc, s, mask, bg, keys_range)
    };
    let parts: Vec<Vec<f32>> =
        if groups * spans == 1 { vec![task(0)] } else { (0..groups * spans).into_par_iter().map(task).collect() };
    // combine: per query, out = Σ e^(m_c − M)·acc_c / Σ e^(m_c − M)·l_c
    let mut out = vec![0f32; b * t * h * d];
    let rep = h / kv;
    for bg in 0..groups {
        let (bi, g) = (bg / kv, bg % kv);
        let parts = &parts[bg * spans..(bg + 1) * spans];
        for qi in 0..nq {
            let (r, ti) = (qi / t, qi % t);
            let hi = g * rep + r;
            let o = &mut out[((bi * t + ti) * h + hi) * d..][..d];
            let at = qi * (d + 2);
            let mx = parts.iter().map(|p| p[at]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for p in parts {
                if p[at] == f32::NEG_INFINITY {
                    continue;
                }
                let w = (p[at] - mx).exp();
                sum += w * p[at + 1];
                for (oo, a) in o.iter_mut().zip(&p[at + 2..at + 2 + d]) {
                    *oo += w * a;
                }
            }
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|v| *v *= inv);
        }
    }
    out
}

/// One (row·K/V head `bg`, key span) task: for each of its `rep·t` queries, the running max `m`,
/// the sum `l` of `e^(score − m)` and the value sum `acc` (d) over the span's visible keys, laid
/// out as `[m, l, acc…]` per query.
#[allow(clippy::too_many_arguments)]
fn span_task(
    lvl: super::dot::Level,
    q: &[f32],
    kc: KvRows<'_>,
    vc: KvRows<'_>,
    s: &AttnShape,
    mask: &KeyMask<'_>,
    bg: usize,
    keys_range: std::ops::Range<usize>,
) -> Vec<f32> {
    crate::dispatch!(lvl; <I> (q: &[f32], kc: KvRows<'_>, vc: KvRows<'_>, s: &AttnShape, mask: &KeyMask<'_>, bg: usize, keys_range: std::ops::Range<usize>) -> Vec<f32> {
        let _ = std::marker::PhantomData::<I>;
        let (h, kv, t, d, past) = (s.h, s.kv, s.t, s.d, s.past);
        let rep = h / kv;
        let nq = rep * t;
        let (bi, g) = (bg / kv, bg % kv);
        let base = bg * s.cap;
        let mut st = vec![0f32; nq * (d + 2)];
        for qi in 0..nq {
            st[qi * (d + 2)] = f32::NEG_INFINITY;
        }
        let mut p = vec![0f32; nq * TILE];
        // the group's queries (query head r, step ti) at qi = r·t + ti: contiguous rows of q
        let qs = &q[(bi * h + g * rep) * t * d..][..nq * d];
        let mut j0 = keys_range.start;
        while j0 < keys_range.end {
            let n = TILE.min(keys_range.end - j0);
            // the tile's rows read in place, whatever their type
            let (kt, vt) = (kc.tile(base + j0, n, d), vc.tile(base + j0, n, d));
            let mut any = false;
            // every key of the tile scored for every query (the tile read once), then per query
            // those it may not see (before lo, after slot, padding) set to −∞
            I::scores_many(kt, qs, d, n, &mut p, TILE);
            for qi in 0..nq {
                let slot = past + qi % t;
                let lo = mask.window.map_or(0, |w| (slot + 1).saturating_sub(w));
                let ps = &mut p[qi * TILE..qi * TILE + n];
                let (a, e) = (lo.clamp(j0, j0 + n) - j0, (slot + 1).clamp(j0, j0 + n) - j0);
                ps[..a].fill(f32::NEG_INFINITY);
                ps[e..].fill(f32::NEG_INFINITY);
                let scale = mask.scale;
                match mask.softcap {
                    None => ps[a..e].iter_mut().for_each(|x| *x *= scale),
                    Some(cap) => ps[a..e].iter_mut().for_each(|x| *x = (*x * scale / cap).tanh() * cap),
                }
                if let Some(kvd) = mask.key_valid {
                    for (jj, x) in ps.iter_mut().enumerate().take(e).skip(a) {
                        if j0 + jj != slot && !kvd[bi][j0 + jj] {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                }
                let tmax = ps.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let at = qi * (d + 2);
                if tmax == f32::NEG_INFINITY {
                    ps.fill(0.0);
                    continue;
                }
                any = true;
                let m = st[at];
                let m_new = m.max(tmax);
                if m_new > m && m != f32::NEG_INFINITY {
                    let corr = (m - m_new).exp();
                    st[at + 1..at + 2 + d].iter_mut().for_each(|v| *v *= corr);
                }
                st[at] = m_new;
                // the exponentials first (a loop that vectorizes), then their sum in 16 lanes
                ps.iter_mut().for_each(|sc| *sc = exp_or_zero(*sc - m_new));
                let mut lanes = [0f32; 16];
                for (i, sc) in ps.iter().enumerate() {
                    lanes[i % 16] += sc;
                }
                st[at + 1] += lanes.iter().sum::<f32>();
            }
            if any {
                I::value_sums(&mut st[2..], d + 2, nq, d, &p, TILE, n, vt);
            }
            j0 += n;
        }
        st
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Plain softmax attention per query in f64 (the definition).
    fn reference(q: &[f32], kc: &[f32], vc: &[f32], s: &AttnShape, mask: &KeyMask<'_>) -> Vec<f32> {
        let (b, h, kv, t, d, cap, past) = (s.b, s.h, s.kv, s.t, s.d, s.cap, s.past);
        let mut out = vec![0f32; b * t * h * d];
        for bi in 0..b {
            for hi in 0..h {
                let base = (bi * kv + hi / (h / kv)) * cap;
                for ti in 0..t {
                    let slot = past + ti;
                    let lo = mask.window.map_or(0, |w| (slot + 1).saturating_sub(w));
                    let qv = &q[((bi * h + hi) * t + ti) * d..][..d];
                    let sc: Vec<(usize, f64)> = (lo..=slot)
                        .filter(|&j| j == slot || mask.key_valid.is_none_or(|kvd| kvd[bi][j]))
                        .map(|j| {
                            let x: f64 = (0..d).map(|i| qv[i] as f64 * kc[(base + j) * d + i] as f64).sum();
                            let x = x * mask.scale as f64;
                            (j, mask.softcap.map_or(x, |c| (x / c as f64).tanh() * c as f64))
                        })
                        .collect();
                    let mx = sc.iter().map(|x| x.1).fold(f64::MIN, f64::max);
                    let z: f64 = sc.iter().map(|x| (x.1 - mx).exp()).sum();
                    for i in 0..d {
                        let v: f64 = sc.iter().map(|&(j, x)| (x - mx).exp() / z * vc[(base + j) * d + i] as f64).sum();
                        out[((bi * t + ti) * h + hi) * d + i] = v as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn exp_or_zero_is_exp_within_5e_7() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            let rel = (exp_or_zero(x) as f64 - want).abs() / want;
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "largest relative error {worst:e}");
        assert_eq!(exp_or_zero(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_or_zero(0.0), 1.0);
    }

    /// The streaming kernel and the GEMM path against the definition, on every cache type:
    /// f32 rows within float noise, f16 and q8_0 rows against the definition over the rows as
    /// stored (decoded), then the stored rows' error against the f32 values bounded per type.
    #[test]
    fn attention_over_every_cache_type_matches_definition() {
        let mut cases = 0;
        // (b, h, kv, t, d, past, window, softcap, padding)
        let shapes = [
            (1usize, 9usize, 3usize, 1usize, 64usize, 700usize, None, None, false),
            (1, 4, 1, 1, 256, 1030, Some(512), None, false),
            (2, 4, 2, 3, 32, 200, None, Some(5.0f32), true),
            (3, 2, 2, 7, 64, 40, Some(20), None, true),
            (1, 2, 1, 9, 32, 30, None, None, false),
            (2, 6, 2, 1, 32, 1, None, None, true),
            (1, 4, 2, 2, 64, 0, None, None, false),
            // prefill past one query block of the GEMM path, a window skipping keys per block
            (1, 4, 2, 150, 32, 50, Some(40), None, true),
            (2, 2, 1, 70, 32, 0, None, Some(8.0), true),
        ];
        for (b, h, kv, t, d, past, window, softcap, pad) in shapes {
            let cap = past + t + 5;
            let keys = past + t;
            let q = lcg(1 + past as u64, b * h * t * d);
            let kf = lcg(2 + d as u64, b * kv * cap * d);
            let vf = lcg(3 + t as u64, b * kv * cap * d);
            // row 0 sees every key; later rows lose every third key and a prefix (as a row that
            // joined a running batch: the kernel starts its tasks at the first visible key)
            let valid: Vec<Vec<bool>> =
                (0..b).map(|r| (0..keys).map(|j| r == 0 || (j % 3 != 1 && j >= 13 * r)).collect()).collect();
            let mask =
                KeyMask { key_valid: pad.then_some(valid.as_slice()), window, scale: 1.0 / (d as f32).sqrt(), softcap };
            let s = AttnShape { b, h, kv, t, d, cap, past };
            for ty in [CacheType::F32, CacheType::F16, CacheType::Q8_0] {
                // the cache written through cache_write (as the backend does), then read back
                let n = b * kv * cap * d;
                let (mut k16, mut v16) = (vec![f16::ZERO; n], vec![f16::ZERO; n]);
                let (mut k8, mut v8) = (vec![0u8; n / 32 * Q8_BLOCK], vec![0u8; n / 32 * Q8_BLOCK]);
                let (kr, vr) = match ty {
                    CacheType::F32 => (KvRows::F32(&kf), KvRows::F32(&vf)),
                    CacheType::F16 => {
                        cache_write(KvRowsMut::F16(&mut k16), &kf, 1, 1, n / d, n / d, d, 0);
                        cache_write(KvRowsMut::F16(&mut v16), &vf, 1, 1, n / d, n / d, d, 0);
                        (KvRows::F16(&k16), KvRows::F16(&v16))
                    }
                    CacheType::Q8_0 => {
                        cache_write(KvRowsMut::Q8(&mut k8), &kf, 1, 1, n / d, n / d, d, 0);
                        cache_write(KvRowsMut::Q8(&mut v8), &vf, 1, 1, n / d, n / d, d, 0);
                        (KvRows::Q8(&k8), KvRows::Q8(&v8))
                    }
                };
                assert_eq!(kr.cache_type(), ty);
                let (mut kd, mut vd) = (vec![0f32; n], vec![0f32; n]);
                kr.decode(0, n / d, d, &mut kd);
                vr.decode(0, n / d, d, &mut vd);
                // stored rows against the values written: f16 relative 2^-11, q8_0 half a step
                let bound = |x: f32, i: usize, src: &[f32]| match ty {
                    CacheType::F32 => 0.0,
                    CacheType::F16 => x.abs() * 4.9e-4 + 6e-8,
                    CacheType::Q8_0 => {
                        let blk = &src[i / 32 * 32..i / 32 * 32 + 32];
                        blk.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0 * 0.5 * 1.01 + 1e-3 * x.abs()
                    }
                };
                for (i, (&a, &w)) in kd.iter().zip(&kf).enumerate() {
                    assert!((a - w).abs() <= bound(w, i, &kf), "{ty} key value {i}: stored {a}, written {w}");
                }
                let want = reference(&q, &kd, &vd, &s, &mask);
                let got = attention(&q, kr, vr, &s, &mask);
                assert_eq!(got.len(), want.len());
                for (i, (a, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - w).abs() < 2e-5,
                        "{ty} b={b} h={h} kv={kv} t={t} d={d} past={past} out {i}: {a} vs {w}"
                    );
                }
                cases += 1;
            }
        }
        assert_eq!(cases, shapes.len() * 3);
    }

    /// Scores and value sums of several queries over one tile read (`Isa::scores_many`,
    /// `Isa::value_sums`) are each query's alone (the same kernels with one query; the value sums'
    /// one-query `Isa::value_sum`), bit for bit, on every cache type and every level this CPU has;
    /// and they are the definition (f64 over the rows as stored) within f32 rounding.
    #[test]
    fn many_query_kernels_are_the_one_query_kernels() {
        let mut cases = 0;
        let levels = crate::kernels::dot::available_levels();
        for &lvl in &levels {
            for d in [32usize, 64, 96, 256] {
                for nq in [1usize, 3, 4, 5, 9] {
                    for n in [1usize, 3, 4, 7, TILE] {
                        let vals = lcg(d as u64 + n as u64, n * d);
                        let q = lcg(7 + nq as u64, nq * d);
                        let p = lcg(11 + n as u64, nq * TILE);
                        let acc0 = lcg(13, nq * (d + 2));
                        let (mut r16, mut r8) = (vec![f16::ZERO; n * d], vec![0u8; n * d / 32 * Q8_BLOCK]);
                        cache_write(KvRowsMut::F16(&mut r16), &vals, 1, 1, n, n, d, 0);
                        cache_write(KvRowsMut::Q8(&mut r8), &vals, 1, 1, n, n, d, 0);
                        let (q, p, acc0) = (&q[..], &p[..], &acc0[..]);
                        for rows in [KvRows::F32(&vals), KvRows::F16(&r16), KvRows::Q8(&r8)] {
                            let (many, one) = crate::dispatch!(lvl; <I> (rows: KvRows<'_>, q: &[f32], p: &[f32], acc0: &[f32], d: usize, nq: usize, n: usize) -> ((Vec<f32>, Vec<f32>), (Vec<f32>, Vec<f32>)) {
                                let (mut s_many, mut s_one) = (vec![0f32; nq * TILE], vec![0f32; nq * TILE]);
                                I::scores_many(rows, q, d, n, &mut s_many, TILE);
                                for qi in 0..nq {
                                    I::scores_many(rows, &q[qi * d..(qi + 1) * d], d, n, &mut s_one[qi * TILE..], TILE);
                                }
                                let (mut a_many, mut a_one) = (acc0.to_vec(), acc0.to_vec());
                                I::value_sums(&mut a_many[2..], d + 2, nq, d, p, TILE, n, rows);
                                for qi in 0..nq {
                                    let at = qi * (d + 2) + 2;
                                    I::value_sum(&mut a_one[at..at + d], &p[qi * TILE..qi * TILE + n], rows);
                                }
                                ((s_many, a_many), (s_one, a_one))
                            });
                            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                            assert_eq!(bits(&many.0), bits(&one.0), "{lvl:?} scores d={d} nq={nq} n={n}");
                            assert_eq!(bits(&many.1), bits(&one.1), "{lvl:?} value sums d={d} nq={nq} n={n}");
                            let mut dec = vec![0f32; n * d];
                            rows.decode(0, n, d, &mut dec);
                            for qi in 0..nq {
                                for j in 0..n {
                                    let (kr, qv) = (&dec[j * d..(j + 1) * d], &q[qi * d..(qi + 1) * d]);
                                    let want: f64 = kr.iter().zip(qv).map(|(a, b)| *a as f64 * *b as f64).sum();
                                    let mag: f64 = kr.iter().zip(qv).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
                                    let got = one.0[qi * TILE + j] as f64;
                                    assert!(
                                        (got - want).abs() <= 1e-6 * mag + 1e-7,
                                        "{lvl:?} score d={d} q{qi} k{j}: {got} vs {want}"
                                    );
                                }
                                for c in 0..d {
                                    let at = qi * (d + 2) + 2 + c;
                                    let terms = (0..n).map(|j| p[qi * TILE + j] as f64 * dec[j * d + c] as f64);
                                    let mag: f64 =
                                        (0..n).map(|j| (p[qi * TILE + j] as f64 * dec[j * d + c] as f64).abs()).sum();
                                    let want = acc0[at] as f64 + terms.sum::<f64>();
                                    let got = one.1[at] as f64;
                                    assert!(
                                        (got - want).abs() <= 1e-6 * (mag + (acc0[at] as f64).abs()) + 1e-7,
                                        "{lvl:?} value sum d={d} q{qi} col {c}: {got} vs {want}"
                                    );
                                }
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, levels.len() * 4 * 5 * 5 * 3);
    }

    #[test]
    fn attention_is_softmax_weighted_values() {
        // b=1, h=2, kv=1, t=1, d=2, two cached keys + the new one
        let (d, cap) = (2, 4);
        let kc = vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0];
        let vc = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0];
        let q = vec![1.0, 0.0, 0.0, 2.0];
        let s = AttnShape { b: 1, h: 2, kv: 1, t: 1, d, cap, past: 2 };
        let out = attention(&q, KvRows::F32(&kc), KvRows::F32(&vc), &s, &KeyMask::all(d));
        for hi in 0..2 {
            let qv = &q[hi * 2..hi * 2 + 2];
            let s: Vec<f32> = (0..3).map(|j| (qv[0] * kc[2 * j] + qv[1] * kc[2 * j + 1]) / 2f32.sqrt()).collect();
            let mx = s.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = s.iter().map(|v| (v - mx).exp()).collect();
            let z: f32 = e.iter().sum();
            for c in 0..2 {
                let want: f32 = (0..3).map(|j| e[j] / z * vc[2 * j + c]).sum();
                assert!((out[hi * 2 + c] - want).abs() < 1e-6);
            }
        }
        // window 1: only the newest key
        let out =
            attention(&q, KvRows::F32(&kc), KvRows::F32(&vc), &s, &KeyMask { window: Some(1), ..KeyMask::all(d) });
        assert_eq!(&out[..2], &[5.0, 6.0]);
    }
}
