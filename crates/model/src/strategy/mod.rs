//! Decoding strategies behind one contract ([`Strategy`]): greedy / sampling ([`Sample`], the
//! reference), [`Beam`] search, and speculative decoding with candidates from [`PromptLookup`] or
//! a [`DraftModel`]. Each declares the [`GenOption`]s it cannot honour; [`crate::generate`]
//! refuses those by name before any work, and runs the strategy the config chooses. They share
//! [`common`]'s checks, seed, stopping rule and timing record, and [`types`]' options and output.
mod beam;
mod common;
mod contract;
mod sample;
mod speculative;
mod types;

pub use beam::Beam;
pub use common::{memory_estimate, prompt_logprobs};
pub(crate) use common::{prepare, resolve_seed};
pub use contract::{GenOption, Job, Strategy};
pub use sample::Sample;
pub(crate) use sample::SampleState;
pub use speculative::{prompt_lookup, speculative_accept, DraftModel, PromptLookup};
pub use types::{GenerateOptions, GenerationOutput, GenerationStats, StepLogprob, TopLogprob};

/// The strategies, in the order of the README's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sample,
    Beam,
    PromptLookup,
    DraftModel,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Sample, Kind::Beam, Kind::PromptLookup, Kind::DraftModel];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Sample => Sample::NAME,
            Kind::Beam => Beam::NAME,
            Kind::PromptLookup => PromptLookup::NAME,
            Kind::DraftModel => DraftModel::NAME,
        }
    }

    /// None when the strategy honours `option`, else why not.
    pub fn refusal(self, option: GenOption) -> Option<&'static str> {
        match self {
            Kind::Sample => Sample::refusal(option),
            Kind::Beam => Beam::refusal(option),
            Kind::PromptLookup => PromptLookup::refusal(option),
            Kind::DraftModel => DraftModel::refusal(option),
        }
    }
}

/// The markdown table of what each strategy honours (✓) or refuses (✗, the reason below it),
/// as the README shows it.
pub fn support_table() -> String {
    let mut s = String::from("| option |");
    for k in Kind::ALL {
        s += &format!(" {} |", k.name());
    }
    s += "\n|---|";
    s += &"---|".repeat(Kind::ALL.len());
    s += "\n";
    for o in GenOption::ALL {
        s += &format!("| `{}` |", o.field());
        for k in Kind::ALL {
            s += if k.refusal(o).is_some() { " ✗ |" } else { " ✓ |" };
        }
        s += "\n";
    }
    s
}
