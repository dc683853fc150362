//! A model from a GGUF file: the config from its family file (`{arch}.*` metadata), weights
//! through the common builder (kept as blocks on backends with host kernels; llama.cpp's Q/K
//! row permutation undone where the family's files have it, so the model uses HF's half-split
//! RoPE), and the embedded tokenizer.
use std::path::Path;

use super::reader::GgufFile;
use super::tokenizer::tokenizer_from_gguf;
use crate::decoder::Decoder;
use crate::error::{ModelError, Result};
use crate::families;
use crate::load::builder::{Builder, LoadOptions, Naming, RawTensor, WeightSource};
use crate::load::LoadedModel;
use crate::ops::DecodeOps;

fn gerr(g: &GgufFile, msg: impl Into<String>) -> ModelError {
    ModelError::Gguf { path: g.path.clone(), message: msg.into() }
}

impl WeightSource for GgufFile {
    fn get(&self, name: &str) -> Option<RawTensor<'_>> {
        let info = self.tensor(name)?;
        Some(RawTensor {
            ty: info.ggml_type,
            shape: info.dims.iter().rev().map(|&d| d as usize).collect(),
            data: self.tensor_bytes(info),
        })
    }

    fn names(&self) -> Vec<String> {
        self.tensors.iter().map(|t| t.name.clone()).collect()
    }

    fn error(&self, message: String) -> ModelError {
        gerr(self, message)
    }

    fn release(&self, name: &str) {
        if let Some(info) = self.tensor(name) {
            self.release_range(info.offset, info.n_bytes);
        }
    }
}

/// Load a GGUF model with its embedded tokenizer.
pub fn load_gguf<B: DecodeOps>(path: &Path, device: &B::Device, opts: &LoadOptions) -> Result<LoadedModel<B>> {
    let g = GgufFile::open(path)?;
    let c = families::from_gguf(&g)?;
    let builder = Builder::<B>::new(&g, Naming::Gguf, c.family, *opts, device);
    let weights = builder.build(&c)?;
    builder.check_all_used(&["rope_freqs.weight"])?;
    // A tokenizer that cannot be built does not stop the model: ids still work, and the error
    // is reported when text is needed.
    let (tokenizer, tokenizer_error) = match g.meta("tokenizer.ggml.model").map(|_| tokenizer_from_gguf(&g)) {
        Some(Ok(t)) => (Some(t), None),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    let chat_template = g.meta("tokenizer.chat_template").and_then(|v| v.as_str()).map(String::from);
    let description =
        format!("GGUF {} ({})", path.display(), g.meta("general.name").and_then(|v| v.as_str()).unwrap_or("unnamed"));
    let family = c.family.name.to_string();
    Ok(LoadedModel {
        model: Decoder::new(c, weights, device),
        tokenizer,
        tokenizer_error,
        chat_template,
        description,
        architecture: family,
    })
}
