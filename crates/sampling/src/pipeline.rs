//! The ordered list of logit processors and the public trait users implement.
use burn::tensor::{backend::Backend, Tensor};

use crate::config::GenerationConfig;
use crate::error::SamplingError;
use crate::processors::BuildContext;
use crate::GrammarCompiler;

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
        let ctx = BuildContext { eos, prompt_len, grammar, seed: cfg.seed };
        let (head, warpers) = cfg.processors.build::<B>(&ctx, cfg.is_sampling())?;
        Ok(Self { head, user: vec![], warpers })
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
