//! Errors of the model crate: every message names the file, field or value at fault.
use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// I/O failure on a named file. The OS error is part of the message and deliberately not a
    /// `source` (a chain printer such as anyhow's `{:#}` would print it a second time).
    #[error("cannot read {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    /// A config file (config.json, generation_config.json, GGUF metadata) is malformed.
    #[error("invalid config {origin}: {message}")]
    Config { origin: String, message: String },
    /// A safetensors checkpoint is malformed or does not match the config.
    #[error("invalid checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// A GGUF file is malformed or unsupported.
    #[error("invalid GGUF file {path}: {message}")]
    Gguf { path: PathBuf, message: String },
    /// Tokenizer construction or use failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A KV cache would overflow.
    #[error("KV cache overflow: {have} cached + {adding} new tokens exceed the cache size of {capacity} positions")]
    CacheOverflow { have: usize, adding: usize, capacity: usize },
    /// Invalid input to the model or the generation loop (ids, shapes, lengths).
    #[error("invalid input: {0}")]
    Input(String),
    /// An option the chosen decoding strategy cannot honour (refused before any work).
    #[error("{strategy} does not support `{option}`: {reason}")]
    Unsupported { strategy: &'static str, option: &'static str, reason: &'static str },
    /// Invalid generation parameters.
    #[error(transparent)]
    Sampling(#[from] demiurgic_sampling::SamplingError),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

pub(crate) fn cfg_err(origin: impl Into<String>, message: impl Into<String>) -> ModelError {
    ModelError::Config { origin: origin.into(), message: message.into() }
}
