//! `MistralForCausalLM`: Llama with sliding-window attention in every layer; GGUF `mistral`, or
//! `llama` with `attention.sliding_window`.
use super::common::{check_act, gguf_base, gguf_window, hf_base};
use super::spec::{Family, ModelConfig};
use crate::config::HfConfig;
use crate::error::{cfg_err, Result};
use crate::load::gguf::reader::GgufFile;

pub static MISTRAL: Family = Family {
    name: "mistral",
    aliases: &["MistralForCausalLM", "mistral"],
    from_hf,
    from_gguf,
    tensor_names: &[],
    gguf_permuted_qk: true,
    hf_norm_plus_one: false,
};

fn from_hf(hf: &HfConfig, origin: &str) -> Result<ModelConfig> {
    check_act(origin, "hidden_act", hf.hidden_act.as_ref(), &["silu"])?;
    if let Some(t) =
        hf.layer_types.iter().flatten().find(|t| !matches!(t.as_str(), "full_attention" | "sliding_attention"))
    {
        return Err(cfg_err(
            origin,
            format!("layer_types entry \"{t}\" is not supported (full_attention, sliding_attention)"),
        ));
    }
    let mut c = hf_base(hf, origin, &MISTRAL)?;
    let window = hf.sliding_window;
    c.each_layer(|l| l.window = window);
    Ok(c)
}

fn from_gguf(g: &GgufFile) -> Result<ModelConfig> {
    gguf_windowed(g, &MISTRAL)
}

/// A GGUF Llama layout with the file's window on every layer (reported as Mistral).
pub(super) fn gguf_windowed(g: &GgufFile, layout: &'static Family) -> Result<ModelConfig> {
    let window = gguf_window(g)?;
    let mut c = gguf_base(g, layout)?;
    c.family = &MISTRAL;
    c.each_layer(|l| l.window = window);
    Ok(c)
}
