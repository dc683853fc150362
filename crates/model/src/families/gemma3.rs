//! `Gemma3ForCausalLM` (text, `gemma3_text`), GGUF `gemma3`: embeddings scaled by √hidden,
//! RMSNorm weights applied as `1 + w` (GGUF files store `1 + w`), four norms per layer (input,
//! post-attention, pre-feedforward, post-feedforward), q/k RMSNorm per head, GeGLU with
//! tanh-approximated GELU, attention scaled by `query_pre_attn_scalar^-½`, sliding-window layers
//! interleaved with global ones, each kind with its own RoPE table, optional logit softcaps, tied
//! head.
use super::common::{check_act, gerr, gguf_arch, gguf_base, gguf_window, hf_base, opt_f, rope_params, rope_spec};
use super::spec::{Activation, Family, ModelConfig, Part, RopeSpec};
use crate::config::{HfConfig, RopeParameters};
use crate::error::{cfg_err, Result};
use crate::load::gguf::reader::{GgufFile, MetaValue};

pub static GEMMA3: Family = Family {
    name: "gemma3",
    aliases: &["Gemma3ForCausalLM", "gemma3_text", "gemma3"],
    from_hf,
    from_gguf,
    tensor_names: &[
        (Part::PostAttnNorm, "post_attention_layernorm", "post_attention_norm"),
        (Part::MlpNorm, "pre_feedforward_layernorm", "ffn_norm"),
        (Part::PostMlpNorm, "post_feedforward_layernorm", "post_ffw_norm"),
    ],
    gguf_permuted_qk: false,
    hf_norm_plus_one: true,
};

/// `ropes[GLOBAL]` serves full-attention layers, `ropes[LOCAL]` sliding ones.
const GLOBAL: usize = 0;
const LOCAL: usize = 1;

/// transformers' default layer pattern (`sliding_window_pattern`): every 6th layer global.
const DEFAULT_PATTERN: usize = 6;

/// What every Gemma 3 layer shares; `sliding[i]` says which layers attend within `window`.
fn gemma_layers(c: &mut ModelConfig, sliding: &[bool], window: usize, scale: f64, softcap: Option<f64>) {
    for (l, &s) in c.layers.iter_mut().zip(sliding) {
        l.qk_norm = true;
        l.sandwich_norms = true;
        l.act = Activation::GeluTanh;
        l.attn_scale = scale;
        l.attn_softcap = softcap;
        l.window = s.then_some(window);
        l.rope = if s { LOCAL } else { GLOBAL };
    }
    // transformers multiplies by √hidden cast to the weights' dtype; llama.cpp by sqrtf(n_embd)
    c.embed_scale = Some((c.hidden_size as f64).sqrt() as f32);
}

fn pattern_layers(n: usize, pattern: usize) -> Vec<bool> {
    (0..n).map(|i| !(i + 1).is_multiple_of(pattern)).collect()
}

fn from_hf(hf: &HfConfig, origin: &str) -> Result<ModelConfig> {
    let act = hf.hidden_activation.as_ref().or(hf.hidden_act.as_ref());
    check_act(origin, "hidden_activation", act, &["gelu_pytorch_tanh"])?;
    if act.is_none() {
        return Err(cfg_err(origin, "hidden_activation is missing (Gemma 3 uses gelu_pytorch_tanh)"));
    }
    if hf.use_bidirectional_attention == Some(true) {
        return Err(cfg_err(origin, "use_bidirectional_attention = true is not supported (causal decoding only)"));
    }
    let n = hf.num_hidden_layers;
    let sliding: Vec<bool> = match &hf.layer_types {
        Some(types) => {
            if types.len() != n {
                return Err(cfg_err(
                    origin,
                    format!("layer_types has {} entries for num_hidden_layers {n}", types.len()),
                ));
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    "sliding_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    o => Err(cfg_err(
                        origin,
                        format!("layer_types entry \"{o}\" is not supported (full_attention, sliding_attention)"),
                    )),
                })
                .collect::<Result<_>>()?
        }
        None => {
            let p = hf.sliding_window_pattern.or(hf.sliding_window_pattern_private).unwrap_or(DEFAULT_PATTERN);
            if p == 0 {
                return Err(cfg_err(origin, "sliding_window_pattern must be > 0, got 0"));
            }
            pattern_layers(n, p)
        }
    };
    let window = match hf.sliding_window {
        Some(w) => w,
        None if !sliding.contains(&true) => 1,
        None => return Err(cfg_err(origin, "sliding_window is missing but layer_types has sliding layers")),
    };
    // RoPE: `rope_parameters` per layer type (transformers 5), or `rope_theta` (+ `rope_scaling`)
    // for global layers and `rope_local_base_freq` for sliding ones
    let per_type = hf
        .rope_parameters
        .as_ref()
        .and_then(|v| v.as_object())
        .filter(|o| o.contains_key("full_attention") || o.contains_key("sliding_attention"));
    let ropes = match per_type {
        Some(o) => {
            let one = |kind: &str| -> Result<RopeSpec> {
                let v =
                    o.get(kind).ok_or_else(|| cfg_err(origin, format!("rope_parameters has no \"{kind}\" entry")))?;
                let p = rope_params(origin, &format!("rope_parameters.{kind}"), v)?;
                refuse_partial(origin, &p)?;
                rope_spec(origin, &p, None)
            };
            vec![one("full_attention")?, one("sliding_attention")?]
        }
        None => {
            let p = match (&hf.rope_parameters, &hf.rope_scaling) {
                (Some(p), _) => rope_params(origin, "rope_parameters", p)?,
                (None, Some(v)) if !v.is_null() => rope_params(origin, "rope_scaling", v)?,
                _ => RopeParameters::default(),
            };
            refuse_partial(origin, &p)?;
            let theta = hf.rope_theta.or(p.rope_theta).unwrap_or(1_000_000.0);
            vec![rope_spec(origin, &p, Some(theta))?, RopeSpec::plain(hf.rope_local_base_freq.unwrap_or(10_000.0))]
        }
    };
    if hf.partial_rotary_factor.is_some_and(|f| f != 1.0) {
        return Err(cfg_err(origin, "partial_rotary_factor is not supported (only full rotary, 1.0)"));
    }
    let mut plain = hf.clone();
    plain.rope_parameters = None;
    plain.rope_scaling = None;
    let mut c = hf_base(&plain, origin, &GEMMA3)?;
    c.ropes = ropes;
    // transformers' Gemma3TextConfig default is 256
    let scalar = hf.query_pre_attn_scalar.unwrap_or(256.0);
    if !(scalar > 0.0 && scalar.is_finite()) {
        return Err(cfg_err(origin, format!("query_pre_attn_scalar must be > 0, got {scalar}")));
    }
    gemma_layers(&mut c, &sliding, window, scalar.powf(-0.5), hf.attn_logit_softcapping);
    c.final_softcap = hf.final_logit_softcapping;
    Ok(c)
}

fn refuse_partial(origin: &str, p: &RopeParameters) -> Result<()> {
    match p.partial_rotary_factor {
        Some(f) if f != 1.0 => {
            Err(cfg_err(origin, format!("partial_rotary_factor {f} is not supported (only full rotary, 1.0)")))
        }
        _ => Ok(()),
    }
}

/// As llama.cpp reads a `gemma3` file: window from `attention.sliding_window`; the layer pattern
/// from `attention.sliding_window_pattern` (a period, or one bool per layer, true = sliding)
/// when present, else every 6th layer global; sliding layers' RoPE base from
/// `rope.freq_base_swa`, else 10,000 (unscaled); every layer global without a window; the final
/// softcap from `final_logit_softcapping`; the attention scale `1/√head_dim` (the 27B's
/// `1/√(hidden/heads)` for 62 layers), or `attention.scale` when present.
fn from_gguf(g: &GgufFile) -> Result<ModelConfig> {
    let arch = gguf_arch(g)?.to_string();
    let key = |k: &str| format!("{arch}.{k}");
    if opt_f(g, &key("attn_logit_softcapping"))?.is_some_and(|v| v != 0.0) {
        return Err(gerr(
            g,
            format!("{} is not supported for gemma3 (llama.cpp ignores it)", key("attn_logit_softcapping")),
        ));
    }
    let final_softcap = opt_f(g, &key("final_logit_softcapping"))?.filter(|&v| v != 0.0);
    // llama.cpp's converter leaves the window out when every layer is global
    let window = gguf_window(g)?;
    let mut c = gguf_base(g, &GEMMA3)?;
    let n = c.num_layers;
    let sliding = match g.meta(&key("attention.sliding_window_pattern")) {
        _ if window.is_none() => vec![false; n],
        None => pattern_layers(n, DEFAULT_PATTERN),
        Some(MetaValue::Array(a)) => {
            let v: Option<Vec<bool>> = a.iter().map(|x| x.as_bool()).collect();
            match v {
                Some(v) if v.len() == n => v,
                _ => {
                    return Err(gerr(
                        g,
                        format!("{} must hold {n} booleans (one per layer)", key("attention.sliding_window_pattern")),
                    ))
                }
            }
        }
        Some(v) => match v.as_u64() {
            Some(p) if p > 0 => pattern_layers(n, p as usize),
            _ => {
                return Err(gerr(
                    g,
                    format!("{} = {v:?} is not a positive period", key("attention.sliding_window_pattern")),
                ))
            }
        },
    };
    let local = opt_f(g, &key("rope.freq_base_swa"))?.unwrap_or(10_000.0);
    c.ropes.push(RopeSpec::plain(local));
    let scale = match opt_f(g, &key("attention.scale"))? {
        Some(s) => s,
        None if n == 62 => 1.0 / ((c.hidden_size / c.num_heads) as f64).sqrt(),
        None => 1.0 / (c.head_dim as f64).sqrt(),
    };
    gemma_layers(&mut c, &sliding, window.unwrap_or(1), scale, None);
    c.final_softcap = final_softcap;
    Ok(c)
}
