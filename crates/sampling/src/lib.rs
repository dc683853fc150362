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
mod config;
mod error;
mod pipeline;
pub mod processors;
mod rng;
pub mod sampler;
mod stopping;
mod util;

pub use config::{EarlyStopping, GenerationConfig, Preset, PRESETS};
pub use error::SamplingError;
pub use pipeline::{HostRowProcessor, LogitsPipeline, LogitsProcessor, ProcessorContext};
pub use processors::*;
pub use rng::{clock_seed, SeqRng};
pub use sampler::Sampler;
pub use stopping::{first_stop, FinishReason};
