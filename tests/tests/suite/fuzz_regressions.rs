//! Every input of the fuzz corpora (`fuzz/corpus/T`) and every input that once crashed a fuzz
//! target (`tests/fixtures/fuzz-regressions/T`) through the fuzz targets' own bodies
//! (`demiurgic_tests::fuzz_bodies`): each must return (Ok or a typed error), never panic.
use std::path::{Path, PathBuf};

use demiurgic_tests::fixture;
use demiurgic_tests::fuzz_bodies::{gguf, safetensors_config};

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
