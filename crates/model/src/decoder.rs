//! The one decoder of every family: embedding (scaled where the family says) → N × (RMSNorm →
//! attention → [RMSNorm] → residual → RMSNorm → gated MLP or sparse MoE → [RMSNorm] → residual) → RMSNorm →
//! head (→ softcap), each layer computed as its [`LayerSpec`](crate::families::LayerSpec)
//! describes. Every hot operation goes through the backend's [`DecodeOps`].
use burn::tensor::{s, Tensor};

use crate::attention::Attention;
use crate::error::{ModelError, Result};
use crate::families::ModelConfig;
use crate::ffn::Ffn;
use crate::kv_cache::{CacheType, KvCache, LayerKv};
use crate::norm::RmsNorm;
use crate::ops::{DecodeOps, Linear, Matrix, Step};
use crate::profile::{time, Op};
use crate::rope::RotaryEmbedding;

/// One transformer block.
#[derive(Debug, Clone)]
pub struct DecoderLayer<B: DecodeOps> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    /// Norm of the attention output (Gemma's sandwich norms).
    pub post_attention_norm: Option<RmsNorm<B>>,
    /// The norm before the MLP (HF Llama's `post_attention_layernorm`).
    pub mlp_norm: RmsNorm<B>,
    pub mlp: Ffn<B>,
    /// Norm of the MLP output (Gemma).
    pub post_mlp_norm: Option<RmsNorm<B>>,
}

impl<B: DecodeOps> DecoderLayer<B> {
    /// # Shapes
    /// - x: `[batch·seq, hidden]` → `[batch·seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        step: &Step<B>,
        ropes: &[RotaryEmbedding<B>],
        cache: Option<&mut LayerKv<B>>,
    ) -> Tensor<B, 2> {
        // residual adds fused into the output projections, except after a sandwich norm
        let res = self.post_attention_norm.is_none().then(|| x.clone());
        let a = self.self_attn.forward(x.clone(), &self.input_layernorm, step, ropes, cache, res);
        let h = match &self.post_attention_norm {
            Some(n) => {
                let a = n.forward(a);
                time(Op::Residual, || x + a)
            }
            None => a,
        };
        let res = self.post_mlp_norm.is_none().then(|| h.clone());
        let m = self.mlp.forward(h.clone(), &self.mlp_norm, res);
        match &self.post_mlp_norm {
            Some(n) => {
                let m = n.forward(m);
                time(Op::Residual, || h + m)
            }
            None => m,
        }
    }
}

/// Every weight of the decoder, as the loaders build them.
#[derive(Debug, Clone)]
pub struct DecoderWeights<B: DecodeOps> {
    pub embed_tokens: Matrix<B>, // [vocab, hidden]
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
    /// The output projection `[vocab, hidden]` (for tied embeddings, the embedding matrix).
    pub lm_head: Linear<B>,
}

impl<B: DecodeOps> DecoderWeights<B> {
    /// Bytes of every weight (as stored: quantized blocks count their real size).
    pub fn bytes(&self, tied: bool) -> usize {
        let lin = |l: &Linear<B>| l.weight.bytes() + l.bias.as_ref().map_or(0, |b| b.dims()[0] * 4);
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                lin(&l.self_attn.qkv)
                    + lin(&l.self_attn.o_proj)
                    + l.mlp.linears().into_iter().map(|(_, m)| lin(m)).sum::<usize>()
                    + [
                        Some(&l.input_layernorm),
                        l.post_attention_norm.as_ref(),
                        Some(&l.mlp_norm),
                        l.post_mlp_norm.as_ref(),
                    ]
                    .into_iter()
                    .chain(l.self_attn.qk_norm.iter().flat_map(|(q, k)| [Some(q), Some(k)]))
                    .flatten()
                    .map(|n| 4 * n.gamma.dims()[0])
                    .sum::<usize>()
            })
            .sum();
        layers + self.embed_tokens.bytes() + if tied { 0 } else { lin(&self.lm_head) } + 4 * self.norm.gamma.dims()[0]
    }

    /// Bytes read from weights per decoded token: every layer (the experts a token uses) and the
    /// head (the embedding contributes one row).
    pub fn bytes_per_token(&self) -> usize {
        let lin = |l: &Linear<B>| l.weight.bytes();
        let layers: usize = self
            .layers
            .iter()
            .map(|l| lin(&l.self_attn.qkv) + lin(&l.self_attn.o_proj) + l.mlp.bytes_per_token())
            .sum();
        layers + lin(&self.lm_head)
    }

    /// The storage of each weight kind: `("qkv", "Q4_1")`, …, de-duplicated.
    pub fn storage_summary(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = vec![];
        let mut add = |name: &str, kind: String| {
            if !out.iter().any(|(n, k)| n == name && *k == kind) {
                out.push((name.to_string(), kind));
            }
        };
        for l in &self.layers {
            add("attn_qkv", l.self_attn.qkv.weight.kind());
            add("attn_output", l.self_attn.o_proj.weight.kind());
            for (name, m) in l.mlp.linears() {
                add(name, m.weight.kind());
            }
        }
        add("token_embd", self.embed_tokens.kind());
        add("output", self.lm_head.weight.kind());
        out
    }
}

/// Input of one forward call (host data; the model uploads what its backend needs).
#[derive(Debug, Clone)]
pub struct StepInput {
    pub tokens: Vec<Vec<u32>>,      // [batch, seq]
    pub positions: Vec<Vec<usize>>, // [batch, seq]
    /// Per row, for every key the call attends to (cached + new): is it a real token?
    pub key_valid: Vec<Vec<bool>>, // [batch, past + seq]
}

/// A ready-to-run model of any family: weights, RoPE tables and config.
#[derive(Debug)]
pub struct Decoder<B: DecodeOps> {
    pub weights: DecoderWeights<B>,
    pub config: ModelConfig,
    ropes: Vec<RotaryEmbedding<B>>,
    device: B::Device,
    cache_type: CacheType,
}

impl<B: DecodeOps> Decoder<B> {
    pub fn new(config: ModelConfig, weights: DecoderWeights<B>, device: &B::Device) -> Self {
        let ropes = config
            .ropes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                RotaryEmbedding::from_inv_freq(r.inv_freq(config.head_dim), config.max_position_embeddings, device)
                    .with_key(i)
            })
            .collect();
        Self { weights, config, ropes, device: device.clone(), cache_type: CacheType::F32 }
    }

    /// Store keys and values of the caches this model makes ([`Self::new_cache`]) as `ty`;
    /// refused when the backend's attention does not read it or the head dim does not fit it.
    pub fn set_cache_type(&mut self, ty: CacheType) -> Result<()> {
        if !B::cache_types().contains(&ty) {
            return Err(ModelError::Input(format!("this backend's attention does not read a {ty} KV cache")));
        }
        ty.check(self.config.head_dim)?;
        self.cache_type = ty;
        Ok(())
    }

    /// How the caches of [`Self::new_cache`] store keys and values.
    pub fn cache_type(&self) -> CacheType {
        self.cache_type
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// A cache for `batch` rows of up to `capacity` positions.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache<B>> {
        KvCache::with_type(&self.config, batch, capacity, &self.device, self.cache_type)
    }

    fn check_input(&self, input: &StepInput, past: usize) -> Result<(usize, usize)> {
        let b = input.tokens.len();
        if b == 0 {
            return Err(ModelError::Input("empty batch".into()));
        }
        let t = input.tokens[0].len();
        if t == 0 {
            return Err(ModelError::Input("empty sequence: at least one token is needed".into()));
        }
        for (i, row) in input.tokens.iter().enumerate() {
            if row.len() != t || input.positions.get(i).map(Vec::len) != Some(t) {
                return Err(ModelError::Input(format!("row {i}: tokens/positions lengths differ from row 0 ({t})")));
            }
            if input.key_valid.get(i).map(Vec::len) != Some(past + t) {
                return Err(ModelError::Input(format!("row {i}: key mask must cover {} keys", past + t)));
            }
            if let Some(&bad) = row.iter().find(|&&id| id as usize >= self.config.vocab_size) {
                return Err(ModelError::Input(format!(
                    "token id {bad} is outside the vocabulary (0..{})",
                    self.config.vocab_size
                )));
            }
            if let Some(&p) = input.positions[i].iter().find(|&&p| p >= self.config.max_position_embeddings) {
                return Err(ModelError::Input(format!(
                    "position {p} is beyond the model's context length {}",
                    self.config.max_position_embeddings
                )));
            }
        }
        Ok((b, t))
    }

    /// Run the decoder; returns the last layer's hidden states (before the final norm: [`Self::head`]).
    ///
    /// # Shapes
    /// - output: `[batch·seq, hidden]`, or `[batch, hidden]` when `last_only`
    fn hidden(&self, input: &StepInput, mut cache: Option<&mut KvCache<B>>, last_only: bool) -> Result<Tensor<B, 2>> {
        let past = cache.as_ref().map_or(0, |c| c.len());
        let (b, t) = self.check_input(input, past)?;
        if let Some(c) = cache.as_ref() {
            if c.batch() != b {
                return Err(ModelError::Input(format!("cache was allocated for batch {}, got {b}", c.batch())));
            }
            c.check_room(t)?;
        }
        let step = Step::<B>::new(
            b,
            t,
            past,
            input.tokens.iter().flatten().copied().collect(),
            input.positions.iter().flatten().copied().collect(),
            Some(input.key_valid.clone()),
            &self.device,
        );
        let mut x = time(Op::Embed, || B::embed(&step.tokens, &self.weights.embed_tokens, &self.device));
        if let Some(s) = self.config.embed_scale {
            x = x * s;
        }
        for (i, layer) in self.weights.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| c.layer_mut(i));
            x = layer.forward(x, &step, &self.ropes, layer_cache);
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        if last_only && t > 1 {
            let d = self.config.hidden_size;
            x = x.reshape([b, t, d]).slice(s![.., t - 1..t, ..]).reshape([b, d]);
        }
        Ok(x)
    }

    /// The final norm and the head over hidden states (one fused launch where the backend has it).
    ///
    /// # Shapes
    /// - x: `[rows, hidden]` → `[rows, vocab]`
    fn head(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let norm = &self.weights.norm;
        self.softcap(time(Op::Head, || B::norm_linear(x, &norm.gamma, norm.eps, &self.weights.lm_head, None)))
    }

    /// Logits of the last position only (what decoding needs).
    ///
    /// # Shapes
    /// - output: `[batch, vocab]`
    pub fn forward_last(&self, input: &StepInput, cache: Option<&mut KvCache<B>>) -> Result<Tensor<B, 2>> {
        B::run_step(|| {
            let x = self.hidden(input, cache, true)?;
            Ok(self.head(x))
        })
    }

    /// Logits of every position.
    ///
    /// # Shapes
    /// - output: `[batch, seq, vocab]`
    pub fn forward_all(&self, input: &StepInput, cache: Option<&mut KvCache<B>>) -> Result<Tensor<B, 3>> {
        let (b, t) = (input.tokens.len(), input.tokens.first().map_or(0, Vec::len));
        B::run_step(|| {
            let x = self.hidden(input, cache, false)?;
            let logits = self.head(x);
            Ok(logits.reshape([b, t, self.config.vocab_size]))
        })
    }

    /// `cap · tanh(logits / cap)` where the family caps its final logits.
    fn softcap(&self, logits: Tensor<B, 2>) -> Tensor<B, 2> {
        match self.config.final_softcap {
            Some(cap) => (logits / cap).tanh() * cap,
            None => logits,
        }
    }
}
