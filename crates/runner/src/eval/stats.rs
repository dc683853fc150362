//! The statistics of an eval table: pass@k (the HumanEval paper's unbiased estimator), a 95%
//! confidence interval of pass@1 by a bootstrap over problems, and a paired comparison of two
//! presets on the same problems.
//!
//! Why a bootstrap over problems and not the binomial on problems × samples: the samples of one
//! problem are not independent (a problem the model cannot do fails all its samples), so treating
//! 164 × 10 samples as 1,640 trials would give an interval about √10 too narrow. The problems are
//! the independent unit: each resample draws 164 problems with replacement and averages their
//! per-problem pass@1. Where every problem has the same score (0% or 100%) the bootstrap collapses
//! to a point; there the exact (Clopper–Pearson) interval on the problems is given instead.

use serde_json::{json, Value};

/// Bootstrap resamples (percentile interval).
pub const RESAMPLES: usize = 10_000;
/// The fixed seed of the resampling: a table is reproducible from its report.
pub const SEED: u64 = 0x5eed_e7a1;

/// How the intervals are computed, as the report and the docs say it.
pub const CI_METHOD: &str = "95% percentile bootstrap over problems (10,000 resamples, fixed seed), \
     the exact Clopper-Pearson interval on problems where every problem scores the same";

/// The unbiased pass@k estimator of the HumanEval paper: `1 − C(n−c, k) / C(n, k)` for a problem
/// with `n` samples of which `c` pass; NaN when `n < k`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n < k || c > n {
        return f64::NAN;
    }
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product::<f64>()
}

/// SplitMix64: a small, well-mixed generator for the resampling (reproducible everywhere).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias at n ≤ 2³² is below 2⁻³²).
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}

/// The 2.5th and 97.5th percentiles of `RESAMPLES` bootstrap means of `values` (each resample
/// draws `values.len()` of them with replacement).
pub fn bootstrap_mean_ci(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = SplitMix(SEED);
    let mut means: Vec<f64> =
        (0..RESAMPLES).map(|_| (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    (at(0.025), at(0.975))
}

/// The exact two-sided 95% interval for `x` successes in `n` trials where it has a closed form:
/// `x = 0` gives `[0, 1 − 0.025^(1/n)]`, `x = n` gives `[0.025^(1/n), 1]`.
pub fn clopper_pearson_extreme(x: usize, n: usize) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let edge = 0.025f64.powf(1.0 / n as f64);
    match x {
        0 => Some((0.0, 1.0 - edge)),
        x if x == n => Some((edge, 1.0)),
        _ => None,
    }
}

/// pass@1 and its 95% interval from each problem's `(samples, passed)`.
pub fn pass1_ci(per_problem: &[(usize, usize)]) -> (f64, (f64, f64)) {
    let p: Vec<f64> = per_problem.iter().map(|&(n, c)| pass_at_k(n, c, 1)).collect();
    let mean = p.iter().sum::<f64>() / p.len().max(1) as f64;
    let all = |v: f64| p.iter().all(|&x| x == v);
    let ci = if all(0.0) {
        clopper_pearson_extreme(0, p.len())
    } else if all(1.0) {
        clopper_pearson_extreme(p.len(), p.len())
    } else {
        None
    };
    (mean, ci.unwrap_or_else(|| bootstrap_mean_ci(&p)))
}

/// pass@k for every k in 1, 2, 5, 10, 20, 50, 100 that is ≤ the fewest samples of any problem:
/// `{"1": …, "2": …}`.
pub fn pass_at_ks(per_problem: &[(usize, usize)]) -> Value {
    let fewest = per_problem.iter().map(|p| p.0).min().unwrap_or(0);
    let mut out = serde_json::Map::new();
    for k in [1, 2, 5, 10, 20, 50, 100].into_iter().filter(|&k| k <= fewest) {
        let v = per_problem.iter().map(|&(n, c)| pass_at_k(n, c, k)).sum::<f64>() / per_problem.len() as f64;
        out.insert(k.to_string(), json!(v));
    }
    Value::Object(out)
}

/// A paired comparison of presets `a` and `b` on the same problems (`ids`, each preset's
/// `(samples, passed)` per problem in that order): the difference of pass@1 with a paired
/// bootstrap interval (the same resampled problems for both), the problems only one of them solves
/// (at least one passing sample), and the order the data gives — none when the interval holds 0.
pub fn paired(a: (&str, &[(usize, usize)]), b: (&str, &[(usize, usize)]), ids: &[String]) -> Value {
    assert!(
        a.1.len() == ids.len() && b.1.len() == ids.len(),
        "paired comparison of {} and {} over {} problems: {} and {} results",
        a.0,
        b.0,
        ids.len(),
        a.1.len(),
        b.1.len()
    );
    let d: Vec<f64> =
        a.1.iter().zip(b.1).map(|(&(na, ca), &(nb, cb))| pass_at_k(na, ca, 1) - pass_at_k(nb, cb, 1)).collect();
    let mean = d.iter().sum::<f64>() / d.len().max(1) as f64;
    let (lo, hi) = if d.iter().all(|&x| x == 0.0) { (0.0, 0.0) } else { bootstrap_mean_ci(&d) };
    let only = |x: &[(usize, usize)], y: &[(usize, usize)]| -> Vec<&str> {
        ids.iter().zip(x.iter().zip(y)).filter(|(_, (p, q))| p.1 > 0 && q.1 == 0).map(|(id, _)| id.as_str()).collect()
    };
    let order = if lo > 0.0 {
        format!("{} > {}", a.0, b.0)
    } else if hi < 0.0 {
        format!("{} > {}", b.0, a.0)
    } else {
        "no order: the interval holds 0".to_string()
    };
    json!({"a": a.0, "b": b.0, "delta_pass@1": mean, "delta_ci": [lo, hi],
        "solved_only_by_a": only(a.1, b.1), "solved_only_by_b": only(b.1, a.1), "order": order})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_matches_the_papers_estimator() {
        // 1 − C(n−c, k)/C(n, k) written out with binomials
        let binom = |n: usize, k: usize| -> f64 { (0..k).map(|i| (n - i) as f64 / (k - i) as f64).product() };
        let mut cases = 0;
        for n in 1..=12 {
            for c in 0..=n {
                for k in 1..=n {
                    let want = if n - c < k { 1.0 } else { 1.0 - binom(n - c, k) / binom(n, k) };
                    assert!((pass_at_k(n, c, k) - want).abs() < 1e-12, "n {n} c {c} k {k}");
                    cases += 1;
                }
            }
        }
        assert!(cases > 300);
        assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-15);
        assert!(pass_at_k(3, 1, 5).is_nan());
    }

    #[test]
    fn bootstrap_interval_holds_the_mean_and_narrows_with_problems() {
        // 30% of problems solved: the interval holds 0.3 and is about ±1.96·√(0.21/n)
        for n in [40usize, 160, 640] {
            let v: Vec<f64> = (0..n).map(|i| if i % 10 < 3 { 1.0 } else { 0.0 }).collect();
            let (lo, hi) = bootstrap_mean_ci(&v);
            let half = 1.96 * (0.21f64 / n as f64).sqrt();
            assert!(lo < 0.3 && 0.3 < hi, "n {n}: [{lo}, {hi}]");
            assert!(((hi - lo) / 2.0 - half).abs() < 0.25 * half, "n {n}: [{lo}, {hi}], normal ±{half}");
        }
        // reproducible
        let v: Vec<f64> = (0..50).map(|i| (i % 7) as f64 / 7.0).collect();
        assert_eq!(bootstrap_mean_ci(&v), bootstrap_mean_ci(&v));
    }

    #[test]
    fn every_problem_alike_gives_the_exact_interval() {
        // 0 of 164: the upper bound solves (1 − p)^164 = 0.025
        let (m, (lo, hi)) = pass1_ci(&vec![(10, 0); 164]);
        assert_eq!((m, lo), (0.0, 0.0));
        assert!((hi - 0.02224).abs() < 1e-4, "{hi}");
        assert!(((1.0 - hi).powi(164) - 0.025).abs() < 1e-9);
        let (m, (lo, hi)) = pass1_ci(&vec![(1, 1); 20]);
        assert_eq!((m, hi), (1.0, 1.0));
        assert!((lo.powi(20) - 0.025).abs() < 1e-9);
        // mixed: the bootstrap, around the mean
        let mixed: Vec<(usize, usize)> = (0..100).map(|i| (10, i % 11)).collect();
        let (m, (lo, hi)) = pass1_ci(&mixed);
        assert!(lo < m && m < hi && hi - lo < 0.2, "{m} [{lo}, {hi}]");
    }

    #[test]
    fn pass_at_ks_up_to_the_fewest_samples() {
        let v = pass_at_ks(&[(10, 1), (10, 0), (12, 12)]);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["1", "2", "5", "10"]);
        assert!((v["1"].as_f64().unwrap() - (0.1 + 0.0 + 1.0) / 3.0).abs() < 1e-12);
        assert!((v["10"].as_f64().unwrap() - (1.0 + 0.0 + 1.0) / 3.0).abs() < 1e-12);
        assert_eq!(pass_at_ks(&[(1, 1)]).as_object().unwrap().len(), 1);
    }

    #[test]
    fn paired_comparison_orders_only_what_the_data_gives() {
        let ids: Vec<String> = (0..100).map(|i| format!("T/{i}")).collect();
        // a solves 40 problems, b the same 40 minus 30: a clear order
        let a: Vec<(usize, usize)> = (0..100).map(|i| (5, if i < 40 { 5 } else { 0 })).collect();
        let b: Vec<(usize, usize)> = (0..100).map(|i| (5, if i < 10 { 5 } else { 0 })).collect();
        let v = paired(("a", &a), ("b", &b), &ids);
        assert_eq!(v["order"], "a > b");
        assert!((v["delta_pass@1"].as_f64().unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(v["solved_only_by_a"].as_array().unwrap().len(), 30);
        assert_eq!(v["solved_only_by_b"].as_array().unwrap().len(), 0);
        let v = paired(("b", &b), ("a", &a), &ids);
        assert_eq!(v["order"], "a > b");
        // one problem apart out of 100: no order
        let c: Vec<(usize, usize)> = (0..100).map(|i| (5, if i < 11 { 5 } else { 0 })).collect();
        let v = paired(("b", &b), ("c", &c), &ids);
        assert_eq!(v["order"], "no order: the interval holds 0", "{v}");
        assert_eq!(v["solved_only_by_a"], json!([]));
        assert_eq!(v["solved_only_by_b"], json!(["T/10"]));
        assert_eq!(paired(("c", &c), ("b", &b), &ids)["solved_only_by_a"], json!(["T/10"]));
    }
}
