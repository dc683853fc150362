//! GGUF bytes → reader → every tensor dequantized (when small) → llama config → tokenizer.
//! Any panic, hang or unbounded allocation is a bug: hostile files must give `ModelError`s.
#![no_main]
use std::path::Path;

use demiurgic_model::load::gguf::{llama_config_from_gguf, tokenizer_from_gguf, GgufFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data.to_vec()) else { return };
    let names: Vec<String> = g.tensors.iter().map(|t| t.name.clone()).collect();
    for n in names.iter().take(16) {
        let _ = g.tensor_f32(n);
    }
    let _ = llama_config_from_gguf(&g);
    if let Ok(tok) = tokenizer_from_gguf(&g) {
        if let Ok(ids) = tok.encode("hello world 123") {
            let _ = tok.decode(&ids);
        }
    }
});
