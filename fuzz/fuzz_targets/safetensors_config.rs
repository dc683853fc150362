//! The first byte picks a parser, the rest is its input: a safetensors file (header checks that
//! run before burn-store maps it), an HF `config.json`, a `generation_config`-style JSON of
//! generation parameters. Any panic or hang is a bug.
#![no_main]
use std::path::Path;

use demiurgic_model::load::safetensors::validate_safetensors_bytes;
use demiurgic_model::HfLlamaConfig;
use demiurgic_sampling::GenerationConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 3 {
        0 => {
            let _ = validate_safetensors_bytes(Path::new("fuzz.safetensors"), rest);
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(c) = HfLlamaConfig::from_json_str(text, "fuzz/config.json") {
                    let _ = c.to_config("fuzz/config.json");
                }
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = GenerationConfig::from_json(text);
            }
        }
    }
});
