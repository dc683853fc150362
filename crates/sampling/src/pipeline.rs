//! The ordered list of logit processors and the public trait users implement.
use burn::tensor::{backend::Backend, Tensor};

use crate::config::GenerationConfig;
use crate::error::SamplingError;
use crate::{
    BannedTokens, Dry, DynamicTemperature, EpsilonCutoff, EtaCutoff, ExponentialDecayLengthPenalty,
    FrequencyPresencePenalty, GrammarCompiler, GrammarConstraint, LogitBias, MinLength, MinNewTokens, MinP, MirostatV2,
    NoRepeatNGram, RepetitionPenalty, SequenceBias, SuppressTokens, SuppressTokensAtBegin, Temperature, TopK,
    TopNSigma, TopP, TypicalP, Xtc,
};

/// What a processor may look at besides the logits.
#[derive(Debug, Clone, Copy)]
pub struct ProcessorContext<'a> {
    /// Per row: the real tokens so far (prompt without padding, then generated tokens).
    pub sequences: &'a [Vec<u32>],
    /// Tokens generated so far (the same for every row; finished rows count their padding).
    pub num_generated: usize,
    /// Current padded length (prompt padded to the longest + generated), transformers' `cur_len`.
    pub cur_len: usize,
}

impl<'a> ProcessorContext<'a> {
    /// The generated tokens of row `b`.
    pub fn generated(&self, b: usize) -> &'a [u32] {
        let s = &self.sequences[b];
        &s[s.len().saturating_sub(self.num_generated)..]
    }
}

/// A logit processor: a pure function of (logits, token history, its config) → logits.
///
/// Implement it to add your own step to a [`LogitsPipeline`] with [`LogitsPipeline::push`].
pub trait LogitsProcessor<B: Backend>: Send + Sync {
    /// Short name for logs and errors.
    fn name(&self) -> &'static str;
    /// # Shapes
    /// - logits: `[batch, vocab]` → `[batch, vocab]`
    fn process(&self, logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2>;
}

/// Processors applied in order.
pub struct LogitsPipeline<B: Backend> {
    head: Vec<Box<dyn LogitsProcessor<B>>>,
    user: Vec<Box<dyn LogitsProcessor<B>>>,
    warpers: Vec<Box<dyn LogitsProcessor<B>>>,
}

impl<B: Backend> Default for LogitsPipeline<B> {
    fn default() -> Self {
        Self { head: vec![], user: vec![], warpers: vec![] }
    }
}

impl<B: Backend> LogitsPipeline<B> {
    /// The pipeline a [`GenerationConfig`] describes (validated first). `eos` are the ids masked
    /// by `min_length`/`min_new_tokens`; `prompt_len` is the padded prompt length.
    pub fn from_config(cfg: &GenerationConfig, eos: &[u32], prompt_len: usize) -> Result<Self, SamplingError> {
        Self::from_config_with(cfg, eos, prompt_len, None)
    }

    /// [`Self::from_config`] with the tokenizer's grammar compiler, which a config with a
    /// `constraint` needs (the constraint is compiled here: a bad one fails before any step).
    pub fn from_config_with(
        cfg: &GenerationConfig,
        eos: &[u32],
        prompt_len: usize,
        grammar: Option<&GrammarCompiler>,
    ) -> Result<Self, SamplingError> {
        cfg.validate()?;
        let mut p = Self::default();
        if cfg.repetition_penalty != 1.0 {
            p.head.push(Box::new(RepetitionPenalty::new(cfg.repetition_penalty)?.with_scope(cfg.repetition_scope)));
        }
        if cfg.frequency_penalty != 0.0 || cfg.presence_penalty != 0.0 {
            p.head.push(Box::new(
                FrequencyPresencePenalty::new(cfg.frequency_penalty, cfg.presence_penalty)?
                    .with_scope(cfg.frequency_presence_scope),
            ));
        }
        if cfg.dry_multiplier > 0.0 && cfg.dry_penalty_last_n != 0 {
            let breakers = match (cfg.dry_sequence_breakers.is_empty(), grammar) {
                (true, _) => vec![],
                (false, Some(g)) => g.tokens_containing(&cfg.dry_sequence_breakers),
                (false, None) => {
                    return Err(SamplingError::Grammar(
                        "dry_sequence_breakers are text: they need the tokenizer's vocabulary (a GrammarCompiler)"
                            .into(),
                    ))
                }
            };
            let last_n = cfg.dry_penalty_last_n.max(0) as usize;
            p.head.push(Box::new(Dry::new(
                cfg.dry_multiplier,
                cfg.dry_base,
                cfg.dry_allowed_length,
                last_n,
                breakers,
            )?));
        }
        if cfg.no_repeat_ngram_size > 0 {
            p.head.push(Box::new(NoRepeatNGram::new(cfg.no_repeat_ngram_size)?));
        }
        if cfg.min_length > 0 && !eos.is_empty() {
            p.head.push(Box::new(MinLength::new(cfg.min_length, eos.to_vec())));
        }
        if cfg.min_new_tokens > 0 && !eos.is_empty() {
            p.head.push(Box::new(MinNewTokens::new(cfg.min_new_tokens, prompt_len, eos.to_vec())));
        }
        if let Some((start, factor)) = cfg.exponential_decay_length_penalty {
            if !eos.is_empty() {
                p.head.push(Box::new(ExponentialDecayLengthPenalty::new(start, factor, eos.to_vec(), prompt_len)?));
            }
        }
        if !cfg.sequence_bias.is_empty() {
            p.head.push(Box::new(SequenceBias::new(cfg.sequence_bias.clone())?));
        }
        if !cfg.logit_bias.is_empty() {
            p.head.push(Box::new(LogitBias::new(cfg.logit_bias.iter().map(|(&k, &v)| (k, v)).collect())?));
        }
        if !cfg.banned_token_ids.is_empty() {
            p.head.push(Box::new(BannedTokens::new(cfg.banned_token_ids.clone())));
        }
        if !cfg.suppress_tokens.is_empty() {
            p.head.push(Box::new(SuppressTokens::new(cfg.suppress_tokens.clone())));
        }
        if !cfg.begin_suppress_tokens.is_empty() {
            p.head.push(Box::new(SuppressTokensAtBegin::new(cfg.begin_suppress_tokens.clone(), prompt_len)));
        }
        if let Some(c) = &cfg.constraint {
            let g = grammar.ok_or_else(|| {
                SamplingError::Grammar(format!(
                    "a {} constraint needs the tokenizer's grammar compiler (none was given)",
                    c.kind()
                ))
            })?;
            p.head.push(Box::new(GrammarConstraint::new(g, c, eos)?));
        }
        if cfg.is_sampling() {
            if cfg.dynatemp_range > 0.0 {
                p.warpers.push(Box::new(DynamicTemperature::new(
                    cfg.temperature,
                    cfg.dynatemp_range,
                    cfg.dynatemp_exponent,
                )?));
            } else if cfg.temperature != 1.0 {
                p.warpers.push(Box::new(Temperature::new(cfg.temperature)?));
            }
            if cfg.mirostat == 2 {
                p.warpers.push(Box::new(MirostatV2::<B>::new(cfg.mirostat_tau, cfg.mirostat_eta)?));
                return Ok(p);
            }
            if cfg.top_n_sigma > 0.0 {
                p.warpers.push(Box::new(TopNSigma::new(cfg.top_n_sigma)?));
            }
            if cfg.top_k > 0 {
                p.warpers.push(Box::new(TopK::new(cfg.top_k)?));
            }
            if cfg.top_p < 1.0 {
                p.warpers.push(Box::new(TopP::new(cfg.top_p)?));
            }
            if cfg.min_p > 0.0 {
                p.warpers.push(Box::new(MinP::new(cfg.min_p)?));
            }
            if cfg.typical_p < 1.0 {
                p.warpers.push(Box::new(TypicalP::new(cfg.typical_p)?));
            }
            if cfg.epsilon_cutoff > 0.0 {
                p.warpers.push(Box::new(EpsilonCutoff::new(cfg.epsilon_cutoff)?));
            }
            if cfg.eta_cutoff > 0.0 {
                p.warpers.push(Box::new(EtaCutoff::new(cfg.eta_cutoff)?));
            }
            if cfg.xtc_probability > 0.0 {
                let seed = cfg.seed.unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64)
                });
                p.warpers.push(Box::new(Xtc::new(cfg.xtc_probability, cfg.xtc_threshold, seed)?));
            }
        }
        Ok(p)
    }

    /// Add a user processor (runs after the built-in processors, before the sampling warpers).
    pub fn push(&mut self, processor: Box<dyn LogitsProcessor<B>>) {
        self.user.push(processor);
    }

    /// True when no processor would change the logits.
    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.user.is_empty() && self.warpers.is_empty()
    }

    /// Names in application order.
    pub fn names(&self) -> Vec<&'static str> {
        self.head.iter().chain(&self.user).chain(&self.warpers).map(|p| p.name()).collect()
    }

    /// Apply every processor in order.
    pub fn apply(&self, mut logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        for p in self.head.iter().chain(&self.user).chain(&self.warpers) {
            logits = p.process(logits, ctx);
        }
        logits
    }
}
