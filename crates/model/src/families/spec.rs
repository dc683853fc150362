//! What a family file builds: the validated [`ModelConfig`] of a checkpoint — sizes, special
//! ids, and one [`LayerSpec`] per layer (norm placement, activation, q/k norm, biases, RoPE table,
//! attention window, scale and softcap) — and the [`Family`] descriptor (names, tensor names,
//! parsers). The decoder and [`DecodeOps`](crate::ops::DecodeOps) compute from these, never
//! from a family name.
use crate::config::HfConfig;
use crate::error::{cfg_err, Result};
use crate::load::gguf::reader::GgufFile;

/// One model family: how its HF config and GGUF metadata become a [`ModelConfig`], and the
/// tensor names where they differ from Llama's.
pub struct Family {
    /// `llama`, `qwen2`, …
    pub name: &'static str,
    /// HF `architectures[0]` and `model_type` values, GGUF `general.architecture` values.
    pub aliases: &'static [&'static str],
    pub from_hf: fn(&HfConfig, &str) -> Result<ModelConfig>,
    pub from_gguf: fn(&GgufFile) -> Result<ModelConfig>,
    /// Tensor names that differ from the Llama layout: (part, HF name in the layer, GGUF name).
    pub tensor_names: &'static [(Part, &'static str, &'static str)],
    /// GGUF files store Q/K rows in llama.cpp's interleaved-RoPE order (its `llama` arch).
    pub gguf_permuted_qk: bool,
    /// HF norm weights `w` are applied as `1 + w` (Gemma); GGUF files store `1 + w` already.
    pub hf_norm_plus_one: bool,
}

impl PartialEq for Family {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl std::fmt::Debug for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Family({})", self.name)
    }
}

/// The tensor names of a checkpoint format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// transformers (`model.layers.0.self_attn.q_proj.weight`).
    Hf,
    /// llama.cpp (`blk.0.attn_q.weight`).
    Gguf,
}

/// The weight tensors of the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Embed,
    FinalNorm,
    Head,
    AttnNorm,
    Q,
    K,
    V,
    O,
    /// Per-head RMSNorm of queries / keys (Qwen3, Gemma 3).
    QNorm,
    KNorm,
    /// Norm of the attention output before the residual (Gemma's sandwich norms).
    PostAttnNorm,
    /// The norm before the MLP.
    MlpNorm,
    /// Norm of the MLP output before the residual (Gemma).
    PostMlpNorm,
    Gate,
    Up,
    Down,
    /// Fused q/k/v rows (Phi-3's `qkv_proj`, GGUF `attn_qkv`).
    Qkv,
    /// Fused gate/up rows (Phi-3's `gate_up_proj`; GGUF phi3's `ffn_up` of twice the width).
    GateUp,
    /// The router of a sparse MoE layer (`[experts, hidden]`).
    Router,
    /// One expert's projections (HF: one tensor per expert; GGUF: one `[experts, rows, cols]`
    /// tensor per projection).
    ExpertGate,
    ExpertUp,
    ExpertDown,
}

impl Part {
    /// Llama's names: (HF name in the layer, GGUF name).
    fn llama_names(self) -> (&'static str, &'static str) {
        match self {
            Part::Embed => ("model.embed_tokens", "token_embd"),
            Part::FinalNorm => ("model.norm", "output_norm"),
            Part::Head => ("lm_head", "output"),
            Part::AttnNorm => ("input_layernorm", "attn_norm"),
            Part::Q => ("self_attn.q_proj", "attn_q"),
            Part::K => ("self_attn.k_proj", "attn_k"),
            Part::V => ("self_attn.v_proj", "attn_v"),
            Part::O => ("self_attn.o_proj", "attn_output"),
            Part::QNorm => ("self_attn.q_norm", "attn_q_norm"),
            Part::KNorm => ("self_attn.k_norm", "attn_k_norm"),
            Part::PostAttnNorm => ("post_attention_norm", "post_attention_norm"),
            Part::MlpNorm => ("post_attention_layernorm", "ffn_norm"),
            Part::PostMlpNorm => ("post_feedforward_layernorm", "post_ffw_norm"),
            Part::Gate => ("mlp.gate_proj", "ffn_gate"),
            Part::Up => ("mlp.up_proj", "ffn_up"),
            Part::Down => ("mlp.down_proj", "ffn_down"),
            Part::Qkv => ("self_attn.qkv_proj", "attn_qkv"),
            Part::GateUp => ("mlp.gate_up_proj", "ffn_up"),
            Part::Router => ("mlp.gate", "ffn_gate_inp"),
            Part::ExpertGate => ("mlp.experts.{e}.gate_proj", "ffn_gate_exps"),
            Part::ExpertUp => ("mlp.experts.{e}.up_proj", "ffn_up_exps"),
            Part::ExpertDown => ("mlp.experts.{e}.down_proj", "ffn_down_exps"),
        }
    }

    fn global(self) -> bool {
        matches!(self, Part::Embed | Part::FinalNorm | Part::Head)
    }
}

impl Family {
    /// The checkpoint name of `part` (of layer `i`) with the suffix `weight` or `bias`; an
    /// expert's HF name has its index where the name says `{e}` (see [`Family::expert_name`]).
    pub fn tensor_name(&self, naming: Naming, part: Part, i: usize, suffix: &str) -> String {
        let (hf, gguf) = self
            .tensor_names
            .iter()
            .find(|(p, _, _)| *p == part)
            .map_or_else(|| part.llama_names(), |&(_, h, g)| (h, g));
        match (naming, part.global()) {
            (Naming::Hf, true) => format!("{hf}.{suffix}"),
            (Naming::Gguf, true) => format!("{gguf}.{suffix}"),
            (Naming::Hf, false) => format!("model.layers.{i}.{hf}.{suffix}"),
            (Naming::Gguf, false) => format!("blk.{i}.{gguf}.{suffix}"),
        }
    }

    /// The weight of expert `e`'s `part` in layer `i`: its own tensor (HF), or the one stacked
    /// tensor of every expert (GGUF; the caller takes slab `e`).
    pub fn expert_name(&self, naming: Naming, part: Part, i: usize, e: usize) -> String {
        self.tensor_name(naming, part, i, "weight").replace("{e}", &e.to_string())
    }
}

/// How RoPE frequencies are scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    None,
    /// `linear`: positions divided by `factor` (inverse frequencies divided by it).
    Linear {
        factor: f64,
    },
    /// Llama 3.x: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// llama.cpp's per-dimension frequency divisors (GGUF `rope_freqs.weight`).
    FreqFactors,
}

/// One RoPE table (HF half-split rotation over the whole head).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSpec {
    pub theta: f64,
    pub scaling: RopeScaling,
    /// Per-dimension frequency divisors (with [`RopeScaling::FreqFactors`]).
    pub freq_factors: Option<Vec<f32>>,
}

impl RopeSpec {
    pub fn plain(theta: f64) -> Self {
        Self { theta, scaling: RopeScaling::None, freq_factors: None }
    }

    /// Inverse frequencies (`head_dim / 2`), with the scaling, as transformers computes them.
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f32> {
        let inv = crate::rope::default_inv_freq(self.theta, head_dim);
        match self.scaling {
            RopeScaling::None => inv,
            RopeScaling::Linear { factor } => inv.iter().map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                crate::rope::llama3_inv_freq(
                    &inv,
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings,
                )
            }
            RopeScaling::FreqFactors => match &self.freq_factors {
                Some(ff) => inv.iter().zip(ff).map(|(f, d)| f / d).collect(),
                None => inv,
            },
        }
    }
}

/// The activation of the gated MLP: `down(act(gate) · up)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU (`silu`).
    Silu,
    /// GeGLU with the tanh approximation (`gelu_pytorch_tanh`).
    GeluTanh,
}

/// A sparse mixture-of-experts feed-forward block (Qwen3-MoE): a router scores `experts` gated
/// MLPs of width `intermediate`, each token runs through its `top_k` best, their outputs weighed
/// by the router's softmax probabilities (renormalised over the chosen ones when
/// `norm_topk_prob`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeSpec {
    pub experts: usize,
    pub top_k: usize,
    pub intermediate: usize,
    pub norm_topk_prob: bool,
}

/// How one decoder layer computes.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    /// Sliding-window attention: a query sees at most this many keys (itself included).
    pub window: Option<usize>,
    /// Index into [`ModelConfig::ropes`].
    pub rope: usize,
    /// Attention scores are `q·k · scale` (default `1/√head_dim`).
    pub attn_scale: f64,
    /// Scores capped as `cap · tanh(s / cap)` before the softmax.
    pub attn_softcap: Option<f64>,
    /// Per-head RMSNorm of q and k before RoPE.
    pub qk_norm: bool,
    /// Biases on the q/k/v projections, the output projection, the MLP projections.
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Norms of the attention and MLP outputs before their residual adds (Gemma).
    pub sandwich_norms: bool,
    pub act: Activation,
    /// A sparse MoE block instead of the dense MLP.
    pub moe: Option<MoeSpec>,
}

impl LayerSpec {
    /// Llama's layer: SwiGLU, no bias, full attention with the first RoPE table.
    pub fn llama(head_dim: usize) -> Self {
        Self {
            window: None,
            rope: 0,
            attn_scale: 1.0 / (head_dim as f64).sqrt(),
            attn_softcap: None,
            qk_norm: false,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            sandwich_norms: false,
            act: Activation::Silu,
            moe: None,
        }
    }
}

impl LayerSpec {
    /// What this layer computes, in words (for `demiurgic info`).
    pub fn describe(&self, rope: &RopeSpec, head_dim: usize) -> String {
        let mut parts = vec![match self.window {
            Some(w) => format!("attention within {w} keys"),
            None => "full attention".to_string(),
        }];
        let scaling = match rope.scaling {
            RopeScaling::None => String::new(),
            RopeScaling::Linear { factor } => format!(" linear ×{factor}"),
            RopeScaling::Llama3 { factor, .. } => format!(" llama3 ×{factor}"),
            RopeScaling::FreqFactors => " with frequency factors".to_string(),
        };
        parts.push(format!("RoPE θ {}{scaling}", rope.theta));
        if (self.attn_scale - 1.0 / (head_dim as f64).sqrt()).abs() > 1e-12 {
            parts.push(format!("score scale {}", self.attn_scale));
        }
        if let Some(c) = self.attn_softcap {
            parts.push(format!("score softcap {c}"));
        }
        if self.qk_norm {
            parts.push("q/k norm".into());
        }
        if self.sandwich_norms {
            parts.push("post-attention and post-MLP norms".into());
        }
        let biases: Vec<&str> = [(self.qkv_bias, "q/k/v"), (self.o_bias, "output"), (self.mlp_bias, "MLP")]
            .iter()
            .filter(|(b, _)| *b)
            .map(|(_, n)| *n)
            .collect();
        if !biases.is_empty() {
            parts.push(format!("{} biases", biases.join(", ")));
        }
        let act = match self.act {
            Activation::Silu => "SwiGLU",
            Activation::GeluTanh => "GeGLU (tanh GELU)",
        };
        parts.push(match self.moe {
            Some(m) => format!(
                "{} of {} {act} experts of width {} per token{}",
                m.top_k,
                m.experts,
                m.intermediate,
                if m.norm_topk_prob { " (weights renormalised)" } else { "" }
            ),
            None => act.into(),
        });
        parts.join(", ")
    }
}

/// Validated configuration of a decoder, built by a family file.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub family: &'static Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// One per layer.
    pub layers: Vec<LayerSpec>,
    /// The RoPE tables the layers index.
    pub ropes: Vec<RopeSpec>,
    /// Embedding rows are multiplied by this (Gemma: `√hidden` in the weights' dtype).
    pub embed_scale: Option<f32>,
    /// Final logits capped as `cap · tanh(l / cap)`.
    pub final_softcap: Option<f64>,
}

impl ModelConfig {
    /// A Llama config of these sizes (every layer [`LayerSpec::llama`], one plain RoPE table):
    /// what family files start from, and what synthetic test models use.
    #[allow(clippy::too_many_arguments)]
    pub fn llama(
        family: &'static Family,
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_layers: usize,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
        max_position_embeddings: usize,
    ) -> Self {
        Self {
            family,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            max_position_embeddings,
            rms_norm_eps: 1e-5,
            tie_word_embeddings: false,
            bos_token_id: None,
            eos_token_ids: vec![],
            pad_token_id: None,
            layers: vec![LayerSpec::llama(head_dim); num_layers],
            ropes: vec![RopeSpec::plain(10_000.0)],
            embed_scale: None,
            final_softcap: None,
        }
    }

    /// The kinds of layer this model has, each with how many layers are of it (first-seen
    /// order), in words: `"15 × attention within 512 keys, RoPE θ 10000, q/k norm, …"`.
    pub fn layer_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<(String, usize)> = vec![];
        for l in &self.layers {
            let d = l.describe(&self.ropes[l.rope], self.head_dim);
            match kinds.iter_mut().find(|(k, _)| *k == d) {
                Some((_, n)) => *n += 1,
                None => kinds.push((d, 1)),
            }
        }
        kinds.into_iter().map(|(k, n)| format!("{n} × {k}")).collect()
    }

    /// Set something on every layer.
    pub fn each_layer(&mut self, f: impl Fn(&mut LayerSpec)) {
        self.layers.iter_mut().for_each(f);
    }

    /// The sliding window shared by every windowed layer (`None` when no layer has one).
    pub fn sliding_window(&self) -> Option<usize> {
        self.layers.iter().find_map(|l| l.window)
    }

    /// Number of parameters (embedding counted once when tied).
    pub fn parameter_count(&self) -> usize {
        let (d, hd) = (self.hidden_size, self.head_dim);
        let attn = d * self.num_heads * hd * 2 + d * self.num_kv_heads * hd * 2;
        let mlp = |l: &LayerSpec| match l.moe {
            Some(m) => m.experts * (3 * d * m.intermediate + d),
            None => 3 * d * self.intermediate_size,
        };
        let norms =
            |l: &LayerSpec| 2 * d + if l.sandwich_norms { 2 * d } else { 0 } + if l.qk_norm { 2 * hd } else { 0 };
        let layers: usize = self.layers.iter().map(|l| attn + mlp(l) + norms(l)).sum();
        let embed = self.vocab_size * d;
        layers + embed + d + if self.tie_word_embeddings { 0 } else { embed }
    }

    /// Number of query heads sharing one key/value head.
    pub fn kv_groups(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// Check every invariant the model relies on; errors name the field and value.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(cfg_err(origin, format!("{name} must be > 0, got 0")));
            }
        }
        const LIMIT: usize = 1 << 24;
        for (name, v) in positive {
            if v > LIMIT {
                return Err(cfg_err(origin, format!("{name} = {v} is implausibly large (limit {LIMIT})")));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(cfg_err(
                origin,
                format!(
                    "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                    self.num_heads, self.num_kv_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(cfg_err(origin, format!("head_dim must be even for RoPE, got {}", self.head_dim)));
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            return Err(cfg_err(origin, format!("rms_norm_eps must be > 0, got {}", self.rms_norm_eps)));
        }
        if self.layers.len() != self.num_layers {
            return Err(cfg_err(
                origin,
                format!("{} layer descriptions for {} layers", self.layers.len(), self.num_layers),
            ));
        }
        for (i, l) in self.layers.iter().enumerate() {
            if l.window == Some(0) {
                return Err(cfg_err(origin, "sliding_window must be > 0, got 0"));
            }
            if l.rope >= self.ropes.len() {
                return Err(cfg_err(origin, format!("layer {i} uses RoPE table {} of {}", l.rope, self.ropes.len())));
            }
            if !(l.attn_scale > 0.0 && l.attn_scale.is_finite()) {
                return Err(cfg_err(origin, format!("attention scale must be > 0, got {}", l.attn_scale)));
            }
            if l.attn_softcap.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
                return Err(cfg_err(origin, format!("attn_logit_softcapping must be > 0, got {:?}", l.attn_softcap)));
            }
            if let Some(m) = l.moe {
                if m.experts == 0 || m.intermediate == 0 {
                    return Err(cfg_err(
                        origin,
                        format!(
                            "layer {i}: num_experts ({}) and moe_intermediate_size ({}) must be > 0",
                            m.experts, m.intermediate
                        ),
                    ));
                }
                if m.top_k == 0 || m.top_k > m.experts {
                    return Err(cfg_err(
                        origin,
                        format!("num_experts_per_tok must be in 1..={} (num_experts), got {}", m.experts, m.top_k),
                    ));
                }
            }
        }
        if self.final_softcap.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
            return Err(cfg_err(origin, format!("final_logit_softcapping must be > 0, got {:?}", self.final_softcap)));
        }
        for r in &self.ropes {
            if let Some(ff) = &r.freq_factors {
                if ff.len() != self.head_dim / 2 || ff.iter().any(|f| !(*f > 0.0 && f.is_finite())) {
                    return Err(cfg_err(
                        origin,
                        format!("rope frequency factors: {} positive values needed (head_dim / 2)", self.head_dim / 2),
                    ));
                }
            }
            if !(r.theta > 0.0 && r.theta.is_finite()) {
                return Err(cfg_err(origin, format!("rope_theta must be > 0, got {}", r.theta)));
            }
        }
        let ids = self.bos_token_id.iter().chain(self.pad_token_id.iter()).chain(self.eos_token_ids.iter());
        for &id in ids {
            if id as usize >= self.vocab_size {
                return Err(cfg_err(
                    origin,
                    format!("special token id {id} is outside the vocabulary (vocab_size {})", self.vocab_size),
                ));
            }
        }
        Ok(())
    }
}
