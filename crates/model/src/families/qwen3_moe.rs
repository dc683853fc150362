//! `Qwen3MoeForCausalLM`: Qwen3's attention (q/k norm per head, explicit `head_dim`) with a
//! sparse MoE block in place of the MLP on the layers `decoder_sparse_step` and
//! `mlp_only_layers` select: a router (`mlp.gate`) over `num_experts` SwiGLU experts of width
//! `moe_intermediate_size`, `num_experts_per_tok` of them per token, weights renormalised when
//! `norm_topk_prob`. GGUF `qwen3moe` as llama.cpp reads it: every layer sparse, `ffn_gate_inp`
//! and the experts stacked per projection (`ffn_{gate,up,down}_exps`), weights renormalised
//! (llama.cpp's `norm_w`).
use super::common::{check_act, gerr, gguf_arch, gguf_base, gguf_refuse_window, hf_base, refuse_qwen_windows, req_u};
use super::spec::{Family, ModelConfig, MoeSpec};
use crate::config::HfConfig;
use crate::error::{cfg_err, Result};
use crate::load::gguf::reader::GgufFile;

pub static QWEN3_MOE: Family = Family {
    name: "qwen3_moe",
    aliases: &["Qwen3MoeForCausalLM", "qwen3_moe", "qwen3moe"],
    from_hf,
    from_gguf,
    tensor_names: &[],
    gguf_permuted_qk: false,
    hf_norm_plus_one: false,
};

fn from_hf(hf: &HfConfig, origin: &str) -> Result<ModelConfig> {
    check_act(origin, "hidden_act", hf.hidden_act.as_ref(), &["silu"])?;
    refuse_qwen_windows(hf, origin, &QWEN3_MOE)?;
    if let Some(w) = hf.shared_expert_intermediate_size.filter(|&w| w > 0) {
        return Err(cfg_err(origin, format!("shared_expert_intermediate_size {w}: shared experts are not supported")));
    }
    let need = |field: &str, v: Option<usize>| v.ok_or_else(|| cfg_err(origin, format!("{field} is missing")));
    let experts = need("num_experts", hf.num_experts.or(hf.num_local_experts))?;
    let moe = MoeSpec {
        experts,
        top_k: need("num_experts_per_tok", hf.num_experts_per_tok)?,
        intermediate: need("moe_intermediate_size", hf.moe_intermediate_size)?,
        // transformers' Qwen3MoeConfig default
        norm_topk_prob: hf.norm_topk_prob.unwrap_or(false),
    };
    let step = hf.decoder_sparse_step.unwrap_or(1);
    if step == 0 {
        return Err(cfg_err(origin, "decoder_sparse_step must be > 0, got 0"));
    }
    let dense = hf.mlp_only_layers.clone().unwrap_or_default();
    if let Some(&l) = dense.iter().find(|&&l| l >= hf.num_hidden_layers) {
        return Err(cfg_err(origin, format!("mlp_only_layers names layer {l} of {}", hf.num_hidden_layers)));
    }
    let mut c = hf_base(hf, origin, &QWEN3_MOE)?;
    for (i, l) in c.layers.iter_mut().enumerate() {
        l.qk_norm = true;
        // transformers: sparse where not listed dense and (i + 1) is a multiple of the step
        if !dense.contains(&i) && experts > 0 && (i + 1) % step == 0 {
            l.moe = Some(moe);
        }
    }
    Ok(c)
}

fn from_gguf(g: &GgufFile) -> Result<ModelConfig> {
    gguf_refuse_window(g)?;
    let arch = gguf_arch(g)?.to_string();
    let key = |k: &str| format!("{arch}.{k}");
    let moe = MoeSpec {
        experts: req_u(g, &key("expert_count"))?,
        top_k: req_u(g, &key("expert_used_count"))?,
        intermediate: req_u(g, &key("expert_feed_forward_length"))?,
        norm_topk_prob: true,
    };
    if let Some(v) = g.meta(&key("expert_shared_count")).and_then(|v| v.as_u64()).filter(|&v| v > 0) {
        return Err(gerr(g, format!("{arch}.expert_shared_count {v}: shared experts are not supported")));
    }
    let mut c = gguf_base(g, &QWEN3_MOE)?;
    c.each_layer(|l| {
        l.qk_norm = true;
        l.moe = Some(moe);
    });
    Ok(c)
}
