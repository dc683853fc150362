//! Llama from GGUF: config from `llama.*` metadata, weights dequantized to f32, llama.cpp's Q/K
//! row permutation undone so the model uses HF's half-split RoPE.
use std::path::Path;

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::reader::GgufFile;
use super::tokenizer::tokenizer_from_gguf;
use crate::attention::Attention;
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::llama::{DecoderLayer, Llama, LlamaWeights};
use crate::load::LoadedModel;
use crate::mlp::Mlp;
use crate::norm::RmsNorm;

fn gerr(g: &GgufFile, msg: impl Into<String>) -> ModelError {
    ModelError::Gguf { path: g.path.clone(), message: msg.into() }
}

fn req_u(g: &GgufFile, key: &str) -> Result<usize> {
    let v = g.meta(key).ok_or_else(|| gerr(g, format!("metadata key {key} is missing")))?;
    v.as_u64().map(|x| x as usize).ok_or_else(|| gerr(g, format!("metadata {key} = {v:?} is not an unsigned integer")))
}

fn opt_u(g: &GgufFile, key: &str) -> Result<Option<usize>> {
    match g.meta(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| gerr(g, format!("metadata {key} = {v:?} is not an unsigned integer"))),
    }
}

fn opt_f(g: &GgufFile, key: &str) -> Result<Option<f64>> {
    match g.meta(key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| gerr(g, format!("metadata {key} = {v:?} is not a number"))),
    }
}

/// The internal config described by a GGUF file's metadata.
pub fn llama_config_from_gguf(g: &GgufFile) -> Result<LlamaConfig> {
    let arch = g
        .meta("general.architecture")
        .and_then(|v| v.as_str())
        .ok_or_else(|| gerr(g, "metadata general.architecture is missing"))?;
    if arch != "llama" {
        return Err(gerr(g, format!("architecture \"{arch}\" is not supported (supported: llama)")));
    }
    if let Some(t) = g.meta("llama.rope.scaling.type").and_then(|v| v.as_str()) {
        if t != "none" {
            return Err(gerr(g, format!("llama.rope.scaling.type \"{t}\" is not supported (only plain RoPE)")));
        }
    }
    let hidden = req_u(g, "llama.embedding_length")?;
    let heads = req_u(g, "llama.attention.head_count")?;
    let kv_heads = opt_u(g, "llama.attention.head_count_kv")?.unwrap_or(heads);
    let head_dim = if heads > 0 { hidden / heads } else { 0 };
    if let Some(rd) = opt_u(g, "llama.rope.dimension_count")? {
        if rd != head_dim {
            return Err(gerr(g, format!("llama.rope.dimension_count {rd} differs from head_dim {head_dim}: partial RoPE is not supported")));
        }
    }
    let vocab = match opt_u(g, "llama.vocab_size")? {
        Some(v) => v,
        None => match g.meta("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
            Some(a) => a.len(),
            None => g
                .tensor("token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
                .ok_or_else(|| gerr(g, "cannot tell the vocabulary size (no llama.vocab_size, tokens or token_embd.weight)"))?
                as usize,
        },
    };
    let id = |k: &str| -> Result<Option<u32>> { Ok(opt_u(g, k)?.map(|x| x as u32)) };
    let eos = id("tokenizer.ggml.eos_token_id")?;
    let mut eos_ids: Vec<u32> = eos.into_iter().collect();
    if let Some(eot) = id("tokenizer.ggml.eot_token_id")? {
        if !eos_ids.contains(&eot) {
            eos_ids.push(eot);
        }
    }
    let cfg = LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: req_u(g, "llama.feed_forward_length")?,
        num_layers: req_u(g, "llama.block_count")?,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        max_position_embeddings: req_u(g, "llama.context_length")?,
        rms_norm_eps: opt_f(g, "llama.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
        rope_theta: opt_f(g, "llama.rope.freq_base")?.unwrap_or(10_000.0),
        tie_word_embeddings: g.tensor("output.weight").is_none(),
        attention_bias: false,
        mlp_bias: false,
        bos_token_id: id("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: eos_ids,
        pad_token_id: id("tokenizer.ggml.padding_token_id")?,
    };
    cfg.validate(&g.path.display().to_string())?;
    Ok(cfg)
}

/// Undo llama.cpp's Q/K permutation: GGUF row `h*hd + 2i + j` is HF row `h*hd + j*hd/2 + i`.
fn unpermute_rows(w: &[f32], n_heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let hd = rows / n_heads;
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * hd + 2 * i + j;
                let dst = h * hd + j * half + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    const T: usize = 32;
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for c in c0..(c0 + T).min(cols) {
                    out[c * rows + r] = w[r * cols + c];
                }
            }
        }
    }
    out
}

struct Builder<'a, B: Backend> {
    g: &'a GgufFile,
    device: &'a B::Device,
}

impl<B: Backend> Builder<'_, B> {
    /// A 2D tensor `[out, in]` (GGUF dims `[in, out]`), shape-checked, as f32 row-major.
    fn matrix(&self, name: &str, out: usize, inp: usize) -> Result<Vec<f32>> {
        let (v, info) = self.g.tensor_f32(name)?;
        if info.dims != [inp as u64, out as u64] {
            return Err(gerr(self.g, format!("tensor {name} has dims {:?}, expected [{inp}, {out}] from the metadata", info.dims)));
        }
        Ok(v)
    }

    fn vector(&self, name: &str, n: usize) -> Result<Tensor<B, 1>> {
        let (v, info) = self.g.tensor_f32(name)?;
        if info.dims != [n as u64] {
            return Err(gerr(self.g, format!("tensor {name} has dims {:?}, expected [{n}]", info.dims)));
        }
        Ok(Tensor::from_data(TensorData::new(v, [n]), self.device))
    }

    /// A Burn `Linear` (weight `[in, out]`) from a GGUF `[out, in]` matrix.
    fn linear(&self, name: &str, out: usize, inp: usize, unpermute_heads: Option<usize>) -> Result<Linear<B>> {
        let mut w = self.matrix(name, out, inp)?;
        if let Some(h) = unpermute_heads {
            w = unpermute_rows(&w, h, out, inp);
        }
        let w = transpose(&w, out, inp);
        Ok(Linear { weight: Param::from_tensor(Tensor::from_data(TensorData::new(w, [inp, out]), self.device)), bias: None })
    }

    fn norm(&self, name: &str, n: usize, eps: f64) -> Result<RmsNorm<B>> {
        Ok(RmsNorm { gamma: Param::from_tensor(self.vector(name, n)?), epsilon: eps })
    }
}

/// Load a GGUF Llama with its embedded tokenizer.
pub fn load_gguf<B: Backend>(path: &Path, device: &B::Device) -> Result<LoadedModel<B>> {
    let g = GgufFile::open(path)?;
    let c = llama_config_from_gguf(&g)?;
    let bld = Builder::<B> { g: &g, device };
    let (d, hd) = (c.hidden_size, c.head_dim);
    let mut layers = Vec::with_capacity(c.num_layers);
    for i in 0..c.num_layers {
        let p = |s: &str| format!("blk.{i}.{s}.weight");
        layers.push(DecoderLayer {
            self_attn: Attention {
                q_proj: bld.linear(&p("attn_q"), c.num_heads * hd, d, Some(c.num_heads))?,
                k_proj: bld.linear(&p("attn_k"), c.num_kv_heads * hd, d, Some(c.num_kv_heads))?,
                v_proj: bld.linear(&p("attn_v"), c.num_kv_heads * hd, d, None)?,
                o_proj: bld.linear(&p("attn_output"), d, c.num_heads * hd, None)?,
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: hd,
            },
            mlp: Mlp {
                gate_proj: bld.linear(&p("ffn_gate"), c.intermediate_size, d, None)?,
                up_proj: bld.linear(&p("ffn_up"), c.intermediate_size, d, None)?,
                down_proj: bld.linear(&p("ffn_down"), d, c.intermediate_size, None)?,
            },
            input_layernorm: bld.norm(&p("attn_norm"), d, c.rms_norm_eps)?,
            post_attention_layernorm: bld.norm(&p("ffn_norm"), d, c.rms_norm_eps)?,
        });
    }
    let embed = bld.matrix("token_embd.weight", c.vocab_size, d)?;
    let embed_tokens = Embedding { weight: Param::from_tensor(Tensor::from_data(TensorData::new(embed, [c.vocab_size, d]), device)) };
    let lm_head = if c.tie_word_embeddings { None } else { Some(bld.linear("output.weight", c.vocab_size, d, None)?) };
    let weights = LlamaWeights { embed_tokens, layers, norm: bld.norm("output_norm.weight", d, c.rms_norm_eps)?, lm_head };
    let tokenizer = match g.meta("tokenizer.ggml.model") {
        Some(_) => Some(tokenizer_from_gguf(&g)?),
        None => None,
    };
    let chat_template = g.meta("tokenizer.chat_template").and_then(|v| v.as_str()).map(String::from);
    let description = format!(
        "GGUF {} ({})",
        path.display(),
        g.meta("general.name").and_then(|v| v.as_str()).unwrap_or("unnamed")
    );
    Ok(LoadedModel { model: Llama::new(c, weights, device), tokenizer, chat_template, description })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(h, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols)
        let (h, hd, cols) = (2, 4, 3);
        let rows = h * hd;
        let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let mut gguf = vec![0f32; hf.len()];
        for hh in 0..h {
            for j in 0..2 {
                for i in 0..hd / 2 {
                    let src = hh * hd + j * (hd / 2) + i; // (h, j, i)
                    let dst = hh * hd + i * 2 + j; // (h, i, j)
                    gguf[dst * cols..(dst + 1) * cols].copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        assert_eq!(unpermute_rows(&gguf, h, rows, cols), hf);
    }

    #[test]
    fn transpose_works() {
        assert_eq!(transpose(&[1., 2., 3., 4., 5., 6.], 2, 3), vec![1., 4., 2., 5., 3., 6.]);
    }
}
