//! `Phi3ForCausalLM`: fused `qkv_proj` and `gate_up_proj` in the checkpoint (the builder keeps
//! them fused), GGUF `phi3`. Long-context RoPE (`longrope`) is refused.
use super::common::{check_act, gguf_base, gguf_refuse_window, hf_base, refuse_windows};
use super::spec::{Family, ModelConfig, RopeScaling};
use crate::config::HfConfig;
use crate::error::{cfg_err, Result};
use crate::load::gguf::reader::GgufFile;

pub static PHI3: Family = Family {
    name: "phi3",
    aliases: &["Phi3ForCausalLM", "phi3"],
    from_hf,
    from_gguf,
    tensor_names: &[],
    gguf_permuted_qk: false,
    hf_norm_plus_one: false,
};

fn from_hf(hf: &HfConfig, origin: &str) -> Result<ModelConfig> {
    check_act(origin, "hidden_act", hf.hidden_act.as_ref(), &["silu"])?;
    refuse_windows(hf, origin, &PHI3)?;
    let c = hf_base(hf, origin, &PHI3)?;
    if let Some(o) = hf.original_max_position_embeddings {
        if o < hf.max_position_embeddings && c.ropes[0].scaling == RopeScaling::None {
            return Err(cfg_err(origin, format!(
                "original_max_position_embeddings {o} < max_position_embeddings {} without a supported RoPE scaling (Phi-3 longrope is not supported)",
                hf.max_position_embeddings
            )));
        }
    }
    Ok(c)
}

fn from_gguf(g: &GgufFile) -> Result<ModelConfig> {
    gguf_refuse_window(g)?;
    gguf_base(g, &PHI3)
}
