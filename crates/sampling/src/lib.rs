//! # demiurgic-sampling
//!
//! Backend-generic decoding: every logit processor is a small type implementing
//! [`LogitsProcessor`] over `Tensor<B, 2>` (`[batch, vocab]`), so it runs on the device of the
//! model. [`LogitsPipeline::from_config`] applies them in transformers' order:
//!
//! 1. penalties: repetition (CTRL), frequency/presence (OpenAI), DRY (llama.cpp)
//! 2. `no_repeat_ngram_size`
//! 3. `min_length`, `min_new_tokens` (EOS masked until reached), exponential decay length penalty
//! 4. sequence bias, logit bias, banned / suppressed token ids
//! 5. the structured-generation constraint ([`Constraint`]: JSON schema, regex, grammar, choice)
//! 6. user processors ([`LogitsPipeline::push`])
//! 7. warpers, only when sampling: temperature (or dynamic temperature) → Mirostat 2.0 (which
//!    then ends the list) → top-nσ → top-k → top-p → min-p → typical-p → epsilon → eta → XTC
//!
//! Then a [`Sampler`] picks the next ids (argmax, or multinomial with one seeded RNG stream per
//! sequence), copying only `[batch]` ids to the host.
//!
//! ## Penalty scopes
//! - repetition penalty: prompt + generated tokens by default (as transformers);
//! - frequency/presence penalties: generated tokens only by default (as OpenAI).
//!
//! Both can be switched with [`PenaltyScope`].
mod bias;
mod config;
mod constraint;
mod dry;
mod dynamic_temperature;
mod epsilon;
mod error;
mod eta;
mod frequency_presence;
mod length_decay;
mod min_length;
mod min_p;
mod mirostat;
mod ngram;
mod pipeline;
mod repetition;
mod rng;
pub mod sampler;
mod sequence_bias;
mod stopping;
mod suppress;
mod temperature;
mod top_k;
mod top_n_sigma;
mod top_p;
mod typical;
mod util;
mod xtc;

pub use bias::{BannedTokens, LogitBias};
pub use config::{EarlyStopping, GenerationConfig, PenaltyScope, Preset, PRESETS};
pub use constraint::{Constraint, GrammarCompiler, GrammarConstraint, SharedGrammarCompiler, Tokenize};
pub use dry::Dry;
pub use dynamic_temperature::DynamicTemperature;
pub use epsilon::EpsilonCutoff;
pub use error::SamplingError;
pub use eta::EtaCutoff;
pub use frequency_presence::FrequencyPresencePenalty;
pub use length_decay::ExponentialDecayLengthPenalty;
pub use min_length::{MinLength, MinNewTokens};
pub use min_p::MinP;
pub use mirostat::MirostatV2;
pub use ngram::NoRepeatNGram;
pub use pipeline::{LogitsPipeline, LogitsProcessor, ProcessorContext};
pub use repetition::RepetitionPenalty;
pub use rng::SeqRng;
pub use sampler::Sampler;
pub use sequence_bias::SequenceBias;
pub use stopping::{first_stop, FinishReason};
pub use suppress::{SuppressTokens, SuppressTokensAtBegin};
pub use temperature::Temperature;
pub use top_k::TopK;
pub use top_n_sigma::TopNSigma;
pub use top_p::TopP;
pub use typical::TypicalP;
pub use xtc::Xtc;
