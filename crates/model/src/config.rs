//! A serde mirror of HF `config.json` and `generation_config.json`; the family files
//! (`crate::families`) turn it into a validated [`ModelConfig`](crate::families::ModelConfig).
use serde::Deserialize;

use crate::error::{cfg_err, Result};

/// `eos_token_id` may be one id or a list in HF configs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(i64),
    Many(Vec<i64>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<i64> {
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

/// HF `config.json` of a decoder (the fields any family file reads; each family refuses the
/// ones it cannot honour).
#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
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
    /// One [`RopeParameters`] object, or (Gemma 3) one per layer type.
    pub rope_parameters: Option<serde_json::Value>,
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
    /// Gemma 3 without `layer_types`: every `n`-th layer global, the others sliding.
    pub sliding_window_pattern: Option<usize>,
    #[serde(rename = "_sliding_window_pattern")]
    pub sliding_window_pattern_private: Option<usize>,
    /// Gemma's activation field (`hidden_act` elsewhere).
    pub hidden_activation: Option<String>,
    pub query_pre_attn_scalar: Option<f64>,
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    pub rope_local_base_freq: Option<f64>,
    #[serde(default)]
    pub use_bidirectional_attention: Option<bool>,
    /// Sparse MoE (Qwen3-MoE): experts per layer (`num_experts`, or transformers 5's
    /// `num_local_experts`), chosen per token, their width, renormalised weights, which layers.
    pub num_local_experts: Option<usize>,
    pub num_experts: Option<usize>,
    pub num_experts_per_tok: Option<usize>,
    pub moe_intermediate_size: Option<usize>,
    pub norm_topk_prob: Option<bool>,
    pub decoder_sparse_step: Option<usize>,
    pub mlp_only_layers: Option<Vec<usize>>,
    pub shared_expert_intermediate_size: Option<usize>,
}

/// HF `generation_config.json` (token ids only; sampling settings live in the sampling crate).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct HfGenerationConfig {
    pub bos_token_id: Option<OneOrMany>,
    pub eos_token_id: Option<OneOrMany>,
    pub pad_token_id: Option<OneOrMany>,
}

pub(crate) fn single_id(origin: &str, field: &str, v: &Option<OneOrMany>) -> Result<Option<u32>> {
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

pub(crate) fn id_list(origin: &str, field: &str, v: &Option<OneOrMany>) -> Result<Vec<u32>> {
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

impl HfConfig {
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
}
