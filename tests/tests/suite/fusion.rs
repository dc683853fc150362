//! burn-fusion's wrong cached decode steps (Burn 0.21, wgpu's cube backend under
//! `burn_fusion::Fusion`): the reproduction in plain Burn ops, kept ready to report upstream.
//! Opt-in (`--features ndarray,wgpu-fusion`: another build of this binary, and lavapipe compiles
//! every fused kernel, ~4 min): `docs/BACKENDS.md` says how to run it and what it found.
//!
//! Found by cutting fusion at points of a layer (`kernels::fusion::BREAKS`): the KV cache, RoPE,
//! masks and attention are right under fusion; a one-row `r + (y₁ ⊙ y₂)·Wdᵀ` with
//! `[y₁ | y₂] = x·Wᵀ` (the gated MLP and its residual add) is wrong by whole units, the same chain
//! for 4 rows is right, and materialising the gated product in between makes it right.
use super::kernels::host;
use burn::prelude::*;
use burn::tensor::{s, TensorData};
use demiurgic_model::kernels::fusion::{WgpuFusion, BREAKS};
use demiurgic_model::DecodeOps;
use demiurgic_tests::max_abs_diff;
use std::sync::atomic::Ordering;

fn data<B: Backend, const D: usize>(seed: usize, shape: [usize; D], dev: &B::Device) -> Tensor<B, D> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| (((i + 1) * (seed + 7) * 7919) % 2003) as f32 / 1001.5 - 1.0).collect();
    Tensor::from_data(TensorData::new(v, shape), dev)
}

/// `r + (y₁ ⊙ y₂)·Wdᵀ` with `[y₁ | y₂] = x·Wᵀ` (tiny-llama's MLP shapes: 64 → 2 × 160 → 64) for
/// `m` rows; `cut`: the gated product read back to the host and uploaded again (no fusion across).
fn gated_chain<B: DecodeOps>(m: usize, cut: bool, dev: &B::Device) -> Vec<f32> {
    let (k, n) = (64, 320);
    let w = data::<B, 2>(40, [n, k], dev);
    let wd = data::<B, 2>(41, [k, n / 2], dev);
    let (x, r) = (data::<B, 2>(80 + m, [m, k], dev), data::<B, 2>(60 + m, [m, k], dev));
    let y = x.matmul(w.transpose());
    let mut g = y.clone().slice(s![.., 0..n / 2]) * y.slice(s![.., n / 2..n]);
    if cut {
        g = Tensor::from_data(g.into_data(), dev);
    }
    host(r + g.matmul(wd.transpose()))
}

/// The reproduction: on fusion the one-row chain is wrong, the four-row chain and the cut
/// one-row chain are right. When this fails on "still wrong", burn-fusion computes it right now:
/// run `cached_decode_on_fusion` and reconsider fusion for the cube backends.
#[test]
fn fusion_one_row_gated_chain() {
    let nd = Default::default();
    let fu = Default::default();
    for (m, cut) in [(4, false), (1, true)] {
        let d =
            max_abs_diff(&gated_chain::<burn::backend::NdArray>(m, cut, &nd), &gated_chain::<WgpuFusion>(m, cut, &fu));
        eprintln!("{m} rows, cut {cut}: {d:.2e} from ndarray");
        assert!(d < 1e-3, "{m} rows, cut {cut}: {d} from ndarray");
    }
    let d =
        max_abs_diff(&gated_chain::<burn::backend::NdArray>(1, false, &nd), &gated_chain::<WgpuFusion>(1, false, &fu));
    eprintln!("1 row, fused: {d:.2e} from ndarray");
    assert!(
        d > 1.0,
        "burn-fusion's one-row gated chain is right now ({d} from ndarray): fixed upstream, or autotune \
         chose another kernel than fused_gemv_unit_perpendicular (see cubecl's autotune log)"
    );
}

/// In the model: the cached one-token steps go wrong under fusion (the prompt's step of 3 rows is
/// right), and one cut after the gated activation is enough to make every step right.
/// `FUSION_BREAKS=a,b,…` runs other cuts (bits of `BREAKS`) and prints their differences.
#[test]
fn cached_decode_on_fusion() {
    let run = |mask: u32| {
        BREAKS.store(mask, Ordering::Relaxed);
        let d = super::kernels::cached_vs_uncached::<WgpuFusion>(&Default::default());
        eprintln!("cuts {mask}: cached vs uncached {d:?}");
        d
    };
    if let Ok(masks) = std::env::var("FUSION_BREAKS") {
        for m in masks.split(',') {
            run(m.trim().parse().expect("FUSION_BREAKS: comma-separated integers"));
        }
        return;
    }
    let fused = run(0);
    assert!(fused[0] < 1e-3, "the prompt's step: {}", fused[0]);
    assert!(fused[1..].iter().all(|&d| d > 0.1), "one-token steps are right under fusion now: {fused:?}");
    let cut = run(128);
    assert!(cut.iter().all(|&d| d < 1e-3), "cut after the gated activation: {cut:?}");
}
