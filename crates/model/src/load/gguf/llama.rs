//! Llama from GGUF: config from `llama.*` metadata; weights through the common builder (kept as
//! blocks on backends with host kernels), llama.cpp's Q/K row permutation undone so the model
//! uses HF's half-split RoPE.
use std::path::Path;

use super::reader::GgufFile;
use super::tokenizer::tokenizer_from_gguf;
use crate::config::{Family, LlamaConfig, RopeScaling};
use crate::error::{ModelError, Result};
use crate::llama::Llama;
use crate::load::builder::{Builder, LoadOptions, Naming, RawTensor, WeightSource};
use crate::load::LoadedModel;
use crate::ops::DecodeOps;

fn gerr(g: &GgufFile, msg: impl Into<String>) -> ModelError {
    ModelError::Gguf { path: g.path.clone(), message: msg.into() }
}

fn req_u(g: &GgufFile, key: &str) -> Result<usize> {
    let v = g.meta(key).ok_or_else(|| gerr(g, format!("metadata key {key} is missing")))?;
    v.as_u64().map(|x| x as usize).ok_or_else(|| gerr(g, format!("metadata {key} = {v:?} is not an unsigned integer")))
}

fn opt_u(g: &GgufFile, key: &str) -> Result<Option<usize>> {
    match g.meta(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|x| Some(x as usize))
            .ok_or_else(|| gerr(g, format!("metadata {key} = {v:?} is not an unsigned integer"))),
    }
}

fn opt_f(g: &GgufFile, key: &str) -> Result<Option<f64>> {
    match g.meta(key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| gerr(g, format!("metadata {key} = {v:?} is not a number"))),
    }
}

/// The internal config described by a GGUF file's metadata (`{arch}.*` keys; the family from
/// `general.architecture` through the registry).
pub fn llama_config_from_gguf(g: &GgufFile) -> Result<LlamaConfig> {
    let arch = g
        .meta("general.architecture")
        .and_then(|v| v.as_str())
        .ok_or_else(|| gerr(g, "metadata general.architecture is missing"))?;
    let family = match Family::from_name(arch) {
        Some(f) => f,
        None => {
            return Err(gerr(
                g,
                format!("architecture \"{arch}\" is not supported (supported: llama, mistral, qwen2, phi3)"),
            ))
        }
    };
    let key = |k: &str| format!("{arch}.{k}");
    let mut rope_scaling = RopeScaling::None;
    if let Some(t) = g.meta(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
        match t {
            "none" => {}
            "linear" => {
                let f = opt_f(g, &key("rope.scaling.factor"))?.ok_or_else(|| {
                    gerr(g, format!("{arch}.rope.scaling.type linear without {arch}.rope.scaling.factor"))
                })?;
                rope_scaling = RopeScaling::Linear { factor: f };
            }
            other => {
                return Err(gerr(g, format!("{arch}.rope.scaling.type \"{other}\" is not supported (none, linear)")))
            }
        }
    }
    // llama.cpp stores Llama 3's RoPE scaling as per-dimension frequency divisors
    let freq_factors = match g.tensor("rope_freqs.weight") {
        Some(_) => {
            let (v, _) = g.tensor_f32("rope_freqs.weight")?;
            if rope_scaling != RopeScaling::None {
                return Err(gerr(g, "both rope_freqs.weight and a rope scaling type: not supported"));
            }
            rope_scaling = RopeScaling::FreqFactors;
            Some(v)
        }
        None => None,
    };
    let hidden = req_u(g, &key("embedding_length"))?;
    let heads = req_u(g, &key("attention.head_count"))?;
    let kv_heads = opt_u(g, &key("attention.head_count_kv"))?.unwrap_or(heads);
    let head_dim = match opt_u(g, &key("attention.key_length"))? {
        Some(k) => k,
        None => hidden.checked_div(heads).unwrap_or(0),
    };
    if let Some(rd) = opt_u(g, &key("rope.dimension_count"))? {
        if rd != head_dim {
            return Err(gerr(
                g,
                format!(
                    "{arch}.rope.dimension_count {rd} differs from head_dim {head_dim}: partial RoPE is not supported"
                ),
            ));
        }
    }
    let sliding_window = opt_u(g, &key("attention.sliding_window"))?;
    if sliding_window.is_some() && !matches!(family, Family::Llama | Family::Mistral) {
        return Err(gerr(g, format!("{arch}.attention.sliding_window is not supported for {arch}")));
    }
    let vocab = match opt_u(g, &key("vocab_size"))? {
        Some(v) => v,
        None => match g.meta("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
            Some(a) => a.len(),
            None => g.tensor("token_embd.weight").and_then(|t| t.dims.get(1).copied()).ok_or_else(|| {
                gerr(g, format!("cannot tell the vocabulary size (no {arch}.vocab_size, tokens or token_embd.weight)"))
            })? as usize,
        },
    };
    let id = |k: &str| -> Result<Option<u32>> { Ok(opt_u(g, k)?.map(|x| x as u32)) };
    let eos = id("tokenizer.ggml.eos_token_id")?;
    let mut eos_ids: Vec<u32> = eos.into_iter().collect();
    if let Some(eot) = id("tokenizer.ggml.eot_token_id")? {
        if !eos_ids.contains(&eot) {
            eos_ids.push(eot);
        }
    }
    let cfg = LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: req_u(g, &key("feed_forward_length"))?,
        num_layers: req_u(g, &key("block_count"))?,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        max_position_embeddings: req_u(g, &key("context_length"))?,
        rms_norm_eps: opt_f(g, &key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
        rope_theta: opt_f(g, &key("rope.freq_base"))?.unwrap_or(10_000.0),
        tie_word_embeddings: g.tensor("output.weight").is_none(),
        attention_bias: g.tensor("blk.0.attn_q.bias").is_some(),
        mlp_bias: false,
        bos_token_id: id("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: eos_ids,
        pad_token_id: id("tokenizer.ggml.padding_token_id")?,
        sliding_window,
        family: if sliding_window.is_some() { Family::Mistral } else { family },
        rope_scaling,
        rope_freq_factors: freq_factors,
    };
    cfg.validate(&g.path.display().to_string())?;
    Ok(cfg)
}

impl WeightSource for GgufFile {
    fn get(&self, name: &str) -> Option<RawTensor<'_>> {
        let info = self.tensor(name)?;
        Some(RawTensor {
            ty: info.ggml_type,
            shape: info.dims.iter().rev().map(|&d| d as usize).collect(),
            data: self.tensor_bytes(info),
        })
    }

    fn names(&self) -> Vec<String> {
        self.tensors.iter().map(|t| t.name.clone()).collect()
    }

    fn error(&self, message: String) -> ModelError {
        gerr(self, message)
    }

    fn release(&self, name: &str) {
        if let Some(info) = self.tensor(name) {
            self.release_range(info.offset, info.n_bytes);
        }
    }
}

/// Load a GGUF Llama with its embedded tokenizer.
pub fn load_gguf<B: DecodeOps>(path: &Path, device: &B::Device, opts: &LoadOptions) -> Result<LoadedModel<B>> {
    let g = GgufFile::open(path)?;
    let c = llama_config_from_gguf(&g)?;
    // llama.cpp permutes Q/K rows for its `llama` architecture only (qwen2 and phi3 use NEOX-style
    // RoPE, HF's half split, unpermuted)
    let arch = g.meta("general.architecture").and_then(|v| v.as_str()).unwrap_or("llama").to_string();
    let builder = Builder::<B>::new(&g, Naming::Gguf, *opts, device).unpermute_qk(arch == "llama");
    let weights = builder.build(&c)?;
    builder.check_all_used(&["rope_freqs.weight"])?;
    // A tokenizer that cannot be built does not stop the model: ids still work, and the error
    // is reported when text is needed.
    let (tokenizer, tokenizer_error) = match g.meta("tokenizer.ggml.model").map(|_| tokenizer_from_gguf(&g)) {
        Some(Ok(t)) => (Some(t), None),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    let chat_template = g.meta("tokenizer.chat_template").and_then(|v| v.as_str()).map(String::from);
    let description =
        format!("GGUF {} ({})", path.display(), g.meta("general.name").and_then(|v| v.as_str()).unwrap_or("unnamed"));
    let family = c.family.name().to_string();
    Ok(LoadedModel {
        model: Llama::new(c, weights, device),
        tokenizer,
        tokenizer_error,
        chat_template,
        description,
        architecture: family,
    })
}
