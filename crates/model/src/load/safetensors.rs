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

/// Load weights of `config`'s shape from safetensors files.
pub fn load_weights<B: Backend>(config: &LlamaConfig, files: &[PathBuf], device: &B::Device) -> Result<LlamaWeights<B>> {
    let mut weights = config.init_weights::<B>(device);
    let mut applied: Vec<String> = vec![];
    for file in files {
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
