//! GGUF (llama.cpp's format), versions 2 and 3: a bounds-checked reader over a memory map,
//! the model and tokenizer construction (block types and dequantization: [`crate::ggml`]).
mod model;
pub(crate) mod reader;
mod tokenizer;

pub use model::load_gguf;
pub use reader::{GgufFile, MetaValue, TensorInfo};
pub use tokenizer::tokenizer_from_gguf;
