//! The contract between [`crate::generate`] and the strategies: the options a generation can
//! set, what each strategy declares about them, and the check that refuses an option a strategy
//! cannot honour — by name, before any work.
use demiurgic_sampling::GenerationConfig;

use super::types::{GenerateOptions, GenerationOutput};
use crate::error::{ModelError, Result};
use crate::lm::CausalLm;
use crate::ops::DecodeOps;

/// An option of a generation that not every strategy can honour. Logit processors (penalties,
/// biases, bans, DRY, …) are not listed: every strategy runs the whole processor pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenOption {
    /// Mirostat 2.0 (a sampler with per-row state).
    Mirostat,
    /// Multinomial sampling (`do_sample` with a temperature > 0) and its warpers.
    Sampling,
    Logprobs,
    TopLogprobs,
    /// Log-probabilities of the raw logits instead of the processed ones.
    RawLogprobs,
    /// Stop strings.
    Stop,
    /// A user stopping criterion on the generated ids ([`GenerateOptions::stop_check`]).
    StopCheck,
    /// Several returned sequences per prompt.
    NumReturnSequences,
    /// Several prompts in one call.
    Batch,
    /// Explicit per-row seeds ([`GenerateOptions::seeds`]).
    Seeds,
    /// Continue a KV cache passed in ([`GenerateOptions::cache`], multi-turn chat).
    Cache,
    /// Recompute the whole sequence every step ([`GenerateOptions::use_cache`] = false).
    NoCache,
    /// Structured generation (JSON schema, regex, grammar, choice).
    Constraint,
    /// User processors ([`GenerateOptions::pipeline_hook`]).
    PipelineHook,
    /// Tokens reported as they are decided ([`GenerateOptions::on_step`], streaming).
    Streaming,
}

impl GenOption {
    /// In the order options are checked (the first refused one is named): Mirostat before
    /// sampling, which it implies.
    pub const ALL: [GenOption; 15] = [
        GenOption::Mirostat,
        GenOption::Sampling,
        GenOption::Logprobs,
        GenOption::TopLogprobs,
        GenOption::RawLogprobs,
        GenOption::Stop,
        GenOption::StopCheck,
        GenOption::NumReturnSequences,
        GenOption::Batch,
        GenOption::Seeds,
        GenOption::Cache,
        GenOption::NoCache,
        GenOption::Constraint,
        GenOption::PipelineHook,
        GenOption::Streaming,
    ];

    /// The config field or [`GenerateOptions`] field that sets it (the name errors use).
    pub fn field(self) -> &'static str {
        match self {
            GenOption::Sampling => "do_sample",
            GenOption::Mirostat => "mirostat",
            GenOption::Logprobs => "logprobs",
            GenOption::TopLogprobs => "top_logprobs",
            GenOption::RawLogprobs => "raw_logprobs",
            GenOption::Stop => "stop",
            GenOption::StopCheck => "stop_check",
            GenOption::NumReturnSequences => "num_return_sequences",
            GenOption::Batch => "prompts",
            GenOption::Seeds => "seeds",
            GenOption::Cache => "cache",
            GenOption::NoCache => "use_cache",
            GenOption::Constraint => "constraint",
            GenOption::PipelineHook => "pipeline_hook",
            GenOption::Streaming => "on_step",
        }
    }

    /// Whether this generation sets it.
    pub fn is_set<B: DecodeOps>(
        self,
        config: &GenerationConfig,
        opts: &GenerateOptions<'_, B>,
        prompts: usize,
    ) -> bool {
        match self {
            GenOption::Sampling => config.is_sampling(),
            GenOption::Mirostat => config.is_sampling() && config.processors.mirostat.is_on(),
            GenOption::Logprobs => config.logprobs,
            GenOption::TopLogprobs => config.top_logprobs > 0,
            GenOption::RawLogprobs => config.raw_logprobs && (config.logprobs || config.top_logprobs > 0),
            GenOption::Stop => opts.stops.is_some() || !config.stop.is_empty(),
            GenOption::StopCheck => opts.stop_check.is_some(),
            GenOption::NumReturnSequences => config.num_return_sequences > 1,
            GenOption::Batch => prompts > 1,
            GenOption::Seeds => opts.seeds.is_some(),
            GenOption::Cache => opts.cache.is_some(),
            GenOption::NoCache => !opts.use_cache,
            GenOption::Constraint => config.processors.constraint.constraint.is_some(),
            GenOption::PipelineHook => opts.pipeline_hook.is_some(),
            GenOption::Streaming => opts.on_step.is_some(),
        }
    }
}

/// One generation as a strategy receives it.
pub struct Job<'j, 'o, B: DecodeOps, M: CausalLm<B> + ?Sized> {
    pub model: &'j M,
    pub prompts: &'j [Vec<u32>],
    pub config: &'j GenerationConfig,
    pub opts: GenerateOptions<'o, B>,
}

/// A decoding strategy: its name, the options it refuses (with the reason), and its run.
pub trait Strategy {
    /// As errors and the README's table say it.
    const NAME: &'static str;
    /// The options it cannot honour and why; every other [`GenOption`] is honoured.
    const REFUSES: &'static [(GenOption, &'static str)];

    /// Run it; `job.config` is validated with its seed resolved, and no refused option is set.
    fn run<B: DecodeOps, M: CausalLm<B> + ?Sized>(job: Job<'_, '_, B, M>) -> Result<GenerationOutput>;

    /// None when honoured, else why not.
    fn refusal(option: GenOption) -> Option<&'static str> {
        Self::REFUSES.iter().find(|(o, _)| *o == option).map(|(_, why)| *why)
    }

    /// Refuse the first option set that this strategy cannot honour, naming it.
    fn check<B: DecodeOps>(config: &GenerationConfig, opts: &GenerateOptions<'_, B>, prompts: usize) -> Result<()> {
        for o in GenOption::ALL {
            if let Some(why) = Self::refusal(o).filter(|_| o.is_set(config, opts, prompts)) {
                return Err(ModelError::Unsupported { strategy: Self::NAME, option: o.field(), reason: why });
            }
        }
        Ok(())
    }
}
