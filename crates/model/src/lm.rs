//! The model seam: what decoding strategies need from a causal language model. `Llama` (every
//! family of the one decoder) implements it; `generate` and every strategy take any
//! implementor, so a draft model can be another model or the same weights in another precision.
use burn::tensor::Tensor;

use crate::config::LlamaConfig;
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::llama::{Llama, StepInput};
use crate::ops::DecodeOps;

/// A causal language model with a KV cache.
pub trait CausalLm<B: DecodeOps> {
    /// Vocabulary, context length, EOS/pad ids.
    fn config(&self) -> &LlamaConfig;
    fn device(&self) -> &B::Device;
    /// A cache for `batch` rows of up to `capacity` positions.
    fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache<B>>;
    /// Logits of the last position of each row.
    ///
    /// # Shapes
    /// - output: `[batch, vocab]`
    fn forward_last(&self, input: &StepInput, cache: Option<&mut KvCache<B>>) -> Result<Tensor<B, 2>>;
    /// Logits of every new position (speculative verification).
    ///
    /// # Shapes
    /// - output: `[batch, seq, vocab]`
    fn forward_all(&self, input: &StepInput, cache: Option<&mut KvCache<B>>) -> Result<Tensor<B, 3>>;
}

impl<B: DecodeOps> CausalLm<B> for Llama<B> {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }
    fn device(&self) -> &B::Device {
        Llama::device(self)
    }
    fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache<B>> {
        Llama::new_cache(self, batch, capacity)
    }
    fn forward_last(&self, input: &StepInput, cache: Option<&mut KvCache<B>>) -> Result<Tensor<B, 2>> {
        Llama::forward_last(self, input, cache)
    }
    fn forward_all(&self, input: &StepInput, cache: Option<&mut KvCache<B>>) -> Result<Tensor<B, 3>> {
        Llama::forward_all(self, input, cache)
    }
}
