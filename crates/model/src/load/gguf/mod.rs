//! GGUF (llama.cpp's format), versions 2 and 3: a bounds-checked reader over a memory map,
//! dequantization of the common block types, and Llama + tokenizer construction.
mod dequant;
mod llama;
mod reader;
mod tokenizer;

pub use dequant::{dequantize, GgmlType};
pub use llama::{llama_config_from_gguf, load_gguf};
pub use reader::{GgufFile, MetaValue, TensorInfo};
pub use tokenizer::tokenizer_from_gguf;
