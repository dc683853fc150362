//! Every input of the fuzz corpora (`fuzz/corpus/T`) and every input that once crashed a fuzz
//! target (`tests/fixtures/fuzz-regressions/T`) through the same code as the fuzz targets
//! (`fuzz/fuzz_targets/T.rs`): each must return (Ok or a typed error), never panic.
use std::path::{Path, PathBuf};

use demiurgic_model::load::gguf::{llama_config_from_gguf, tokenizer_from_gguf, GgufFile};
use demiurgic_model::load::safetensors::validate_safetensors_bytes;
use demiurgic_model::HfLlamaConfig;
use demiurgic_sampling::GenerationConfig;
use demiurgic_tests::fixture;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut out = vec![];
    for dir in [corpus, fixture("fuzz-regressions").join(target)] {
        let rd = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for e in rd {
            let p = e.unwrap().path();
            if p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.') {
                let b = std::fs::read(&p).unwrap();
                out.push((p, b));
            }
        }
    }
    out
}

/// The body of `fuzz/fuzz_targets/gguf.rs`.
fn gguf(data: &[u8]) {
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
}

/// The body of `fuzz/fuzz_targets/safetensors_config.rs`.
fn safetensors_config(data: &[u8]) {
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
}

fn run_all(target: &str, f: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no corpus for {target}");
    for (p, b) in inputs {
        if std::panic::catch_unwind(|| f(&b)).is_err() {
            panic!("{target}: {} panics", p.display());
        }
    }
}

#[test]
fn gguf_corpus_and_regressions_never_panic() {
    run_all("gguf", gguf);
}

#[test]
fn safetensors_config_corpus_and_regressions_never_panic() {
    run_all("safetensors_config", safetensors_config);
}
