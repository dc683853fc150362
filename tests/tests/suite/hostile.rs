//! Hostile inputs, table-driven: every row is a file or parameter a user could hand us, and the
//! error *kind* (the `ModelError` variant) plus a word of the message it must produce. Then the
//! same files through the `demiurgic` binary: exit status 1, one line naming the problem, no panic.
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::backend::NdArray;
use demiurgic_model::{generate, load_model, GenerateOptions, ModelError};
use demiurgic_sampling::GenerationConfig;
use demiurgic_tests::fixture;

type B = NdArray;

fn kind(e: &ModelError) -> &'static str {
    match e {
        ModelError::Io { .. } => "Io",
        ModelError::Config { .. } => "Config",
        ModelError::Checkpoint { .. } => "Checkpoint",
        ModelError::Gguf { .. } => "Gguf",
        ModelError::Tokenizer(_) => "Tokenizer",
        ModelError::CacheOverflow { .. } => "CacheOverflow",
        ModelError::Input(_) => "Input",
        ModelError::Sampling(_) => "Sampling",
        ModelError::Unsupported { .. } => "Unsupported",
    }
}

/// A scratch directory per test run.
fn scratch(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("demiurgic-hostile-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of the tiny-llama checkpoint, then `edit` applied to it.
fn tiny_copy(name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let d = scratch(name);
    for f in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-llama").join(f), d.join(f)).unwrap();
    }
    edit(&d);
    d
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

/// Rewrite a safetensors file without tensor `name` (data of the others kept, offsets packed).
fn remove_safetensor(path: &Path, name: &str) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert!(header.contains_key(name), "{name} not in the fixture");
    let data = &bytes[8 + n..];
    let mut out = serde_json::Map::new();
    let mut blob = vec![];
    for (k, v) in header {
        if k == name || k == "__metadata__" {
            continue;
        }
        let o: Vec<usize> =
            v["data_offsets"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        let mut v = v.clone();
        v["data_offsets"] = serde_json::json!([blob.len(), blob.len() + o[1] - o[0]]);
        blob.extend_from_slice(&data[o[0]..o[1]]);
        out.insert(k, v);
    }
    let h = serde_json::to_vec(&out).unwrap();
    std::fs::write(path, [&(h.len() as u64).to_le_bytes()[..], &h, &blob].concat()).unwrap();
}

/// Rewrite a safetensors file's header with `f` (tensor data kept as is).
fn edit_safetensors_header(path: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    f(&mut header);
    let h = serde_json::to_vec(&header).unwrap();
    let out = [&(h.len() as u64).to_le_bytes()[..], &h, &bytes[8 + n..]].concat();
    std::fs::write(path, out).unwrap();
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The first `n` bytes of the real model (a download cut short).
fn smollm2_prefix(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut v = vec![0u8; n];
    std::fs::File::open(demiurgic_tests::smollm2_path()).unwrap().read_exact(&mut v).unwrap();
    v
}

fn gguf_header(version: u32, tensors: u64, kvs: u64) -> Vec<u8> {
    [b"GGUF".as_slice(), &version.to_le_bytes(), &tensors.to_le_bytes(), &kvs.to_le_bytes()].concat()
}

/// One row: a hostile model path (loaded with `load_model`), the error kind, a word of the message.
struct FileCase {
    what: &'static str,
    path: PathBuf,
    kind: &'static str,
    needle: &'static str,
}

fn file_cases() -> Vec<FileCase> {
    let d = scratch("files");
    let mut v = vec![];
    let mut add = |what, path, kind, needle| v.push(FileCase { what, path, kind, needle });
    // GGUF
    add("empty .gguf", write(&d, "empty.gguf", b""), "Gguf", "too short");
    add("garbage .gguf", write(&d, "garbage.gguf", &[0xAB; 4096]), "Gguf", "magic");
    add("GGUF version 1", write(&d, "v1.gguf", &gguf_header(1, 0, 0)), "Gguf", "version 1");
    add("GGUF version 7", write(&d, "v7.gguf", &gguf_header(7, 0, 0)), "Gguf", "version 7");
    add("GGUF huge tensor count", write(&d, "tc.gguf", &gguf_header(3, u64::MAX, 0)), "Gguf", "tensor count");
    add("GGUF huge metadata count", write(&d, "kv.gguf", &gguf_header(3, 0, 1 << 60)), "Gguf", "metadata count");
    add("GGUF truncated download", write(&d, "cut.gguf", &smollm2_prefix(3 << 20)), "Gguf", "outside the file");
    add("GGUF without llama metadata", fixture("all-types.gguf"), "Gguf", "llama.embedding_length");
    // HF checkpoint directories
    add("directory without config.json", scratch("noweights"), "Io", "config.json");
    add(
        "config.json not JSON",
        tiny_copy("cfg-garbage", |d| std::fs::write(d.join("config.json"), "{not json").unwrap()),
        "Config",
        "config.json",
    );
    add(
        "config.json missing hidden_size",
        tiny_copy("cfg-missing", |d| {
            edit_json(&d.join("config.json"), |v| {
                v.as_object_mut().unwrap().remove("hidden_size");
            })
        }),
        "Config",
        "hidden_size",
    );
    add(
        "config.json wrong type",
        tiny_copy("cfg-type", |d| {
            edit_json(&d.join("config.json"), |v| {
                v["num_hidden_layers"] = "thirty".into();
            })
        }),
        "Config",
        "num_hidden_layers",
    );
    add(
        "config.json heads do not divide",
        tiny_copy("cfg-heads", |d| {
            edit_json(&d.join("config.json"), |v| {
                let h = v["num_attention_heads"].as_u64().unwrap();
                v["num_key_value_heads"] = (h + 1).into();
            })
        }),
        "Config",
        "num_key_value_heads",
    );
    add(
        "config.json zero layers",
        tiny_copy("cfg-zero", |d| {
            edit_json(&d.join("config.json"), |v| {
                v["num_hidden_layers"] = 0.into();
            })
        }),
        "Config",
        "num_hidden_layers",
    );
    add(
        "shapes disagree with config",
        tiny_copy("cfg-shape", |d| {
            edit_json(&d.join("config.json"), |v| {
                v["intermediate_size"] = (v["intermediate_size"].as_u64().unwrap() + 8).into();
            })
        }),
        "Checkpoint",
        "shape",
    );
    add(
        "no model.safetensors",
        tiny_copy("no-st", |d| std::fs::remove_file(d.join("model.safetensors")).unwrap()),
        "Checkpoint",
        "model.safetensors",
    );
    add(
        "truncated safetensors",
        tiny_copy("st-cut", |d| {
            let p = d.join("model.safetensors");
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..b.len() / 2]).unwrap();
        }),
        "Checkpoint",
        "outside",
    );
    add(
        "safetensors header length beyond the file",
        tiny_copy("st-len", |d| {
            let p = d.join("model.safetensors");
            let mut b = std::fs::read(&p).unwrap();
            b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
            std::fs::write(&p, b).unwrap();
        }),
        "Checkpoint",
        "header length",
    );
    add(
        "safetensors header not JSON",
        tiny_copy("st-json", |d| {
            let p = d.join("model.safetensors");
            let mut b = std::fs::read(&p).unwrap();
            b[8..16].copy_from_slice(b"garbage!");
            std::fs::write(&p, b).unwrap();
        }),
        "Checkpoint",
        "JSON",
    );
    add(
        "safetensors unknown dtype",
        tiny_copy("st-dtype", |d| {
            edit_safetensors_header(&d.join("model.safetensors"), |h| {
                let k = h.keys().find(|k| *k != "__metadata__").unwrap().clone();
                h.get_mut(&k).unwrap()["dtype"] = "Q4".into();
            })
        }),
        "Checkpoint",
        "dtype",
    );
    add(
        "safetensors shape does not fit its data",
        tiny_copy("st-shape", |d| {
            edit_safetensors_header(&d.join("model.safetensors"), |h| {
                let k = h.keys().find(|k| *k != "__metadata__").unwrap().clone();
                h.get_mut(&k).unwrap()["shape"] = serde_json::json!([7, 3]);
            })
        }),
        "Checkpoint",
        "needs",
    );
    add(
        "safetensors missing a tensor",
        tiny_copy("st-missing", |d| {
            remove_safetensor(&d.join("model.safetensors"), "model.layers.0.mlp.down_proj.weight")
        }),
        "Checkpoint",
        "down_proj",
    );
    add(
        "safetensors data ranges with a gap",
        tiny_copy("st-gap", |d| {
            edit_safetensors_header(&d.join("model.safetensors"), |h| {
                h.remove("model.layers.0.mlp.down_proj.weight").expect("tensor present in the fixture");
            })
        }),
        "Checkpoint",
        "contiguous",
    );
    add("path that does not exist", d.join("nope.gguf"), "Input", "does not exist");
    v
}

#[test]
fn hostile_files_give_typed_errors() {
    let cases = file_cases();
    assert!(cases.len() >= 20);
    for c in &cases {
        let err = match load_model::<B>(&c.path, &Default::default()) {
            Ok(_) => panic!("{}: loaded without error", c.what),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert_eq!(kind(&err), c.kind, "{}: wrong error kind for {msg:?}", c.what);
        assert!(msg.contains(c.needle), "{}: {msg:?} should mention {:?}", c.what, c.needle);
    }
}

#[test]
fn hostile_parameters_and_inputs_give_typed_errors() {
    let loaded = load_model::<B>(&fixture("tiny-llama"), &Default::default()).unwrap();
    let m = &loaded.model;
    let ctx = m.config.max_position_embeddings;
    let vocab = m.config.vocab_size as u32;
    let g = |f: fn(&mut GenerationConfig)| {
        let mut c = GenerationConfig { max_new_tokens: Some(4), ..GenerationConfig::greedy() };
        f(&mut c);
        c
    };
    let ok = vec![vec![1u32, 2, 3]];
    let cases: Vec<(&str, Vec<Vec<u32>>, GenerationConfig, &str, &str)> = vec![
        (
            "temperature -1",
            ok.clone(),
            g(|c| {
                c.do_sample = true;
                c.processors.temperature.temperature = -1.0
            }),
            "Sampling",
            "temperature",
        ),
        (
            "temperature NaN",
            ok.clone(),
            g(|c| {
                c.do_sample = true;
                c.processors.temperature.temperature = f32::NAN
            }),
            "Sampling",
            "temperature",
        ),
        (
            "top_p 1.5",
            ok.clone(),
            g(|c| {
                c.do_sample = true;
                c.processors.top_p.top_p = 1.5
            }),
            "Sampling",
            "top_p",
        ),
        (
            "top_p 0",
            ok.clone(),
            g(|c| {
                c.do_sample = true;
                c.processors.top_p.top_p = 0.0
            }),
            "Sampling",
            "top_p",
        ),
        ("min_p 2", ok.clone(), g(|c| c.processors.min_p.min_p = 2.0), "Sampling", "min_p"),
        ("typical_p 0", ok.clone(), g(|c| c.processors.typical_p.typical_p = 0.0), "Sampling", "typical_p"),
        (
            "repetition_penalty 0",
            ok.clone(),
            g(|c| c.processors.repetition.repetition_penalty = 0.0),
            "Sampling",
            "repetition_penalty",
        ),
        (
            "frequency_penalty 3",
            ok.clone(),
            g(|c| c.processors.frequency_presence.frequency_penalty = 3.0),
            "Sampling",
            "frequency_penalty",
        ),
        (
            "presence_penalty -3",
            ok.clone(),
            g(|c| c.processors.frequency_presence.presence_penalty = -3.0),
            "Sampling",
            "presence_penalty",
        ),
        ("max_new_tokens 0", ok.clone(), g(|c| c.max_new_tokens = Some(0)), "Sampling", "max_new_tokens"),
        ("num_return_sequences 0", ok.clone(), g(|c| c.num_return_sequences = 0), "Sampling", "num_return_sequences"),
        ("empty prompt", vec![vec![]], g(|_| {}), "Input", "empty"),
        ("no prompt at all", vec![], g(|_| {}), "Input", "prompt"),
        ("token id outside the vocabulary", vec![vec![1, vocab]], g(|_| {}), "Input", "vocabulary"),
        ("prompt longer than the context", vec![vec![1; ctx + 1]], g(|_| {}), "Input", "context"),
        (
            "prompt + new tokens beyond the context",
            vec![vec![1; ctx - 2]],
            g(|c| c.max_new_tokens = Some(8)),
            "Input",
            "context",
        ),
        (
            "eos id outside the vocabulary",
            ok.clone(),
            g(|c| c.eos_token_ids = Some(vec![u32::MAX])),
            "Input",
            "vocabulary",
        ),
    ];
    assert!(cases.len() >= 15);
    for (what, prompts, cfg, want_kind, needle) in cases {
        let err = match generate(m, &prompts, &cfg, GenerateOptions::default()) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert_eq!(kind(&err), want_kind, "{what}: wrong error kind for {msg:?}");
        assert!(msg.contains(needle), "{what}: {msg:?} should mention {needle:?}");
    }
}

pub use demiurgic_tests::demiurgic_bin;

#[test]
fn cli_exits_1_with_one_line_on_every_hostile_file() {
    let bin = demiurgic_bin();
    for c in file_cases() {
        let out = Command::new(&bin)
            .args([
                "generate",
                "--backend",
                "ndarray",
                "--greedy",
                "--max-new-tokens",
                "2",
                "--prompt-ids",
                "1,2,3",
                "--model",
            ])
            .arg(&c.path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: exit status {:?}, stderr {err}", c.what, out.status);
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE") && !err.contains("internal failure"),
            "{}: panic: {err}",
            c.what
        );
        assert_eq!(err.trim().lines().count(), 1, "{}: not one line: {err}", c.what);
        assert!(err.contains(c.needle), "{}: {err:?} should mention {:?}", c.what, c.needle);
    }
}

/// A tokenizer that cannot be built does not make the weights unusable: ids still generate,
/// and text input reports the tokenizer's problem (by name) when it is needed.
#[test]
fn broken_tokenizer_still_runs_token_ids() {
    let dir = tiny_copy("tok", |d| std::fs::write(d.join("tokenizer.json"), "{\"model\": 42}").unwrap());
    let loaded = load_model::<B>(&dir, &Default::default()).expect("weights load without a tokenizer");
    let err = loaded.text_tokenizer().err().expect("no usable tokenizer").to_string();
    assert!(err.contains("tokenizer") && err.contains("--prompt-ids"), "{err}");
    let bin = demiurgic_bin();
    let run = |extra: &[&str]| {
        Command::new(&bin)
            .args(["generate", "--backend", "ndarray", "--greedy", "--max-new-tokens", "2", "--model"])
            .arg(&dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = run(&["--prompt-ids", "1,2,3"]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let bad = run(&["--prompt", "hello"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("tokenizer"), "{err}");
}
