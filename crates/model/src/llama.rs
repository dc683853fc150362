//! The Llama decoder: embedding → N × (RMSNorm → attention → RMSNorm → SwiGLU) → RMSNorm → head.
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{s, Bool, Int, Tensor, TensorData};

use crate::attention::{Attention, AttentionConfig};
use crate::batch::attention_mask_data;
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::kv_cache::{KvCache, LayerKv};
use crate::mlp::{Mlp, MlpConfig};
use crate::norm::{RmsNorm, RmsNormConfig};
use crate::rope::{RopeSlice, RotaryEmbedding};

/// One transformer block with HF parameter names.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub self_attn: Attention<B>,
    pub mlp: Mlp<B>,
    pub input_layernorm: RmsNorm<B>,          // gamma [hidden]
    pub post_attention_layernorm: RmsNorm<B>, // gamma [hidden]
}

impl<B: Backend> DecoderLayer<B> {
    /// # Shapes
    /// - x: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeSlice<B>,
        mask: Option<Tensor<B, 4, Bool>>,
        cache: Option<(&mut LayerKv<B>, usize)>,
    ) -> Tensor<B, 3> {
        let h = x.clone() + self.self_attn.forward(self.input_layernorm.forward(x), rope, mask, cache);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

/// All parameters, named like a transformers `LlamaForCausalLM` without the `model.` prefix,
/// so `burn-store` maps HF checkpoints onto it.
#[derive(Module, Debug)]
pub struct LlamaWeights<B: Backend> {
    pub embed_tokens: Embedding<B>, // weight [vocab, hidden]
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,            // gamma [hidden]
    pub lm_head: Option<Linear<B>>,  // weight [hidden, vocab]; None = tied to embed_tokens
}

impl LlamaConfig {
    /// Randomly initialised weights of this shape (loaders overwrite them).
    pub fn init_weights<B: Backend>(&self, device: &B::Device) -> LlamaWeights<B> {
        let layers = (0..self.num_layers)
            .map(|_| DecoderLayer {
                self_attn: AttentionConfig::new(self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim)
                    .with_bias(self.attention_bias)
                    .init(device),
                mlp: MlpConfig::new(self.hidden_size, self.intermediate_size).with_bias(self.mlp_bias).init(device),
                input_layernorm: RmsNormConfig::new(self.hidden_size).with_epsilon(self.rms_norm_eps).init(device),
                post_attention_layernorm: RmsNormConfig::new(self.hidden_size)
                    .with_epsilon(self.rms_norm_eps)
                    .init(device),
            })
            .collect();
        LlamaWeights {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, self.hidden_size).init(device),
            layers,
            norm: RmsNormConfig::new(self.hidden_size).with_epsilon(self.rms_norm_eps).init(device),
            lm_head: (!self.tie_word_embeddings)
                .then(|| LinearConfig::new(self.hidden_size, self.vocab_size).with_bias(false).init(device)),
        }
    }
}

/// Input of one forward call (host data; the model uploads it).
#[derive(Debug, Clone)]
pub struct StepInput {
    pub tokens: Vec<Vec<u32>>,      // [batch, seq]
    pub positions: Vec<Vec<usize>>, // [batch, seq]
    /// Per row, for every key the call attends to (cached + new): is it a real token?
    pub key_valid: Vec<Vec<bool>>,  // [batch, past + seq]
}

/// A ready-to-run Llama model: weights, RoPE tables and config.
#[derive(Debug)]
pub struct Llama<B: Backend> {
    pub weights: LlamaWeights<B>,
    pub config: LlamaConfig,
    rope: RotaryEmbedding<B>,
    device: B::Device,
}

impl<B: Backend> Llama<B> {
    pub fn new(config: LlamaConfig, weights: LlamaWeights<B>, device: &B::Device) -> Self {
        let rope = RotaryEmbedding::new(config.rope_theta, config.head_dim, config.max_position_embeddings, device);
        Self { weights, config, rope, device: device.clone() }
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// A cache for `batch` rows of up to `capacity` positions.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache<B>> {
        KvCache::new(&self.config, batch, capacity, &self.device)
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

    /// Run the decoder; returns the final hidden states (after the last norm).
    ///
    /// # Shapes
    /// - output: `[batch, seq, hidden]`, or `[batch, 1, hidden]` when `last_only`
    fn hidden(&self, input: &StepInput, mut cache: Option<&mut KvCache<B>>, last_only: bool) -> Result<Tensor<B, 3>> {
        let past = cache.as_ref().map_or(0, |c| c.len());
        let (b, t) = self.check_input(input, past)?;
        if let Some(c) = cache.as_ref() {
            if c.batch() != b {
                return Err(ModelError::Input(format!("cache was allocated for batch {}, got {b}", c.batch())));
            }
            c.check_room(t)?;
        }
        let ids: Vec<i64> = input.tokens.iter().flatten().map(|&x| x as i64).collect();
        let pos: Vec<i64> = input.positions.iter().flatten().map(|&x| x as i64).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, t]), &self.device);
        let pos = Tensor::<B, 2, Int>::from_data(TensorData::new(pos, [b, t]), &self.device);
        let rope = self.rope.slice(pos);
        let (kv, rep) = (self.config.num_kv_heads, self.config.kv_groups());
        let keys = past + t;
        let mask = attention_mask_data(&input.key_valid, t, kv, rep).map(|m| {
            Tensor::<B, 4, Bool>::from_data(TensorData::new(m, [b, kv, rep * t, keys]), &self.device)
        });
        let mut x = self.weights.embed_tokens.forward(ids);
        for (i, layer) in self.weights.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| (c.layer_mut(i), past));
            x = layer.forward(x, &rope, mask.clone(), layer_cache);
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        if last_only {
            x = x.slice(s![.., t - 1..t, ..]);
        }
        Ok(self.weights.norm.forward(x))
    }

    fn head(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.weights.lm_head {
            Some(head) => head.forward(x),
            None => x.matmul(self.weights.embed_tokens.weight.val().transpose()),
        }
    }

    /// Logits of the last position only (what decoding needs).
    ///
    /// # Shapes
    /// - output: `[batch, vocab]`
    pub fn forward_last(&self, input: &StepInput, cache: Option<&mut KvCache<B>>) -> Result<Tensor<B, 2>> {
        let x = self.hidden(input, cache, true)?;
        let [b, _, d] = x.dims();
        Ok(self.head(x.reshape([b, d])))
    }

    /// Logits of every position.
    ///
    /// # Shapes
    /// - output: `[batch, seq, vocab]`
    pub fn forward_all(&self, input: &StepInput, cache: Option<&mut KvCache<B>>) -> Result<Tensor<B, 3>> {
        let x = self.hidden(input, cache, false)?;
        let [b, t, d] = x.dims();
        let logits = self.head(x.reshape([b * t, d]));
        Ok(logits.reshape([b, t, self.config.vocab_size]))
    }
}
