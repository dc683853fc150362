//! The `demiurgic` binary end to end on the tiny transformers checkpoint: `generate --json`
//! alone and as a ragged batch against `golden.json`, and bad flags → exit 1 with a message.
use std::path::PathBuf;
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn demiurgic(args: &[&str]) -> (i32, String, String) {
    demiurgic_env(args, &[])
}

fn demiurgic_env(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_demiurgic"))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run demiurgic");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn golden() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("tiny-llama/golden.json")).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

/// Every backend compiled into the binary under test.
const COMPILED: &[&str] = &[
    #[cfg(feature = "flex")]
    "flex",
    #[cfg(feature = "ndarray")]
    "ndarray",
    #[cfg(feature = "wgpu")]
    "wgpu",
    #[cfg(feature = "cuda")]
    "cuda",
];

/// The backends to run: `DEMIURGIC_TEST_BACKENDS` (comma-separated, each compiled in) when set —
/// `cargo xtask test --lint` compiles cuda in for the lint and names the backends it runs — else
/// every compiled backend.
fn backends_to_test() -> Vec<&'static str> {
    let Ok(list) = std::env::var("DEMIURGIC_TEST_BACKENDS") else { return COMPILED.to_vec() };
    let v: Vec<&'static str> = list
        .split(',')
        .map(|b| {
            *COMPILED.iter().find(|c| **c == b.trim()).unwrap_or_else(|| {
                panic!("DEMIURGIC_TEST_BACKENDS names {b:?}, not compiled in (compiled: {COMPILED:?})")
            })
        })
        .collect();
    assert!(!v.is_empty(), "DEMIURGIC_TEST_BACKENDS is empty");
    let untested: Vec<_> = COMPILED.iter().filter(|c| !v.contains(c)).collect();
    if !untested.is_empty() {
        eprintln!("compiled in but not run here (DEMIURGIC_TEST_BACKENDS={list}): {untested:?}");
    }
    v
}

/// Every case alone and the ragged batch through the CLI on each backend. On wgpu, where every
/// process compiles its kernels again (minutes under lavapipe), the CLI runs the batch only, with
/// `DEMIURGIC_WGPU_MEMORY=exclusive` (the other memory setting: `wgpu_memory_configuration`);
/// each case alone on wgpu is the suite's (`tiny_llama_golden`, one process for every kernel).
#[test]
fn generate_json_matches_transformers_alone_and_batched() {
    let g = golden();
    let model = fixtures().join("tiny-llama");
    let model = model.to_str().unwrap();
    let cases = g["cases"].as_array().unwrap();
    assert!(!cases.is_empty(), "tiny-llama golden has no case");
    for backend in backends_to_test() {
        let alone: &[serde_json::Value] = if backend == "wgpu" { &[] } else { cases };
        let envs: &[(&str, &str)] = if backend == "wgpu" { &[("DEMIURGIC_WGPU_MEMORY", "exclusive")] } else { &[] };
        for case in alone {
            let p: Vec<String> = ids(&case["prompt"]).iter().map(u64::to_string).collect();
            let p = p.join(",");
            let (code, out, err) = demiurgic(&[
                "generate",
                "--model",
                model,
                "--prompt-ids",
                &p,
                "--greedy",
                "--max-new-tokens",
                "24",
                "--json",
                "--backend",
                backend,
            ]);
            assert_eq!(code, 0, "{err}");
            let j: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
            for k in ["backend", "model", "prompt_ids", "generated_ids", "stats"] {
                assert!(j.get(k).is_some(), "missing {k}");
            }
            for k in ["prompt_tokens", "generated_tokens", "load_ms", "prefill_ms", "decode_ms", "decode_tokens_per_s"]
            {
                assert!(j["stats"].get(k).is_some(), "missing stats.{k}");
            }
            assert!(j.get("texts").is_none(), "no tokenizer, no texts");
            assert_eq!(ids(&j["generated_ids"][0]), ids(&case["greedy_24"]));
        }
        // the ragged batch: unpadded prompts in, transformers' padded output out
        let b = &g["batched_left_padded"];
        let mut args = vec![
            "generate".to_string(),
            "--model".into(),
            model.into(),
            "--greedy".into(),
            "--max-new-tokens".into(),
            "16".into(),
            "--json".into(),
            "--backend".into(),
            backend.into(),
        ];
        for (row, mask) in b["input_ids"].as_array().unwrap().iter().zip(b["attention_mask"].as_array().unwrap()) {
            let p: Vec<String> =
                ids(row).iter().zip(ids(mask)).filter(|(_, m)| *m == 1).map(|(t, _)| t.to_string()).collect();
            args.push("--prompt-ids".into());
            args.push(p.join(","));
        }
        args.push("--logprobs".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = demiurgic_env(&args, envs);
        assert_eq!(code, 0, "{err}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        let got: Vec<Vec<u64>> = j["generated_ids"].as_array().unwrap().iter().map(ids).collect();
        let want: Vec<Vec<u64>> = b["greedy_16"].as_array().unwrap().iter().map(ids).collect();
        let eos = ids(&j["config"]["eos_token_ids"]);
        let lengths = ids(&j["lengths"]);
        assert_eq!(got.len(), want.len(), "{backend}: one row per prompt");
        assert_eq!(lengths.len(), want.len(), "{backend}: one length per row");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // each row holds its real tokens: transformers' row up to its EOS (padding after it)
            assert_eq!(g.as_slice(), &w[..g.len()], "{backend} row {i}");
            assert!(
                g.len() == w.len() || eos.contains(g.last().unwrap()),
                "{backend} row {i} stopped early without EOS"
            );
            assert_eq!(lengths[i] as usize, g.len(), "{backend} row {i}: lengths");
            assert_eq!(j["logprobs"][i].as_array().unwrap().len(), g.len(), "{backend} row {i}: one logprob per token");
        }
    }
}

#[test]
fn bad_flags_exit_1_with_a_message() {
    let model = fixtures().join("tiny-llama");
    let m = model.to_str().unwrap();
    let base = ["generate", "--model", m, "--prompt-ids", "1,2,3"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--temperature", "-1"], "--temperature -1"),
        (vec!["--temperature", "1e40"], "--temperature 1e40"),
        (vec!["--top-p", "0"], "--top-p 0"),
        (vec!["--top-p", "1.5"], "--top-p 1.5"),
        (vec!["--typical-p", "2"], "--typical-p 2"),
        (vec!["--min-p", "-0.1"], "--min-p -0.1"),
        (vec!["--repetition-penalty", "0"], "--repetition-penalty 0"),
        (vec!["--frequency-penalty", "3"], "--frequency-penalty 3"),
        (vec!["--presence-penalty", "-2.5"], "--presence-penalty -2.5"),
        (vec!["--num-return-sequences", "0"], "--num-return-sequences 0"),
        (vec!["--max-length", "5", "--min-length", "9"], "--min-length 9"),
        (vec!["--max-new-tokens", "0"], "--max-new-tokens 0"),
        // parser-level: not numbers, negative, overflowing, unknown flags — exit 1, one line, the range
        (vec!["--top-k", "abc"], "--top-k \"abc\""),
        (vec!["--top-k", "-5"], "≥ 0"),
        (vec!["--max-new-tokens", "-3"], "--max-new-tokens \"-3\""),
        (vec!["--max-new-tokens", "99999999999999999999999"], "≥ 1"),
        (vec!["--seed", "-1"], "0..=18446744073709551615"),
        (vec!["--top-logprobs", "21"], "top_logprobs"),
        (vec!["--no-such-flag"], "--no-such-flag"),
        (vec!["--preset", "nope"], "preset"),
        (vec!["--max-new-tokens", "500", "--greedy"], "context"),
        (vec!["--backend", "tpu"], "backend"),
        (vec!["--prompt-ids", "1,x"], "prompt-ids"),
        (vec!["--prompt-ids", "999", "--greedy", "--max-new-tokens", "4"], "999"),
        (vec!["--prompt", "hello"], "tokenizer"),
        // the KV cache's row type: unknown, not read by the backend, not fitting the head dim (16)
        (vec!["--cache-type", "q4_0"], "--cache-type \"q4_0\" is unknown (allowed: f32, f16, q8_0)"),
        (vec!["--backend", "ndarray", "--cache-type", "f16"], "--cache-type f16 is not supported on ndarray"),
        (vec!["--backend", "flex", "--cache-type", "q8_0"], "head dim 16 is not a multiple of 32"),
    ];
    for (extra, needle) in cases {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let (code, _, err) = demiurgic(&args);
        assert_eq!(code, 1, "{extra:?}: exit code, stderr {err}");
        assert!(err.contains(needle), "{extra:?}: {err:?} should mention {needle}");
        assert!(!err.contains("panicked") && !err.contains("internal failure"), "{extra:?}: panic: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: one line: {err}");
    }
    let (code, _, err) = demiurgic(&["generate", "--model", "/no/such/model.gguf", "--prompt-ids", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
}

/// One `--prompt-ids` without `--json` streams (no tokenizer: ids), and an id outside the
/// vocabulary is the error, before anything is printed.
#[test]
fn prompt_ids_stream_and_errors_print_nothing() {
    let model = fixtures().join("tiny-llama");
    let m = model.to_str().unwrap();
    let (code, out, err) =
        demiurgic(&["generate", "--model", m, "--prompt-ids", "1,2", "--greedy", "--max-new-tokens", "4"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.split_whitespace().count(), 4, "four ids streamed: {out:?}");
    assert!(err.contains("4 tokens, finish: length"), "{err}");
    let (code, out, err) =
        demiurgic(&["generate", "--model", m, "--prompt-ids", "1,99999", "--greedy", "--max-new-tokens", "4"]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "nothing printed before the error: {out:?}");
    assert!(err.contains("99999") && err.contains("vocabulary"), "{err}");
    // too long for the context: refused before anything is printed
    let long: Vec<String> = (0..200).map(|i| (i % 50 + 1).to_string()).collect();
    let (code, out, err) = demiurgic(&["generate", "--model", m, "--prompt-ids", &long.join(","), "--greedy"]);
    assert_eq!(code, 1);
    assert!(out.is_empty() && err.contains("context"), "{out:?} {err}");
}

/// `demiurgic … | head -c 20`: a closed pipe ends the program quietly with success.
#[test]
fn closed_stdout_pipe_exits_quietly() {
    let model = fixtures().join("tiny-llama");
    let mut child = Command::new(env!("CARGO_BIN_EXE_demiurgic"))
        .args([
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt-ids",
            "1,2",
            "--greedy",
            "--max-new-tokens",
            "64",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away at once
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("error"), "{err}");
}

/// `--json` reports what was used: rows trimmed, the drawn seed, EOS ids, values as typed, no
/// sampling fields when greedy; errors are JSON on stdout too.
#[test]
fn json_reports_what_was_used() {
    let model = fixtures().join("tiny-llama");
    let m = model.to_str().unwrap();
    let (code, out, err) = demiurgic(&[
        "generate",
        "--model",
        m,
        "--prompt-ids",
        "1,2,3",
        "--max-new-tokens",
        "5",
        "--json",
        "--temperature",
        "0.8",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let seed = j["config"]["seed"].as_u64().expect("the drawn seed is reported");
    assert!(out.contains("\"temperature\":0.8"), "{out}");
    assert!(!j["config"]["eos_token_ids"].as_array().unwrap().is_empty());
    // the reported seed reproduces the sample
    let (_, again, _) = demiurgic(&[
        "generate",
        "--model",
        m,
        "--prompt-ids",
        "1,2,3",
        "--max-new-tokens",
        "5",
        "--json",
        "--temperature",
        "0.8",
        "--seed",
        &seed.to_string(),
    ]);
    let k: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(j["generated_ids"], k["generated_ids"]);
    let (_, out, _) =
        demiurgic(&["generate", "--model", m, "--prompt-ids", "1,2,3", "--max-new-tokens", "5", "--json", "--greedy"]);
    let g: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in ["temperature", "top_k", "top_p", "seed"] {
        assert!(g["config"].get(key).is_none(), "{key} in a greedy report: {out}");
    }
    let (code, out, _) = demiurgic(&["generate", "--model", m, "--prompt-ids", "1,99999", "--json"]);
    assert_eq!(code, 1);
    let e: serde_json::Value = serde_json::from_str(out.trim()).expect("the error as JSON on stdout");
    assert!(e["error"]["message"].as_str().unwrap().contains("99999"));
}

/// Warnings where a flag has no effect, as transformers warns.
#[test]
fn ignored_flags_warn() {
    let model = fixtures().join("tiny-llama");
    let m = model.to_str().unwrap();
    let (code, _, err) = demiurgic(&[
        "generate",
        "--model",
        m,
        "--prompt-ids",
        "1,2",
        "--greedy",
        "--temperature",
        "0.5",
        "--max-new-tokens",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning") && err.contains("--temperature"), "{err}");
    let (code, _, err) = demiurgic(&[
        "generate",
        "--model",
        m,
        "--prompt-ids",
        "1,2",
        "--greedy",
        "--max-length",
        "9",
        "--max-new-tokens",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning") && err.contains("--max-new-tokens wins"), "{err}");
}

/// `--config` takes a transformers generation_config.json (its names; unknown fields warned).
#[test]
fn config_accepts_transformers_generation_config() {
    let model = fixtures().join("tiny-llama");
    let dir = std::env::temp_dir().join(format!("demiurgic-genconf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("generation_config.json");
    std::fs::write(&f, r#"{"transformers_version": "5.24.0", "eos_token_id": 2, "max_new_tokens": 3, "do_sample": false, "output_scores": true}"#).unwrap();
    let (code, out, err) = demiurgic(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt-ids",
        "1,2",
        "--config",
        f.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("output_scores"), "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["config"]["eos_token_ids"], serde_json::json!([2]));
    assert_eq!(j["config"]["do_sample"], false);
    assert!(j["lengths"][0].as_u64().unwrap() <= 3);
}

/// Smoke run of `demiurgic bench` (the figures themselves are never asserted: no timing tests).
#[test]
fn bench_writes_every_section() {
    let model = fixtures().join("tiny-llama");
    let out = std::env::temp_dir().join(format!("demiurgic-bench-smoke-{}.json", std::process::id()));
    let m = model.to_str().unwrap();
    // one small bench, extended per run below
    let small = [
        "bench",
        "--model",
        m,
        "--backend",
        "ndarray",
        "--quick",
        "--reps",
        "1",
        "--prefill",
        "16",
        "--decode-tokens",
        "4",
    ];
    let (code, stdout, err) = demiurgic(
        &[&small[..], &["--cache-lengths", "4,8", "--batches", "1,2", "--json-out", out.to_str().unwrap()]].concat(),
    );
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(j, file, "--json-out holds what stdout printed");
    let cache = j["cache_speedup"].as_array().unwrap();
    assert_eq!(cache.iter().map(|r| r["new_tokens"].as_u64().unwrap()).collect::<Vec<_>>(), vec![4, 8]);
    for r in cache {
        for k in ["cache_s", "no_cache_s", "speedup"] {
            assert!(r[k].as_f64().unwrap() > 0.0, "{k} in {r}");
        }
    }
    assert_eq!(
        j["decode"].as_array().unwrap().iter().map(|r| r["batch"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(j["prefill"][0]["prompt_tokens"], 16);
    assert!(j["memory"]["kv_cache_bytes_per_seq_per_1k_tokens"].as_u64().unwrap() > 0);
    // bad bench arguments are one-line errors
    let (code, _, err) = demiurgic(&["bench", "--model", m, "--backend", "ndarray", "--batches", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("--batches"), "{err}");
    // the host profiler is a build feature: refused by name (before any work) without it
    let prof = std::env::temp_dir().join(format!("demiurgic-host-profile-{}.txt", std::process::id()));
    let (code, _, err) = demiurgic(
        &[&small[..], &["--cache-lengths", "4", "--batches", "1", "--host-profile", prof.to_str().unwrap()]].concat(),
    );
    if cfg!(feature = "host-profile") {
        assert_eq!(code, 0, "{err}");
        let text = std::fs::read_to_string(&prof).unwrap();
        assert!(text.starts_with("host profile: ") && text.contains("top functions, self:"), "{text}");
    } else {
        assert_eq!(code, 1);
        assert!(err.contains("--host-profile") && err.contains("--features host-profile"), "{err}");
    }
}

/// `DEMIURGIC_WGPU_MEMORY` picks CubeCL's memory management: same tokens with exclusive pages,
/// and an unknown value is a one-line error.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_memory_configuration() {
    let model = fixtures().join("tiny-llama");
    let g = golden();
    let case = &g["cases"][0];
    let p: Vec<String> = ids(&case["prompt"]).iter().map(u64::to_string).collect();
    let args = [
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt-ids",
        &p.join(","),
        "--greedy",
        "--max-new-tokens",
        "24",
        "--json",
        "--backend",
        "wgpu",
    ];
    let run = |mem: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_demiurgic"))
            .args(args)
            .env("DEMIURGIC_WGPU_MEMORY", mem)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // `exclusive` runs in generate_json_matches_transformers_alone_and_batched (one wgpu process
    // fewer: each compiles every kernel again, minutes under lavapipe)
    let (code, out, err) = run("subslices");
    assert_eq!(code, 0, "subslices: {err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ids(&j["generated_ids"][0]), ids(&case["greedy_24"]), "subslices");
    let (code, _, err) = run("huge");
    assert_eq!(code, 1);
    assert!(err.contains("DEMIURGIC_WGPU_MEMORY") && err.trim().lines().count() == 1, "{err}");
}
