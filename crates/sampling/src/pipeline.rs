//! The ordered list of logit processors and the public trait users implement.
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use rayon::prelude::*;

use crate::config::GenerationConfig;
use crate::error::SamplingError;
use crate::processors::BuildContext;
use crate::sampler::Sampler;
use crate::GrammarCompiler;

/// What a processor may look at besides the logits.
#[derive(Debug, Clone, Copy)]
pub struct ProcessorContext<'a> {
    /// Per row: the real tokens so far (prompt without padding, then generated tokens).
    pub sequences: &'a [Vec<u32>],
    /// Tokens generated so far (the same for every row; finished rows count their padding).
    pub num_generated: usize,
    /// Current padded length (prompt padded to the longest + generated), transformers' `cur_len`.
    pub cur_len: usize,
}

impl<'a> ProcessorContext<'a> {
    /// The generated tokens of row `b`.
    pub fn generated(&self, b: usize) -> &'a [u32] {
        let s = &self.sequences[b];
        &s[s.len().saturating_sub(self.num_generated)..]
    }
}

/// A logit processor: a pure function of (logits, token history, its config) → logits.
///
/// Implement it to add your own step to a [`LogitsPipeline`] with [`LogitsPipeline::push`].
pub trait LogitsProcessor<B: Backend>: Send + Sync {
    /// Short name for logs and errors.
    fn name(&self) -> &'static str;
    /// # Shapes
    /// - logits: `[batch, vocab]` → `[batch, vocab]`
    fn process(&self, logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2>;
    /// The same function over one row of logits on the host, where the processor has one (see
    /// [`HostRowProcessor`]); `None` (the default) keeps its pipeline on the tensor path.
    fn host(&self) -> Option<&dyn HostRowProcessor> {
        None
    }
}

/// A processor's host body: [`LogitsProcessor::process`] over row `b` of the logits as f32 on the
/// host, in place, giving the same values bit for bit (each is tested against its tensor body).
/// A sampling step reads its logits back to draw anyway; where every processor of a pipeline has
/// one, the chain runs on that one copy, rows in parallel, instead of a few full-vocabulary tensor
/// operations per processor (a 262k vocabulary: 1 MB a row).
pub trait HostRowProcessor: Send + Sync {
    /// # Shapes
    /// - row: `[vocab]`, changed in place
    fn process_row(&self, row: &mut [f32], b: usize, ctx: &ProcessorContext<'_>);
}

/// Processors applied in order.
pub struct LogitsPipeline<B: Backend> {
    head: Vec<Box<dyn LogitsProcessor<B>>>,
    user: Vec<Box<dyn LogitsProcessor<B>>>,
    warpers: Vec<Box<dyn LogitsProcessor<B>>>,
}

impl<B: Backend> Default for LogitsPipeline<B> {
    fn default() -> Self {
        Self { head: vec![], user: vec![], warpers: vec![] }
    }
}

impl<B: Backend> LogitsPipeline<B> {
    /// The pipeline a [`GenerationConfig`] describes (validated first). `eos` are the ids masked
    /// by `min_length`/`min_new_tokens`; `prompt_len` is the padded prompt length.
    pub fn from_config(cfg: &GenerationConfig, eos: &[u32], prompt_len: usize) -> Result<Self, SamplingError> {
        Self::from_config_with(cfg, eos, prompt_len, None)
    }

    /// [`Self::from_config`] with the tokenizer's grammar compiler, which a config with a
    /// `constraint` needs (the constraint is compiled here: a bad one fails before any step).
    pub fn from_config_with(
        cfg: &GenerationConfig,
        eos: &[u32],
        prompt_len: usize,
        grammar: Option<&GrammarCompiler>,
    ) -> Result<Self, SamplingError> {
        cfg.validate()?;
        let ctx = BuildContext { eos, prompt_len, grammar, seed: cfg.seed };
        let (head, warpers) = cfg.processors.build::<B>(&ctx, cfg.is_sampling())?;
        Ok(Self { head, user: vec![], warpers })
    }

    /// Add a user processor (runs after the built-in processors, before the sampling warpers).
    pub fn push(&mut self, processor: Box<dyn LogitsProcessor<B>>) {
        self.user.push(processor);
    }

    /// True when no processor would change the logits.
    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.user.is_empty() && self.warpers.is_empty()
    }

    /// Names in application order.
    pub fn names(&self) -> Vec<&'static str> {
        self.all().map(|p| p.name()).collect()
    }

    fn all(&self) -> impl Iterator<Item = &Box<dyn LogitsProcessor<B>>> {
        self.head.iter().chain(&self.user).chain(&self.warpers)
    }

    /// True when every processor has a host body ([`HostRowProcessor`]), so that
    /// [`Self::apply_host`] can run the chain.
    pub fn has_host_path(&self) -> bool {
        self.all().all(|p| p.host().is_some())
    }

    /// [`Self::apply`] on the logits as host rows (`[batch · vocab]`, row-major), each row through
    /// the whole chain, rows in parallel. Returns false (rows untouched) when some processor has no
    /// host body.
    pub fn apply_host(&self, rows: &mut [f32], vocab: usize, ctx: &ProcessorContext<'_>) -> bool {
        let Some(chain) = self.all().map(|p| p.host()).collect::<Option<Vec<_>>>() else { return false };
        assert!(
            vocab > 0 && rows.len().is_multiple_of(vocab),
            "apply_host: {} values are not rows of {vocab}",
            rows.len()
        );
        rows.par_chunks_mut(vocab).enumerate().for_each(|(b, row)| {
            for p in &chain {
                p.process_row(row, b, ctx);
            }
        });
        true
    }

    /// One sampling step: the logits processed and the next ids drawn, `[batch, 1]` on the device,
    /// with the processed logits when `keep_processed` (for log-probabilities). A multinomial
    /// sampler over a pipeline with a host path reads the logits back once and runs the chain and
    /// the draw on that copy, rows in parallel ([`Self::apply_host`]); otherwise the processors'
    /// tensor bodies and [`Sampler::sample_device`]. Both give the same ids and logits.
    ///
    /// # Shapes
    /// - raw: `[batch, vocab]`
    pub fn process_and_sample(
        &self,
        sampler: &mut Sampler,
        raw: Tensor<B, 2>,
        ctx: &ProcessorContext<'_>,
        keep_processed: bool,
    ) -> (Tensor<B, 2, Int>, Option<Tensor<B, 2>>) {
        if matches!(sampler, Sampler::Multinomial { .. }) && self.has_host_path() {
            let [b, v] = raw.dims();
            let device = raw.device();
            let mut rows = crate::util::host_rows(&raw);
            drop(raw);
            assert!(self.apply_host(&mut rows, v, ctx), "every processor has a host body");
            let ids = crate::sampler::ids_on_device(
                sampler.sample_rows(&rows, v).expect("a multinomial sampler draws on the host"),
                &device,
            );
            let processed = keep_processed.then(|| Tensor::from_data(TensorData::new(rows, [b, v]), &device));
            return (ids, processed);
        }
        let logits = self.apply(raw, ctx);
        let ids = sampler.sample_device(logits.clone());
        (ids, keep_processed.then_some(logits))
    }

    /// Apply every processor in order.
    pub fn apply(&self, mut logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        for p in self.all() {
            logits = p.process(logits, ctx);
        }
        logits
    }
}
