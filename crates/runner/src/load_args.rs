//! Flags that choose how weights are stored and computed (shared by generate, bench, soak).
use anyhow::{anyhow, Result};
use clap::Args;
use demiurgic_model::ggml::GgmlType;
use demiurgic_model::{Activations, CacheType, DecodeOps, LoadOptions, WeightMode};

#[derive(Args, Clone, Debug, Default)]
pub struct LoadArgs {
    /// Weight storage: native (keep the GGUF file's quantization where the backend computes on
    /// it: flex on the host; wgpu/cuda on the device for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K; dense f32 otherwise), f32,
    /// or f16 (flex). [default: native]
    #[arg(long, value_name = "native|f32|f16", allow_hyphen_values = true)]
    pub weights: Option<String>,
    /// Quantize linear weights at load (an HF checkpoint on flex): q8_0, q4_0 or q4_1.
    #[arg(long, value_name = "q8_0|q4_0|q4_1", allow_hyphen_values = true)]
    pub quantize: Option<String>,
    /// Activations in linear layers over block weights (flex; Q4_0/Q4_1/Q8_0 everywhere, the
    /// other block types where the CPU has AVX-512 VNNI): f32 (exact), int16 (quantized per block
    /// of 32, integer dot products; within float noise of f32) or int8 (as llama.cpp: fastest, not
    /// exact). [default: int16 for GGUF files on flex, f32 otherwise]
    #[arg(long, value_name = "f32|int16|int8", allow_hyphen_values = true)]
    pub activations: Option<String>,
    /// How the KV cache stores keys and values, as llama.cpp's -ctk/-ctv: f32 (exact), f16 (half
    /// the bytes; llama.cpp's default) or q8_0 (blocks of 32 signed bytes and an f16 scale: 0.27x
    /// f32's bytes). f16 and q8_0 on flex. [default: f16 on flex, f32 otherwise]
    #[arg(long, value_name = "f32|f16|q8_0", allow_hyphen_values = true)]
    pub cache_type: Option<String>,
}

impl LoadArgs {
    /// The load options for backend `B` named `backend`; errors name the flag, value and choices.
    pub fn options<B: DecodeOps>(&self, backend: &str, is_gguf: bool) -> Result<LoadOptions> {
        let weights: WeightMode = match &self.weights {
            Some(w) => w.parse().map_err(|e: String| anyhow!(e))?,
            None => WeightMode::Native,
        };
        let quantize = match self.quantize.as_deref() {
            None => None,
            Some("q8_0") => Some(GgmlType::Q8_0),
            Some("q4_0") => Some(GgmlType::Q4_0),
            Some("q4_1") => Some(GgmlType::Q4_1),
            Some(o) => return Err(anyhow!("--quantize {o:?} is unknown (allowed: q8_0, q4_0, q4_1)")),
        };
        let activations = match &self.activations {
            Some(a) => a.parse().map_err(|e: String| anyhow!(e))?,
            None if B::host_weights() && (is_gguf || quantize.is_some()) && weights == WeightMode::Native => {
                Activations::Int16
            }
            None => Activations::F32,
        };
        let cache = match &self.cache_type {
            Some(c) => c.parse().map_err(|e: String| anyhow!(e))?,
            None if B::cache_types().contains(&CacheType::F16) => CacheType::F16,
            None => CacheType::F32,
        };
        let opts = LoadOptions { weights, quantize, activations, cache };
        opts.check::<B>(backend)?;
        Ok(opts)
    }
}
