//! The multinomial sampler draws from the distribution it is given: a seeded chi-square test over
//! many draws from a fixed distribution (deterministic for the seed, so never flaky; a biased
//! sampler — off-by-one in the cumulative search, a row's uniform reused, temperature ignored —
//! fails it), and a -inf token is never drawn.
use burn::tensor::{backend::Backend, Tensor, TensorData};
use demiurgic_sampling::Sampler;
use demiurgic_tests::per_backend;

fn chi_square<B: Backend>(device: &B::Device) {
    let probs = [0.40f64, 0.25, 0.15, 0.10, 0.07, 0.03, 0.0];
    let logits: Vec<f32> =
        probs.iter().map(|&p| if p > 0.0 { (p.ln() + 3.0) as f32 } else { f32::NEG_INFINITY }).collect();
    let (rows, steps) = (1000usize, 20usize);
    let v = probs.len();
    let mut counts = vec![0u64; v];
    let mut sampler = Sampler::multinomial(20261130, rows);
    for _ in 0..steps {
        let t = Tensor::<B, 2>::from_data(TensorData::new(logits.repeat(rows), [rows, v]), device);
        for id in sampler.sample(t) {
            counts[id as usize] += 1;
        }
    }
    let n = (rows * steps) as f64;
    assert_eq!(counts[v - 1], 0, "a -inf token was drawn: {counts:?}");
    let chi2: f64 = probs[..v - 1]
        .iter()
        .zip(&counts)
        .map(|(&p, &c)| {
            let e = p * n;
            (c as f64 - e).powi(2) / e
        })
        .sum();
    // 5 degrees of freedom: P(chi2 > 20.52) = 0.001
    assert!(chi2 < 20.52, "chi-square {chi2:.2} over {n} draws: counts {counts:?} for probabilities {probs:?}");
    // and rows are independent streams: the first step's draws are not all the same
    let t = Tensor::<B, 2>::from_data(TensorData::new(logits.repeat(rows), [rows, v]), device);
    let ids = Sampler::multinomial(1, rows).sample(t);
    assert!(ids.iter().any(|&i| i != ids[0]));
}

per_backend!(multinomial_draws_follow_the_distribution, chi_square);
