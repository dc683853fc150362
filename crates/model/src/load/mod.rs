//! Loaders: HF checkpoint directories (safetensors) and GGUF files.
use std::path::Path;

use crate::decoder::Decoder;
use crate::error::{ModelError, Result};
use crate::ops::DecodeOps;

pub mod builder;
pub mod chat_template;
pub mod gguf;
pub mod safetensors;
pub mod tokenizer;

pub use builder::{Activations, LoadOptions, WeightMode};
pub use chat_template::{render_chat_template, render_chat_template_with, ChatMessage};
pub use tokenizer::TextTokenizer;

/// A model with its tokenizer (when one was found) and chat template (when one exists).
pub struct LoadedModel<B: DecodeOps> {
    pub model: Decoder<B>,
    pub tokenizer: Option<TextTokenizer>,
    /// Why the checkpoint's tokenizer could not be built (the weights load regardless).
    pub tokenizer_error: Option<String>,
    pub chat_template: Option<String>,
    /// What was loaded (path, format).
    pub description: String,
    /// The model family (`llama`, …).
    pub architecture: String,
}

impl<B: DecodeOps> LoadedModel<B> {
    /// The tokenizer, or why there is none (for callers that need text).
    pub fn text_tokenizer(&self) -> Result<&TextTokenizer> {
        match (&self.tokenizer, &self.tokenizer_error) {
            (Some(t), _) => Ok(t),
            (None, Some(e)) => Err(ModelError::Tokenizer(format!(
                "the model's tokenizer could not be built ({e}); token ids still work (--prompt-ids)"
            ))),
            (None, None) => {
                Err(ModelError::Tokenizer("this model has no tokenizer: use token ids (--prompt-ids)".into()))
            }
        }
    }

    /// The grammar compiler a constrained generation needs ([`GenerateOptions::grammar`]),
    /// built from the tokenizer on first use (the EOS ids are the model's).
    ///
    /// [`GenerateOptions::grammar`]: crate::GenerateOptions
    pub fn grammar_compiler(&self) -> Result<std::sync::Arc<demiurgic_sampling::GrammarCompiler>> {
        let c = &self.model.config;
        self.text_tokenizer()
            .map_err(|e| ModelError::Tokenizer(format!("structured generation needs the tokenizer: {e}")))?
            .grammar_compiler(c.vocab_size, &c.eos_token_ids)
    }
}

/// Load a `.gguf` file or an HF checkpoint directory with default options.
pub fn load_model<B: DecodeOps>(path: &Path, device: &B::Device) -> Result<LoadedModel<B>> {
    load_model_with(path, device, &LoadOptions::default())
}

/// Load a `.gguf` file or an HF checkpoint directory.
pub fn load_model_with<B: DecodeOps>(path: &Path, device: &B::Device, opts: &LoadOptions) -> Result<LoadedModel<B>> {
    let mut loaded = if path.is_dir() {
        safetensors::load_hf_dir(path, device, opts)?
    } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) && path.is_file() {
        gguf::load_gguf(path, device, opts)?
    } else {
        return Err(not_a_model(path));
    };
    loaded.model.set_cache_type(opts.cache)?;
    Ok(loaded)
}

/// Why `path` is not something [`load_model_with`] reads.
fn not_a_model(path: &Path) -> ModelError {
    if !path.exists() {
        return ModelError::Input(format!(
            "model path {} does not exist (give a .gguf file or a directory with config.json)",
            path.display()
        ));
    }
    ModelError::Input(format!("model path {} is neither a .gguf file nor a checkpoint directory", path.display()))
}
