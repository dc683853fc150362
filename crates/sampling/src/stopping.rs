//! Stopping: finish reasons and stop strings.
use serde::{Deserialize, Serialize};

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An EOS token was generated.
    Eos,
    /// `max_new_tokens` / `max_length` was reached.
    Length,
    /// A stop string appeared in the generated text.
    Stop,
}

/// The byte offset where the earliest of `strings` begins in `text`, if any.
pub fn first_stop(strings: &[String], text: &str) -> Option<usize> {
    strings.iter().filter_map(|s| text.find(s.as_str())).min()
}
