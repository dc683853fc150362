//! What the family files share: the Llama-shaped fields of an HF config and of GGUF metadata,
//! RoPE parameters, and the refusals most families need.
use super::spec::{Family, ModelConfig, RopeScaling, RopeSpec};
use crate::config::{id_list, single_id, HfConfig, RopeParameters};
use crate::error::{cfg_err, ModelError, Result};
use crate::load::gguf::reader::GgufFile;

/// The Llama-shaped part of an HF config: sizes, ids, one RoPE table from `rope_parameters` /
/// `rope_scaling` / `rope_theta` (default, linear, llama3), every layer Llama's with the
/// config's `attention_bias` (q/k/v and o) and `mlp_bias`. Refuses partial rotary.
pub fn hf_base(hf: &HfConfig, origin: &str, family: &'static Family) -> Result<ModelConfig> {
    let num_kv_heads = hf.num_key_value_heads.unwrap_or(hf.num_attention_heads);
    let head_dim = match hf.head_dim {
        Some(h) => h,
        None => hf.hidden_size.checked_div(hf.num_attention_heads).unwrap_or(0),
    };
    let mut c = ModelConfig::llama(
        family,
        hf.vocab_size,
        hf.hidden_size,
        hf.intermediate_size,
        hf.num_hidden_layers,
        hf.num_attention_heads,
        num_kv_heads,
        head_dim,
        hf.max_position_embeddings,
    );
    c.rms_norm_eps = hf.rms_norm_eps;
    c.tie_word_embeddings = hf.tie_word_embeddings;
    c.bos_token_id = single_id(origin, "bos_token_id", &hf.bos_token_id)?;
    c.eos_token_ids = id_list(origin, "eos_token_id", &hf.eos_token_id)?;
    c.pad_token_id = single_id(origin, "pad_token_id", &hf.pad_token_id)?;
    let params = match (&hf.rope_parameters, &hf.rope_scaling) {
        (Some(p), _) => rope_params(origin, "rope_parameters", p)?,
        (None, Some(v)) if !v.is_null() => rope_params(origin, "rope_scaling", v)?,
        _ => RopeParameters::default(),
    };
    let partial = params.partial_rotary_factor.or(hf.partial_rotary_factor).unwrap_or(1.0);
    if partial != 1.0 {
        return Err(cfg_err(
            origin,
            format!("partial_rotary_factor {partial} is not supported (only full rotary, 1.0)"),
        ));
    }
    c.ropes = vec![rope_spec(origin, &params, hf.rope_theta)?];
    let (attention_bias, mlp_bias) = (hf.attention_bias, hf.mlp_bias);
    c.each_layer(|l| {
        l.qkv_bias = attention_bias;
        l.o_bias = attention_bias;
        l.mlp_bias = mlp_bias;
    });
    Ok(c)
}

/// A `rope_parameters` object (or older `rope_scaling`).
pub fn rope_params(origin: &str, field: &str, v: &serde_json::Value) -> Result<RopeParameters> {
    serde_json::from_value(v.clone()).map_err(|e| cfg_err(origin, format!("{field} {v}: {e}")))
}

/// One RoPE table from its parameters (`theta` from the top-level `rope_theta` when given).
pub fn rope_spec(origin: &str, params: &RopeParameters, rope_theta: Option<f64>) -> Result<RopeSpec> {
    let rope_type = params.rope_type.clone().or(params.kind.clone()).unwrap_or_else(|| "default".into());
    let factor = |name: &str| -> Result<f64> {
        params
            .factor
            .filter(|f| *f > 0.0 && f.is_finite())
            .ok_or_else(|| cfg_err(origin, format!("rope {name} scaling needs a positive `factor`")))
    };
    let scaling = match rope_type.as_str() {
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
    if let RopeScaling::Llama3 { low_freq_factor, high_freq_factor, .. } = scaling {
        if high_freq_factor.partial_cmp(&low_freq_factor) != Some(std::cmp::Ordering::Greater) {
            return Err(cfg_err(origin, "rope llama3 scaling needs high_freq_factor > low_freq_factor"));
        }
    }
    let theta = rope_theta.or(params.rope_theta).unwrap_or(10_000.0);
    Ok(RopeSpec { theta, scaling, freq_factors: None })
}

/// Refuse an activation other than the allowed ones.
pub fn check_act(origin: &str, field: &str, act: Option<&String>, allowed: &[&str]) -> Result<()> {
    match act {
        Some(a) if !allowed.contains(&a.as_str()) => {
            Err(cfg_err(origin, format!("{field} \"{a}\" is not supported (supported: {})", allowed.join(", "))))
        }
        _ => Ok(()),
    }
}

/// Refuse any sliding-window setting (families that attend to every key).
pub fn refuse_windows(hf: &HfConfig, origin: &str, family: &Family) -> Result<()> {
    if let Some(w) = hf.sliding_window {
        return Err(cfg_err(origin, format!("sliding_window {w} is not supported for {}", family.name)));
    }
    full_attention_only(hf, origin)
}

/// Refuse `layer_types` entries other than `full_attention`.
pub fn full_attention_only(hf: &HfConfig, origin: &str) -> Result<()> {
    if let Some(t) = hf.layer_types.iter().flatten().find(|t| t.as_str() != "full_attention") {
        return Err(cfg_err(origin, format!("layer_types entry \"{t}\" is not supported (only full_attention)")));
    }
    Ok(())
}

/// Qwen's `use_sliding_window = true` (windows on the layers above `max_window_layers`).
pub fn refuse_qwen_windows(hf: &HfConfig, origin: &str, family: &Family) -> Result<()> {
    if hf.use_sliding_window == Some(true) {
        return Err(cfg_err(
            origin,
            format!("use_sliding_window = true is not supported for {} (per-layer windows)", family.name),
        ));
    }
    full_attention_only(hf, origin)
}

pub fn gerr(g: &GgufFile, msg: impl Into<String>) -> ModelError {
    ModelError::Gguf { path: g.path.clone(), message: msg.into() }
}

pub fn req_u(g: &GgufFile, key: &str) -> Result<usize> {
    let v = g.meta(key).ok_or_else(|| gerr(g, format!("metadata key {key} is missing")))?;
    v.as_u64().map(|x| x as usize).ok_or_else(|| gerr(g, format!("metadata {key} = {v:?} is not an unsigned integer")))
}

pub fn opt_u(g: &GgufFile, key: &str) -> Result<Option<usize>> {
    match g.meta(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|x| Some(x as usize))
            .ok_or_else(|| gerr(g, format!("metadata {key} = {v:?} is not an unsigned integer"))),
    }
}

pub fn opt_f(g: &GgufFile, key: &str) -> Result<Option<f64>> {
    match g.meta(key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| gerr(g, format!("metadata {key} = {v:?} is not a number"))),
    }
}

/// The GGUF `general.architecture`.
pub fn gguf_arch(g: &GgufFile) -> Result<&str> {
    g.meta("general.architecture")
        .and_then(|v| v.as_str())
        .ok_or_else(|| gerr(g, "metadata general.architecture is missing"))
}

/// The Llama-shaped part of GGUF metadata (`{arch}.*` keys): sizes, ids (EOS and EOT), one RoPE
/// table (`rope.freq_base`, `rope.scaling.type` none/linear, or `rope_freqs.weight` divisors),
/// q/k/v and o biases where `blk.0.attn_q.bias` exists. Refuses partial RoPE and any
/// sliding-window key (families that take one read it themselves).
pub fn gguf_base(g: &GgufFile, family: &'static Family) -> Result<ModelConfig> {
    let arch = gguf_arch(g)?;
    let key = |k: &str| format!("{arch}.{k}");
    let mut scaling = RopeScaling::None;
    if let Some(t) = g.meta(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
        match t {
            "none" => {}
            "linear" => {
                let f = opt_f(g, &key("rope.scaling.factor"))?.ok_or_else(|| {
                    gerr(g, format!("{arch}.rope.scaling.type linear without {arch}.rope.scaling.factor"))
                })?;
                scaling = RopeScaling::Linear { factor: f };
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
            if scaling != RopeScaling::None {
                return Err(gerr(g, "both rope_freqs.weight and a rope scaling type: not supported"));
            }
            scaling = RopeScaling::FreqFactors;
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
    let mut eos_ids: Vec<u32> = id("tokenizer.ggml.eos_token_id")?.into_iter().collect();
    if let Some(eot) = id("tokenizer.ggml.eot_token_id")? {
        if !eos_ids.contains(&eot) {
            eos_ids.push(eot);
        }
    }
    let mut c = ModelConfig::llama(
        family,
        vocab,
        hidden,
        req_u(g, &key("feed_forward_length"))?,
        req_u(g, &key("block_count"))?,
        heads,
        kv_heads,
        head_dim,
        req_u(g, &key("context_length"))?,
    );
    c.rms_norm_eps = opt_f(g, &key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5);
    c.tie_word_embeddings = g.tensor("output.weight").is_none();
    c.bos_token_id = id("tokenizer.ggml.bos_token_id")?;
    c.eos_token_ids = eos_ids;
    c.pad_token_id = id("tokenizer.ggml.padding_token_id")?;
    c.ropes = vec![RopeSpec { theta: opt_f(g, &key("rope.freq_base"))?.unwrap_or(10_000.0), scaling, freq_factors }];
    let bias = g.tensor("blk.0.attn_q.bias").is_some();
    c.each_layer(|l| {
        l.qkv_bias = bias;
        l.o_bias = bias;
    });
    Ok(c)
}

/// The sliding window of GGUF metadata (`{arch}.attention.sliding_window`).
pub fn gguf_window(g: &GgufFile) -> Result<Option<usize>> {
    opt_u(g, &format!("{}.attention.sliding_window", gguf_arch(g)?))
}

/// Refuse a GGUF sliding window (families without one).
pub fn gguf_refuse_window(g: &GgufFile) -> Result<()> {
    match gguf_window(g)? {
        Some(_) => {
            let arch = gguf_arch(g)?;
            Err(gerr(g, format!("{arch}.attention.sliding_window is not supported for {arch}")))
        }
        None => Ok(()),
    }
}
