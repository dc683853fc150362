//! GGUF bytes → reader → tensors dequantized → llama config → tokenizer
//! (`demiurgic_tests::fuzz_bodies::gguf`, also replayed over the corpus by the test suite).
//! Any panic, hang or unbounded allocation is a bug: hostile files must give `ModelError`s.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| demiurgic_tests::fuzz_bodies::gguf(data));
