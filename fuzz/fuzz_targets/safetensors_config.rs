//! safetensors header checks, HF `config.json`, generation-parameter JSON, picked by the first
//! byte (`demiurgic_tests::fuzz_bodies::safetensors_config`, also replayed by the test suite).
//! Any panic or hang is a bug.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| demiurgic_tests::fuzz_bodies::safetensors_config(data));
