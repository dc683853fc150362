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

/// transformers' `early_stopping` of beam search: `true`, `false` or `"never"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// Stop as soon as `num_beams` finished candidates exist.
    True,
    /// Stop when no running beam can beat the finished ones by a heuristic (transformers' default).
    #[default]
    False,
    /// Canonical beam search: stop only when no better candidate can exist.
    Never,
}

impl Serialize for EarlyStopping {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            EarlyStopping::True => s.serialize_bool(true),
            EarlyStopping::False => s.serialize_bool(false),
            EarlyStopping::Never => s.serialize_str("never"),
        }
    }
}

impl<'de> Deserialize<'de> for EarlyStopping {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(true) => Ok(EarlyStopping::True),
            serde_json::Value::Bool(false) => Ok(EarlyStopping::False),
            serde_json::Value::String(s) if s == "never" => Ok(EarlyStopping::Never),
            other => {
                Err(serde::de::Error::custom(format!("early_stopping {other}: expected true, false or \"never\"")))
            }
        }
    }
}

impl std::str::FromStr for EarlyStopping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "true" => Ok(Self::True),
            "false" => Ok(Self::False),
            "never" => Ok(Self::Never),
            o => Err(format!("--early-stopping {o:?} is unknown (allowed: true, false, never)")),
        }
    }
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
    /// Report the log-probability of each generated token.
    pub logprobs: bool,
    /// Also report this many most likely tokens per step (0..=20).
    pub top_logprobs: usize,
    /// Log-probabilities of the model's raw distribution instead of the processed one (after
    /// penalties, temperature, top-k/p…, the distribution tokens are drawn from).
    pub raw_logprobs: bool,
    /// Beam search with this many beams (1 = off).
    pub num_beams: usize,
    /// Beam scores are divided by `length ** length_penalty`.
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    /// Prompt-lookup speculative decoding: candidate tokens per step (None = off).
    pub prompt_lookup_num_tokens: Option<usize>,
    /// Longest n-gram prompt lookup matches.
    pub max_matching_ngram_size: usize,
    /// Draft-model speculative decoding: draft tokens per step (adapted as transformers'
    /// "heuristic" schedule: +2 after a fully accepted round, −1 otherwise).
    pub num_assistant_tokens: usize,
    /// Structured generation: the output must match this (JSON schema, JSON object, regex, Lark
    /// grammar or choice). Needs the tokenizer's [`crate::GrammarCompiler`].
    pub constraint: Option<crate::Constraint>,
    /// transformers' epsilon sampling: drop tokens below this probability (0 = off).
    pub epsilon_cutoff: f32,
    /// transformers' eta sampling (0 = off).
    pub eta_cutoff: f32,
    /// transformers' `(start_index, decay_factor)`: after `start_index` new tokens the EOS logits
    /// grow by `|logit| · (factor^n − 1)`.
    pub exponential_decay_length_penalty: Option<(usize, f32)>,
    /// transformers' `sequence_bias`: `[[token ids], bias]` pairs; the last token of a sequence
    /// gets the bias when the text ends with the rest of it.
    pub sequence_bias: Vec<(Vec<u32>, f32)>,
    /// transformers' `suppress_tokens`: never generated.
    pub suppress_tokens: Vec<u32>,
    /// transformers' `begin_suppress_tokens`: not the first generated token.
    pub begin_suppress_tokens: Vec<u32>,
    /// llama.cpp's DRY repetition penalty: multiplier (0 = off), base, allowed length, the last
    /// N tokens looked at (-1 = the whole context), and the texts that break a repetition.
    pub dry_multiplier: f32,
    pub dry_base: f32,
    pub dry_allowed_length: usize,
    pub dry_penalty_last_n: i64,
    pub dry_sequence_breakers: Vec<String>,
    /// llama.cpp's XTC: with this probability per step (0 = off) remove the tokens above
    /// `xtc_threshold` but the least likely of them.
    pub xtc_probability: f32,
    pub xtc_threshold: f32,
    /// llama.cpp's top-nσ: keep logits within n standard deviations of the top (0 = off).
    pub top_n_sigma: f32,
    /// llama.cpp's mirostat: 0 = off, 2 = Mirostat 2.0 (target surprise `mirostat_tau`, learning
    /// rate `mirostat_eta`). With it, top-k/top-p/min-p/typical/epsilon/eta/XTC are not applied
    /// (as llama.cpp).
    pub mirostat: u8,
    pub mirostat_tau: f32,
    pub mirostat_eta: f32,
    /// llama.cpp's dynamic temperature: the temperature moves within ± this range with the
    /// distribution's entropy (0 = off), shaped by `dynatemp_exponent`.
    pub dynatemp_range: f32,
    pub dynatemp_exponent: f32,
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
            top_logprobs: 0,
            raw_logprobs: false,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::False,
            prompt_lookup_num_tokens: None,
            max_matching_ngram_size: 2,
            num_assistant_tokens: 5,
            constraint: None,
            epsilon_cutoff: 0.0,
            eta_cutoff: 0.0,
            exponential_decay_length_penalty: None,
            sequence_bias: vec![],
            suppress_tokens: vec![],
            begin_suppress_tokens: vec![],
            dry_multiplier: 0.0,
            dry_base: 1.75,
            dry_allowed_length: 2,
            dry_penalty_last_n: -1,
            dry_sequence_breakers: ["\n", ":", "\"", "*"].map(String::from).to_vec(),
            xtc_probability: 0.0,
            xtc_threshold: 0.1,
            top_n_sigma: 0.0,
            mirostat: 0,
            mirostat_tau: 5.0,
            mirostat_eta: 0.1,
            dynatemp_range: 0.0,
            dynatemp_exponent: 1.0,
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
            temperature: 0.8,
            top_k: 50,
            top_p: 0.95,
            repetition_penalty: 1.1,
            frequency_penalty: 0.2,
            ..Default::default()
        },
    },
    Preset {
        name: "precise-code",
        description: "temp 0.6, top_k 40, top_p 0.95, repetition 1.05",
        build: || GenerationConfig {
            temperature: 0.6,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.05,
            ..Default::default()
        },
    },
    Preset {
        name: "creative-code",
        description: "temp 1.0, top_k 100, top_p 0.9, presence 0.5",
        build: || GenerationConfig {
            temperature: 1.0,
            top_k: 100,
            top_p: 0.9,
            presence_penalty: 0.5,
            ..Default::default()
        },
    },
    Preset {
        name: "natural-text",
        description: "temp 0.9, repetition 1.2, presence 0.6",
        build: || GenerationConfig {
            temperature: 0.9,
            repetition_penalty: 1.2,
            presence_penalty: 0.6,
            ..Default::default()
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

    /// What a run used, for reports: f32 values as typed (`0.8`, not `0.800000011920929`),
    /// the sampling-only fields left out of greedy runs.
    pub fn to_report(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("GenerationConfig serialises");
        let obj = v.as_object_mut().expect("an object");
        for key in [
            "temperature",
            "top_p",
            "typical_p",
            "min_p",
            "repetition_penalty",
            "frequency_penalty",
            "presence_penalty",
        ] {
            if let Some(x) = obj.get(key).and_then(|x| x.as_f64()) {
                // the shortest decimal that reads back as the same f32
                let short: f64 = format!("{}", x as f32).parse().unwrap_or(x);
                obj.insert(key.into(), serde_json::json!(short));
            }
        }
        if let Some(serde_json::Value::Object(bias)) = obj.get_mut("logit_bias") {
            for (_, b) in bias.iter_mut() {
                if let Some(x) = b.as_f64() {
                    *b = serde_json::json!(format!("{}", x as f32).parse::<f64>().unwrap_or(x));
                }
            }
        }
        if !self.is_sampling() {
            for key in ["temperature", "top_k", "top_p", "typical_p", "min_p", "seed", "num_return_sequences"] {
                obj.remove(key);
            }
        }
        v
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

    /// Parse a JSON file that is either a Demiurgic config or a transformers
    /// `generation_config.json`. A transformers file (it names `transformers_version`, or uses
    /// transformers' field names such as `eos_token_id`) starts from transformers' defaults
    /// (greedy unless `do_sample`, temperature 1, top_k 50, top_p 1) with its field names mapped;
    /// fields without a meaning here come back as warnings. Validated.
    pub fn from_any_json(text: &str) -> Result<(Self, Vec<String>), SamplingError> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| SamplingError::Json(e.to_string()))?;
        let obj = v.as_object().ok_or_else(|| SamplingError::Json("the config is not a JSON object".into()))?;
        let hf_only = ["transformers_version", "eos_token_id", "bos_token_id", "_from_model_config"];
        if !obj.keys().any(|k| hf_only.contains(&k.as_str())) {
            return Self::from_json(text).map(|c| (c, vec![]));
        }
        let mut c = Self { do_sample: false, temperature: 1.0, top_k: 50, top_p: 1.0, ..Self::default() };
        let mut warnings = vec![];
        let num = |k: &str, x: &serde_json::Value| -> Result<f64, SamplingError> {
            x.as_f64().ok_or_else(|| SamplingError::Json(format!("field `{k}`: expected a number, got {x}")))
        };
        let int = |k: &str, x: &serde_json::Value| -> Result<usize, SamplingError> {
            x.as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| SamplingError::Json(format!("field `{k}`: expected a non-negative integer, got {x}")))
        };
        let ids = |k: &str, x: &serde_json::Value| -> Result<Vec<u32>, SamplingError> {
            let list = match x {
                serde_json::Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            list.iter()
                .map(|i| i.as_u64().filter(|&i| i <= u32::MAX as u64).map(|i| i as u32))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| SamplingError::Json(format!("field `{k}`: expected token ids, got {x}")))
        };
        for (k, x) in obj {
            if x.is_null() {
                continue;
            }
            match k.as_str() {
                "do_sample" => {
                    c.do_sample = x.as_bool().ok_or_else(|| {
                        SamplingError::Json(format!("field `do_sample`: expected true/false, got {x}"))
                    })?
                }
                "temperature" => c.temperature = num(k, x)? as f32,
                "top_k" => c.top_k = int(k, x)?,
                "top_p" => c.top_p = num(k, x)? as f32,
                "typical_p" => c.typical_p = num(k, x)? as f32,
                "min_p" => c.min_p = num(k, x)? as f32,
                "repetition_penalty" => c.repetition_penalty = num(k, x)? as f32,
                "no_repeat_ngram_size" => c.no_repeat_ngram_size = int(k, x)?,
                "max_new_tokens" => c.max_new_tokens = Some(int(k, x)?),
                "max_length" => {
                    c.max_length = Some(int(k, x)?);
                    if !obj.contains_key("max_new_tokens") {
                        c.max_new_tokens = None;
                    }
                }
                "min_length" => c.min_length = int(k, x)?,
                "min_new_tokens" => c.min_new_tokens = int(k, x)?,
                "num_return_sequences" => c.num_return_sequences = int(k, x)?,
                "eos_token_id" => c.eos_token_ids = Some(ids(k, x)?),
                "pad_token_id" => c.pad_token_id = ids(k, x)?.first().copied(),
                "seed" => c.seed = x.as_u64(),
                "stop_strings" => {
                    c.stop = match x {
                        serde_json::Value::String(s) => vec![s.clone()],
                        serde_json::Value::Array(a) => a.iter().filter_map(|s| s.as_str().map(String::from)).collect(),
                        _ => {
                            return Err(SamplingError::Json(format!("field `stop_strings`: expected strings, got {x}")))
                        }
                    }
                }
                "num_beams" => c.num_beams = int(k, x)?,
                "length_penalty" => c.length_penalty = num(k, x)? as f32,
                "early_stopping" => {
                    c.early_stopping = serde_json::from_value(x.clone())
                        .map_err(|e| SamplingError::Json(format!("field `early_stopping`: {e}")))?
                }
                "prompt_lookup_num_tokens" => c.prompt_lookup_num_tokens = Some(int(k, x)?),
                "max_matching_ngram_size" => c.max_matching_ngram_size = int(k, x)?,
                "num_assistant_tokens" => c.num_assistant_tokens = int(k, x)?,
                "transformers_version" | "_from_model_config" | "bos_token_id" | "use_cache" => {}
                other => warnings.push(format!("generation config field `{other}` is ignored (no meaning here)")),
            }
        }
        c.validate()?;
        Ok((c, warnings))
    }

    /// Whether building the pipeline needs the tokenizer's vocabulary (a constraint, DRY's text
    /// sequence breakers): pass a [`crate::GrammarCompiler`].
    pub fn needs_vocabulary(&self) -> bool {
        self.constraint.is_some() || (self.dry_multiplier != 0.0 && !self.dry_sequence_breakers.is_empty())
    }

    fn validate_extra_samplers(&self) -> Result<(), SamplingError> {
        let open01 = |f: &'static str, x: f32| {
            if x != 0.0 && !(x > 0.0 && x < 1.0) {
                return Err(invalid(f, x, "must be in (0, 1) (0 = off)"));
            }
            Ok(())
        };
        open01("epsilon_cutoff", self.epsilon_cutoff)?;
        open01("eta_cutoff", self.eta_cutoff)?;
        if let Some((_, f)) = self.exponential_decay_length_penalty {
            if !(f.is_finite() && f > 0.0) {
                return Err(invalid(
                    "exponential_decay_length_penalty",
                    f,
                    "the decay factor must be a finite number > 0",
                ));
            }
        }
        if let Some((s, _)) = self.sequence_bias.iter().find(|(s, _)| s.is_empty()) {
            return Err(invalid("sequence_bias", format!("{s:?}"), "each sequence needs at least one token id"));
        }
        if let Some((_, b)) = self.sequence_bias.iter().find(|(_, b)| !b.is_finite()) {
            return Err(invalid("sequence_bias", b, "biases must be finite numbers"));
        }
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
        if !(0.0..=1.0).contains(&self.xtc_probability) {
            return Err(invalid("xtc_probability", self.xtc_probability, "must be in [0, 1] (0 = off)"));
        }
        if !(0.0..=1.0).contains(&self.xtc_threshold) {
            return Err(invalid("xtc_threshold", self.xtc_threshold, "must be in [0, 1]"));
        }
        if !(self.top_n_sigma >= 0.0 && self.top_n_sigma.is_finite()) {
            return Err(invalid("top_n_sigma", self.top_n_sigma, "must be a finite number ≥ 0 (0 = off)"));
        }
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
        if !(self.dynatemp_range >= 0.0 && self.dynatemp_range.is_finite()) {
            return Err(invalid("dynatemp_range", self.dynatemp_range, "must be a finite number ≥ 0 (0 = off)"));
        }
        if !(self.dynatemp_exponent >= 0.0 && self.dynatemp_exponent.is_finite()) {
            return Err(invalid("dynatemp_exponent", self.dynatemp_exponent, "must be a finite number ≥ 0"));
        }
        Ok(())
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
        if let Some(c) = &self.constraint {
            c.validate()?;
        }
        self.validate_extra_samplers()?;
        if self.num_beams == 0 {
            return Err(invalid("num_beams", 0, "must be ≥ 1 (1 = no beam search)"));
        }
        if !self.length_penalty.is_finite() {
            return Err(invalid("length_penalty", self.length_penalty, "must be a finite number"));
        }
        if self.num_beams > 1 && self.num_return_sequences > self.num_beams {
            return Err(invalid(
                "num_return_sequences",
                self.num_return_sequences,
                "must be ≤ num_beams with beam search",
            ));
        }
        if self.num_beams > 1 && self.prompt_lookup_num_tokens.is_some() {
            return Err(invalid(
                "prompt_lookup_num_tokens",
                "set",
                "speculative decoding cannot be combined with beam search",
            ));
        }
        if self.prompt_lookup_num_tokens == Some(0) {
            return Err(invalid("prompt_lookup_num_tokens", 0, "must be ≥ 1"));
        }
        if self.max_matching_ngram_size == 0 {
            return Err(invalid("max_matching_ngram_size", 0, "must be ≥ 1"));
        }
        if self.num_assistant_tokens == 0 {
            return Err(invalid("num_assistant_tokens", 0, "must be ≥ 1"));
        }
        if self.top_logprobs > 20 {
            return Err(invalid("top_logprobs", self.top_logprobs, "must be in 0..=20"));
        }
        if self.num_return_sequences > 1 && !self.is_sampling() && self.num_beams == 1 {
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
    fn report_shows_values_as_typed_and_no_sampling_fields_when_greedy() {
        let r = GenerationConfig { temperature: 0.8, top_p: 0.95, seed: Some(7), ..Default::default() }.to_report();
        assert_eq!(r["temperature"].to_string(), "0.8");
        assert_eq!(r["top_p"].to_string(), "0.95");
        assert_eq!(r["seed"], 7);
        let g = GenerationConfig::greedy().to_report();
        for key in ["temperature", "top_k", "top_p", "seed"] {
            assert!(g.get(key).is_none(), "{key} in a greedy report");
        }
        assert_eq!(g["do_sample"], false);
    }

    #[test]
    fn reads_transformers_generation_config() {
        let (c, w) = GenerationConfig::from_any_json(
            r#"{"transformers_version": "5.24.0", "eos_token_id": [2, 3], "temperature": 0.6, "do_sample": true,
                "top_p": 0.9, "max_new_tokens": 12, "guidance_scale": 1.5}"#,
        )
        .unwrap();
        assert_eq!(c.eos_token_ids, Some(vec![2, 3]));
        assert!(c.do_sample && c.temperature == 0.6 && c.top_p == 0.9 && c.top_k == 50);
        assert_eq!(c.max_new_tokens, Some(12));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("guidance_scale"));
        // transformers' default is greedy
        let (g, _) = GenerationConfig::from_any_json(r#"{"eos_token_id": 2}"#).unwrap();
        assert!(!g.do_sample);
        // a Demiurgic config still rejects unknown fields
        assert!(GenerationConfig::from_any_json(r#"{"temprature": 1.0}"#).is_err());
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
            (GenerationConfig { epsilon_cutoff: 1.0, ..d() }, "epsilon_cutoff"),
            (GenerationConfig { eta_cutoff: -0.1, ..d() }, "eta_cutoff"),
            (
                GenerationConfig { exponential_decay_length_penalty: Some((3, 0.0)), ..d() },
                "exponential_decay_length_penalty",
            ),
            (GenerationConfig { sequence_bias: vec![(vec![], 1.0)], ..d() }, "sequence_bias"),
            (GenerationConfig { sequence_bias: vec![(vec![1], f32::NAN)], ..d() }, "sequence_bias"),
            (GenerationConfig { dry_multiplier: -1.0, ..d() }, "dry_multiplier"),
            (GenerationConfig { dry_base: 0.9, ..d() }, "dry_base"),
            (GenerationConfig { dry_allowed_length: 0, ..d() }, "dry_allowed_length"),
            (GenerationConfig { dry_penalty_last_n: -2, ..d() }, "dry_penalty_last_n"),
            (GenerationConfig { dry_sequence_breakers: vec![String::new()], ..d() }, "dry_sequence_breakers"),
            (GenerationConfig { xtc_probability: 1.5, ..d() }, "xtc_probability"),
            (GenerationConfig { xtc_threshold: -0.5, ..d() }, "xtc_threshold"),
            (GenerationConfig { top_n_sigma: -1.0, ..d() }, "top_n_sigma"),
            (GenerationConfig { mirostat: 1, ..d() }, "mirostat"),
            (GenerationConfig { mirostat: 3, ..d() }, "mirostat"),
            (GenerationConfig { mirostat: 2, mirostat_tau: 0.0, ..d() }, "mirostat_tau"),
            (GenerationConfig { mirostat: 2, mirostat_eta: 1.5, ..d() }, "mirostat_eta"),
            (GenerationConfig { dynatemp_range: -0.5, ..d() }, "dynatemp_range"),
            (GenerationConfig { dynatemp_exponent: f32::INFINITY, ..d() }, "dynatemp_exponent"),
            (GenerationConfig { constraint: Some(crate::Constraint::Choice(vec![])), ..d() }, "constraint"),
            (GenerationConfig { constraint: Some(crate::Constraint::Regex(String::new())), ..d() }, "constraint"),
        ];
        for (c, field) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
        }
        assert!(GenerationConfig::from_json(r#"{"temprature": 1.0}"#).is_err());
    }
}
