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

#[allow(dead_code)]
fn single() {}
