//! The CPU kernels against their references: every block type's linear layer (each instruction
//! set level this CPU has, exact and int8 activations) against dequantize-then-matmul in f64, on
//! the gguf-py blocks of `gguf-dequant.json` and on random blocks with odd shapes; and every
//! `DecodeOps` method of each backend against the default bodies on ndarray.
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use demiurgic_model::families::Activation;
use demiurgic_model::ggml::{dequantize, to_q8_0_exact, GgmlType};
use demiurgic_model::kernels::dot::{available_levels, has_q8_kernel};
use demiurgic_model::kernels::{cpu, ActQuant, QuantMatrix};
use demiurgic_model::ops::{AttnSpec, Heads, Linear, Matrix, QkNorm, Step};
use demiurgic_model::rope::RotaryEmbedding;
use demiurgic_model::DecodeOps;
use demiurgic_tests::{json_fixture, max_abs_diff, tolerance};
use std::sync::Arc;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn f32(&mut self) -> f32 {
        (self.next() as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

const NATIVE: [GgmlType; 10] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// Byte offsets of the f16 scale fields inside one block.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q6K => &[208],
        _ => &[],
    }
}

/// Random blocks of `ty` for a `[rows, cols]` matrix, scales finite and small.
fn random_matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Lcg) -> QuantMatrix {
    if matches!(ty, GgmlType::F32 | GgmlType::F16) {
        return QuantMatrix::quantize(ty, rows, cols, &rng.vec(rows * cols)).unwrap();
    }
    let (be, bb) = ty.block();
    let nblocks = rows * cols / be;
    let mut data: Vec<u8> = (0..nblocks * bb).map(|_| rng.next() as u8).collect();
    for b in 0..nblocks {
        for &off in f16_fields(ty) {
            let v = half::f16::from_f32(rng.f32() * 0.05);
            data[b * bb + off..b * bb + off + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    QuantMatrix::new(ty, rows, cols, data).unwrap()
}

/// `x · Wᵀ` in f64 from the dequantized matrix.
fn reference(w: &QuantMatrix, x: &[f32], m: usize) -> Vec<f32> {
    let wd = w.dequantize();
    let (n, k) = (w.rows(), w.cols());
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for r in 0..n {
            out[i * n + r] = (0..k).map(|j| wd[r * k + j] as f64 * x[i * k + j] as f64).sum::<f64>() as f32;
        }
    }
    out
}

/// Tolerance: relative to the size of the products summed.
fn check(name: &str, got: &[f32], want: &[f32], w: &QuantMatrix, x: &[f32], m: usize, rel: f32) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let wd = w.dequantize();
    let (n, k) = (w.rows(), w.cols());
    for i in 0..m {
        for r in 0..n {
            let mag: f32 = (0..k).map(|j| (wd[r * k + j] * x[i * k + j]).abs()).sum::<f32>() + 1e-6;
            let (g, e) = (got[i * n + r], want[i * n + r]);
            assert!(!g.is_nan(), "{name}: NaN at [{i}, {r}]");
            assert!((g - e).abs() <= rel * mag, "{name}: [{i}, {r}] {g} vs {e} (scale {mag})");
        }
    }
}

fn all_paths(name: &str, w: &QuantMatrix, rng: &mut Lcg) {
    let k = w.cols();
    // 1..=4 rows take the row-dot path, 5 and 17 the dequantized-tile gemm path; interleaved
    // groups with quantized activations take their 512-bit tiles of up to 8 rows from 2 (9, 17:
    // full tiles and a remainder) to 64 with AVX-512 VNNI, the integer GEMM past (65); AVX2's
    // 256-bit group kernels in tiles of up to 4 rows to AVX2_MAX_ROWS (33: past the old limit)
    for m in [1usize, 2, 3, 5, 9, 16, 17, 33, 65] {
        let x = rng.vec(m * k);
        let want = reference(w, &x, m);
        for &level in &available_levels() {
            let got = cpu::linear_at(level, w, &x, m, None);
            check(&format!("{name} m={m} {level:?}"), &got, &want, w, &x, m, 1e-5);
            if has_q8_kernel(w.ty()) && m <= cpu::SMALL_M {
                let q8 = w.clone().with_int8_activations(true);
                let got = cpu::linear_at(level, &q8, &x, m, None);
                // int8 activations: within a few quantization steps of the exact result
                check(&format!("{name} int8 m={m} {level:?}"), &got, &want, w, &x, m, 2e-2);
            }
            if has_q8_kernel(w.ty()) && w.can_interleave8() {
                // the interleaved layout: int8 and int16 activations at every batch size
                let il8 = w.clone().with_activations(ActQuant::Int8).interleave8();
                check(
                    &format!("{name} interleaved int8 m={m} {level:?}"),
                    &cpu::linear_at(level, &il8, &x, m, None),
                    &want,
                    w,
                    &x,
                    m,
                    2e-2,
                );
                let il16 = w.clone().with_activations(ActQuant::Int16).interleave8();
                let got16 = cpu::linear_at(level, &il16, &x, m, None);
                check(&format!("{name} interleaved int16 m={m} {level:?}"), &got16, &want, w, &x, m, 1e-4);
                // up to the group kernels' last row count, batching never changes a row's result:
                // the many-row kernels compute each row exactly as the one-row kernels do (prompt
                // lookup's verification, continuous batching and plain decoding agree bit for bit)
                let group_max = if demiurgic_model::kernels::igemm::fast_on(level) {
                    cpu::WIDE_MAX_ROWS
                } else {
                    cpu::group_rows_without_gemm(level)
                };
                for (act, got) in
                    [(ActQuant::Int16, &got16), (ActQuant::Int8, &cpu::linear_at(level, &il8, &x, m, None))]
                {
                    if m > group_max {
                        break;
                    }
                    let wa = w.clone().with_activations(act).interleave8();
                    for (i, xi) in x.chunks_exact(k).enumerate() {
                        let one = cpu::linear_at(level, &wa, xi, 1, None);
                        let n = w.rows();
                        assert!(
                            one == got[i * n..(i + 1) * n],
                            "{name} interleaved {act:?} m={m} {level:?}: row {i} differs from its one-row product"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn linear_on_gguf_py_blocks_matches_reference() {
    let f = json_fixture("gguf-dequant.json");
    let mut rng = Lcg(5);
    let mut seen = vec![];
    for c in f["cases"].as_array().unwrap() {
        let ty = GgmlType::from_u32(c["ggml_type"].as_u64().unwrap() as u32).unwrap();
        if !NATIVE.contains(&ty) {
            continue;
        }
        let n = c["n"].as_u64().unwrap() as usize;
        let bytes = unhex(c["hex"].as_str().unwrap());
        // the fixture's blocks as one row, and as rows of one block each where blocks allow
        let w = QuantMatrix::new(ty, 1, n, bytes.clone()).unwrap();
        assert_eq!(w.dequantize(), dequantize(ty, &bytes, n).unwrap());
        all_paths(&format!("{ty:?} gguf-py row"), &w, &mut rng);
        let be = ty.block().0;
        if n / be > 1 {
            let w = QuantMatrix::new(ty, n / be, be, bytes).unwrap();
            all_paths(&format!("{ty:?} gguf-py blocks as rows"), &w, &mut rng);
        }
        seen.push(ty);
    }
    for ty in NATIVE {
        assert!(seen.contains(&ty), "gguf-dequant.json has no {ty:?} case");
    }
}

#[test]
fn linear_on_random_odd_shapes_matches_reference() {
    let mut rng = Lcg(42);
    for ty in NATIVE {
        let be = ty.block().0.max(32);
        for (rows, blocks) in [(1, 1), (37, 3), (70, 2), (24, 3)] {
            let w = random_matrix(ty, rows, blocks * be, &mut rng);
            all_paths(&format!("{ty:?} {rows}x{}", blocks * be), &w, &mut rng);
        }
    }
}

// ---- DecodeOps of each backend against the default bodies on ndarray ----

fn t2<B: DecodeOps>(v: &[f32], shape: [usize; 2], d: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), d)
}

pub(crate) fn host<B: DecodeOps, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn step<B: DecodeOps>(b: usize, t: usize, past: usize, key_valid: Option<Vec<Vec<bool>>>, d: &B::Device) -> Step<B> {
    let tokens = vec![1u32; b * t];
    let positions: Vec<usize> = (0..b).flat_map(|_| (past..past + t).map(|p| p + 3)).collect();
    Step::new(b, t, past, tokens, positions, key_valid, d)
}

fn ops_match_ndarray<B: DecodeOps>(device: &B::Device) {
    let nd = Default::default();
    let mut rng = Lcg(9);
    let tol = if std::any::type_name::<B>().contains("Cuda") { 5e-3 } else { 1e-4 };
    // linear over host blocks (flex computes on them; the default body dequantizes) and dense
    // (on CPU emulation, lavapipe, the cube backends' own product instead of Burn's matmul)
    for (ty, dense) in [
        (GgmlType::Q4_1, false),
        (GgmlType::Q8_0, false),
        (GgmlType::Q6K, false),
        (GgmlType::F32, false),
        (GgmlType::F32, true),
    ] {
        let w = Arc::new(random_matrix(ty, 24, 256, &mut rng));
        let bias = rng.vec(24);
        for m in [1usize, 6, 17] {
            let x = rng.vec(m * 256);
            let lin = |dev: &B::Device| Linear::<B> {
                weight: if dense {
                    Matrix::Dense(t2::<B>(&w.dequantize(), [24, 256], dev))
                } else {
                    Matrix::Host(w.clone())
                },
                bias: Some(Tensor::from_data(TensorData::new(bias.clone(), [24]), dev)),
            };
            let lin_nd = Linear::<NdArray> {
                weight: Matrix::Host(w.clone()),
                bias: Some(Tensor::from_data(TensorData::new(bias.clone(), [24]), &nd)),
            };
            let got = host(B::linear_layer(t2::<B>(&x, [m, 256], device), &lin(device)));
            let want = host(NdArray::linear_layer(t2::<NdArray>(&x, [m, 256], &nd), &lin_nd));
            // relative to the outputs' size (Q6_K's random blocks give values in the hundreds):
            // 1e-5 in f32, 2e-3 where matmuls run in TF32 (cuda)
            let scale = want.iter().fold(1f32, |a, v| a.max(v.abs()));
            let d = max_abs_diff(&got, &want);
            let rel = tolerance::<B>(device, 1e-5, 2e-3);
            assert!(d <= rel * scale, "linear {ty:?} (dense: {dense}) m={m}: differs by {d} (values up to {scale})");
        }
    }
    // rms_norm, gated activations, embed
    let x = rng.vec(3 * 64);
    let g = rng.vec(64);
    let gb = Tensor::<B, 1>::from_data(TensorData::new(g.clone(), [64]), device);
    let gn = Tensor::<NdArray, 1>::from_data(TensorData::new(g, [64]), &nd);
    let got = host(B::rms_norm(t2::<B>(&x, [3, 64], device), &gb, 1e-5));
    let want = host(NdArray::rms_norm(t2::<NdArray>(&x, [3, 64], &nd), &gn, 1e-5));
    assert!(max_abs_diff(&got, &want) < tol, "rms_norm");
    for act in [Activation::Silu, Activation::GeluTanh] {
        let got = host(B::gated_act(t2::<B>(&x, [3, 64], device), act));
        let want = host(NdArray::gated_act(t2::<NdArray>(&x, [3, 64], &nd), act));
        assert!(max_abs_diff(&got, &want) < tol, "gated_act {act:?}");
    }
    let table = Arc::new(random_matrix(GgmlType::Q8_0, 10, 64, &mut rng));
    let ids = [3u32, 0, 9, 3];
    let got = host(B::embed(&ids, &Matrix::Host(table.clone()), device));
    let want = host(NdArray::embed(&ids, &Matrix::Host(table), &nd));
    assert!(max_abs_diff(&got, &want) < 1e-6, "embed");
    // split_rope + attention with a cache, padding and a sliding window
    let heads = Heads { q: 4, kv: 2, dim: 8 };
    let rope_b = RotaryEmbedding::<B>::new(10000.0, 8, 128, device);
    let rope_n = RotaryEmbedding::<NdArray>::new(10000.0, 8, 128, &nd);
    let width = (heads.q + 2 * heads.kv) * heads.dim;
    // q/k norm weights (Qwen 3, Gemma 3) and the attention variants: scale, softcap, window
    let qn_w = rng.vec(8);
    let kn_w = rng.vec(8);
    let (qn_b, kn_b) = (
        Tensor::<B, 1>::from_data(TensorData::new(qn_w.clone(), [8]), device),
        Tensor::<B, 1>::from_data(TensorData::new(kn_w.clone(), [8]), device),
    );
    let (qn_n, kn_n) = (
        Tensor::<NdArray, 1>::from_data(TensorData::new(qn_w, [8]), &nd),
        Tensor::<NdArray, 1>::from_data(TensorData::new(kn_w, [8]), &nd),
    );
    let cases = [
        (2usize, 5usize, 0usize, true, None, false, None),
        (2, 1, 5, true, None, true, None),
        (1, 3, 4, false, Some(4), false, Some(5.0)),
        (2, 2, 3, false, None, true, Some(2.0)),
        (2, 4, 0, true, Some(2), true, Some(3.0)),
        // past several chunks of the cube attention's online softmax, a window skipping some
        (1, 2, 40, true, Some(20), false, None),
        (2, 1, 70, false, None, true, Some(3.0)),
        (2, 3, 66, true, Some(33), true, None),
    ];
    for (b, t, past, pad, window, qk, softcap) in cases {
        let keys = past + t;
        let key_valid: Option<Vec<Vec<bool>>> =
            pad.then(|| (0..b).map(|r| (0..keys).map(|k| r == 0 || k >= 2).collect()).collect());
        let sb = step::<B>(b, t, past, key_valid.clone(), device);
        let sn = step::<NdArray>(b, t, past, key_valid, &nd);
        let qkv = rng.vec(b * t * width);
        let norm_b = qk.then_some(QkNorm { q: &qn_b, k: &kn_b, eps: 1e-6 });
        let norm_n = qk.then_some(QkNorm { q: &qn_n, k: &kn_n, eps: 1e-6 });
        let (qb, kb, vb) = B::split_rope(t2::<B>(&qkv, [b * t, width], device), &sb, &rope_b, heads, norm_b);
        let (qn, kn, vn) = NdArray::split_rope(t2::<NdArray>(&qkv, [b * t, width], &nd), &sn, &rope_n, heads, norm_n);
        assert!(max_abs_diff(&host(qb.clone()), &host(qn.clone())) < tol, "rope q (qk norm {qk})");
        assert!(max_abs_diff(&host(kb.clone()), &host(kn.clone())) < tol, "rope k (qk norm {qk})");
        assert!(max_abs_diff(&host(vb.clone()), &host(vn.clone())) < tol, "split v");
        // a cache pre-filled with the same random past on both
        let cfg = cache_config(32, 4, 2, 8, 128);
        let mut cb = demiurgic_model::KvCache::<B>::new(&cfg, b, 80, device).unwrap();
        let mut cf = demiurgic_model::KvCache::<B>::new(&cfg, b, 80, device).unwrap();
        let mut cn = demiurgic_model::KvCache::<NdArray>::new(&cfg, b, 80, &nd).unwrap();
        let old = rng.vec(b * 2 * past.max(1) * 8);
        if past > 0 {
            let pk = |d: &B::Device| Tensor::<B, 4>::from_data(TensorData::new(old.clone(), [b, 2, past, 8]), d);
            let pn = Tensor::<NdArray, 4>::from_data(TensorData::new(old.clone(), [b, 2, past, 8]), &nd);
            cb.layer_mut(0).append(pk(device), pk(device), 0);
            cf.layer_mut(0).append(pk(device), pk(device), 0);
            cn.layer_mut(0).append(pn.clone(), pn, 0);
        }
        let scale = if softcap.is_some() { 0.25 } else { AttnSpec::plain(heads).scale };
        let spec = AttnSpec { window, softcap, scale, ..AttnSpec::plain(heads) };
        if past == 0 {
            // without a cache: the new keys only
            let got = host(B::cached_attention(qb.clone(), kb.clone(), vb.clone(), None, &sb, &spec));
            let want = host(NdArray::cached_attention(qn.clone(), kn.clone(), vn.clone(), None, &sn, &spec));
            assert!(max_abs_diff(&got, &want) < tol, "uncached attention b={b} t={t} pad={pad} window={window:?}");
        }
        let got = host(B::cached_attention(qb, kb, vb, Some(cb.layer_mut(0)), &sb, &spec));
        let want = host(NdArray::cached_attention(qn, kn, vn, Some(cn.layer_mut(0)), &sn, &spec));
        let case = format!("b={b} t={t} past={past} pad={pad} window={window:?} softcap={softcap:?} qk norm {qk}");
        assert!(max_abs_diff(&got, &want) < tol, "attention {case}");
        // the fused step (the cube backends write k and v straight into the cache), then one more
        // step over what it wrote
        let fused = B::rope_attention(
            t2::<B>(&qkv, [b * t, width], device),
            &sb,
            &rope_b,
            norm_b,
            Some(cf.layer_mut(0)),
            &spec,
        );
        assert!(max_abs_diff(&host(fused), &want) < tol, "rope_attention {case}");
        let next = rng.vec(b * width);
        let (sb1, sn1) = (step::<B>(b, 1, keys, None, device), step::<NdArray>(b, 1, keys, None, &nd));
        let got =
            B::rope_attention(t2::<B>(&next, [b, width], device), &sb1, &rope_b, norm_b, Some(cf.layer_mut(0)), &spec);
        let want = NdArray::rope_attention(
            t2::<NdArray>(&next, [b, width], &nd),
            &sn1,
            &rope_n,
            norm_n,
            Some(cn.layer_mut(0)),
            &spec,
        );
        assert!(max_abs_diff(&host(got), &host(want)) < tol, "rope_attention, the step after {case}");
    }
}

demiurgic_tests::per_backend!(except_ndarray decode_ops_match_ndarray, ops_match_ndarray);

/// Blocks kept on the device (the cube backends: wgpu, cuda) against dequantize-then-matmul:
/// every block type with a device layout, odd shapes (rows not a multiple of a row group's 32,
/// long rows whose blocks several units split), the matrix-vector kernel (1 and 3 rows) and the
/// dequantize + matmul path (17 rows), embeddings, and the fused input norm, gated output and
/// residual against the separate ops. Other backends and types must decline.
fn device_blocks_match_reference<B: DecodeOps>(device: &B::Device) {
    let mut rng = Lcg(21);
    let mut checked = 0;
    // every block type the file formats have here, and one without a device layout (Q3_K)
    let types = NATIVE.into_iter().filter(|t| !matches!(t, GgmlType::F32 | GgmlType::F16));
    for ty in types.chain([GgmlType::Q3K]) {
        let shapes: &[(usize, usize)] = match ty.block().0 {
            256 => &[(5, 256), (66, 1280), (33, 2304)],
            _ => &[(37, 96), (4, 32), (130, 1088), (33, 2080)],
        };
        for &(rows, cols) in shapes {
            let w = Arc::new(random_matrix(ty, rows, cols, &mut rng));
            let blocks = B::device_blocks(w.clone(), device);
            let layout = ty != GgmlType::Q3K;
            assert_eq!(blocks.is_some(), B::device_blocks_supported() && layout, "{ty:?} on the device");
            let Some(m) = blocks else { continue };
            // rows padded to whole groups of 32; device bytes per 32 values against the file's:
            // Q4_1 and Q5_1 as stored, f16 scales kept where exact, f32 scales for the K-quants
            let padded = w.bytes() / rows * rows.div_ceil(32) * 32;
            let (on_device, in_file) = match ty {
                GgmlType::Q4_0 => (20, 18),
                GgmlType::Q5_0 => (24, 22),
                GgmlType::Q8_0 => (36, 34),
                GgmlType::Q4K => (24, 18),
                GgmlType::Q5K => (28, 22),
                GgmlType::Q6K => (128, 105),
                _ => (1, 1),
            };
            assert!(
                m.bytes() <= padded * on_device / in_file,
                "{ty:?}: {} bytes on the device for {}",
                m.bytes(),
                w.bytes()
            );
            assert_eq!(m.dims(), [rows, cols]);
            let bias = rng.vec(rows);
            for n in [1usize, 3, 17] {
                let x = rng.vec(n * cols);
                let mut want = reference(&w, &x, n);
                for (i, v) in want.iter_mut().enumerate() {
                    *v += bias[i % rows];
                }
                let lin = Linear::<B> {
                    weight: m.clone(),
                    bias: Some(Tensor::from_data(TensorData::new(bias.clone(), [rows]), device)),
                };
                let got = host(B::linear_layer(t2::<B>(&x, [n, cols], device), &lin));
                // 17 rows on a GPU: dequantized, then Burn's matmul, in TF32 on cuda (measured on
                // an H200: up to 2.5e-3 of Σ|w·x| over 2,080 columns; the matvec of ≤ 16 rows is
                // f32); on CPU emulation (lavapipe) the matvec, 16 rows at a time
                let rel = if n > 16 { tolerance::<B>(device, 1e-4, 5e-3) } else { 1e-4 };
                check(&format!("device {ty:?} {rows}x{cols} m={n}"), &got, &want, &w, &x, n, rel);
            }
            // the fused steps around the product (input norm, gated output, residual) against
            // the same backend's separate ops
            let plain_lin = Linear::<B> { weight: m.clone(), bias: None };
            let gamma = Tensor::<B, 1>::from_data(TensorData::new(rng.vec(cols), [cols]), device);
            let close = |got: Tensor<B, 2>, want: Tensor<B, 2>, what: &str| {
                let (got, want) = (host(got), host(want));
                let scale = want.iter().fold(1f32, |a, v| a.max(v.abs()));
                let d = max_abs_diff(&got, &want);
                assert!(d <= 1e-5 * scale, "device {ty:?} {rows}x{cols} {what}: differs by {d} (values up to {scale})");
            };
            for n in [1usize, 3, 17] {
                let x = t2::<B>(&rng.vec(n * cols), [n, cols], device);
                let normed = B::linear_layer(B::rms_norm(x.clone(), &gamma, 1e-5), &plain_lin);
                let got = B::norm_linear(x.clone(), &gamma, 1e-5, &plain_lin, None);
                close(got, normed.clone(), &format!("norm_linear m={n}"));
                if rows % 2 == 0 {
                    for act in [Activation::Silu, Activation::GeluTanh] {
                        let got = B::norm_linear(x.clone(), &gamma, 1e-5, &plain_lin, Some(act));
                        close(got, B::gated_act(normed.clone(), act), &format!("gated {act:?} m={n}"));
                    }
                }
                let r = t2::<B>(&rng.vec(n * rows), [n, rows], device);
                let got = B::linear_residual(x.clone(), &plain_lin, r.clone());
                close(got, r + B::linear_layer(x, &plain_lin), &format!("linear_residual m={n}"));
            }
            let ids = [0, rows as u32 - 1, 5 % rows as u32, 0];
            let got = host(B::embed(&ids, &m, device));
            let wd = w.dequantize();
            let want: Vec<f32> =
                ids.iter().flat_map(|&r| wd[r as usize * cols..(r as usize + 1) * cols].to_vec()).collect();
            assert!(max_abs_diff(&got, &want) <= 1e-5, "device {ty:?} embed");
            checked += 1;
        }
    }
    assert_eq!(checked > 0, B::device_blocks_supported(), "matrices checked: {checked}");
}

demiurgic_tests::per_backend!(device_blocks_match_dequantized_reference, device_blocks_match_reference);

/// A one-layer config for cache and attention tests (only the attention shapes matter).
fn cache_config(
    hidden_size: usize,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    max_position_embeddings: usize,
) -> demiurgic_model::ModelConfig {
    let mut c = demiurgic_model::ModelConfig::llama(
        demiurgic_model::families::llama(),
        10,
        hidden_size,
        8,
        1,
        num_heads,
        num_kv_heads,
        head_dim,
        max_position_embeddings,
    );
    c.tie_word_embeddings = true;
    c
}

/// Every KV cache row type flex lists (f32, f16, q8_0) against ndarray's f32 cache, step after
/// step through one cache: a 700-token prefill (the two-GEMM path, on f32 copies of the stored
/// rows), decode steps and 3-token steps (the streaming kernel, split over the key length) and a
/// 9-token step, with GQA, padding in one row, a sliding window and a softcap. Random rows of unit
/// size: f32 within 1e-4, f16 within 2e-3, q8_0 within 3e-2.
#[cfg(feature = "flex")]
#[test]
fn flex_cache_types_match_f32_reference() {
    use demiurgic_model::{CacheType, KvCache};
    type B = burn::backend::Flex;
    let (device, nd) = (Default::default(), Default::default());
    let mut rng = Lcg(17);
    let heads = Heads { q: 6, kv: 2, dim: 64 };
    let cfg = cache_config(384, 6, 2, 64, 2048);
    let width = (heads.q + 2 * heads.kv) * heads.dim;
    let rope_b = RotaryEmbedding::<B>::new(10000.0, 64, 2048, &device);
    let rope_n = RotaryEmbedding::<NdArray>::new(10000.0, 64, 2048, &nd);
    let spec = AttnSpec { window: Some(600), softcap: Some(20.0), ..AttnSpec::plain(heads) };
    let mut checked = vec![];
    for &ty in B::cache_types() {
        let tol = match ty {
            CacheType::F32 => 1e-4,
            CacheType::F16 => 2e-3,
            CacheType::Q8_0 => 3e-2,
        };
        let b = 2;
        let mut cb = KvCache::<B>::with_type(&cfg, b, 1024, &device, ty).unwrap();
        let mut cn = KvCache::<NdArray>::new(&cfg, b, 1024, &nd).unwrap();
        assert_eq!(cb.cache_type(), ty);
        let mut past = 0;
        let mut worst = 0f32;
        for t in [700usize, 1, 1, 3, 9, 1] {
            let keys = past + t;
            let valid = Some((0..b).map(|r| (0..keys).map(|j| r == 0 || j >= 5).collect()).collect::<Vec<Vec<bool>>>());
            let sb = step::<B>(b, t, past, valid.clone(), &device);
            let sn = step::<NdArray>(b, t, past, valid, &nd);
            let qkv = rng.vec(b * t * width);
            let got = host(B::rope_attention(
                t2::<B>(&qkv, [b * t, width], &device),
                &sb,
                &rope_b,
                None,
                Some(cb.layer_mut(0)),
                &spec,
            ));
            let want = host(NdArray::rope_attention(
                t2::<NdArray>(&qkv, [b * t, width], &nd),
                &sn,
                &rope_n,
                None,
                Some(cn.layer_mut(0)),
                &spec,
            ));
            assert_eq!(got.len(), want.len(), "{ty} cache, step of {t} at {past}: output length");
            let diff = max_abs_diff(&got, &want);
            assert!(diff < tol, "{ty} cache, step of {t} at {past}: {diff} from the f32 reference");
            worst = worst.max(diff);
            past = keys;
        }
        eprintln!("{ty} cache: largest difference from ndarray's f32 cache {worst:.2e}");
        checked.push(ty);
    }
    assert_eq!(checked, [CacheType::F32, CacheType::F16, CacheType::Q8_0]);
}

/// The KV cache written step by step (prefill of 3, then 1, then 1) reads back exactly what was
/// written, on every backend (fusion backends queue the writes lazily).
fn cache_appends_read_back<B: DecodeOps>(device: &B::Device) {
    let cfg = cache_config(8, 2, 1, 4, 16);
    let mut cache = demiurgic_model::KvCache::<B>::new(&cfg, 1, 8, device).unwrap();
    let mut want: Vec<f32> = vec![];
    for (start, len) in [(0usize, 3usize), (3, 1), (4, 1), (5, 2)] {
        let vals: Vec<f32> = (0..len * 4).map(|i| (start * 4 + i) as f32).collect();
        want.extend(&vals);
        let t = |d: &B::Device| Tensor::<B, 4>::from_data(TensorData::new(vals.clone(), [1, 1, len, 4]), d);
        let (k, v) = cache.layer_mut(0).append(t(device), t(device), start);
        assert_eq!(host(k), want, "keys after writing {start}..{}", start + len);
        assert_eq!(host(v), want, "values after writing {start}..{}", start + len);
    }
}

demiurgic_tests::per_backend!(kv_cache_appends_read_back, cache_appends_read_back);

/// Largest difference per greedy step between cached logits and the same sequence computed from
/// scratch (no cache) on the same backend: tiny-llama, 4 steps after a prompt of 3.
pub(crate) fn cached_vs_uncached<B: DecodeOps>(device: &B::Device) -> Vec<f32> {
    use demiurgic_model::{load_model, StepInput};
    let loaded = load_model::<B>(&demiurgic_tests::fixture("tiny-llama"), device).unwrap();
    let m = &loaded.model;
    let mut cache = m.new_cache(1, 16).unwrap();
    let mut seq = vec![173u32, 54, 249];
    let mut input =
        StepInput { tokens: vec![seq.clone()], positions: vec![(0..3).collect()], key_valid: vec![vec![true; 3]] };
    let mut diffs = vec![];
    for _ in 0..4 {
        let cached = host(m.forward_last(&input, Some(&mut cache)).unwrap());
        let full = StepInput {
            tokens: vec![seq.clone()],
            positions: vec![(0..seq.len()).collect()],
            key_valid: vec![vec![true; seq.len()]],
        };
        let fresh = host(m.forward_last(&full, None).unwrap());
        assert_eq!(cached.len(), fresh.len(), "logits length");
        diffs.push(max_abs_diff(&cached, &fresh));
        let next = (0..fresh.len()).max_by(|&a, &b| fresh[a].total_cmp(&fresh[b])).unwrap() as u32;
        seq.push(next);
        let n = seq.len();
        input = StepInput { tokens: vec![vec![next]], positions: vec![vec![n - 1]], key_valid: vec![vec![true; n]] };
    }
    diffs
}

/// Every step of a cached greedy decode on tiny-llama gives the logits of the same sequence
/// computed from scratch (no cache) on the same backend.
fn cached_steps_match_uncached<B: DecodeOps>(device: &B::Device) {
    let diffs = cached_vs_uncached::<B>(device);
    assert_eq!(diffs.len(), 4);
    for (step, d) in diffs.iter().enumerate() {
        assert!(*d < 1e-3, "step {step}: cached logits differ from uncached by {d}");
    }
}

demiurgic_tests::per_backend!(cached_decode_steps_match_uncached, cached_steps_match_uncached);

/// Q4_0 / Q5_0 blocks rewritten as Q8_0 (what the loader does to fuse parts of different types)
/// dequantize to the same bits; types with an offset are refused.
#[test]
fn q8_0_rewrite_is_exact() {
    let mut rng = Lcg(21);
    for ty in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
        let m = random_matrix(ty, 5, 96, &mut rng);
        let q8 = to_q8_0_exact(ty, m.data()).unwrap_or_else(|| panic!("{ty:?}: no exact rewrite"));
        let back = QuantMatrix::new(GgmlType::Q8_0, 5, 96, q8).unwrap();
        let (a, b) = (m.dequantize(), back.dequantize());
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{ty:?}: values changed");
    }
    for ty in [GgmlType::Q4_1, GgmlType::Q5_1, GgmlType::Q4K, GgmlType::Q6K] {
        let m = random_matrix(ty, 2, 256, &mut rng);
        assert!(to_q8_0_exact(ty, m.data()).is_none(), "{ty:?} cannot be Q8_0 exactly");
    }
}

/// A sparse MoE block on each backend's weights as it stores a Q8_0 file (flex: host blocks,
/// wgpu/cuda: device blocks, ndarray: dense) against a per-token f64 reference on the
/// dequantized values: tokens grouped by expert give each token its top-2 experts' outputs
/// weighed by the renormalised router probabilities.
fn moe_matches_per_token_reference<B: DecodeOps>(device: &B::Device) {
    use demiurgic_model::mlp::Mlp;
    use demiurgic_model::moe::SparseMoe;
    let (d, w, experts, top_k, m) = (64, 96, 4, 2, 7);
    let mut rng = Lcg(5);
    let mut mat = |rows: usize, cols: usize| {
        let q = Arc::new(random_matrix(GgmlType::Q8_0, rows, cols, &mut rng));
        let stored = match B::host_weights() {
            true => Matrix::Host(q.clone()),
            false => B::device_blocks(q.clone(), device)
                .unwrap_or_else(|| Matrix::Dense(t2::<B>(&q.dequantize(), [rows, cols], device))),
        };
        (Linear::<B> { weight: stored, bias: None }, q.dequantize())
    };
    let (router, rw) = mat(experts, d);
    let mut ws = vec![];
    let experts_b: Vec<Mlp<B>> = (0..experts)
        .map(|_| {
            let (gate_up, gu) = mat(2 * w, d);
            let (down, dn) = mat(d, w);
            ws.push((gu, dn));
            Mlp { gate_up, down, act: Activation::Silu }
        })
        .collect();
    let moe = SparseMoe { router, experts: experts_b, top_k, norm_topk_prob: true };
    let x = rng.vec(m * d);
    let got = host(moe.forward(t2::<B>(&x, [m, d], device)));
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| *p as f64 * *q as f64).sum::<f64>();
    let mut want = vec![0f32; m * d];
    for t in 0..m {
        let xt = &x[t * d..(t + 1) * d];
        let logits: Vec<f64> = (0..experts).map(|e| dot(xt, &rw[e * d..(e + 1) * d])).collect();
        let mut order: Vec<usize> = (0..experts).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        // no near-tie at the top-k boundary: f32 router logits choose the same experts
        assert!(logits[order[top_k - 1]] - logits[order[top_k]] > 1e-3, "token {t}: router near-tie");
        let p: Vec<f64> = order[..top_k].iter().map(|&e| logits[e].exp()).collect();
        let sum: f64 = p.iter().sum();
        for (&e, pe) in order[..top_k].iter().zip(&p) {
            let (gu, dn) = &ws[e];
            let h: Vec<f32> = (0..w)
                .map(|j| {
                    let g = dot(xt, &gu[j * d..(j + 1) * d]);
                    let u = dot(xt, &gu[(w + j) * d..(w + j + 1) * d]);
                    (g / (1.0 + (-g).exp()) * u) as f32
                })
                .collect();
            for i in 0..d {
                want[t * d + i] += (pe / sum * dot(&h, &dn[i * w..(i + 1) * w])) as f32;
            }
        }
    }
    let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
    let diff = max_abs_diff(&got, &want);
    assert!(diff <= 1e-4 * scale, "MoE differs from the per-token reference by {diff} (values up to {scale})");
}

demiurgic_tests::per_backend!(moe_groups_match_per_token_reference, moe_matches_per_token_reference);
