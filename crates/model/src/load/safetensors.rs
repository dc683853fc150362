//! HF checkpoints: `config.json` + `model.safetensors` (or sharded with
//! `model.safetensors.index.json`): every file validated, memory-mapped, and its tensors handed
//! by HF name to the common builder (f32 / f16 / bf16).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::decoder::Decoder;
use crate::error::{ModelError, Result};
use crate::families;
use crate::ggml::GgmlType;
use crate::load::builder::{Builder, LoadOptions, Naming, RawTensor, WeightSource};
use crate::load::{LoadedModel, TextTokenizer};
use crate::ops::DecodeOps;

/// The safetensors files of a checkpoint directory (one file or the shards of an index).
pub fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|error| ModelError::Io { path: index.clone(), error })?;
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
                return Err(ModelError::Checkpoint {
                    path: index.clone(),
                    message: format!("shard name {f:?} is not a plain file name"),
                });
            }
            let p = dir.join(&f);
            if !p.exists() {
                return Err(ModelError::Checkpoint {
                    path: index.clone(),
                    message: format!("shard {f} listed in the index is missing"),
                });
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
/// ranges inside the file.
pub fn validate_safetensors(path: &Path) -> Result<()> {
    use std::io::Read;
    let io = |error| ModelError::Io { path: path.to_path_buf(), error };
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
        let dtype =
            t.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad(format!("tensor {name}: no \"dtype\"")))?;
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
            return Err(bad(format!(
                "tensor {name}: data range {b}..{e} lies outside the {data_len} data bytes (truncated file?)"
            )));
        }
        let bytes = shape
            .iter()
            .try_fold(elem, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("tensor {name}: shape {shape:?} overflows")))?;
        if bytes != e - b {
            return Err(bad(format!(
                "tensor {name}: shape {shape:?} of {dtype} needs {bytes} bytes, its data range has {}",
                e - b
            )));
        }
        ranges.push((b, e, name));
    }
    // the format packs tensors back to back over the whole data section
    ranges.sort();
    let mut end = 0;
    for (b, e, name) in ranges {
        if b != end {
            return Err(bad(format!(
                "tensor data ranges must be contiguous: tensor {name} starts at {b}, the previous ended at {end}"
            )));
        }
        end = e;
    }
    if end != data_len {
        return Err(bad(format!(
            "tensor data ranges must be contiguous: they end at {end}, the data section has {data_len} bytes"
        )));
    }
    Ok(())
}

/// Tensors of one or more safetensors files, memory-mapped (validated before mapping).
pub struct SafetensorsSource {
    dir: PathBuf,
    maps: Vec<memmap2::Mmap>,
    /// name → (file index, dtype, shape, absolute byte range)
    tensors: BTreeMap<String, (usize, GgmlType, Vec<usize>, std::ops::Range<usize>)>,
}

impl SafetensorsSource {
    pub fn open(dir: &Path, files: &[PathBuf]) -> Result<Self> {
        let mut maps = vec![];
        let mut tensors = BTreeMap::new();
        for (fi, file) in files.iter().enumerate() {
            validate_safetensors(file)?;
            let bad = |message: String| ModelError::Checkpoint { path: file.clone(), message };
            let f = std::fs::File::open(file).map_err(|error| ModelError::Io { path: file.clone(), error })?;
            // SAFETY: read-only map of a file we do not modify; sizes were validated above.
            let map =
                unsafe { memmap2::Mmap::map(&f) }.map_err(|error| ModelError::Io { path: file.clone(), error })?;
            let header_len = u64::from_le_bytes(map[..8].try_into().expect("8 bytes")) as usize;
            let header: serde_json::Value =
                serde_json::from_slice(&map[8..8 + header_len]).map_err(|e| bad(format!("header is not JSON: {e}")))?;
            for (name, t) in header.as_object().into_iter().flatten() {
                if name == "__metadata__" {
                    continue;
                }
                let dtype = t.get("dtype").and_then(|d| d.as_str()).unwrap_or("");
                let ty = match dtype {
                    "F32" => GgmlType::F32,
                    "F16" => GgmlType::F16,
                    "BF16" => GgmlType::BF16,
                    other => {
                        return Err(bad(format!(
                            "tensor {name}: dtype {other} is not a float type the model reads (F32, F16, BF16)"
                        )))
                    }
                };
                let shape: Vec<usize> = t["shape"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.as_u64())
                    .map(|d| d as usize)
                    .collect();
                let offs: Vec<usize> = t["data_offsets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.as_u64())
                    .map(|d| d as usize)
                    .collect();
                let base = 8 + header_len;
                if tensors.insert(name.clone(), (fi, ty, shape, base + offs[0]..base + offs[1])).is_some() {
                    return Err(bad(format!("tensor {name} appears in more than one shard")));
                }
            }
            maps.push(map);
        }
        Ok(Self { dir: dir.to_path_buf(), maps, tensors })
    }
}

impl WeightSource for SafetensorsSource {
    fn get(&self, name: &str) -> Option<RawTensor<'_>> {
        let (fi, ty, shape, range) = self.tensors.get(name)?;
        Some(RawTensor { ty: *ty, shape: shape.clone(), data: &self.maps[*fi][range.clone()] })
    }

    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn error(&self, message: String) -> ModelError {
        ModelError::Checkpoint { path: self.dir.clone(), message }
    }
}

/// Load an HF checkpoint directory with its tokenizer when present.
pub fn load_hf_dir<B: DecodeOps>(dir: &Path, device: &B::Device, opts: &LoadOptions) -> Result<LoadedModel<B>> {
    let config = families::from_hf_dir(dir)?;
    let files = checkpoint_files(dir)?;
    let src = SafetensorsSource::open(dir, &files)?;
    let builder = Builder::<B>::new(&src, Naming::Hf, config.family, *opts, device);
    let weights = builder.build(&config)?;
    // rotary tables some exporters save are recomputed from the config
    let rotary: Vec<String> = src.names().into_iter().filter(|n| n.ends_with("rotary_emb.inv_freq")).collect();
    let ignore: Vec<&str> = rotary.iter().map(String::as_str).collect();
    builder.check_all_used(&ignore)?;
    let tok_path = dir.join("tokenizer.json");
    let (tokenizer, tokenizer_error) = if tok_path.exists() {
        match TextTokenizer::from_file(&tok_path) {
            Ok(mut t) => {
                t.bos_id = config.bos_token_id;
                (Some(t), None)
            }
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, None)
    };
    let chat_template = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("chat_template").and_then(|c| c.as_str()).map(String::from));
    let family = config.family.name.to_string();
    Ok(LoadedModel {
        model: Decoder::new(config, weights, device),
        tokenizer,
        tokenizer_error,
        chat_template,
        description: format!("HF checkpoint {}", dir.display()),
        architecture: family,
    })
}
