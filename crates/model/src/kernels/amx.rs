//! AMX tiles (Sapphire Rapids and later) for Q8_0 weights interleaved by 8 rows against int16
//! activations: the 262k-row head of Gemma 3 and its Q8_0 q/k/v at batched decode, where the
//! 512-bit `vpdpwssd` group kernels are bound by their multiply-add throughput.
//!
//! The int16 activations are split exactly into bytes, `x = 256 · hi + lo` (`hi` signed, `lo`
//! unsigned), so one block's dot product is `256 · (hi · w) + lo · w`: `tdpbssd` and `tdpbusd`
//! over the group's block as stored (8 rows × 32 values is a `K = 32`, `N = 8` tile in AMX's
//! layout: chunk `c` holds 4 values of each row), for 16 activation rows at once. Each block's
//! integer sums are then scaled as the group kernels scale them — the same f32 operations in
//! the same order, so the results are bit for bit [`super::x86`]'s (tested).
//!
//! Used when the CPU lists AMX-TILE and AMX-INT8 and Linux grants the process the tile state
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); `DEMIURGIC_AMX=0` turns it off.
use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::act::Q16View;

/// Activation rows per tile (AMX's 16 tile rows); fewer rows are padded with zeros.
pub const TILE_ROWS: usize = 16;

/// Whether the AMX kernels can run in this process (checked once).
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        if std::env::var("DEMIURGIC_AMX").is_ok_and(|v| v == "0") {
            return false;
        }
        // cpuid leaf 7 exists on every x86_64 CPU that can run this binary
        let leaf7 = __cpuid_count(7, 0);
        let (tile, int8) = (leaf7.edx >> 24 & 1 == 1, leaf7.edx >> 25 & 1 == 1);
        if !(tile && int8 && std::arch::is_x86_feature_detected!("avx512vnni")) {
            return false;
        }
        request_tile_state()
    })
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: Linux hands out the 8 KiB tile state
/// per process on request.
#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain syscall with integer arguments; it changes only this process's permissions.
    unsafe {
        asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL => ret, in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

/// Int16 activation rows split into bytes for the tiles: `hi`, `lo` (`[rows, k]`, rows padded
/// with zeros to a multiple of [`TILE_ROWS`]) and each row's block scales.
pub struct SplitAct<'a> {
    hi: Vec<i8>,
    lo: Vec<u8>,
    k: usize,
    rows: usize,
    views: &'a [Q16View<'a>],
}

impl<'a> SplitAct<'a> {
    pub fn new(views: &'a [Q16View<'a>]) -> Self {
        let k = views.first().map_or(0, |v| v.qs.len());
        let padded = views.len().div_ceil(TILE_ROWS) * TILE_ROWS;
        let (mut hi, mut lo) = (vec![0i8; padded * k], vec![0u8; padded * k]);
        for (i, v) in views.iter().enumerate() {
            for (j, &x) in v.qs.iter().enumerate() {
                hi[i * k + j] = (x >> 8) as i8;
                lo[i * k + j] = x as u8;
            }
        }
        Self { hi, lo, k, rows: views.len(), views }
    }
}

/// The 64-byte tile configuration: tmm0–3 the int32 sums (16 rows × 8 columns: hi and lo of two
/// groups), tmm4–5 two groups' blocks (8 rows of 32 bytes), tmm6–7 the activations' hi and lo
/// bytes (16 rows × 32).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1; // palette 1
        for t in 0..8 {
            let (rows, colsb) = if t == 4 || t == 5 { (8u8, 32u16) } else { (TILE_ROWS as u8, 32u16) };
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&colsb.to_le_bytes());
            c[48 + t] = rows;
        }
        Self(c)
    }
}

/// `out[i · n + r]` for the rows `r` of `groups` (whole interleaved Q8_0 groups of 8 rows, each
/// `gb` bytes: per block 8 f16 scales then 8 chunks of 8 rows × 4 values) and every activation
/// row `i` of `x`, two groups at a time.
///
/// # Safety
/// [`available`] returned true; `out` is valid for `x.rows` rows of stride `n` covering the
/// groups' outputs.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
pub unsafe fn q8_0_groups(groups: &[u8], gb: usize, x: &SplitAct<'_>, out: *mut f32, n: usize) {
    const HDR: usize = 16;
    let nb = x.k / 32;
    debug_assert_eq!(gb, nb * (HDR + 256));
    let count = groups.len() / gb;
    let cfg = TileConfig::new();
    asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
    // the tiles' int32 sums per block: row i, columns 0–7 group g, 8–15 group g + 1
    #[repr(C, align(64))]
    struct Sums([i32; TILE_ROWS * 16]);
    let (mut shi, mut slo) = (Sums([0; TILE_ROWS * 16]), Sums([0; TILE_ROWS * 16]));
    let (ph, pl) = (shi.0.as_mut_ptr() as *mut u8, slo.0.as_mut_ptr() as *mut u8);
    let (k, stride_b, stride_c) = (x.k, 32usize, 64usize);
    let mut g = 0;
    while g < count {
        // an odd last group runs as its own pair (its second half discarded)
        let pair = if g + 1 < count { 2 } else { 1 };
        let g0 = groups.as_ptr().add(g * gb);
        let g1 = groups.as_ptr().add((g + pair - 1) * gb);
        for t0 in (0..x.rows).step_by(TILE_ROWS) {
            let rows = TILE_ROWS.min(x.rows - t0);
            let (xh, xl) = (x.hi.as_ptr().add(t0 * k), x.lo.as_ptr().add(t0 * k));
            let mut acc = [_mm512_setzero_ps(); TILE_ROWS];
            for b in 0..nb {
                let (b0, b1) = (g0.add(b * (HDR + 256)), g1.add(b * (HDR + 256)));
                if t0 == 0 {
                    for line in (0..HDR + 256).step_by(64) {
                        _mm_prefetch::<_MM_HINT_T0>(b0.wrapping_add(2 * gb + line) as *const i8);
                        _mm_prefetch::<_MM_HINT_T0>(b1.wrapping_add(2 * gb + line) as *const i8);
                    }
                }
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    "tileloadd tmm4, [{w0} + {sb}*1]",
                    "tileloadd tmm5, [{w1} + {sb}*1]",
                    "tileloadd tmm6, [{xh} + {sk}*1]",
                    "tileloadd tmm7, [{xl} + {sk}*1]",
                    "tdpbssd tmm0, tmm6, tmm4",
                    "tdpbusd tmm1, tmm7, tmm4",
                    "tdpbssd tmm2, tmm6, tmm5",
                    "tdpbusd tmm3, tmm7, tmm5",
                    "tilestored [{ph} + {sc}*1], tmm0",
                    "tilestored [{pl} + {sc}*1], tmm1",
                    "tilestored [{ph2} + {sc}*1], tmm2",
                    "tilestored [{pl2} + {sc}*1], tmm3",
                    w0 = in(reg) b0.add(HDR),
                    w1 = in(reg) b1.add(HDR),
                    xh = in(reg) xh.add(b * 32),
                    xl = in(reg) xl.add(b * 32),
                    ph = in(reg) ph,
                    pl = in(reg) pl,
                    ph2 = in(reg) ph.add(32),
                    pl2 = in(reg) pl.add(32),
                    sb = in(reg) stride_b,
                    sk = in(reg) k,
                    sc = in(reg) stride_c,
                    options(nostack),
                );
                // both groups' 8 row scales, as the group kernels' even lanes hold them
                let d16 = _mm512_cvtph_ps(_mm256_set_m128i(
                    _mm_loadu_si128(b1 as *const __m128i),
                    _mm_loadu_si128(b0 as *const __m128i),
                ));
                for (i, a) in acc.iter_mut().enumerate().take(rows) {
                    let h = _mm512_load_si512(shi.0.as_ptr().add(16 * i) as *const _);
                    let l = _mm512_load_si512(slo.0.as_ptr().add(16 * i) as *const _);
                    let t = _mm512_add_epi32(_mm512_slli_epi32::<8>(h), l);
                    let dx = _mm512_set1_ps(*x.views.get_unchecked(t0 + i).d.get_unchecked(b));
                    *a = _mm512_fmadd_ps(_mm512_mul_ps(d16, dx), _mm512_cvtepi32_ps(t), *a);
                }
            }
            let mask: __mmask16 = if pair == 2 { 0xFFFF } else { 0x00FF };
            for (i, a) in acc.iter().enumerate().take(rows) {
                _mm512_mask_storeu_ps(out.add((t0 + i) * n + g * 8), mask, *a);
            }
        }
        g += pair;
    }
    asm!("tilerelease", options(nostack, nomem));
    // keep the sums' buffers alive past the asm that writes them
    std::hint::black_box((&mut shi, &mut slo));
}
