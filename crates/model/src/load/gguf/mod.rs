//! GGUF (llama.cpp's format), versions 2 and 3: a bounds-checked reader over a memory map,
//! dequantization of the common block types, and Llama + tokenizer construction.
mod dequant;
mod model;
pub(crate) mod reader;
mod tokenizer;

pub use dequant::{dequantize, GgmlType};
pub use model::load_gguf;
pub use reader::{GgufFile, MetaValue, TensorInfo};
pub use tokenizer::tokenizer_from_gguf;
