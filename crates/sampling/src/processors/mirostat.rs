//! Mirostat 2.0 (Basu et al. 2021; llama.cpp's `mirostat = 2`, `mirostat_tau`, `mirostat_eta`):
//! per row a target surprise `tau` and a running bound `mu` (starting at `2·tau`); each step
//! removes the tokens whose surprise `−log2 p` exceeds `mu` (the most likely always stays), the
//! sampler draws from the rest, and `mu −= eta · (surprise of the drawn token − tau)`, the
//! surprise measured in the truncated, renormalised distribution.
//!
//! The drawn token is read from the row's history at the next step (the distribution it was
//! drawn from is kept on the device until then), so rows must keep their order between steps:
//! greedy/sampling decoding, not speculative decoding (refused by the config's validation).
use std::sync::Mutex;

use burn::tensor::{activation::log_softmax, backend::Backend, Int, Tensor, TensorData};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};
use serde::{Deserialize, Serialize};

use super::{Boxed, BuildContext, ProcessorConfig};

/// llama.cpp's mirostat: 0 = off, 2 = Mirostat 2.0 (target surprise `mirostat_tau`, learning
/// rate `mirostat_eta`). With it the truncation warpers are not applied (as llama.cpp).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MirostatConfig {
    pub mirostat: u8,
    pub mirostat_tau: f32,
    pub mirostat_eta: f32,
}

impl Default for MirostatConfig {
    fn default() -> Self {
        Self { mirostat: 0, mirostat_tau: 5.0, mirostat_eta: 0.1 }
    }
}

impl MirostatConfig {
    pub fn is_on(&self) -> bool {
        self.mirostat != 0
    }
}

impl ProcessorConfig for MirostatConfig {
    fn validate(&self) -> Result<(), SamplingError> {
        match self.mirostat {
            0 | 2 => {}
            1 => return Err(invalid("mirostat", 1, "Mirostat 1 is not implemented: use 2 (Mirostat 2.0) or 0")),
            m => return Err(invalid("mirostat", m, "must be 0 (off) or 2 (Mirostat 2.0)")),
        }
        if self.mirostat == 2 {
            if !(self.mirostat_tau > 0.0 && self.mirostat_tau.is_finite()) {
                return Err(invalid("mirostat_tau", self.mirostat_tau, "must be a finite number > 0"));
            }
            if !(self.mirostat_eta > 0.0 && self.mirostat_eta <= 1.0) {
                return Err(invalid("mirostat_eta", self.mirostat_eta, "must be in (0, 1]"));
            }
        }
        Ok(())
    }

    fn build<B: Backend>(&self, _: &BuildContext<'_>, out: &mut Boxed<B>) -> Result<(), SamplingError> {
        if self.mirostat == 2 {
            out.push(Box::new(MirostatV2::<B>::new(self.mirostat_tau, self.mirostat_eta)?));
        }
        Ok(())
    }
}

struct State<B: Backend> {
    mu: Vec<f32>,
    /// Log-probabilities the last step drew from, and the history length then.
    last: Option<(Tensor<B, 2>, usize)>,
}

pub struct MirostatV2<B: Backend> {
    tau: f32,
    eta: f32,
    state: Mutex<State<B>>,
}

impl<B: Backend> MirostatV2<B> {
    /// tau > 0 (target surprise, bits), eta in (0, 1].
    pub fn new(tau: f32, eta: f32) -> Result<Self, SamplingError> {
        if !(tau > 0.0 && tau.is_finite()) {
            return Err(invalid("mirostat_tau", tau, "must be a finite number > 0"));
        }
        if !(eta > 0.0 && eta <= 1.0) {
            return Err(invalid("mirostat_eta", eta, "must be in (0, 1]"));
        }
        Ok(Self { tau, eta, state: Mutex::new(State { mu: vec![], last: None }) })
    }

    /// The current bound of each row (for tests and reports).
    pub fn mu(&self) -> Vec<f32> {
        self.state.lock().expect("mirostat state").mu.clone()
    }
}

impl<B: Backend> LogitsProcessor<B> for MirostatV2<B> {
    fn name(&self) -> &'static str {
        "mirostat_v2"
    }

    fn process(&self, logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let [b, v] = logits.dims();
        let mut st = self.state.lock().expect("mirostat state");
        if st.mu.len() != b {
            st.mu = vec![2.0 * self.tau; b];
            st.last = None;
        }
        if let Some((logp, n)) = st.last.take() {
            // the token each row drew last step: its surprise moves mu
            if ctx.num_generated > n {
                let ids: Vec<i64> =
                    ctx.sequences.iter().map(|s| s.last().copied().unwrap_or(0).min(v as u32 - 1) as i64).collect();
                let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, 1]), &logits.device());
                let lp: Vec<f32> = logp.gather(1, idx).into_data().iter::<f32>().collect();
                for (mu, lp) in st.mu.iter_mut().zip(lp) {
                    let surprise = -lp / std::f32::consts::LN_2;
                    if surprise.is_finite() {
                        *mu -= self.eta * (surprise - self.tau);
                    }
                }
            }
        }
        let mu = Tensor::<B, 2>::from_data(TensorData::new(st.mu.clone(), [b, 1]), &logits.device());
        let surprise = log_softmax(logits.clone(), 1).div_scalar(-std::f32::consts::LN_2);
        let top = logits.clone().max_dim(1).expand([b, v]);
        let remove = surprise.greater(mu.expand([b, v])).bool_and(logits.clone().lower(top));
        let out = logits.mask_fill(remove, f32::NEG_INFINITY);
        st.last = Some((log_softmax(out.clone(), 1), ctx.num_generated));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    /// Two steps against the published update, computed here on the host in f64: the kept set is
    /// the tokens with surprise ≤ mu (the top always), mu moves by eta · (surprise − tau) of the
    /// token drawn, measured in the truncated distribution.
    #[test]
    fn truncates_by_surprise_and_updates_mu() {
        let d = Default::default();
        let (tau, eta) = (1.5f32, 0.5f32);
        let m = MirostatV2::<NdArray>::new(tau, eta).unwrap();
        let rows = [vec![2.0f32, 1.0, 0.5, -1.0, -3.0], vec![0.1, 0.0, -0.1, -0.2, 5.0]];
        let kept = |row: &[f32], mu: f64| -> Vec<bool> {
            let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
            let top = row.iter().cloned().fold(f32::MIN, f32::max);
            row.iter().map(|&x| -((x as f64).exp() / z).log2() <= mu || x == top).collect()
        };
        let step = |seqs: &[Vec<u32>], n: usize| {
            let data: Vec<f32> = rows.concat();
            let t = Tensor::<NdArray, 2>::from_data(TensorData::new(data, [2, 5]), &d);
            let ctx = ProcessorContext { sequences: seqs, num_generated: n, cur_len: 3 + n };
            m.process(t, &ctx).into_data().iter::<f32>().collect::<Vec<f32>>()
        };
        let seqs = vec![vec![7, 7, 7], vec![7, 7, 7]];
        let out = step(&seqs, 0);
        let mu0 = 2.0 * tau as f64;
        for (r, row) in rows.iter().enumerate() {
            let k = kept(row, mu0);
            for (i, &keep) in k.iter().enumerate() {
                assert_eq!(out[r * 5 + i].is_finite(), keep, "step 1 row {r} token {i}");
            }
        }
        // row 0 drew token 1, row 1 token 4
        let drawn = [1usize, 4];
        let seqs2 = vec![vec![7, 7, 7, 1], vec![7, 7, 7, 4]];
        step(&seqs2, 1);
        for (r, row) in rows.iter().enumerate() {
            let k = kept(row, mu0);
            let z: f64 = row.iter().zip(&k).filter(|(_, &k)| k).map(|(&x, _)| (x as f64).exp()).sum();
            let s = -((row[drawn[r]] as f64).exp() / z).log2();
            let want = mu0 - eta as f64 * (s - tau as f64);
            assert!((m.mu()[r] as f64 - want).abs() < 1e-5, "row {r}: mu {} vs {want}", m.mu()[r]);
        }
    }
}
