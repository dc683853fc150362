//! What a generation takes besides the config ([`GenerateOptions`]) and what it returns
//! ([`GenerationOutput`], [`GenerationStats`]): the same types for every strategy.
use demiurgic_sampling::{FinishReason, LogitsPipeline};

use crate::kv_cache::KvCache;
use crate::lm::CausalLm;
use crate::ops::DecodeOps;
use crate::text::TextStops;

/// Options of one [`generate`](crate::generate) call that are not sampling parameters.
pub struct GenerateOptions<'a, B: DecodeOps> {
    /// Use the KV cache (default) or recompute the whole sequence every step.
    pub use_cache: bool,
    /// Extra processors run after the built-in ones (before the sampling warpers).
    pub pipeline_hook: Option<&'a dyn Fn(&mut LogitsPipeline<B>)>,
    /// Called after every step with the new token of each row (`None` once a row has finished).
    pub on_step: Option<&'a mut dyn FnMut(&[Option<u32>])>,
    /// Decides whether row `i`'s generated ids should stop (a generic hook; see `stops`).
    pub stop_check: Option<&'a dyn Fn(&[u32]) -> bool>,
    /// Stop strings matched incrementally against each row's decoded text.
    pub stops: Option<TextStops<'a>>,
    /// Explicit per-row seeds (overrides `config.seed`), one per returned sequence.
    pub seeds: Option<Vec<u64>>,
    /// A cache to continue from (one row): its first `len()` positions must hold the prompt's
    /// first `len()` tokens; only the rest of the prompt is computed (multi-turn chat). After
    /// the call it holds the prompt and every generated token but the last.
    pub cache: Option<&'a mut KvCache<B>>,
    /// A draft model for speculative decoding (same vocabulary).
    pub draft: Option<&'a dyn CausalLm<B>>,
    /// The tokenizer's grammar compiler ([`crate::load::TextTokenizer::grammar_compiler`]), needed when
    /// the config has a `constraint` (structured generation).
    pub grammar: Option<&'a demiurgic_sampling::GrammarCompiler>,
}

impl<B: DecodeOps> Default for GenerateOptions<'_, B> {
    fn default() -> Self {
        Self {
            use_cache: true,
            pipeline_hook: None,
            on_step: None,
            stop_check: None,
            stops: None,
            seeds: None,
            cache: None,
            draft: None,
            grammar: None,
        }
    }
}

/// Timing and counts of one call.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens served from a cache passed in (not computed again).
    pub cached_prompt_tokens: usize,
    /// Speculative decoding: candidate tokens proposed, and how many the model accepted.
    pub draft_tokens: usize,
    pub accepted_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub decode_tokens_per_s: f64,
}

/// One alternative of a step: token id and log-probability.
pub type TopLogprob = (u32, f32);

/// One generated token's log-probability and its top alternatives (a streamed step's).
#[derive(Debug, Clone, PartialEq)]
pub struct StepLogprob {
    /// The token's own (when `logprobs` was asked).
    pub logprob: Option<f32>,
    /// The `top_logprobs` most likely tokens (empty when not asked).
    pub top: Vec<TopLogprob>,
}

/// Result of [`generate`](crate::generate): rows grouped per prompt (`num_return_sequences` consecutive rows each).
#[derive(Debug, Clone)]
pub struct GenerationOutput {
    /// Generated ids per row, padded with `pad_token_id` after the row finished (as transformers).
    pub tokens: Vec<Vec<u32>>,
    /// Real generated tokens per row (including the EOS that ended it).
    pub lengths: Vec<usize>,
    pub finish_reasons: Vec<FinishReason>,
    /// Log-probability of each real generated token (when requested), per row `lengths[i]` long.
    pub logprobs: Option<Vec<Vec<f32>>>,
    /// The `top_logprobs` most likely tokens of each real step (when requested).
    pub top_logprobs: Option<Vec<Vec<Vec<TopLogprob>>>>,
    /// The seed the sampler used (drawn from the clock when none was given); None when greedy.
    pub seed: Option<u64>,
    /// The EOS ids in force.
    pub eos_token_ids: Vec<u32>,
    /// Beam search: the final score of each returned row (sum of log-probabilities / length **
    /// length_penalty, as transformers' `sequences_scores`).
    pub sequences_scores: Option<Vec<f32>>,
    pub stats: GenerationStats,
}

impl GenerationOutput {
    /// Generated ids of row `i` without padding.
    pub fn row(&self, i: usize) -> &[u32] {
        &self.tokens[i][..self.lengths[i]]
    }
}
