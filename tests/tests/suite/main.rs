//! The cross-crate test suite, one binary (each module was a test file: one binary links and
//! monomorphises the model and every backend once instead of once per file).
#![allow(clippy::cloned_ref_to_slice_refs, clippy::type_complexity)]
mod chat_template;
mod cross_backend;
mod engine;
mod families;
#[cfg(feature = "wgpu-fusion")]
mod fusion;
mod fuzz_regressions;
mod gemma3_270m;
mod generation;
mod gguf;
mod hostile;
mod kernels;
mod layering;
mod processors_parity;
mod sampler_distribution;
mod smollm2_golden;
mod soak;
mod stop_strings;
mod strategies;
mod strategy_matrix;
mod structured;
mod tiny_llama_golden;
mod tokenizer;
