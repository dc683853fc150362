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

/// Stop strings matched against the decoded text of the generated tokens.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    pub strings: Vec<String>,
}

impl StopStrings {
    pub fn new(strings: Vec<String>) -> Self {
        Self { strings }
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// The byte offset where the first stop string begins in `text`, if any.
    pub fn find(&self, text: &str) -> Option<usize> {
        first_stop(&self.strings, text)
    }
}

/// The byte offset where the earliest of `strings` begins in `text`, if any.
pub fn first_stop(strings: &[String], text: &str) -> Option<usize> {
    strings.iter().filter_map(|s| text.find(s.as_str())).min()
}
