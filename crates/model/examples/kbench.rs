//! Micro-benchmark of the CPU linear kernels on the default model's shapes (development aid).
use demiurgic_model::ggml::GgmlType;
use demiurgic_model::kernels::{cpu, ActQuant, QuantMatrix};
use std::time::Instant;

fn main() {
    rayon::scope(|_| run());
}

fn run() {
    if std::env::var("BIG").is_ok() {
        // DRAM-resident matrices (the head's shape): GB/s of weights streamed at m = 1
        let (n, k) = (49152usize, 576usize);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        let x: Vec<f32> = (0..k).map(|i| ((i * 31 % 97) as f32 / 48.0) - 1.0).collect();
        for ty in [GgmlType::Q8_0, GgmlType::Q4_1, GgmlType::Q4_0] {
            for (act, il) in
                [(ActQuant::F32, false), (ActQuant::Int8, false), (ActQuant::Int8, true), (ActQuant::Int16, true)]
            {
                let int8 = act;
                let q = QuantMatrix::quantize(ty, n, k, &w).unwrap().with_activations(act);
                let q = if il { q.interleave8() } else { q };
                let reps = 20;
                let mut s = cpu::linear(&q, &x, 1, None)[0];
                let t = Instant::now();
                for _ in 0..reps {
                    s += cpu::linear(&q, &x, 1, None)[0];
                }
                let dt = t.elapsed().as_secs_f64() / reps as f64;
                println!(
                    "{ty:?} {int8:?} interleaved={il}: {:.2} GB/s, {:.2} ns/block/thread ({s})",
                    q.bytes() as f64 / dt / 1e9,
                    dt * 1e9 * rayon::current_num_threads() as f64 / (n * k / 32) as f64
                );
            }
        }
        return;
    }
    if std::env::var("COLD").is_ok() {
        // decode as the model streams it: 18 layers' matrices (72 MB of Gemma 3 270M's shapes),
        // one row each, so every matrix comes from DRAM
        for (name, ty, n, k) in [
            ("qkv Q8_0 il", GgmlType::Q8_0, 1536usize, 640usize),
            ("gate_up Q5_0", GgmlType::Q5_0, 4096usize, 640usize),
            ("down Q6K", GgmlType::Q6K, 640, 2048),
            ("down Q4K", GgmlType::Q4K, 640, 2048),
            ("out Q4K", GgmlType::Q4K, 640, 1024),
        ] {
            let ws: Vec<QuantMatrix> = (0..18)
                .map(|l| QuantMatrix::random_blocks(ty, n, k, l as u64).with_activations(ActQuant::Int16).interleave8())
                .collect();
            let x: Vec<f32> = (0..k).map(|i| (i * 7919 % 2003) as f32 / 1001.5 - 1.0).collect();
            for _ in 0..3 {
                let t = Instant::now();
                for w in &ws {
                    std::hint::black_box(cpu::linear(w, &x, 1, None));
                }
                let dt = t.elapsed().as_secs_f64();
                let bytes: usize = ws.iter().map(|w| w.bytes()).sum();
                println!("{name:14} 18 layers m=1: {:.2} ms ({:.1} GB/s)", dt * 1e3, bytes as f64 / dt / 1e9);
            }
        }
        return;
    }
    if let Ok(c) = std::env::var("ATTN") {
        // ATTN=4096: one decode step's attention over 30 layers' caches of SmolLM2's shape (9 query
        // heads over 3 K/V heads of 64) after `c` tokens, per cache type: ms per step and GB/s read;
        // GEMMA=1: 18 layers of Gemma 3 270M's (4 query heads over 1 K/V head of 256); ROWS=b rows
        let rows = std::env::var("ROWS").map_or(1, |r| r.parse().expect("ROWS=<rows>"));
        let shape = if std::env::var("GEMMA").is_ok() { (18, 4, 1, 256) } else { (30, 9, 3, 64) };
        return attention(c.parse().expect("ATTN=<context tokens>"), rows, shape);
    }
    if let Ok(m) = std::env::var("BATCH") {
        // batched decode on SmolLM2's interleaved Q4_1 / Q8_0 shapes, int16 (or ACT=int8)
        let m: usize = m.parse().expect("BATCH=<rows>");
        let act = if std::env::var("ACT").as_deref() == Ok("int8") { ActQuant::Int8 } else { ActQuant::Int16 };
        for (name, ty, n, k) in [
            ("qkv", GgmlType::Q4_1, 960usize, 576usize),
            ("o", GgmlType::Q4_1, 576, 576),
            ("gate_up", GgmlType::Q4_1, 3072, 576),
            ("down", GgmlType::Q4_1, 576, 1536),
            ("head Q8_0", GgmlType::Q8_0, 49152, 576),
            ("gemma head", GgmlType::Q8_0, 262144, 640),
        ] {
            let w = QuantMatrix::random_blocks(ty, n, k, 5).with_activations(act).interleave8();
            let x: Vec<f32> = (0..m * k).map(|i| (i * 7919 % 2003) as f32 / 1001.5 - 1.0).collect();
            let _ = cpu::linear(&w, &x, m, None);
            let reps = 50;
            let t = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(cpu::linear(&w, &x, m, None));
            }
            let dt = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "{name:10} m={m} {act:?}: {:.3} ms ({:.0} GFLOP/s)",
                dt * 1e3,
                2.0 * (m * n * k) as f64 / dt / 1e9
            );
        }
        return;
    }
    if let Ok(m) = std::env::var("PREFILL") {
        // PREFILL=128 (FORCE=1: the int16 GEMM at every size)
        return prefill(m.parse().expect("PREFILL=<rows>"), std::env::var("FORCE").is_ok());
    }
    if std::env::var("BW").is_ok() {
        // read bandwidth: f32 sum over 512 MiB, 1 and all threads
        use rayon::prelude::*;
        let v = vec![1.0f32; 128 << 20];
        for threads in [1usize, rayon::current_num_threads()] {
            let chunk = v.len() / threads;
            let t = Instant::now();
            let mut s = 0f32;
            for _ in 0..5 {
                s += v
                    .par_chunks(chunk)
                    .map(|c| {
                        c.chunks_exact(16)
                            .fold([0f32; 16], |mut a, x| {
                                for j in 0..16 {
                                    a[j] += x[j];
                                }
                                a
                            })
                            .iter()
                            .sum::<f32>()
                    })
                    .sum::<f32>();
            }
            let dt = t.elapsed().as_secs_f64() / 5.0;
            println!("read bandwidth, {threads} thread(s): {:.1} GB/s ({s})", (v.len() * 4) as f64 / dt / 1e9);
        }
        return;
    }
    if std::env::var("SINGLE").is_ok() {
        // one thread, one 64-row matrix resident in L1/L2: cycles per block of the dot kernels
        let (n, k) = (64usize, 576usize);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
        let x: Vec<f32> = (0..k).map(|i| ((i * 31 % 97) as f32 / 48.0) - 1.0).collect();
        for ty in [GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q6K] {
            for int8 in [false, true] {
                let q = QuantMatrix::quantize(
                    ty,
                    n,
                    if ty == GgmlType::Q6K { 512 } else { k },
                    &if ty == GgmlType::Q6K { vec![0.5f32; n * 512] } else { w.clone() },
                );
                let Ok(q) = q else { continue };
                let q = q.with_int8_activations(int8);
                let xx = &vec![0.25f32; q.cols()];
                let reps = 20000;
                let t = Instant::now();
                let mut s = 0f32;
                for _ in 0..reps {
                    s += cpu::linear(&q, xx, 1, None)[0];
                }
                let dt = t.elapsed().as_secs_f64() / reps as f64;
                let blocks = n * q.cols() / 32;
                println!("{ty:?} int8={int8}: {:.2} ns/block-of-32 ({s})", dt * 1e9 / blocks as f64);
            }
        }
        let _ = x;
        return;
    }
    let (n, k) = (1536usize, 576usize);
    let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    let x: Vec<f32> = (0..k * 128).map(|i| ((i * 31 % 97) as f32 / 48.0) - 1.0).collect();
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
        for int8 in [false, true] {
            if int8 && matches!(ty, GgmlType::F32 | GgmlType::F16) {
                continue;
            }
            let q = QuantMatrix::quantize(ty, n, k, &w).unwrap().with_int8_activations(int8);
            for m in [1usize, 4, 16, 128] {
                let reps = (4000 / m).max(10);
                let t = Instant::now();
                let mut s = 0f32;
                for _ in 0..reps {
                    s += cpu::linear(&q, &x[..m * k], m, None)[0];
                }
                let dt = t.elapsed().as_secs_f64() / reps as f64;
                println!(
                    "{ty:?}{} m={m}: {:.1} us/call, {:.1} GMAC/s ({s})",
                    if int8 { " int8" } else { "" },
                    dt * 1e6,
                    (n * k * m) as f64 / dt / 1e9
                );
            }
        }
    }
}

/// Gemma 3 270M / SmolLM2 shapes at `m` rows: the f32 path (row kernels, or dequantized
/// tiles + gemm) against int16 activations (group kernels or the int16 GEMM; `force`: always the
/// GEMM).
fn prefill(m: usize, force: bool) {
    let shapes = [
        ("qkv Q8_0", GgmlType::Q8_0, 1536, 640),
        ("out Q4K", GgmlType::Q4K, 640, 1024),
        ("gate_up Q5_0", GgmlType::Q5_0, 4096, 640),
        ("down Q6K", GgmlType::Q6K, 640, 2048),
        ("down Q4K", GgmlType::Q4K, 640, 2048),
        ("smol gate_up Q4_1", GgmlType::Q4_1, 3072, 576),
    ];
    // FRESH=1: every product on a new copy of the matrix (no kept panels)
    let fresh = std::env::var("FRESH").is_ok();
    for (name, ty, n, k) in shapes {
        let w = QuantMatrix::random_blocks(ty, n, k, 5);
        let x: Vec<f32> = (0..m * k).map(|i| (i * 7919 % 2003) as f32 / 1001.5 - 1.0).collect();
        let mut res = vec![];
        for act in [ActQuant::F32, ActQuant::Int16, ActQuant::Int8] {
            let wa = if act != ActQuant::F32 && w.can_interleave8() && (m <= 16 || act == ActQuant::Int8) {
                w.clone().with_activations(act).interleave8()
            } else {
                w.clone().with_activations(act)
            };
            let _ = cpu::linear(&wa, &x, m, None);
            let reps = 10;
            let t = Instant::now();
            for _ in 0..reps {
                if fresh {
                    // a new matrix each time: no kept panels (a one-off prompt's cost)
                    std::hint::black_box(cpu::linear(&wa.clone(), &x, m, None));
                } else if act != ActQuant::F32 && force {
                    let mut o = vec![0f32; m * n];
                    demiurgic_model::kernels::igemm::gemm(&wa, &x, m, &mut o);
                    std::hint::black_box(o);
                } else {
                    std::hint::black_box(cpu::linear(&wa, &x, m, None));
                }
            }
            let dt = t.elapsed().as_secs_f64() / reps as f64;
            res.push(dt);
        }
        let flops = 2.0 * (m * n * k) as f64;
        println!(
            "{name:20} m={m} f32 {:.2} ms ({:.0} GFLOP/s)  int16 {:.2} ms ({:.0})  int8 {:.2} ms ({:.0})",
            res[0] * 1e3,
            flops / res[0] / 1e9,
            res[1] * 1e3,
            flops / res[1] / 1e9,
            res[2] * 1e3,
            flops / res[2] / 1e9
        );
    }
}

fn attention(ctx: usize, b: usize, (layers, h, g, d): (usize, usize, usize, usize)) {
    use demiurgic_model::kernels::kv::{self, AttnShape, KeyMask, KvRows, KvRowsMut};
    use half::f16;
    let cap = ctx + 1;
    let n = b * g * cap * d;
    let vals: Vec<f32> = (0..n).map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0).collect();
    let q: Vec<f32> = (0..b * h * d).map(|i| ((i * 31 % 97) as f32 / 48.0) - 1.0).collect();
    let s = AttnShape { b, h, kv: g, t: 1, d, cap, past: ctx };
    let mask = KeyMask::all(d);
    for ty in ["f32", "f16", "q8_0"] {
        let caches: Vec<(Vec<f32>, Vec<f16>, Vec<u8>)> = (0..2 * layers)
            .map(|_| {
                let mut c16 = vec![f16::ZERO; if ty == "f16" { n } else { 0 }];
                let mut c8 = vec![0u8; if ty == "q8_0" { n / 32 * 34 } else { 0 }];
                match ty {
                    "f16" => kv::cache_write(KvRowsMut::F16(&mut c16), &vals, 1, 1, n / d, n / d, d, 0),
                    "q8_0" => kv::cache_write(KvRowsMut::Q8(&mut c8), &vals, 1, 1, n / d, n / d, d, 0),
                    _ => {}
                }
                (if ty == "f32" { vals.clone() } else { vec![] }, c16, c8)
            })
            .collect();
        fn rows<'a>(ty: &str, c: &'a (Vec<f32>, Vec<f16>, Vec<u8>)) -> KvRows<'a> {
            match ty {
                "f32" => KvRows::F32(&c.0),
                "f16" => KvRows::F16(&c.1),
                _ => KvRows::Q8(&c.2),
            }
        }
        let bytes = match ty {
            "f32" => 4 * n,
            "f16" => 2 * n,
            _ => n / 32 * 34,
        } * 2
            * layers;
        let mut times = vec![];
        for _ in 0..15 {
            let t = Instant::now();
            for l in 0..layers {
                std::hint::black_box(kv::attention(
                    &q,
                    rows(ty, &caches[2 * l]),
                    rows(ty, &caches[2 * l + 1]),
                    &s,
                    &mask,
                ));
            }
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        for (what, dt) in [("min", times[0]), ("median", times[7])] {
            println!(
                "{ty:5} {ctx} keys, {b} row(s), {layers} layers, {what:6} of 15: {:.2} ms ({:.1} GB/s)",
                dt * 1e3,
                bytes as f64 / dt / 1e9
            );
        }
    }
}
