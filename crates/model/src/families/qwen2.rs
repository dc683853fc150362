//! `Qwen2ForCausalLM`: biases on the q/k/v projections (none on the output projection), GGUF
//! `qwen2` (NEOX RoPE: rows not permuted).
use super::common::{check_act, gguf_base, gguf_refuse_window, hf_base, refuse_qwen_windows};
use super::spec::{Family, ModelConfig};
use crate::config::HfConfig;
use crate::error::Result;
use crate::load::gguf::reader::GgufFile;

pub static QWEN2: Family = Family {
    name: "qwen2",
    aliases: &["Qwen2ForCausalLM", "qwen2"],
    from_hf,
    from_gguf,
    tensor_names: &[],
    gguf_permuted_qk: false,
    hf_norm_plus_one: false,
};

fn from_hf(hf: &HfConfig, origin: &str) -> Result<ModelConfig> {
    check_act(origin, "hidden_act", hf.hidden_act.as_ref(), &["silu"])?;
    refuse_qwen_windows(hf, origin, &QWEN2)?;
    let mut c = hf_base(hf, origin, &QWEN2)?;
    // Qwen2 always has q/k/v biases (its config has no flag for them) and never an o bias
    c.each_layer(|l| {
        l.qkv_bias = true;
        l.o_bias = false;
    });
    Ok(c)
}

fn from_gguf(g: &GgufFile) -> Result<ModelConfig> {
    gguf_refuse_window(g)?;
    let mut c = gguf_base(g, &QWEN2)?;
    c.each_layer(|l| l.o_bias = false);
    Ok(c)
}
