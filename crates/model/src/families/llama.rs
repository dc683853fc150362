//! `LlamaForCausalLM` (SmolLM, Llama 2/3.x with linear or llama3 RoPE scaling), GGUF `llama`.
use super::common::{check_act, gguf_base, gguf_window, hf_base, refuse_windows};
use super::spec::{Family, ModelConfig};
use crate::config::HfConfig;
use crate::error::Result;
use crate::load::gguf::reader::GgufFile;

pub static LLAMA: Family = Family {
    name: "llama",
    aliases: &["LlamaForCausalLM", "llama", "smollm"],
    from_hf,
    from_gguf,
    tensor_names: &[],
    gguf_permuted_qk: true,
    hf_norm_plus_one: false,
};

fn from_hf(hf: &HfConfig, origin: &str) -> Result<ModelConfig> {
    check_act(origin, "hidden_act", hf.hidden_act.as_ref(), &["silu"])?;
    refuse_windows(hf, origin, &LLAMA)?;
    hf_base(hf, origin, &LLAMA)
}

/// A `llama` GGUF with `attention.sliding_window` is a Mistral (llama.cpp's converter writes
/// Mistral checkpoints as `llama`).
fn from_gguf(g: &GgufFile) -> Result<ModelConfig> {
    match gguf_window(g)? {
        Some(_) => super::mistral::gguf_windowed(g, &LLAMA),
        None => gguf_base(g, &LLAMA),
    }
}
