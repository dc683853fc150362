//! Long run: 10,000 tokens in one process (`demiurgic soak`, a separate process so other tests do
//! not share its resident set), resident memory after the first generation may not grow by more
//! than the stated bound. The real model (SmolLM2 on flex, 10,000 tokens) soaks in `cargo xtask soak`.
use std::process::Command;

use demiurgic_tests::fixture;

/// Allowed RSS growth after the first generation: below one generation's KV cache (~5 MiB for
/// tiny-llama's context), so leaking a cache per generation fails.
const BOUND_MIB: u64 = 3;

#[test]
fn ten_thousand_tokens_in_flat_memory() {
    let bin = crate::hostile::demiurgic_bin();
    let out = Command::new(&bin)
        .args([
            "soak",
            "--backend",
            "ndarray",
            "--tokens",
            "10000",
            "--json",
            "--max-growth-mib",
            &BOUND_MIB.to_string(),
            "--model",
        ])
        .arg(fixture("tiny-llama"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let j: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}); stderr: {stderr}"));
    assert_eq!(j["tokens"], 10000, "{j}");
    assert!(j["generations"].as_u64().unwrap() >= 5, "several generations within the context: {j}");
    let growth = j["growth_bytes"].as_u64().unwrap();
    assert!(growth <= BOUND_MIB << 20, "RSS grew by {growth} bytes: {j}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
