//! Model configuration: a serde mirror of HF `config.json`, converted to a validated
//! internal [`LlamaConfig`].
use std::path::Path;

use serde::Deserialize;

use crate::error::{cfg_err, ModelError, Result};

/// `eos_token_id` may be one id or a list in HF configs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(i64),
    Many(Vec<i64>),
}

impl OneOrMany {
    fn to_vec(&self) -> Vec<i64> {
        match self {
            OneOrMany::One(x) => vec![*x],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// transformers 5 moves `rope_theta` (and the scaling) into `rope_parameters`; older configs
/// have `rope_scaling` with the same fields (`type` or `rope_type`).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct RopeParameters {
    pub rope_theta: Option<f64>,
    pub rope_type: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
    pub partial_rotary_factor: Option<f64>,
}

/// The decoder families one decoder computes (as validated options of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `LlamaForCausalLM` (and SmolLM, Llama 3.x with its RoPE scaling).
    Llama,
    /// `MistralForCausalLM`: sliding-window attention.
    Mistral,
    /// `Qwen2ForCausalLM`: biases on the q/k/v projections.
    Qwen2,
    /// `Phi3ForCausalLM`: fused `qkv_proj` and `gate_up_proj` in the checkpoint.
    Phi3,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Phi3 => "phi3",
        }
    }

    /// The registry: an HF `architectures[0]` or `model_type`, or a GGUF `general.architecture`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "LlamaForCausalLM" | "llama" | "smollm" => Family::Llama,
            "MistralForCausalLM" | "mistral" => Family::Mistral,
            "Qwen2ForCausalLM" | "qwen2" => Family::Qwen2,
            "Phi3ForCausalLM" | "phi3" => Family::Phi3,
            _ => return None,
        })
    }

    pub const SUPPORTED: &'static str = "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Phi3ForCausalLM";
}

/// How RoPE frequencies are scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    None,
    /// `linear`: positions divided by `factor` (inverse frequencies divided by it).
    Linear {
        factor: f64,
    },
    /// Llama 3.x: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// llama.cpp's per-dimension frequency divisors (GGUF `rope_freqs.weight`).
    FreqFactors,
}

/// HF `config.json` of a `LlamaForCausalLM` (the fields Demiurgic reads).
#[derive(Debug, Clone, Deserialize)]
pub struct HfLlamaConfig {
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: Option<f64>,
    pub rope_parameters: Option<RopeParameters>,
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    pub bos_token_id: Option<OneOrMany>,
    pub eos_token_id: Option<OneOrMany>,
    pub pad_token_id: Option<OneOrMany>,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub sliding_window: Option<usize>,
    pub use_sliding_window: Option<bool>,
    pub partial_rotary_factor: Option<f64>,
    /// Phi-3's long-context RoPE switch (refused unless it equals the context).
    pub original_max_position_embeddings: Option<usize>,
    pub layer_types: Option<Vec<String>>,
}

/// HF `generation_config.json` (token ids only; sampling settings live in the sampling crate).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct HfGenerationConfig {
    pub bos_token_id: Option<OneOrMany>,
    pub eos_token_id: Option<OneOrMany>,
    pub pad_token_id: Option<OneOrMany>,
}

/// Validated internal configuration of a Llama-family decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// Sliding-window attention (Mistral): a query sees at most this many keys.
    pub sliding_window: Option<usize>,
    pub family: Family,
    pub rope_scaling: RopeScaling,
    /// Per-dimension RoPE frequency divisors (GGUF `rope_freqs.weight`, with `FreqFactors`).
    pub rope_freq_factors: Option<Vec<f32>>,
}

fn single_id(origin: &str, field: &str, v: &Option<OneOrMany>) -> Result<Option<u32>> {
    match v {
        None => Ok(None),
        Some(v) => {
            let ids = v.to_vec();
            match ids.first() {
                None => Ok(None),
                Some(&id) if id >= 0 && id <= u32::MAX as i64 => Ok(Some(id as u32)),
                Some(&id) => Err(cfg_err(origin, format!("{field} = {id} is not a valid token id"))),
            }
        }
    }
}

fn id_list(origin: &str, field: &str, v: &Option<OneOrMany>) -> Result<Vec<u32>> {
    match v {
        None => Ok(vec![]),
        Some(v) => v
            .to_vec()
            .into_iter()
            .map(|id| {
                u32::try_from(id).map_err(|_| cfg_err(origin, format!("{field} contains {id}, not a valid token id")))
            })
            .collect(),
    }
}

impl HfLlamaConfig {
    /// Parse `config.json` text; `origin` names the file in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                cfg_err(origin, e.inner().to_string())
            } else {
                cfg_err(origin, format!("field `{path}`: {}", e.inner()))
            }
        })
    }

    /// Convert to the validated internal config: the family from the registry, and every field
    /// that changes the computation either implemented or refused by name.
    pub fn to_config(&self, origin: &str) -> Result<LlamaConfig> {
        let family = match (self.architectures.first(), &self.model_type) {
            (Some(a), _) => Family::from_name(a).ok_or_else(|| {
                cfg_err(origin, format!("architecture \"{a}\" is not supported (supported: {})", Family::SUPPORTED))
            })?,
            (None, Some(mt)) => Family::from_name(mt).ok_or_else(|| {
                cfg_err(
                    origin,
                    format!("model_type \"{mt}\" is not supported (supported: llama, mistral, qwen2, phi3)"),
                )
            })?,
            (None, None) => Family::Llama,
        };
        if let (Some(mt), Some(a)) = (&self.model_type, self.architectures.first()) {
            if Family::from_name(mt).is_some_and(|f| f != family) {
                return Err(cfg_err(origin, format!("model_type \"{mt}\" contradicts architectures[0] \"{a}\"")));
            }
        }
        if let Some(act) = &self.hidden_act {
            if act != "silu" {
                return Err(cfg_err(origin, format!("hidden_act \"{act}\" is not supported (supported: silu)")));
            }
        }
        // rope: rope_parameters (transformers 5) or rope_scaling (older), never both differing
        let params: RopeParameters = match (&self.rope_parameters, &self.rope_scaling) {
            (Some(p), _) => p.clone(),
            (None, Some(v)) if !v.is_null() => {
                serde_json::from_value(v.clone()).map_err(|e| cfg_err(origin, format!("rope_scaling {v}: {e}")))?
            }
            _ => RopeParameters::default(),
        };
        let rope_type = params.rope_type.clone().or(params.kind.clone()).unwrap_or_else(|| "default".into());
        let factor = |name: &str| -> Result<f64> {
            params
                .factor
                .filter(|f| *f > 0.0 && f.is_finite())
                .ok_or_else(|| cfg_err(origin, format!("rope {name} scaling needs a positive `factor`")))
        };
        let rope_scaling = match rope_type.as_str() {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: factor("linear")? },
            "llama3" => RopeScaling::Llama3 {
                factor: factor("llama3")?,
                low_freq_factor: params
                    .low_freq_factor
                    .ok_or_else(|| cfg_err(origin, "rope llama3 scaling needs `low_freq_factor`"))?,
                high_freq_factor: params
                    .high_freq_factor
                    .ok_or_else(|| cfg_err(origin, "rope llama3 scaling needs `high_freq_factor`"))?,
                original_max_position_embeddings: params
                    .original_max_position_embeddings
                    .ok_or_else(|| cfg_err(origin, "rope llama3 scaling needs `original_max_position_embeddings`"))?,
            },
            other => {
                return Err(cfg_err(
                    origin,
                    format!("rope type \"{other}\" is not supported (supported: default, linear, llama3)"),
                ))
            }
        };
        if let RopeScaling::Llama3 { low_freq_factor, high_freq_factor, .. } = rope_scaling {
            if high_freq_factor.partial_cmp(&low_freq_factor) != Some(std::cmp::Ordering::Greater) {
                return Err(cfg_err(origin, "rope llama3 scaling needs high_freq_factor > low_freq_factor"));
            }
        }
        let partial = params.partial_rotary_factor.or(self.partial_rotary_factor).unwrap_or(1.0);
        if partial != 1.0 {
            return Err(cfg_err(
                origin,
                format!("partial_rotary_factor {partial} is not supported (only full rotary, 1.0)"),
            ));
        }
        let rope_theta = self.rope_theta.or(params.rope_theta);
        // sliding windows: Mistral applies its window in every layer; Qwen2 only with
        // use_sliding_window (per-layer windows: not implemented, refused)
        let sliding_window = match family {
            Family::Mistral => self.sliding_window,
            Family::Qwen2 => {
                if self.use_sliding_window == Some(true) {
                    return Err(cfg_err(
                        origin,
                        "use_sliding_window = true is not supported for qwen2 (per-layer windows)",
                    ));
                }
                None
            }
            _ => {
                if let Some(w) = self.sliding_window {
                    return Err(cfg_err(origin, format!("sliding_window {w} is not supported for {}", family.name())));
                }
                None
            }
        };
        if let Some(types) = &self.layer_types {
            if let Some(t) = types.iter().find(|t| {
                t.as_str() != "full_attention" && !(t.as_str() == "sliding_attention" && family == Family::Mistral)
            }) {
                return Err(cfg_err(
                    origin,
                    format!("layer_types entry \"{t}\" is not supported (only full_attention)"),
                ));
            }
        }
        if family == Family::Phi3 {
            if let Some(o) = self.original_max_position_embeddings {
                if o < self.max_position_embeddings && rope_scaling == RopeScaling::None {
                    return Err(cfg_err(origin, format!(
                        "original_max_position_embeddings {o} < max_position_embeddings {} without a supported RoPE scaling (Phi-3 longrope is not supported)",
                        self.max_position_embeddings
                    )));
                }
            }
        }
        let num_kv_heads = self.num_key_value_heads.unwrap_or(self.num_attention_heads);
        let head_dim = match self.head_dim {
            Some(h) => h,
            None => self.hidden_size.checked_div(self.num_attention_heads).unwrap_or(0),
        };
        let cfg = LlamaConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads,
            head_dim,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: rope_theta.unwrap_or(10_000.0),
            tie_word_embeddings: self.tie_word_embeddings,
            // Qwen2 always has q/k/v biases (its config has no flag for them)
            attention_bias: self.attention_bias || family == Family::Qwen2,
            mlp_bias: self.mlp_bias,
            bos_token_id: single_id(origin, "bos_token_id", &self.bos_token_id)?,
            eos_token_ids: id_list(origin, "eos_token_id", &self.eos_token_id)?,
            pad_token_id: single_id(origin, "pad_token_id", &self.pad_token_id)?,
            sliding_window,
            family,
            rope_scaling,
            rope_freq_factors: None,
        };
        cfg.validate(origin)?;
        Ok(cfg)
    }
}

impl LlamaConfig {
    /// Read `config.json` (and `generation_config.json` beside it when present) from a directory.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io { path: path.clone(), source })?;
        let origin = path.display().to_string();
        let mut cfg = HfLlamaConfig::from_json_str(&text, &origin)?.to_config(&origin)?;
        let gpath = dir.join("generation_config.json");
        if gpath.exists() {
            let text =
                std::fs::read_to_string(&gpath).map_err(|source| ModelError::Io { path: gpath.clone(), source })?;
            let gorigin = gpath.display().to_string();
            let g: HfGenerationConfig = serde_json::from_str(&text).map_err(|e| cfg_err(&gorigin, e.to_string()))?;
            if g.eos_token_id.is_some() {
                cfg.eos_token_ids = id_list(&gorigin, "eos_token_id", &g.eos_token_id)?;
            }
            if let Some(p) = single_id(&gorigin, "pad_token_id", &g.pad_token_id)? {
                cfg.pad_token_id = Some(p);
            }
            if let Some(b) = single_id(&gorigin, "bos_token_id", &g.bos_token_id)? {
                cfg.bos_token_id = Some(b);
            }
            cfg.validate(&gorigin)?;
        }
        Ok(cfg)
    }

    /// RoPE inverse frequencies (`head_dim / 2`), with the scaling, as transformers computes them.
    pub fn inv_freq(&self) -> Vec<f32> {
        let inv = crate::rope::default_inv_freq(self.rope_theta, self.head_dim);
        match self.rope_scaling {
            RopeScaling::None => inv,
            RopeScaling::Linear { factor } => inv.iter().map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                crate::rope::llama3_inv_freq(
                    &inv,
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings,
                )
            }
            RopeScaling::FreqFactors => match &self.rope_freq_factors {
                Some(ff) => inv.iter().zip(ff).map(|(f, d)| f / d).collect(),
                None => inv,
            },
        }
    }

    /// Number of parameters (embedding counted once when tied).
    pub fn parameter_count(&self) -> usize {
        let (d, hd) = (self.hidden_size, self.head_dim);
        let attn = d * self.num_heads * hd * 2 + d * self.num_kv_heads * hd * 2;
        let mlp = 3 * d * self.intermediate_size;
        let layer = attn + mlp + 2 * d;
        let embed = self.vocab_size * d;
        self.num_layers * layer + embed + d + if self.tie_word_embeddings { 0 } else { embed }
    }

    /// Number of query heads sharing one key/value head.
    pub fn kv_groups(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// Check every invariant the model relies on; errors name the field and value.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(cfg_err(origin, format!("{name} must be > 0, got 0")));
            }
        }
        const LIMIT: usize = 1 << 24;
        for (name, v) in positive {
            if v > LIMIT {
                return Err(cfg_err(origin, format!("{name} = {v} is implausibly large (limit {LIMIT})")));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(cfg_err(
                origin,
                format!(
                    "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                    self.num_heads, self.num_kv_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(cfg_err(origin, format!("head_dim must be even for RoPE, got {}", self.head_dim)));
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            return Err(cfg_err(origin, format!("rms_norm_eps must be > 0, got {}", self.rms_norm_eps)));
        }
        if let Some(w) = self.sliding_window {
            if w == 0 {
                return Err(cfg_err(origin, "sliding_window must be > 0, got 0"));
            }
        }
        if let Some(ff) = &self.rope_freq_factors {
            if ff.len() != self.head_dim / 2 || ff.iter().any(|f| !(*f > 0.0 && f.is_finite())) {
                return Err(cfg_err(
                    origin,
                    format!("rope frequency factors: {} positive values needed (head_dim / 2)", self.head_dim / 2),
                ));
            }
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return Err(cfg_err(origin, format!("rope_theta must be > 0, got {}", self.rope_theta)));
        }
        let ids = self.bos_token_id.iter().chain(self.pad_token_id.iter()).chain(self.eos_token_ids.iter());
        for &id in ids {
            if id as usize >= self.vocab_size {
                return Err(cfg_err(
                    origin,
                    format!("special token id {id} is outside the vocabulary (vocab_size {})", self.vocab_size),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = r#"{"model_type":"llama","vocab_size":256,"hidden_size":64,"intermediate_size":160,
      "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,
      "max_position_embeddings":128,"rms_norm_eps":1e-5,"rope_parameters":{"rope_theta":10000.0,"rope_type":"default"},
      "tie_word_embeddings":false,"hidden_act":"silu","bos_token_id":1,"eos_token_id":[2,3],"pad_token_id":0}"#;

    #[test]
    fn parses_rope_parameters_and_eos_list() {
        let c = HfLlamaConfig::from_json_str(TINY, "t").unwrap().to_config("t").unwrap();
        assert_eq!(c.rope_theta, 10000.0);
        assert_eq!(c.eos_token_ids, vec![2, 3]);
        assert_eq!(c.kv_groups(), 2);
    }

    #[test]
    fn top_level_rope_theta_and_defaults() {
        let j = TINY
            .replace(r#""rope_parameters":{"rope_theta":10000.0,"rope_type":"default"},"#, r#""rope_theta":500000.0,"#)
            .replace(r#""num_key_value_heads":2,"head_dim":16,"#, "");
        let c = HfLlamaConfig::from_json_str(&j, "t").unwrap().to_config("t").unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.num_kv_heads, 4);
        assert_eq!(c.head_dim, 16);
    }

    #[test]
    fn rejects_bad_values_with_names() {
        let cases = [
            (TINY.replace(r#""num_key_value_heads":2"#, r#""num_key_value_heads":3"#), "num_key_value_heads"),
            (TINY.replace(r#""vocab_size":256"#, r#""vocab_size":0"#), "vocab_size"),
            (TINY.replace(r#""rms_norm_eps":1e-5"#, r#""rms_norm_eps":-1.0"#), "rms_norm_eps"),
            (TINY.replace(r#""hidden_act":"silu""#, r#""hidden_act":"gelu""#), "hidden_act"),
            (TINY.replace(r#""pad_token_id":0"#, r#""pad_token_id":999"#), "999"),
            (TINY.replace(r#""hidden_size":64,"#, ""), "hidden_size"),
        ];
        for (json, needle) in cases {
            let err = HfLlamaConfig::from_json_str(&json, "t").and_then(|h| h.to_config("t")).unwrap_err();
            assert!(err.to_string().contains(needle), "{err} should mention {needle}");
        }
    }
}
