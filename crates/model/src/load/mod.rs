//! Loaders: HF checkpoint directories (safetensors through `burn-store`) and GGUF files.
use std::path::Path;

use burn::tensor::backend::Backend;

use crate::error::{ModelError, Result};
use crate::llama::Llama;

pub mod gguf;
pub mod safetensors;
pub mod tokenizer;

pub use tokenizer::{StreamDecoder, TextTokenizer};

/// A model with its tokenizer (when one was found) and chat template (when one exists).
pub struct LoadedModel<B: Backend> {
    pub model: Llama<B>,
    pub tokenizer: Option<TextTokenizer>,
    pub chat_template: Option<String>,
    /// What was loaded (path, format).
    pub description: String,
}

/// Load a `.gguf` file or an HF checkpoint directory.
pub fn load_model<B: Backend>(path: &Path, device: &B::Device) -> Result<LoadedModel<B>> {
    if path.is_dir() {
        return safetensors::load_hf_dir(path, device);
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) && path.is_file() {
        return gguf::load_gguf(path, device);
    }
    if !path.exists() {
        return Err(ModelError::Input(format!(
            "model path {} does not exist (give a .gguf file or a directory with config.json)",
            path.display()
        )));
    }
    Err(ModelError::Input(format!(
        "model path {} is neither a .gguf file nor a checkpoint directory",
        path.display()
    )))
}
