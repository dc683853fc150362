//! [`GenerationConfig`]: every generation parameter, serde to/from JSON, presets, validation.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{invalid, SamplingError};
use crate::pipeline::ProcessorContext;

/// Which tokens a penalty counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PenaltyScope {
    /// Prompt and generated tokens (transformers' repetition penalty).
    #[default]
    PromptAndGenerated,
    /// Generated tokens only (OpenAI's frequency/presence penalties).
    Generated,
}

impl PenaltyScope {
    pub(crate) fn tokens<'a>(&self, ctx: &ProcessorContext<'a>, b: usize) -> &'a [u32] {
        match self {
            PenaltyScope::PromptAndGenerated => &ctx.sequences[b],
            PenaltyScope::Generated => ctx.generated(b),
        }
    }
}

fn generated_scope() -> PenaltyScope {
    PenaltyScope::Generated
}

/// All generation parameters. Defaults: temperature 0.8, top_k 50, top_p 0.95, penalties off,
/// sampling on, 256 new tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationConfig {
    pub max_new_tokens: Option<usize>,
    /// Prompt (padded) + new tokens; `max_new_tokens` wins when both are set.
    pub max_length: Option<usize>,
    pub min_length: usize,
    pub min_new_tokens: usize,
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    pub top_p: f32,
    pub typical_p: f32,
    pub min_p: f32,
    pub repetition_penalty: f32,
    pub repetition_scope: PenaltyScope,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    #[serde(default = "generated_scope")]
    pub frequency_presence_scope: PenaltyScope,
    pub no_repeat_ngram_size: usize,
    pub logit_bias: BTreeMap<u32, f32>,
    pub banned_token_ids: Vec<u32>,
    pub do_sample: bool,
    pub num_return_sequences: usize,
    /// None = the model's EOS ids.
    pub eos_token_ids: Option<Vec<u32>>,
    /// None = the model's pad id (or its first EOS).
    pub pad_token_id: Option<u32>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub logprobs: bool,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: Some(256),
            max_length: None,
            min_length: 0,
            min_new_tokens: 0,
            temperature: 0.8,
            top_k: 50,
            top_p: 0.95,
            typical_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repetition_scope: PenaltyScope::PromptAndGenerated,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            frequency_presence_scope: PenaltyScope::Generated,
            no_repeat_ngram_size: 0,
            logit_bias: BTreeMap::new(),
            banned_token_ids: vec![],
            do_sample: true,
            num_return_sequences: 1,
            eos_token_ids: None,
            pad_token_id: None,
            seed: None,
            stop: vec![],
            logprobs: false,
        }
    }
}

/// A named set of parameters.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    build: fn() -> GenerationConfig,
}

impl Preset {
    pub fn config(&self) -> GenerationConfig {
        (self.build)()
    }
}

/// The presets of the seed (CLI names in kebab-case).
pub const PRESETS: &[Preset] = &[
    Preset { name: "greedy", description: "deterministic argmax decoding", build: || GenerationConfig::greedy() },
    Preset {
        name: "balanced-code",
        description: "temp 0.8, top_k 50, top_p 0.95, repetition 1.1, frequency 0.2",
        build: || GenerationConfig {
            temperature: 0.8, top_k: 50, top_p: 0.95, repetition_penalty: 1.1, frequency_penalty: 0.2,
            ..Default::default()
        },
    },
    Preset {
        name: "precise-code",
        description: "temp 0.6, top_k 40, top_p 0.95, repetition 1.05",
        build: || GenerationConfig {
            temperature: 0.6, top_k: 40, top_p: 0.95, repetition_penalty: 1.05, ..Default::default()
        },
    },
    Preset {
        name: "creative-code",
        description: "temp 1.0, top_k 100, top_p 0.9, presence 0.5",
        build: || GenerationConfig {
            temperature: 1.0, top_k: 100, top_p: 0.9, presence_penalty: 0.5, ..Default::default()
        },
    },
    Preset {
        name: "natural-text",
        description: "temp 0.9, repetition 1.2, presence 0.6",
        build: || GenerationConfig {
            temperature: 0.9, repetition_penalty: 1.2, presence_penalty: 0.6, ..Default::default()
        },
    },
    Preset {
        name: "completion-fim",
        description: "temp 0.7, 64 new tokens (short infill completions)",
        build: || GenerationConfig { temperature: 0.7, max_new_tokens: Some(64), ..Default::default() },
    },
];

impl GenerationConfig {
    /// Argmax decoding.
    pub fn greedy() -> Self {
        Self { do_sample: false, temperature: 1.0, top_k: 0, top_p: 1.0, ..Default::default() }
    }

    /// A preset by name (kebab-case or snake_case).
    pub fn preset(name: &str) -> Result<Self, SamplingError> {
        let key = name.replace('_', "-");
        PRESETS
            .iter()
            .find(|p| p.name == key)
            .map(Preset::config)
            .ok_or_else(|| SamplingError::UnknownPreset(name.to_string()))
    }

    /// True when tokens are drawn at random (do_sample and temperature > 0).
    pub fn is_sampling(&self) -> bool {
        self.do_sample && self.temperature > 0.0
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("GenerationConfig serialises")
    }

    /// Parse and validate.
    pub fn from_json(text: &str) -> Result<Self, SamplingError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let c: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                SamplingError::Json(e.inner().to_string())
            } else {
                SamplingError::Json(format!("field `{path}`: {}", e.inner()))
            }
        })?;
        c.validate()?;
        Ok(c)
    }

    /// Check every field; the error names the field, the value and the allowed range.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let t = self.temperature;
        if !(t >= 0.0 && t.is_finite()) {
            return Err(invalid("temperature", t, "must be a finite number ≥ 0 (0 = greedy)"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid("top_p", self.top_p, "must be in (0, 1] (1 = off)"));
        }
        if !(self.typical_p > 0.0 && self.typical_p <= 1.0) {
            return Err(invalid("typical_p", self.typical_p, "must be in (0, 1] (1 = off)"));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(invalid("min_p", self.min_p, "must be in [0, 1] (0 = off)"));
        }
        let rp = self.repetition_penalty;
        if !(rp > 0.0 && rp.is_finite()) {
            return Err(invalid("repetition_penalty", rp, "must be a finite number > 0 (1.0 = off)"));
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return Err(invalid("frequency_penalty", self.frequency_penalty, "must be in [-2, 2] (0 = off)"));
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return Err(invalid("presence_penalty", self.presence_penalty, "must be in [-2, 2] (0 = off)"));
        }
        if self.num_return_sequences == 0 {
            return Err(invalid("num_return_sequences", 0, "must be ≥ 1"));
        }
        if let Some(n) = self.max_new_tokens {
            if n == 0 {
                return Err(invalid("max_new_tokens", 0, "must be ≥ 1"));
            }
        }
        if let Some(m) = self.max_length {
            if m == 0 {
                return Err(invalid("max_length", 0, "must be ≥ 1"));
            }
            if self.min_length > m {
                return Err(invalid("min_length", self.min_length, "must be ≤ max_length"));
            }
        }
        if self.max_new_tokens.is_none() && self.max_length.is_none() {
            return Err(invalid("max_new_tokens", "none", "set max_new_tokens or max_length"));
        }
        if let Some(n) = self.max_new_tokens {
            if self.min_new_tokens > n {
                return Err(invalid("min_new_tokens", self.min_new_tokens, "must be ≤ max_new_tokens"));
            }
        }
        if let Some((_, b)) = self.logit_bias.iter().find(|(_, b)| !(-100.0..=100.0).contains(*b)) {
            return Err(invalid("logit_bias", b, "values must be in [-100, 100]"));
        }
        if let Some(s) = self.stop.iter().find(|s| s.is_empty()) {
            return Err(invalid("stop", format!("{s:?}"), "stop strings must not be empty"));
        }
        if self.num_return_sequences > 1 && !self.is_sampling() {
            // transformers refuses this too: greedy copies would all be identical.
            return Err(invalid(
                "num_return_sequences",
                self.num_return_sequences,
                "must be 1 with greedy decoding (enable sampling for several returns)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_trip_through_json() {
        for p in PRESETS {
            let c = p.config();
            c.validate().unwrap();
            let back = GenerationConfig::from_json(&c.to_json()).unwrap();
            assert_eq!(back, c, "preset {}", p.name);
        }
        assert_eq!(GenerationConfig::preset("balanced_code").unwrap().repetition_penalty, 1.1);
        assert!(GenerationConfig::preset("nope").is_err());
    }

    #[test]
    fn defaults_are_the_seed_defaults() {
        let c = GenerationConfig::default();
        assert_eq!((c.temperature, c.top_k, c.top_p), (0.8, 50, 0.95));
        assert_eq!((c.repetition_penalty, c.frequency_penalty, c.presence_penalty), (1.0, 0.0, 0.0));
    }

    #[test]
    fn every_invalid_parameter_is_rejected_by_name() {
        let d = GenerationConfig::default;
        let cases: Vec<(GenerationConfig, &str)> = vec![
            (GenerationConfig { temperature: -0.1, ..d() }, "temperature"),
            (GenerationConfig { temperature: f32::NAN, ..d() }, "temperature"),
            (GenerationConfig { top_p: 0.0, ..d() }, "top_p"),
            (GenerationConfig { top_p: 1.5, ..d() }, "top_p"),
            (GenerationConfig { typical_p: 0.0, ..d() }, "typical_p"),
            (GenerationConfig { min_p: -0.5, ..d() }, "min_p"),
            (GenerationConfig { min_p: 1.5, ..d() }, "min_p"),
            (GenerationConfig { repetition_penalty: 0.0, ..d() }, "repetition_penalty"),
            (GenerationConfig { frequency_penalty: 2.5, ..d() }, "frequency_penalty"),
            (GenerationConfig { presence_penalty: -3.0, ..d() }, "presence_penalty"),
            (GenerationConfig { num_return_sequences: 0, ..d() }, "num_return_sequences"),
            (GenerationConfig { max_length: Some(5), min_length: 9, ..d() }, "min_length"),
            (GenerationConfig { max_new_tokens: Some(0), ..d() }, "max_new_tokens"),
            (GenerationConfig { stop: vec![String::new()], ..d() }, "stop"),
        ];
        for (c, field) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
        }
        assert!(GenerationConfig::from_json(r#"{"temprature": 1.0}"#).is_err());
    }
}
