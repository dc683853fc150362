//! HF checkpoints: `config.json` + `model.safetensors` (or sharded with
//! `model.safetensors.index.json`), loaded through `burn-store`'s `SafetensorsStore` with key
//! remapping from HF names and PyTorch → Burn layout adaptation.
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::DType;
use burn_store::{ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore, TensorSnapshot};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::llama::{Llama, LlamaWeights};
use crate::load::{LoadedModel, TextTokenizer};

/// Casts every floating tensor to f32 (bf16/f16 checkpoints).
#[derive(Clone, Default)]
struct ToF32;

impl ModuleAdapter for ToF32 {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        if matches!(snapshot.dtype, DType::F32) || !snapshot.dtype.is_float() {
            return snapshot.clone();
        }
        let f = snapshot.clone_data_fn();
        TensorSnapshot::from_closure(
            std::rc::Rc::new(move || Ok(f()?.convert_dtype(DType::F32))),
            DType::F32,
            snapshot.shape.clone(),
            snapshot.path_stack.clone().unwrap_or_default(),
            snapshot.container_stack.clone().unwrap_or_default(),
            snapshot.tensor_id.unwrap_or_default(),
        )
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// The safetensors files of a checkpoint directory.
pub fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|source| ModelError::Io { path: index.clone(), source })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::Checkpoint { path: index.clone(), message: e.to_string() })?;
        let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| ModelError::Checkpoint {
            path: index.clone(),
            message: "missing \"weight_map\" object".into(),
        })?;
        let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(String::from)).collect();
        files.sort();
        files.dedup();
        let mut out = vec![];
        for f in files {
            if f.contains('/') || f.contains("..") {
                return Err(ModelError::Checkpoint { path: index.clone(), message: format!("shard name {f:?} is not a plain file name") });
            }
            let p = dir.join(&f);
            if !p.exists() {
                return Err(ModelError::Checkpoint { path: index.clone(), message: format!("shard {f} listed in the index is missing") });
            }
            out.push(p);
        }
        if out.is_empty() {
            return Err(ModelError::Checkpoint { path: index, message: "the index lists no shard".into() });
        }
        return Ok(out);
    }
    Err(ModelError::Checkpoint {
        path: dir.to_path_buf(),
        message: "no model.safetensors or model.safetensors.index.json found".into(),
    })
}

/// Largest header accepted (the safetensors format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// Check a safetensors file before anything is allocated from it: header length inside the file
/// and bounded, header JSON, known dtypes, shapes whose byte size matches their data range, data
/// ranges inside the file. burn-store would reject most of these too, with vaguer messages.
pub fn validate_safetensors(path: &Path) -> Result<()> {
    use std::io::Read;
    let io = |source| ModelError::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    let mut prefix = [0u8; 8];
    if size >= 8 {
        f.read_exact(&mut prefix).map_err(io)?;
    }
    let header_len = check_header_len(path, size, &prefix)?;
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).map_err(io)?;
    check_header(path, size, &header)
}

/// [`validate_safetensors`] on the bytes of a whole file (`path` only names it in errors).
pub fn validate_safetensors_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    let size = bytes.len() as u64;
    let header_len = check_header_len(path, size, bytes.get(..8).unwrap_or(&[]))?;
    check_header(path, size, &bytes[8..8 + header_len as usize])
}

/// The header length (first 8 bytes, little endian), checked against the file size and the limit.
fn check_header_len(path: &Path, size: u64, prefix: &[u8]) -> Result<u64> {
    let bad = |message: String| ModelError::Checkpoint { path: path.to_path_buf(), message };
    let Ok(n) = <[u8; 8]>::try_from(prefix) else {
        return Err(bad(format!("file is {size} bytes, shorter than the 8-byte header length")));
    };
    let header_len = u64::from_le_bytes(n);
    if size < 8 || header_len > MAX_HEADER || header_len > size - 8 {
        return Err(bad(format!("header length {header_len} exceeds the file ({size} bytes) or the 100 MB limit")));
    }
    Ok(header_len)
}

fn check_header(path: &Path, size: u64, header: &[u8]) -> Result<()> {
    let bad = |message: String| ModelError::Checkpoint { path: path.to_path_buf(), message };
    let header_len = header.len() as u64;
    let v: serde_json::Value = serde_json::from_slice(header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| bad("header is not a JSON object".into()))?;
    let data_len = size - 8 - header_len;
    let mut ranges: Vec<(u64, u64, &str)> = vec![];
    for (name, t) in obj {
        if name == "__metadata__" {
            continue;
        }
        let dtype = t.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad(format!("tensor {name}: no \"dtype\"")))?;
        let elem: u64 = match dtype {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
            other => return Err(bad(format!("tensor {name}: unsupported dtype {other:?}"))),
        };
        let shape: Vec<u64> = t
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect::<Option<Vec<_>>>())
            .ok_or_else(|| bad(format!("tensor {name}: \"shape\" is not a list of sizes")))?;
        let offs: Vec<u64> = t
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect::<Option<Vec<_>>>())
            .filter(|o| o.len() == 2)
            .ok_or_else(|| bad(format!("tensor {name}: \"data_offsets\" is not [begin, end]")))?;
        let (b, e) = (offs[0], offs[1]);
        if b > e || e > data_len {
            return Err(bad(format!("tensor {name}: data range {b}..{e} lies outside the {data_len} data bytes (truncated file?)")));
        }
        let bytes = shape
            .iter()
            .try_fold(elem, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("tensor {name}: shape {shape:?} overflows")))?;
        if bytes != e - b {
            return Err(bad(format!("tensor {name}: shape {shape:?} of {dtype} needs {bytes} bytes, its data range has {}", e - b)));
        }
        ranges.push((b, e, name));
    }
    // the format packs tensors back to back over the whole data section
    ranges.sort();
    let mut end = 0;
    for (b, e, name) in ranges {
        if b != end {
            return Err(bad(format!("tensor data ranges must be contiguous: tensor {name} starts at {b}, the previous ended at {end}")));
        }
        end = e;
    }
    if end != data_len {
        return Err(bad(format!("tensor data ranges must be contiguous: they end at {end}, the data section has {data_len} bytes")));
    }
    Ok(())
}

/// Load weights of `config`'s shape from safetensors files.
pub fn load_weights<B: Backend>(config: &LlamaConfig, files: &[PathBuf], device: &B::Device) -> Result<LlamaWeights<B>> {
    let mut weights = config.init_weights::<B>(device);
    let mut applied: Vec<String> = vec![];
    for file in files {
        validate_safetensors(file)?;
        let mut store = SafetensorsStore::from_file(file)
            .with_key_remapping(r"^model\.", "")
            .with_key_remapping(r"(norm)\.weight$", "$1.gamma")
            .with_from_adapter(PyTorchToBurnAdapter.chain(ToF32))
            .allow_partial(true)
            .validate(true);
        let res = weights
            .load_from(&mut store)
            .map_err(|e| ModelError::Checkpoint { path: file.clone(), message: e.to_string() })?;
        if let Some(err) = res.errors.first() {
            return Err(ModelError::Checkpoint { path: file.clone(), message: err.to_string() });
        }
        applied.extend(res.applied);
    }
    // Every parameter must come from the files (random init must never leak into a model).
    let expected = expected_params(&weights);
    let missing: Vec<&String> = expected.iter().filter(|p| !applied.contains(p)).collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().take(5).map(|p| hf_name(p)).collect();
        return Err(ModelError::Checkpoint {
            path: files[0].clone(),
            message: format!("{} tensor(s) missing, e.g. {}", missing.len(), names.join(", ")),
        });
    }
    Ok(weights)
}

fn expected_params<B: Backend>(w: &LlamaWeights<B>) -> Vec<String> {
    let w = w.clone();
    w.collect(None, None, false).into_iter().map(|s| s.full_path()).collect()
}

fn hf_name(burn_path: &str) -> String {
    let n = burn_path.replace(".gamma", ".weight");
    if n.starts_with("lm_head") { n } else { format!("model.{n}") }
}

/// Load an HF checkpoint directory with its tokenizer when present.
pub fn load_hf_dir<B: Backend>(dir: &Path, device: &B::Device) -> Result<LoadedModel<B>> {
    let config = LlamaConfig::from_hf_dir(dir)?;
    let files = checkpoint_files(dir)?;
    let weights = load_weights::<B>(&config, &files, device)?;
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = if tok_path.exists() {
        let mut t = TextTokenizer::from_file(&tok_path)?;
        t.bos_id = config.bos_token_id;
        Some(t)
    } else {
        None
    };
    let chat_template = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("chat_template").and_then(|c| c.as_str()).map(String::from));
    Ok(LoadedModel {
        model: Llama::new(config, weights, device),
        tokenizer,
        chat_template,
        description: format!("HF checkpoint {}", dir.display()),
    })
}
