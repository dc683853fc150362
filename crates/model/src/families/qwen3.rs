//! `Qwen3ForCausalLM`: Qwen2's layout with a per-head RMSNorm of q and k before RoPE, an explicit
//! `head_dim`, and `attention_bias` on q/k/v and o alike; GGUF `qwen3` (NEOX RoPE: rows not
//! permuted; `attn_q_norm` / `attn_k_norm`).
use super::common::{check_act, gguf_base, gguf_refuse_window, hf_base, refuse_qwen_windows};
use super::spec::{Family, ModelConfig};
use crate::config::HfConfig;
use crate::error::Result;
use crate::load::gguf::reader::GgufFile;

pub static QWEN3: Family = Family {
    name: "qwen3",
    aliases: &["Qwen3ForCausalLM", "qwen3"],
    from_hf,
    from_gguf,
    tensor_names: &[],
    gguf_permuted_qk: false,
    hf_norm_plus_one: false,
};

fn from_hf(hf: &HfConfig, origin: &str) -> Result<ModelConfig> {
    check_act(origin, "hidden_act", hf.hidden_act.as_ref(), &["silu"])?;
    refuse_qwen_windows(hf, origin, &QWEN3)?;
    let mut c = hf_base(hf, origin, &QWEN3)?;
    c.each_layer(|l| l.qk_norm = true);
    Ok(c)
}

fn from_gguf(g: &GgufFile) -> Result<ModelConfig> {
    gguf_refuse_window(g)?;
    let mut c = gguf_base(g, &QWEN3)?;
    c.each_layer(|l| l.qk_norm = true);
    Ok(c)
}
