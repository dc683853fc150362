//! [`generate`]: the one entry every caller (CLI, chat, eval, bench) drives. It validates the
//! config once, resolves its seed, chooses the strategy the config asks for, refuses by name
//! any option that strategy cannot honour, and runs it.
use demiurgic_sampling::GenerationConfig;

use crate::error::{ModelError, Result};
use crate::lm::CausalLm;
use crate::ops::DecodeOps;
use crate::strategy::{
    resolve_seed, Beam, DraftModel, GenerateOptions, GenerationOutput, Job, Kind, PromptLookup, Sample, Strategy,
};

/// The strategy `config` and `opts` ask for: beam search (`num_beams` > 1), speculative
/// decoding (prompt lookup, or a draft model), else greedy / multinomial sampling.
pub fn choose<B: DecodeOps>(config: &GenerationConfig, opts: &GenerateOptions<'_, B>) -> Result<Kind> {
    let draft = opts.draft.is_some();
    if draft && config.num_beams > 1 {
        return Err(ModelError::Input(
            "a draft model (speculative decoding) cannot be combined with num_beams > 1".into(),
        ));
    }
    if draft && config.prompt_lookup_num_tokens.is_some() {
        return Err(ModelError::Input(
            "a draft model and prompt_lookup_num_tokens both given: choose one source of candidates".into(),
        ));
    }
    Ok(if config.num_beams > 1 {
        Kind::Beam
    } else if draft {
        Kind::DraftModel
    } else if config.prompt_lookup_num_tokens.is_some() {
        Kind::PromptLookup
    } else {
        Kind::Sample
    })
}

/// Generate continuations of `prompts` (token ids, unpadded) with the strategy the config
/// chooses ([`choose`]); an option that strategy cannot honour is refused by name
/// ([`ModelError::Unsupported`]) before any work.
pub fn generate<B: DecodeOps, M: CausalLm<B> + ?Sized>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    opts: GenerateOptions<'_, B>,
) -> Result<GenerationOutput> {
    config.validate()?;
    if !config.stop.is_empty() && opts.stops.is_none() {
        return Err(ModelError::Input(
            "stop strings are matched on text: pass the tokenizer's TextStops in GenerateOptions::stops".into(),
        ));
    }
    let config = &resolve_seed(config);
    match choose(config, &opts)? {
        Kind::Sample => run::<Sample, B, M>(model, prompts, config, opts),
        Kind::Beam => run::<Beam, B, M>(model, prompts, config, opts),
        Kind::PromptLookup => run::<PromptLookup, B, M>(model, prompts, config, opts),
        Kind::DraftModel => run::<DraftModel, B, M>(model, prompts, config, opts),
    }
}

fn run<S: Strategy, B: DecodeOps, M: CausalLm<B> + ?Sized>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    opts: GenerateOptions<'_, B>,
) -> Result<GenerationOutput> {
    S::check(config, &opts, prompts.len())?;
    S::run(Job { model, prompts, config, opts })
}
