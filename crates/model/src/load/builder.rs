//! One model builder for every checkpoint format: a [`WeightSource`] hands out raw tensors by
//! name (GGUF blocks, safetensors f32/f16/bf16), the builder turns them into the decoder's
//! weights for the backend — fused q/k/v and gate/up, kept as GGUF blocks on backends with host
//! kernels (or quantized at load), dense f32 device tensors elsewhere — and refuses any
//! checkpoint tensor the model would not use.
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};

use crate::attention::Attention;
use crate::decoder::{DecoderLayer, DecoderWeights};
use crate::error::{ModelError, Result};
use crate::families::{Family, LayerSpec, ModelConfig};
pub use crate::families::{Naming, Part};
use crate::ffn::Ffn;
use crate::ggml::{dequantize, to_q8_0_exact, GgmlType};
use crate::kernels::dot::has_q8_kernel;
use crate::kernels::quant::{is_native, ActQuant, QuantMatrix};
use crate::kv_cache::CacheType;
use crate::mlp::Mlp;
use crate::moe::SparseMoe;
use crate::norm::RmsNorm;
use crate::ops::{AttnSpec, DecodeOps, Heads, Linear, Matrix};

/// A tensor as a checkpoint stores it.
pub struct RawTensor<'a> {
    pub ty: GgmlType,
    /// Outermost first (`[out, in]` for a linear weight).
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

/// Tensors by name.
pub trait WeightSource {
    fn get(&self, name: &str) -> Option<RawTensor<'_>>;
    fn names(&self) -> Vec<String>;
    /// An error about this source.
    fn error(&self, message: String) -> ModelError;
    /// The model has copied tensor `name`: a memory-mapped source may drop its pages (they stop
    /// counting towards resident memory; read again from the file if touched).
    fn release(&self, _name: &str) {}
}

/// How linear weights are stored at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightMode {
    /// Keep the file's quantization where the backend computes on it (GGUF on flex); dense f32
    /// elsewhere.
    #[default]
    Native,
    /// Dequantize to f32.
    F32,
    /// Convert to f16 (backends with host kernels).
    F16,
}

impl std::str::FromStr for WeightMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(Self::Native),
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            o => Err(format!("--weights {o:?} is unknown (allowed: native, f32, f16)")),
        }
    }
}

/// How activations meet quantized weights in linear layers (backends with host kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    /// f32 activations against the dequantized block values: exact up to f32 rounding.
    #[default]
    F32,
    /// Activations quantized to int16 per block of 32 with integer dot products (Q4_0, Q4_1,
    /// Q8_0 weights at every size; where AVX-512 VNNI is, also Q5_0, Q4_K, Q6_K at every size and
    /// Q5_1, Q5_K in products of several rows, else those stay f32): within float noise of f32,
    /// most of int8's speed.
    Int16,
    /// Activations quantized to int8 per block of 32 and integer dot products, as llama.cpp
    /// computes (Q4_0, Q4_1, Q8_0 weights at every size; the other block types int8 in products
    /// of several rows and int16 in the decode row kernels, where AVX-512 VNNI is): faster, not
    /// exact.
    Int8,
}

impl std::str::FromStr for Activations {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "int16" => Ok(Self::Int16),
            "int8" => Ok(Self::Int8),
            o => Err(format!("--activations {o:?} is unknown (allowed: f32, int16, int8)")),
        }
    }
}

/// Options of a load.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    pub weights: WeightMode,
    /// Quantize linear weights to this block type at load (`Q8_0`, `Q4_0`); backends with host
    /// kernels only.
    pub quantize: Option<GgmlType>,
    pub activations: Activations,
    /// How the KV cache stores keys and values (f16 and q8_0: backends that list them in
    /// [`DecodeOps::cache_types`], flex).
    pub cache: CacheType,
}

impl LoadOptions {
    /// Refuse combinations the backend `B` cannot run.
    pub fn check<B: DecodeOps>(&self, backend: &str) -> Result<()> {
        if !B::cache_types().contains(&self.cache) {
            let have: Vec<String> = B::cache_types().iter().map(|t| t.to_string()).collect();
            return Err(ModelError::Input(format!(
                "--cache-type {} is not supported on {backend} (allowed there: {}; f16 and q8_0 run on flex)",
                self.cache,
                have.join(", ")
            )));
        }
        if !B::host_weights() {
            if self.weights == WeightMode::F16 {
                return Err(ModelError::Input(format!(
                    "--weights f16 needs a backend with host kernels (flex); {backend} keeps f32 weights"
                )));
            }
            if self.quantize.is_some() {
                return Err(ModelError::Input(format!(
                    "--quantize needs a backend with host kernels (flex); {backend} runs dense f32 weights"
                )));
            }
            if self.activations != Activations::F32 {
                return Err(ModelError::Input(format!(
                    "--activations {} needs a backend with host kernels (flex); {backend} computes in f32",
                    format!("{:?}", self.activations).to_lowercase()
                )));
            }
        }
        if let Some(q) = self.quantize {
            if !matches!(q, GgmlType::Q8_0 | GgmlType::Q4_0) {
                return Err(ModelError::Input(format!("--quantize {q:?} is not supported (allowed: q8_0, q4_0)")));
            }
        }
        Ok(())
    }
}

/// llama.cpp's Q/K row permutation undone: result row `h·hd + j·hd/2 + i` is file row
/// `h·hd + 2i + j`.
pub fn unpermute_order(rows: usize, heads: usize) -> Vec<usize> {
    let hd = rows / heads;
    let half = hd / 2;
    let mut perm = vec![0; rows];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                perm[h * hd + j * half + i] = h * hd + 2 * i + j;
            }
        }
    }
    perm
}

/// One matrix to fetch: its name, expected rows, an optional row permutation, and for one
/// expert of a stacked `[experts, rows, cols]` tensor (GGUF), (its index, the expert count).
struct PartSpec {
    name: String,
    rows: usize,
    perm: Option<Vec<usize>>,
    slab: Option<(usize, usize)>,
}

/// Builds [`DecoderWeights`] for backend `B` from a source.
pub struct Builder<'a, B: DecodeOps> {
    src: &'a dyn WeightSource,
    naming: Naming,
    family: &'static Family,
    opts: LoadOptions,
    device: &'a B::Device,
    used: RefCell<BTreeSet<String>>,
    /// Undo llama.cpp's Q/K permutation (GGUF `llama` files).
    unpermute_qk: bool,
}

impl<'a, B: DecodeOps> Builder<'a, B> {
    /// Tensors named by `naming` and `family` (whose GGUF files may hold Q/K rows in llama.cpp's
    /// permuted order, restored to HF's here).
    pub fn new(
        src: &'a dyn WeightSource,
        naming: Naming,
        family: &'static Family,
        opts: LoadOptions,
        device: &'a B::Device,
    ) -> Self {
        let unpermute_qk = naming == Naming::Gguf && family.gguf_permuted_qk;
        Self { src, naming, family, opts, device, used: RefCell::new(BTreeSet::new()), unpermute_qk }
    }

    fn name(&self, part: Part, i: usize, suffix: &str) -> String {
        self.family.tensor_name(self.naming, part, i, suffix)
    }

    /// An RMSNorm of `n` weights (`1 + w` where the family's HF weights are offsets).
    fn norm(&self, part: Part, i: usize, n: usize, eps: f64) -> Result<RmsNorm<B>> {
        let gamma = self.vector(&self.name(part, i, "weight"), n)?;
        let gamma = if self.naming == Naming::Hf && self.family.hf_norm_plus_one { gamma + 1.0 } else { gamma };
        Ok(RmsNorm { gamma, eps })
    }

    fn fetch(&self, name: &str) -> Result<RawTensor<'a>> {
        let t = self.src.get(name).ok_or_else(|| self.src.error(format!("tensor {name} is missing")))?;
        self.used.borrow_mut().insert(name.to_string());
        Ok(t)
    }

    fn f32_of(&self, name: &str, t: &RawTensor<'_>) -> Result<Vec<f32>> {
        let n: usize = t.shape.iter().product();
        dequantize(t.ty, t.data, n).map_err(|m| self.src.error(format!("tensor {name}: {m}")))
    }

    fn check_shape(&self, name: &str, t: &RawTensor<'_>, want: &[usize]) -> Result<()> {
        if t.shape != want {
            return Err(self.src.error(format!("tensor {name} has shape {:?}, the config implies {want:?}", t.shape)));
        }
        Ok(())
    }

    /// A 1-D f32 tensor of `n` values.
    fn vector(&self, name: &str, n: usize) -> Result<Tensor<B, 1>> {
        let t = self.fetch(name)?;
        self.check_shape(name, &t, &[n])?;
        let v = self.f32_of(name, &t)?;
        Ok(Tensor::from_data(TensorData::new(v, [n]), self.device))
    }

    fn optional_vector(&self, name: &str, n: usize) -> Result<Option<Tensor<B, 1>>> {
        if self.src.get(name).is_none() {
            return Ok(None);
        }
        self.vector(name, n).map(Some)
    }

    /// Rows of several checkpoint matrices stacked into one `[Σ rows, cols]` matrix.
    fn matrix(&self, parts: &[PartSpec], cols: usize) -> Result<Matrix<B>> {
        let host = B::host_weights();
        let rows: usize = parts.iter().map(|p| p.rows).sum();
        // the cube backends keep native blocks on the device where they have a layout for them
        let device_blocks = !host && self.opts.weights == WeightMode::Native && B::device_blocks_supported();
        if host || device_blocks {
            let mut mats = Vec::with_capacity(parts.len());
            for p in parts {
                let t = self.part_tensor(p, cols)?;
                let keep = self.opts.weights == WeightMode::Native && self.opts.quantize.is_none() && is_native(t.ty);
                let m = if keep {
                    QuantMatrix::new(t.ty, p.rows, cols, t.data.to_vec())
                        .map_err(|m| self.src.error(format!("tensor {}: {m}", p.name)))?
                } else {
                    let v = self.f32_of(&p.name, &t)?;
                    let ty = match (self.opts.quantize, self.opts.weights) {
                        (Some(q), _) => q,
                        (_, WeightMode::F16) => GgmlType::F16,
                        _ => GgmlType::F32,
                    };
                    QuantMatrix::quantize(ty, p.rows, cols, &v)
                        .map_err(|m| self.src.error(format!("tensor {}: {m}", p.name)))?
                };
                if p.slab.is_none_or(|(e, n)| e + 1 == n) {
                    self.src.release(&p.name);
                }
                mats.push(match &p.perm {
                    Some(perm) => m.permute_rows(perm),
                    None => m,
                });
            }
            // parts of different block types (Gemma 3 files: Q5_0 q/k with Q8_0 v): as Q8_0 when
            // that holds every value exactly, else one f32 matrix
            if mats.iter().any(|m| m.ty() != mats[0].ty()) {
                let exact: Option<Vec<QuantMatrix>> = mats
                    .iter()
                    .map(|m| {
                        let q8 = to_q8_0_exact(m.ty(), m.data())?;
                        QuantMatrix::new(GgmlType::Q8_0, m.rows(), m.cols(), q8).ok()
                    })
                    .collect();
                if let Some(e) = exact {
                    mats = e;
                }
            }
            let refs: Vec<&QuantMatrix> = mats.iter().collect();
            let joined = match QuantMatrix::concat_rows(&refs) {
                Some(j) => j,
                None => {
                    // different block types: one f32 matrix
                    let v: Vec<f32> = mats.iter().flat_map(|m| m.dequantize()).collect();
                    QuantMatrix::quantize(GgmlType::F32, rows, cols, &v).expect("f32 always quantizes")
                }
            };
            let joined = match self.opts.activations {
                Activations::Int8 if has_q8_kernel(joined.ty()) => {
                    joined.with_activations(ActQuant::Int8).interleave8()
                }
                Activations::Int16 if has_q8_kernel(joined.ty()) && joined.can_interleave8() => {
                    joined.with_activations(ActQuant::Int16).interleave8()
                }
                // other block types (K-quants, Q5): quantized activations in the integer GEMM and
                // the int16 row kernels where AVX-512 VNNI is (`linear` picks), f32 elsewhere
                Activations::Int16 if crate::kernels::igemm::supported(joined.ty()) => {
                    joined.with_activations(ActQuant::Int16)
                }
                Activations::Int8 if crate::kernels::igemm::supported(joined.ty()) => {
                    joined.with_activations(ActQuant::Int8)
                }
                _ => joined,
            };
            if host {
                return Ok(Matrix::Host(Arc::new(joined)));
            }
            let joined = Arc::new(joined);
            return Ok(match B::device_blocks(joined.clone(), self.device) {
                Some(m) => m,
                None => {
                    Matrix::Dense(Tensor::from_data(TensorData::new(joined.dequantize(), [rows, cols]), self.device))
                }
            });
        }
        let mut all = Vec::with_capacity(rows * cols);
        for p in parts {
            let t = self.part_tensor(p, cols)?;
            let v = self.f32_of(&p.name, &t)?;
            match &p.perm {
                Some(perm) => {
                    for &src in perm {
                        all.extend_from_slice(&v[src * cols..(src + 1) * cols]);
                    }
                }
                None => all.extend_from_slice(&v),
            }
        }
        Ok(Matrix::Dense(Tensor::from_data(TensorData::new(all, [rows, cols]), self.device)))
    }

    /// The `[rows, cols]` tensor of a part, shape-checked: the checkpoint's tensor, or expert
    /// `e`'s slab of a stacked `[experts, rows, cols]` one.
    fn part_tensor(&self, p: &PartSpec, cols: usize) -> Result<RawTensor<'a>> {
        let t = self.fetch(&p.name)?;
        let Some((e, n)) = p.slab else {
            self.check_shape(&p.name, &t, &[p.rows, cols])?;
            return Ok(t);
        };
        self.check_shape(&p.name, &t, &[n, p.rows, cols])?;
        // every expert's rows take the same bytes (blocks run along the columns)
        let per = t.data.len() / n;
        Ok(RawTensor { ty: t.ty, shape: vec![p.rows, cols], data: &t.data[e * per..(e + 1) * per] })
    }

    fn spec(&self, part: Part, i: usize, rows: usize, unpermute_heads: Option<usize>) -> PartSpec {
        let perm = unpermute_heads.filter(|_| self.unpermute_qk).map(|h| unpermute_order(rows, h));
        PartSpec { name: self.name(part, i, "weight"), rows, perm, slab: None }
    }

    /// Expert `e` (of `n`) of layer `i`: its own HF tensor, or its slab of the GGUF stack.
    fn expert_spec(&self, part: Part, i: usize, e: usize, n: usize, rows: usize) -> PartSpec {
        let name = self.family.expert_name(self.naming, part, i, e);
        let slab = (self.naming == Naming::Gguf).then_some((e, n));
        PartSpec { name, rows, perm: None, slab }
    }

    /// A layer's feed-forward block as its spec says: the dense gated MLP (gate/up fused or
    /// not, biases where the config says), or the router and experts of a sparse one.
    fn ffn(&self, ls: &LayerSpec, i: usize, d: usize, inter: usize) -> Result<Ffn<B>> {
        if let Some(moe) = ls.moe {
            if ls.mlp_bias {
                return Err(self.src.error(format!("layer {i}: MLP biases on MoE experts are not supported")));
            }
            let w = moe.intermediate;
            let experts = (0..moe.experts)
                .map(|e| {
                    let gu = [
                        self.expert_spec(Part::ExpertGate, i, e, moe.experts, w),
                        self.expert_spec(Part::ExpertUp, i, e, moe.experts, w),
                    ];
                    Ok(Mlp {
                        gate_up: Linear { weight: self.matrix(&gu, d)?, bias: None },
                        down: Linear {
                            weight: self.matrix(&[self.expert_spec(Part::ExpertDown, i, e, moe.experts, d)], w)?,
                            bias: None,
                        },
                        act: ls.act,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            return Ok(Ffn::Sparse(SparseMoe {
                router: Linear {
                    weight: self.matrix(&[self.spec(Part::Router, i, moe.experts, None)], d)?,
                    bias: None,
                },
                experts,
                top_k: moe.top_k,
                norm_topk_prob: moe.norm_topk_prob,
            }));
        }
        let gu_parts = [(Part::Gate, inter, None), (Part::Up, inter, None)];
        // fused gate/up: HF `gate_up_proj`, or a GGUF `ffn_up` of twice the width without `ffn_gate`
        let fused_gu = match self.naming {
            Naming::Hf => self.src.get(&self.name(Part::GateUp, i, "weight")).is_some(),
            Naming::Gguf => {
                self.src.get(&self.name(Part::Gate, i, "weight")).is_none()
                    && self
                        .src
                        .get(&self.name(Part::Up, i, "weight"))
                        .is_some_and(|t| t.shape.first() == Some(&(2 * inter)))
            }
        };
        let gu_specs: Vec<PartSpec> = if fused_gu {
            vec![self.spec(Part::GateUp, i, 2 * inter, None)]
        } else {
            vec![self.spec(Part::Gate, i, inter, None), self.spec(Part::Up, i, inter, None)]
        };
        let gu_bias = if ls.mlp_bias && !fused_gu { self.stacked_bias(&gu_parts, i)? } else { None };
        if ls.mlp_bias && gu_bias.is_none() {
            return Err(self.src.error(format!("the config says mlp_bias but layer {i} has no gate/up bias")));
        }
        let down_bias = if ls.mlp_bias { Some(self.vector(&self.name(Part::Down, i, "bias"), d)?) } else { None };
        Ok(Ffn::Dense(Mlp {
            gate_up: Linear { weight: self.matrix(&gu_specs, d)?, bias: gu_bias },
            down: Linear { weight: self.matrix(&[self.spec(Part::Down, i, d, None)], inter)?, bias: down_bias },
            act: ls.act,
        }))
    }

    /// Biases of stacked parts (all or none present), concatenated, permuted like their rows.
    fn stacked_bias(&self, parts: &[(Part, usize, Option<usize>)], i: usize) -> Result<Option<Tensor<B, 1>>> {
        let names: Vec<String> = parts.iter().map(|(p, _, _)| self.name(*p, i, "bias")).collect();
        let present: Vec<bool> = names.iter().map(|n| self.src.get(n).is_some()).collect();
        if !present.iter().any(|&p| p) {
            return Ok(None);
        }
        let mut all = vec![];
        for ((name, &(_, rows, heads)), &has) in names.iter().zip(parts).zip(&present) {
            if !has {
                all.extend(std::iter::repeat_n(0f32, rows));
                continue;
            }
            let t = self.fetch(name)?;
            self.check_shape(name, &t, &[rows])?;
            let v = self.f32_of(name, &t)?;
            match heads.filter(|_| self.unpermute_qk) {
                Some(h) => all.extend(unpermute_order(rows, h).iter().map(|&s| v[s])),
                None => all.extend(v),
            }
        }
        let n = all.len();
        Ok(Some(Tensor::from_data(TensorData::new(all, [n]), self.device)))
    }

    /// Build every weight of `c`; each layer's [`LayerSpec`](crate::families::LayerSpec) says
    /// which biases and norms must exist.
    pub fn build(&self, c: &ModelConfig) -> Result<DecoderWeights<B>> {
        let (d, hd) = (c.hidden_size, c.head_dim);
        let (hq, kv, inter) = (c.num_heads, c.num_kv_heads, c.intermediate_size);
        let eps = c.rms_norm_eps;
        let mut layers = Vec::with_capacity(c.num_layers);
        for (i, ls) in c.layers.iter().enumerate() {
            let qkv_parts = [(Part::Q, hq * hd, Some(hq)), (Part::K, kv * hd, Some(kv)), (Part::V, kv * hd, None)];
            let fused_qkv = self.src.get(&self.name(Part::Qkv, i, "weight")).is_some();
            let qkv_specs: Vec<PartSpec> = if fused_qkv {
                if self.unpermute_qk {
                    return Err(self.src.error(format!(
                        "layer {i}: fused q/k/v rows in llama.cpp's permuted order are not supported"
                    )));
                }
                vec![self.spec(Part::Qkv, i, (hq + 2 * kv) * hd, None)]
            } else {
                qkv_parts.iter().map(|&(p, r, h)| self.spec(p, i, r, h)).collect()
            };
            // biases only where the config says the model has them: a bias the config does not
            // announce stays unused, and the unused-tensor check names it
            let qkv_bias = match (ls.qkv_bias, fused_qkv) {
                (false, _) => None,
                (true, true) => self.optional_vector(&self.name(Part::Qkv, i, "bias"), (hq + 2 * kv) * hd)?,
                (true, false) => self.stacked_bias(&qkv_parts, i)?,
            };
            if ls.qkv_bias && qkv_bias.is_none() {
                return Err(self.src.error(format!("the config says attention_bias but layer {i} has no q/k/v bias")));
            }
            let o_bias = if ls.o_bias { Some(self.vector(&self.name(Part::O, i, "bias"), d)?) } else { None };
            let qk_norm = if ls.qk_norm {
                Some((self.norm(Part::QNorm, i, hd, eps)?, self.norm(Part::KNorm, i, hd, eps)?))
            } else {
                None
            };
            let sandwich = |part| if ls.sandwich_norms { self.norm(part, i, d, eps).map(Some) } else { Ok(None) };
            layers.push(DecoderLayer {
                input_layernorm: self.norm(Part::AttnNorm, i, d, eps)?,
                self_attn: Attention {
                    qkv: Linear { weight: self.matrix(&qkv_specs, d)?, bias: qkv_bias },
                    o_proj: Linear { weight: self.matrix(&[self.spec(Part::O, i, d, None)], hq * hd)?, bias: o_bias },
                    qk_norm,
                    spec: AttnSpec {
                        heads: Heads { q: hq, kv, dim: hd },
                        scale: ls.attn_scale,
                        softcap: ls.attn_softcap,
                        window: ls.window,
                    },
                    rope: ls.rope,
                },
                post_attention_norm: sandwich(Part::PostAttnNorm)?,
                mlp_norm: self.norm(Part::MlpNorm, i, d, eps)?,
                mlp: self.ffn(ls, i, d, inter)?,
                post_mlp_norm: sandwich(Part::PostMlpNorm)?,
            });
        }
        // The embedding is stored like the linear layers (as the tied head it is one).
        let embed = self.matrix(&[self.spec(Part::Embed, 0, c.vocab_size, None)], d)?;
        let head_name = self.name(Part::Head, 0, "weight");
        let lm_head = if c.tie_word_embeddings {
            if self.src.get(&head_name).is_some() {
                // transformers ties and ignores a saved lm_head
                self.used.borrow_mut().insert(head_name);
            }
            Linear { weight: embed.clone(), bias: None }
        } else {
            Linear { weight: self.matrix(&[self.spec(Part::Head, 0, c.vocab_size, None)], d)?, bias: None }
        };
        let norm = self.norm(Part::FinalNorm, 0, d, eps)?;
        Ok(DecoderWeights { embed_tokens: embed, layers, norm, lm_head })
    }

    /// Error naming the first checkpoint tensors the model did not use.
    pub fn check_all_used(&self, ignore: &[&str]) -> Result<()> {
        let used = self.used.borrow();
        let unused: Vec<String> =
            self.src.names().into_iter().filter(|n| !used.contains(n) && !ignore.iter().any(|i| n == i)).collect();
        if let Some(first) = unused.first() {
            return Err(self.src.error(format!(
                "{} tensor(s) in the checkpoint are not used by the model, e.g. {first}: refusing to compute something else than the checkpoint describes",
                unused.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(h, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols)
        let (h, hd) = (2, 4);
        let rows = h * hd;
        let mut gguf_of_hf = vec![0; rows];
        for hh in 0..h {
            for j in 0..2 {
                for i in 0..hd / 2 {
                    let src = hh * hd + j * (hd / 2) + i; // (h, j, i)
                    let dst = hh * hd + i * 2 + j; // (h, i, j)
                    gguf_of_hf[dst] = src;
                }
            }
        }
        let perm = unpermute_order(rows, h);
        // result row r takes file row perm[r], which holds HF row gguf_of_hf[perm[r]] == r
        for (r, &p) in perm.iter().enumerate() {
            assert_eq!(gguf_of_hf[p], r);
        }
    }
}
