//! The model seam: what decoding strategies need from a causal language model. `Llama` (every
//! family of the one decoder) implements it; `generate` and every strategy take any
//! implementor, so a draft model can be another model or the same weights in another precision.
use burn::tensor::Tensor;

use crate::decoder::{Decoder, StepInput};
use crate::error::Result;
use crate::families::ModelConfig;
use crate::kv_cache::KvCache;
use crate::ops::DecodeOps;

/// A causal language model with a KV cache.
pub trait CausalLm<B: DecodeOps> {
    /// Vocabulary, context length, EOS/pad ids.
    fn config(&self) -> &ModelConfig;
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

impl<B: DecodeOps> CausalLm<B> for Decoder<B> {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn device(&self) -> &B::Device {
        Decoder::device(self)
    }
    fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache<B>> {
        Decoder::new_cache(self, batch, capacity)
    }
    fn forward_last(&self, input: &StepInput, cache: Option<&mut KvCache<B>>) -> Result<Tensor<B, 2>> {
        Decoder::forward_last(self, input, cache)
    }
    fn forward_all(&self, input: &StepInput, cache: Option<&mut KvCache<B>>) -> Result<Tensor<B, 3>> {
        Decoder::forward_all(self, input, cache)
    }
}
