//! Model families as data: one file per family maps its HF config, its GGUF metadata keys and
//! its tensor names to a [`ModelConfig`] with one [`LayerSpec`] per layer; the decoder computes
//! from that description only. Adding a family = one file here + its entry in [`REGISTRY`] +
//! fixtures.
use std::path::Path;

use crate::config::{id_list, single_id, HfConfig, HfGenerationConfig};
use crate::error::{cfg_err, ModelError, Result};
use crate::load::gguf::reader::GgufFile;

pub mod common;
mod gemma3;
mod llama;
mod mistral;
mod phi3;
mod qwen2;
mod qwen3;
mod qwen3_moe;
pub mod spec;

pub use spec::{Activation, Family, LayerSpec, ModelConfig, MoeSpec, Naming, Part, RopeScaling, RopeSpec};

/// Every supported family.
pub static REGISTRY: &[&Family] = &[
    &llama::LLAMA,
    &mistral::MISTRAL,
    &qwen2::QWEN2,
    &qwen3::QWEN3,
    &qwen3_moe::QWEN3_MOE,
    &phi3::PHI3,
    &gemma3::GEMMA3,
];

/// The family an HF `architectures[0]` / `model_type` or a GGUF `general.architecture` names.
pub fn lookup(name: &str) -> Option<&'static Family> {
    REGISTRY.iter().copied().find(|f| f.aliases.contains(&name))
}

/// The names [`lookup`] knows, for error messages.
pub fn supported() -> String {
    REGISTRY.iter().map(|f| f.aliases[0]).collect::<Vec<_>>().join(", ")
}

/// The validated config an HF `config.json` describes: its family from `architectures[0]` (or
/// `model_type`; Llama when neither is given), then that family's file.
pub fn from_hf(hf: &HfConfig, origin: &str) -> Result<ModelConfig> {
    let unknown =
        |what: &str, v: &str| cfg_err(origin, format!("{what} \"{v}\" is not supported (supported: {})", supported()));
    let family = match (hf.architectures.first(), &hf.model_type) {
        (Some(a), _) => lookup(a).ok_or_else(|| unknown("architecture", a))?,
        (None, Some(mt)) => lookup(mt).ok_or_else(|| unknown("model_type", mt))?,
        (None, None) => &llama::LLAMA,
    };
    if let (Some(mt), Some(a)) = (&hf.model_type, hf.architectures.first()) {
        if lookup(mt).is_some_and(|f| f != family) {
            return Err(cfg_err(origin, format!("model_type \"{mt}\" contradicts architectures[0] \"{a}\"")));
        }
    }
    let c = (family.from_hf)(hf, origin)?;
    c.validate(origin)?;
    Ok(c)
}

/// Parse `config.json` text and build its config.
pub fn from_hf_json(text: &str, origin: &str) -> Result<ModelConfig> {
    from_hf(&HfConfig::from_json_str(text, origin)?, origin)
}

/// Read `config.json` (and `generation_config.json` beside it when present) from a directory.
pub fn from_hf_dir(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|error| ModelError::Io { path: path.clone(), error })?;
    let mut cfg = from_hf_json(&text, &path.display().to_string())?;
    let gpath = dir.join("generation_config.json");
    if gpath.exists() {
        let text = std::fs::read_to_string(&gpath).map_err(|error| ModelError::Io { path: gpath.clone(), error })?;
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

/// The validated config a GGUF file's metadata describes (family from `general.architecture`).
pub fn from_gguf(g: &GgufFile) -> Result<ModelConfig> {
    let arch = common::gguf_arch(g)?;
    let family = lookup(arch).ok_or_else(|| {
        common::gerr(g, format!("architecture \"{arch}\" is not supported (supported: {})", supported()))
    })?;
    let c = (family.from_gguf)(g)?;
    c.validate(&g.path.display().to_string())?;
    Ok(c)
}

/// The Llama family (synthetic test models start from it).
pub fn llama() -> &'static Family {
    &llama::LLAMA
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
        let c = from_hf_json(TINY, "t").unwrap();
        assert_eq!(c.ropes[0].theta, 10000.0);
        assert_eq!(c.eos_token_ids, vec![2, 3]);
        assert_eq!(c.kv_groups(), 2);
    }

    #[test]
    fn top_level_rope_theta_and_defaults() {
        let j = TINY
            .replace(r#""rope_parameters":{"rope_theta":10000.0,"rope_type":"default"},"#, r#""rope_theta":500000.0,"#)
            .replace(r#""num_key_value_heads":2,"head_dim":16,"#, "");
        let c = from_hf_json(&j, "t").unwrap();
        assert_eq!(c.ropes[0].theta, 500000.0);
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
            let err = from_hf_json(&json, "t").unwrap_err();
            assert!(err.to_string().contains(needle), "{err} should mention {needle}");
        }
    }
}
