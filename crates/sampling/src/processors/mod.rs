//! The logit processors and their registry.
//!
//! Each processor's file holds the processor and its config: a small serde struct of its
//! [`crate::GenerationConfig`] fields (flattened into it, so JSON keeps the flat names) that
//! validates itself and builds its processors. [`Processors`] lists them in application order:
//! adding a processor is its file, one field and one line here, and its CLI flag.
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::error::SamplingError;
use crate::pipeline::LogitsProcessor;

/// The config of a processor built from one field (`$field`, its JSON name, with its default):
/// the processor is left out when the field is `$off`; otherwise `$new` builds it, and its checks
/// are the config's.
macro_rules! single_field_config {
    ($(#[$doc:meta])* $name:ident { $field:ident: $t:ty = $default:expr }, off $off:expr, $new:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct $name {
            pub $field: $t,
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $field: $default }
            }
        }

        impl super::ProcessorConfig for $name {
            fn validate(&self) -> Result<(), crate::error::SamplingError> {
                if self.$field == $off {
                    return Ok(());
                }
                $new(self.$field).map(drop)
            }

            fn build<B: burn::tensor::backend::Backend>(
                &self,
                _: &super::BuildContext<'_>,
                out: &mut super::Boxed<B>,
            ) -> Result<(), crate::error::SamplingError> {
                if self.$field != $off {
                    out.push(Box::new($new(self.$field)?));
                }
                Ok(())
            }
        }
    };
}

pub(crate) mod bad_words;
pub(crate) mod bias;
pub(crate) mod constraint;
pub(crate) mod dry;
pub(crate) mod dynamic_temperature;
pub(crate) mod epsilon;
pub(crate) mod eta;
pub(crate) mod frequency_presence;
pub(crate) mod length_decay;
pub(crate) mod min_length;
pub(crate) mod min_p;
pub(crate) mod mirostat;
pub(crate) mod ngram;
pub(crate) mod repetition;
pub(crate) mod sequence_bias;
pub(crate) mod suppress;
pub(crate) mod temperature;
pub(crate) mod top_k;
pub(crate) mod top_n_sigma;
pub(crate) mod top_p;
pub(crate) mod typical;
pub(crate) mod xtc;

pub use bad_words::{BadWords, BadWordsConfig};
pub use bias::{BannedTokens, BiasConfig, LogitBias};
pub use constraint::{
    Constraint, ConstraintConfig, GrammarCompiler, GrammarConstraint, SharedGrammarCompiler, Tokenize,
};
pub use dry::{Dry, DryConfig};
pub use dynamic_temperature::DynamicTemperature;
pub use epsilon::{EpsilonConfig, EpsilonCutoff};
pub use eta::{EtaConfig, EtaCutoff};
pub use frequency_presence::{FrequencyPresenceConfig, FrequencyPresencePenalty};
pub use length_decay::{ExponentialDecayLengthPenalty, LengthDecayConfig};
pub use min_length::{MinLength, MinLengthConfig, MinNewTokens};
pub use min_p::{MinP, MinPConfig};
pub use mirostat::{MirostatConfig, MirostatV2};
pub use ngram::{NoRepeatNGram, NoRepeatNGramConfig};
pub use repetition::{PenaltyScope, RepetitionConfig, RepetitionPenalty};
pub use sequence_bias::{SequenceBias, SequenceBiasConfig};
pub use suppress::{SuppressConfig, SuppressTokens, SuppressTokensAtBegin};
pub use temperature::{Temperature, TemperatureConfig};
pub use top_k::{TopK, TopKConfig};
pub use top_n_sigma::{TopNSigma, TopNSigmaConfig};
pub use top_p::{TopP, TopPConfig};
pub use typical::{TypicalP, TypicalPConfig};
pub use xtc::{Xtc, XtcConfig};

/// The processors a pipeline holds, in order.
pub type Boxed<B> = Vec<Box<dyn LogitsProcessor<B>>>;

/// What a processor may need besides its own fields to be built.
pub struct BuildContext<'a> {
    /// The ids `min_length`-like processors mask (the model's or the config's EOS).
    pub eos: &'a [u32],
    /// The padded prompt length.
    pub prompt_len: usize,
    /// The tokenizer's grammar compiler (constraints, DRY's text breakers).
    pub grammar: Option<&'a GrammarCompiler>,
    /// The run's seed (None: processors that draw take one from the clock).
    pub seed: Option<u64>,
}

/// A processor's config: its fields of the generation config.
pub trait ProcessorConfig {
    /// Check the fields; the error names the field, the value and what is allowed.
    fn validate(&self) -> Result<(), SamplingError> {
        Ok(())
    }

    /// Append the processors these fields ask for (none when off).
    fn build<B: Backend>(&self, ctx: &BuildContext<'_>, out: &mut Boxed<B>) -> Result<(), SamplingError>
    where
        Self: Sized;

    /// Whether building needs the tokenizer's vocabulary ([`BuildContext::grammar`]).
    fn needs_vocabulary(&self) -> bool {
        false
    }
}

/// The registry: every processor's config, flattened into [`crate::GenerationConfig`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Processors {
    #[serde(flatten)]
    pub repetition: RepetitionConfig,
    #[serde(flatten)]
    pub frequency_presence: FrequencyPresenceConfig,
    #[serde(flatten)]
    pub dry: DryConfig,
    #[serde(flatten)]
    pub no_repeat_ngram: NoRepeatNGramConfig,
    #[serde(flatten)]
    pub min_length: MinLengthConfig,
    #[serde(flatten)]
    pub length_decay: LengthDecayConfig,
    #[serde(flatten)]
    pub sequence_bias: SequenceBiasConfig,
    #[serde(flatten)]
    pub bias: BiasConfig,
    #[serde(flatten)]
    pub suppress: SuppressConfig,
    #[serde(flatten)]
    pub bad_words: BadWordsConfig,
    #[serde(flatten)]
    pub constraint: ConstraintConfig,
    // warpers: only when sampling
    #[serde(flatten)]
    pub temperature: TemperatureConfig,
    #[serde(flatten)]
    pub mirostat: MirostatConfig,
    #[serde(flatten)]
    pub top_n_sigma: TopNSigmaConfig,
    #[serde(flatten)]
    pub top_k: TopKConfig,
    #[serde(flatten)]
    pub top_p: TopPConfig,
    #[serde(flatten)]
    pub min_p: MinPConfig,
    #[serde(flatten)]
    pub typical_p: TypicalPConfig,
    #[serde(flatten)]
    pub epsilon: EpsilonConfig,
    #[serde(flatten)]
    pub eta: EtaConfig,
    #[serde(flatten)]
    pub xtc: XtcConfig,
}

impl Processors {
    /// The processors that change the logits whatever the decoding (penalties, biases, the
    /// constraint), in order.
    fn head(&self) -> [&dyn ProcessorConfig; 11] {
        [
            &self.repetition,
            &self.frequency_presence,
            &self.dry,
            &self.no_repeat_ngram,
            &self.min_length,
            &self.length_decay,
            &self.sequence_bias,
            &self.bias,
            &self.suppress,
            &self.bad_words,
            &self.constraint,
        ]
    }

    /// The sampling warpers, in order (Mirostat, when on, ends the list).
    fn warpers(&self) -> [&dyn ProcessorConfig; 10] {
        [
            &self.temperature,
            &self.mirostat,
            &self.top_n_sigma,
            &self.top_k,
            &self.top_p,
            &self.min_p,
            &self.typical_p,
            &self.epsilon,
            &self.eta,
            &self.xtc,
        ]
    }

    /// Every field's JSON name.
    pub fn field_names() -> Vec<String> {
        crate::util::json_field_names(&Self::default())
    }

    /// Set fields by their JSON names (`dry_base`, `bad_words_ids`, …): how the CLI's flags, a
    /// transformers config and a server request reach any processor without code of their own.
    /// Each value is read alone first, so an error names its field; not validated.
    pub fn set_by_name(&mut self, fields: serde_json::Map<String, serde_json::Value>) -> Result<(), SamplingError> {
        if fields.is_empty() {
            return Ok(());
        }
        let known = Self::field_names();
        let mut all = serde_json::to_value(&*self).map_err(|e| SamplingError::Json(e.to_string()))?;
        for (k, v) in fields {
            let bad = |message: String| SamplingError::BadField { field: k.clone(), message };
            if !known.contains(&k) {
                return Err(bad("not a processor field".into()));
            }
            serde_json::from_value::<Self>(serde_json::json!({ k.clone(): v.clone() }))
                .map_err(|e| bad(e.to_string()))?;
            all[k.as_str()] = v;
        }
        *self = serde_json::from_value(all).map_err(|e| SamplingError::Json(e.to_string()))?;
        Ok(())
    }

    /// Every processor's own checks.
    pub fn validate(&self) -> Result<(), SamplingError> {
        self.head().iter().chain(&self.warpers()).try_for_each(|p| p.validate())
    }

    /// Whether building needs the tokenizer's vocabulary.
    pub fn needs_vocabulary(&self) -> bool {
        self.head().iter().chain(&self.warpers()).any(|p| p.needs_vocabulary())
    }

    /// The head processors and (when `sampling`) the warpers, each in order.
    pub(crate) fn build<B: Backend>(
        &self,
        ctx: &BuildContext<'_>,
        sampling: bool,
    ) -> Result<(Boxed<B>, Boxed<B>), SamplingError> {
        let mut head = vec![];
        self.repetition.build(ctx, &mut head)?;
        self.frequency_presence.build(ctx, &mut head)?;
        self.dry.build(ctx, &mut head)?;
        self.no_repeat_ngram.build(ctx, &mut head)?;
        self.min_length.build(ctx, &mut head)?;
        self.length_decay.build(ctx, &mut head)?;
        self.sequence_bias.build(ctx, &mut head)?;
        self.bias.build(ctx, &mut head)?;
        self.suppress.build(ctx, &mut head)?;
        self.bad_words.build(ctx, &mut head)?;
        self.constraint.build(ctx, &mut head)?;
        let mut warpers = vec![];
        if !sampling {
            return Ok((head, warpers));
        }
        self.temperature.build(ctx, &mut warpers)?;
        if self.mirostat.is_on() {
            // as llama.cpp: Mirostat replaces the truncation samplers
            self.mirostat.build(ctx, &mut warpers)?;
            return Ok((head, warpers));
        }
        self.top_n_sigma.build(ctx, &mut warpers)?;
        self.top_k.build(ctx, &mut warpers)?;
        self.top_p.build(ctx, &mut warpers)?;
        self.min_p.build(ctx, &mut warpers)?;
        self.typical_p.build(ctx, &mut warpers)?;
        self.epsilon.build(ctx, &mut warpers)?;
        self.eta.build(ctx, &mut warpers)?;
        self.xtc.build(ctx, &mut warpers)?;
        Ok((head, warpers))
    }
}
