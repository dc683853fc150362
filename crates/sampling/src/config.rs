//! [`GenerationConfig`]: every generation parameter, serde to/from JSON, presets, validation.
use serde::{Deserialize, Serialize};

use crate::error::{invalid, SamplingError};
use crate::processors::Processors;

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
/// JSON with an unknown field is refused by [`GenerationConfig::from_json`] (serde's
/// `deny_unknown_fields` does not see through the flattened processor fields).
#[serde(default)]
pub struct GenerationConfig {
    pub max_new_tokens: Option<usize>,
    /// Prompt (padded) + new tokens; `max_new_tokens` wins when both are set.
    pub max_length: Option<usize>,
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
    /// Every logit processor's fields (temperature, top_k, penalties, DRY, the constraint…), each
    /// owned by its processor; flattened, so JSON keeps the flat names.
    #[serde(flatten)]
    pub processors: Processors,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: Some(256),
            max_length: None,
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
            processors: Processors::default(),
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
        build: || {
            GenerationConfig::default().with(|p| {
                (p.temperature.temperature, p.top_k.top_k, p.top_p.top_p) = (0.8, 50, 0.95);
                p.repetition.repetition_penalty = 1.1;
                p.frequency_presence.frequency_penalty = 0.2;
            })
        },
    },
    Preset {
        name: "precise-code",
        description: "temp 0.6, top_k 40, top_p 0.95, repetition 1.05",
        build: || {
            GenerationConfig::default().with(|p| {
                (p.temperature.temperature, p.top_k.top_k, p.top_p.top_p) = (0.6, 40, 0.95);
                p.repetition.repetition_penalty = 1.05;
            })
        },
    },
    Preset {
        name: "creative-code",
        description: "temp 1.0, top_k 100, top_p 0.9, presence 0.5",
        build: || {
            GenerationConfig::default().with(|p| {
                (p.temperature.temperature, p.top_k.top_k, p.top_p.top_p) = (1.0, 100, 0.9);
                p.frequency_presence.presence_penalty = 0.5;
            })
        },
    },
    Preset {
        name: "natural-text",
        description: "temp 0.9, repetition 1.2, presence 0.6",
        build: || {
            GenerationConfig::default().with(|p| {
                p.temperature.temperature = 0.9;
                p.repetition.repetition_penalty = 1.2;
                p.frequency_presence.presence_penalty = 0.6;
            })
        },
    },
    Preset {
        name: "completion-fim",
        description: "temp 0.7, 64 new tokens (short infill completions)",
        build: || {
            GenerationConfig { max_new_tokens: Some(64), ..Default::default() }
                .with(|p| p.temperature.temperature = 0.7)
        },
    },
];

impl GenerationConfig {
    /// Argmax decoding.
    pub fn greedy() -> Self {
        Self { do_sample: false, ..Default::default() }.with(|p| {
            (p.temperature.temperature, p.top_k.top_k, p.top_p.top_p) = (1.0, 0, 1.0);
        })
    }

    /// The config with its processors' fields changed by `f`.
    pub fn with(mut self, f: impl FnOnce(&mut Processors)) -> Self {
        f(&mut self.processors);
        self
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
        self.do_sample && self.processors.temperature.temperature > 0.0
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

    /// Every field's JSON name.
    pub fn field_names() -> Vec<String> {
        crate::util::json_field_names(&Self::default())
    }

    /// Parse and validate; unknown fields are refused.
    pub fn from_json(text: &str) -> Result<Self, SamplingError> {
        if let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(text) {
            let known = Self::field_names();
            if let Some(k) = obj.keys().find(|k| !known.contains(k)) {
                let close: Vec<&String> = known.iter().filter(|n| strsim::levenshtein(n, k) <= 2).collect();
                let hint = match close.first() {
                    Some(c) => format!(" (did you mean `{c}`?)"),
                    None => String::new(),
                };
                return Err(SamplingError::Json(format!("unknown field `{k}`{hint}")));
            }
        }
        let de = &mut serde_json::Deserializer::from_str(text);
        let c: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { Self::bad_field(text).unwrap_or(path) } else { path };
            if path == "." {
                SamplingError::Json(e.inner().to_string())
            } else {
                SamplingError::Json(format!("field `{path}`: {}", e.inner()))
            }
        })?;
        c.validate()?;
        Ok(c)
    }

    /// The field a JSON object fails on, where serde's error has no path (the processors'
    /// flattened fields are read from a buffer): the first key that fails alone.
    fn bad_field(text: &str) -> Option<String> {
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
        obj.into_iter()
            .find(|(k, v)| serde_json::from_value::<Self>(serde_json::json!({ k: v })).is_err())
            .map(|(k, _)| k)
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
        let mut c = Self { do_sample: false, ..Self::default() }.with(|p| {
            (p.temperature.temperature, p.top_k.top_k, p.top_p.top_p) = (1.0, 50, 1.0);
        });
        let mut warnings = vec![];
        let processor_fields = Processors::field_names();
        let mut by_name = serde_json::Map::new();
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
                "temperature" => c.processors.temperature.temperature = num(k, x)? as f32,
                "top_k" => c.processors.top_k.top_k = int(k, x)?,
                "top_p" => c.processors.top_p.top_p = num(k, x)? as f32,
                "typical_p" => c.processors.typical_p.typical_p = num(k, x)? as f32,
                "min_p" => c.processors.min_p.min_p = num(k, x)? as f32,
                "repetition_penalty" => c.processors.repetition.repetition_penalty = num(k, x)? as f32,
                "no_repeat_ngram_size" => c.processors.no_repeat_ngram.no_repeat_ngram_size = int(k, x)?,
                "max_new_tokens" => c.max_new_tokens = Some(int(k, x)?),
                "max_length" => {
                    c.max_length = Some(int(k, x)?);
                    if !obj.contains_key("max_new_tokens") {
                        c.max_new_tokens = None;
                    }
                }
                "min_length" => c.processors.min_length.min_length = int(k, x)?,
                "min_new_tokens" => c.processors.min_length.min_new_tokens = int(k, x)?,
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
                // the processors' fields with transformers' names (bad_words_ids, suppress_tokens,
                // sequence_bias, epsilon_cutoff, …): taken by name
                other if processor_fields.iter().any(|f| f == other) => {
                    by_name.insert(other.to_string(), x.clone());
                }
                other => warnings.push(format!("generation config field `{other}` is ignored (no meaning here)")),
            }
        }
        c.processors.set_by_name(by_name)?;
        c.validate()?;
        Ok((c, warnings))
    }

    /// Whether building the pipeline needs the tokenizer's vocabulary (a constraint, DRY's text
    /// sequence breakers): pass a [`crate::GrammarCompiler`].
    pub fn needs_vocabulary(&self) -> bool {
        self.processors.needs_vocabulary()
    }

    /// Check every field; the error names the field, the value and the allowed range.
    pub fn validate(&self) -> Result<(), SamplingError> {
        self.processors.validate()?;
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
            let min = self.processors.min_length.min_length;
            if min > m {
                return Err(invalid("min_length", min, "must be ≤ max_length"));
            }
        }
        if self.max_new_tokens.is_none() && self.max_length.is_none() {
            return Err(invalid("max_new_tokens", "none", "set max_new_tokens or max_length"));
        }
        if let Some(n) = self.max_new_tokens {
            let min = self.processors.min_length.min_new_tokens;
            if min > n {
                return Err(invalid("min_new_tokens", min, "must be ≤ max_new_tokens"));
            }
        }
        if let Some(s) = self.stop.iter().find(|s| s.is_empty()) {
            return Err(invalid("stop", format!("{s:?}"), "stop strings must not be empty"));
        }
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
        assert_eq!(GenerationConfig::preset("balanced_code").unwrap().processors.repetition.repetition_penalty, 1.1);
        assert!(GenerationConfig::preset("nope").is_err());
    }

    #[test]
    fn report_shows_values_as_typed_and_no_sampling_fields_when_greedy() {
        let r = GenerationConfig { seed: Some(7), ..Default::default() }
            .with(|p| (p.temperature.temperature, p.top_p.top_p) = (0.8, 0.95))
            .to_report();
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
        let p = &c.processors;
        assert!(c.do_sample && p.temperature.temperature == 0.6 && p.top_p.top_p == 0.9 && p.top_k.top_k == 50);
        assert_eq!(c.max_new_tokens, Some(12));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("guidance_scale"));
        // transformers' processor fields that are ours too come by name
        let (c, w) = GenerationConfig::from_any_json(
            r#"{"transformers_version": "5.24.0", "bad_words_ids": [[5, 6]], "suppress_tokens": [7],
                "epsilon_cutoff": 0.001}"#,
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        let p = &c.processors;
        assert_eq!((&p.bad_words.bad_words_ids, &p.suppress.suppress_tokens), (&vec![vec![5, 6]], &vec![7]));
        assert_eq!(p.epsilon.epsilon_cutoff, 0.001);
        let e = GenerationConfig::from_any_json(r#"{"eos_token_id": 2, "bad_words_ids": "x"}"#).unwrap_err();
        assert!(e.to_string().contains("bad_words_ids"), "{e}");
        // transformers' default is greedy
        let (g, _) = GenerationConfig::from_any_json(r#"{"eos_token_id": 2}"#).unwrap();
        assert!(!g.do_sample);
        // a Demiurgic config still rejects unknown fields
        assert!(GenerationConfig::from_any_json(r#"{"temprature": 1.0}"#).is_err());
    }

    #[test]
    fn defaults_are_the_seed_defaults() {
        let c = GenerationConfig::default();
        let p = &c.processors;
        assert_eq!((p.temperature.temperature, p.top_k.top_k, p.top_p.top_p), (0.8, 50, 0.95));
        let fp = &p.frequency_presence;
        assert_eq!((p.repetition.repetition_penalty, fp.frequency_penalty, fp.presence_penalty), (1.0, 0.0, 0.0));
    }

    #[test]
    fn every_invalid_parameter_is_rejected_by_name() {
        // through JSON (each processor's fields are flattened into the config)
        let cases = [
            (r#"{"temperature": -0.1}"#, "temperature"),
            (r#"{"top_p": 0.0}"#, "top_p"),
            (r#"{"top_p": 1.5}"#, "top_p"),
            (r#"{"typical_p": 0.0}"#, "typical_p"),
            (r#"{"min_p": -0.5}"#, "min_p"),
            (r#"{"min_p": 1.5}"#, "min_p"),
            (r#"{"repetition_penalty": 0.0}"#, "repetition_penalty"),
            (r#"{"frequency_penalty": 2.5}"#, "frequency_penalty"),
            (r#"{"presence_penalty": -3.0}"#, "presence_penalty"),
            (r#"{"num_return_sequences": 0}"#, "num_return_sequences"),
            (r#"{"max_length": 5, "min_length": 9}"#, "min_length"),
            (r#"{"max_new_tokens": 0}"#, "max_new_tokens"),
            (r#"{"max_new_tokens": 4, "min_new_tokens": 9}"#, "min_new_tokens"),
            (r#"{"stop": [""]}"#, "stop"),
            (r#"{"logit_bias": {"5": 101}}"#, "logit_bias"),
            (r#"{"logit_bias": {"five": 1}}"#, "logit_bias"),
            (r#"{"epsilon_cutoff": 1.0}"#, "epsilon_cutoff"),
            (r#"{"eta_cutoff": -0.1}"#, "eta_cutoff"),
            (r#"{"exponential_decay_length_penalty": [3, 0.0]}"#, "exponential_decay_length_penalty"),
            (r#"{"sequence_bias": [[[], 1.0]]}"#, "sequence_bias"),
            (r#"{"dry_multiplier": -1.0}"#, "dry_multiplier"),
            (r#"{"dry_base": 0.9}"#, "dry_base"),
            (r#"{"dry_allowed_length": 0}"#, "dry_allowed_length"),
            (r#"{"dry_penalty_last_n": -2}"#, "dry_penalty_last_n"),
            (r#"{"dry_sequence_breakers": [""]}"#, "dry_sequence_breakers"),
            (r#"{"xtc_probability": 1.5}"#, "xtc_probability"),
            (r#"{"xtc_threshold": -0.5}"#, "xtc_threshold"),
            (r#"{"top_n_sigma": -1.0}"#, "top_n_sigma"),
            (r#"{"mirostat": 1}"#, "mirostat"),
            (r#"{"mirostat": 3}"#, "mirostat"),
            (r#"{"mirostat": 2, "mirostat_tau": 0.0}"#, "mirostat_tau"),
            (r#"{"mirostat": 2, "mirostat_eta": 1.5}"#, "mirostat_eta"),
            (r#"{"dynatemp_range": -0.5}"#, "dynatemp_range"),
            (r#"{"constraint": {"choice": []}}"#, "constraint"),
            (r#"{"constraint": {"regex": ""}}"#, "constraint"),
            // wrong types name the field too, flattened ones included
            (r#"{"dry_base": "high"}"#, "dry_base"),
            (r#"{"top_k": 2.5}"#, "top_k"),
            (r#"{"num_beams": "two"}"#, "num_beams"),
        ];
        for (json, field) in cases {
            let e = GenerationConfig::from_json(json).unwrap_err().to_string();
            assert!(e.contains(field), "{json}: {e} should name {field}");
        }
        // values JSON cannot hold
        let d = GenerationConfig::default;
        let cases: [(GenerationConfig, &str); 4] = [
            (d().with(|p| p.temperature.temperature = f32::NAN), "temperature"),
            (d().with(|p| p.temperature.dynatemp_exponent = f32::INFINITY), "dynatemp_exponent"),
            (d().with(|p| p.sequence_bias.sequence_bias = vec![(vec![1], f32::NAN)]), "sequence_bias"),
            (GenerationConfig { length_penalty: f32::NAN, ..d() }, "length_penalty"),
        ];
        for (c, field) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
        }
        let e = GenerationConfig::from_json(r#"{"temprature": 1.0}"#).unwrap_err().to_string();
        assert!(e.contains("temprature") && e.contains("did you mean `temperature`"), "{e}");
        let e = GenerationConfig::from_json(r#"{"dry_bas": 2.0}"#).unwrap_err().to_string();
        assert!(e.contains("dry_bas"), "{e}");
    }
}
