//! DRY, "don't repeat yourself" (llama.cpp's `dry_*`): a token that would extend a repetition of
//! at least `allowed_length` tokens (the context's last tokens appearing earlier, followed by that
//! token) loses `multiplier · base^(length − allowed_length)`. Matches do not reach back past the
//! last sequence-breaker token, and breaker tokens are never penalised. As llama.cpp, over the
//! last `penalty_last_n` tokens of prompt + generated text (0 = the whole context).
//!
//! Breakers are token ids here; the text breakers of the config (`"\n"`, `":"`, …) are mapped to
//! every token whose text contains one (llama.cpp also follows breakers split over several
//! tokens; those are not matched here).
use burn::tensor::{backend::Backend, IndexingUpdateOp, Tensor};

use crate::error::{invalid, SamplingError};
use crate::pipeline::{LogitsProcessor, ProcessorContext};
use crate::util::row_index;
use serde::{Deserialize, Serialize};

use super::{Boxed, BuildContext, ProcessorConfig};

/// llama.cpp's DRY: multiplier (0 = off), base, allowed length, the last N tokens looked at
/// (-1 = the whole context, 0 = off), and the texts that break a repetition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DryConfig {
    pub dry_multiplier: f32,
    pub dry_base: f32,
    pub dry_allowed_length: usize,
    pub dry_penalty_last_n: i64,
    pub dry_sequence_breakers: Vec<String>,
}

impl Default for DryConfig {
    fn default() -> Self {
        Self {
            dry_multiplier: 0.0,
            dry_base: 1.75,
            dry_allowed_length: 2,
            dry_penalty_last_n: -1,
            dry_sequence_breakers: ["\n", ":", "\"", "*"].map(String::from).to_vec(),
        }
    }
}

impl ProcessorConfig for DryConfig {
    fn validate(&self) -> Result<(), SamplingError> {
        if !(self.dry_multiplier >= 0.0 && self.dry_multiplier.is_finite()) {
            return Err(invalid("dry_multiplier", self.dry_multiplier, "must be a finite number ≥ 0 (0 = off)"));
        }
        if !(self.dry_base >= 1.0 && self.dry_base.is_finite()) {
            return Err(invalid("dry_base", self.dry_base, "must be a finite number ≥ 1"));
        }
        if self.dry_allowed_length == 0 {
            return Err(invalid("dry_allowed_length", 0, "must be ≥ 1"));
        }
        if self.dry_penalty_last_n < -1 {
            return Err(invalid(
                "dry_penalty_last_n",
                self.dry_penalty_last_n,
                "must be ≥ -1 (-1 = the whole context, 0 = off)",
            ));
        }
        if let Some(b) = self.dry_sequence_breakers.iter().find(|b| b.is_empty()) {
            return Err(invalid("dry_sequence_breakers", format!("{b:?}"), "breakers must not be empty strings"));
        }
        Ok(())
    }

    fn needs_vocabulary(&self) -> bool {
        self.dry_multiplier != 0.0 && !self.dry_sequence_breakers.is_empty()
    }

    fn build<B: Backend>(&self, ctx: &BuildContext<'_>, out: &mut Boxed<B>) -> Result<(), SamplingError> {
        if !(self.dry_multiplier > 0.0 && self.dry_penalty_last_n != 0) {
            return Ok(());
        }
        let breakers = match (self.dry_sequence_breakers.is_empty(), ctx.grammar) {
            (true, _) => vec![],
            (false, Some(g)) => g.tokens_containing(&self.dry_sequence_breakers),
            (false, None) => {
                return Err(SamplingError::Grammar(
                    "dry_sequence_breakers are text: they need the tokenizer's vocabulary (a GrammarCompiler)".into(),
                ))
            }
        };
        let last_n = self.dry_penalty_last_n.max(0) as usize;
        out.push(Box::new(Dry::new(self.dry_multiplier, self.dry_base, self.dry_allowed_length, last_n, breakers)?));
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Dry {
    multiplier: f32,
    base: f32,
    allowed_length: usize,
    last_n: usize,
    breakers: std::collections::HashSet<u32>,
}

impl Dry {
    pub fn new(
        multiplier: f32,
        base: f32,
        allowed_length: usize,
        last_n: usize,
        breakers: impl IntoIterator<Item = u32>,
    ) -> Result<Self, SamplingError> {
        if !(multiplier > 0.0 && multiplier.is_finite()) {
            return Err(invalid("dry_multiplier", multiplier, "must be a finite number > 0 (0 = off)"));
        }
        if !(base >= 1.0 && base.is_finite()) {
            return Err(invalid("dry_base", base, "must be a finite number ≥ 1"));
        }
        if allowed_length == 0 {
            return Err(invalid("dry_allowed_length", 0, "must be ≥ 1"));
        }
        Ok(Self { multiplier, base, allowed_length, last_n, breakers: breakers.into_iter().collect() })
    }

    /// Per token that would extend a repetition: its penalty (llama.cpp's steps 1–4).
    pub fn penalties(&self, history: &[u32]) -> Vec<(u32, f32)> {
        let ctx = if self.last_n > 0 && history.len() > self.last_n {
            &history[history.len() - self.last_n..]
        } else {
            history
        };
        let n = ctx.len();
        if n <= self.allowed_length {
            return vec![];
        }
        // matches stop at the most recent breaker
        let rep_limit = (0..n).find(|&i| self.breakers.contains(&ctx[n - 1 - i])).unwrap_or(n);
        if rep_limit < self.allowed_length {
            return vec![];
        }
        // longest common suffix of ctx[..=p] and ctx (the Z-algorithm on the reversed context)
        let rev: Vec<u32> = ctx.iter().rev().copied().collect();
        let z = z_array(&rev);
        let mut best: std::collections::HashMap<u32, usize> = Default::default();
        for k in 1..n {
            let len = z[k].min(rep_limit);
            if len >= self.allowed_length {
                // rev[k] is ctx[n-1-k]; the token after it extends the repetition
                let next = ctx[n - k];
                let e = best.entry(next).or_insert(0);
                *e = (*e).max(len);
            }
        }
        let max_exp = if self.base > 1.000001 { (88.722_84 / self.base.ln()) as usize } else { usize::MAX };
        let mut out: Vec<(u32, f32)> = best
            .into_iter()
            .filter(|(t, _)| !self.breakers.contains(t))
            .map(|(t, len)| (t, self.multiplier * self.base.powi((len - self.allowed_length).min(max_exp) as i32)))
            .collect();
        out.sort_by_key(|x| x.0);
        out
    }
}

/// `z[k]` = length of the longest common prefix of `s` and `s[k..]` (`z[0]` = len).
fn z_array(s: &[u32]) -> Vec<usize> {
    let n = s.len();
    let mut z = vec![0; n];
    if n == 0 {
        return z;
    }
    z[0] = n;
    let (mut l, mut r) = (0, 0);
    for k in 1..n {
        if k < r {
            z[k] = z[k - l].min(r - k);
        }
        while k + z[k] < n && s[z[k]] == s[k + z[k]] {
            z[k] += 1;
        }
        if k + z[k] > r {
            l = k;
            r = k + z[k];
        }
    }
    z
}

impl<B: Backend> LogitsProcessor<B> for Dry {
    fn name(&self) -> &'static str {
        "dry"
    }

    fn process(&self, logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let v = logits.dims()[1] as u32;
        let rows: Vec<Vec<(u32, f32)>> = ctx
            .sequences
            .iter()
            .map(|s| self.penalties(s).into_iter().filter(|(t, _)| *t < v).map(|(t, p)| (t, -p)).collect())
            .collect();
        let Some(ri) = row_index::<B>(&rows, &logits.device()) else { return logits };
        logits.scatter(1, ri.idx, ri.values.mul(ri.valid), IndexingUpdateOp::Add)
    }
}
