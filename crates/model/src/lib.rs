//! # demiurgic-model
//!
//! One decoder for every family, written once over Burn's
//! [`Backend`](burn::tensor::backend::Backend): model ([`Decoder`], computed from the per-layer
//! description a [`families`] file builds), preallocated [`KvCache`], ragged [`Batch`]es, loaders for HF checkpoints
//! (safetensors) and GGUF files, tokenizers, and the [`generate()`] loop.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments, clippy::type_complexity)]

pub mod attention;
pub mod batch;
pub mod config;
pub mod decoder;
pub mod engine;
pub mod error;
pub mod families;
pub mod ffn;
pub mod generate;
pub mod ggml;
pub mod kernels;
pub mod kv_cache;
pub mod lm;
pub mod load;
pub mod mlp;
pub mod moe;
pub mod norm;
pub mod ops;
pub mod profile;
pub mod rope;
pub mod strategy;
pub mod text;

pub use batch::Batch;
pub use config::HfConfig;
pub use decoder::{Decoder, DecoderWeights, StepInput};
pub use engine::{Engine, EngineStep};
pub use error::{ModelError, Result};
pub use families::ModelConfig;
pub use generate::generate;
pub use kv_cache::{CacheType, KvCache};
pub use lm::CausalLm;
pub use load::{load_model, load_model_with, Activations, ChatMessage, LoadOptions, LoadedModel, WeightMode};
pub use ops::DecodeOps;
pub use strategy::{prompt_logprobs, GenOption, GenerateOptions, GenerationOutput, GenerationStats, StepLogprob};
