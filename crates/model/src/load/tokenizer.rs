//! Tokenizers through the `tokenizers` crate.
use std::path::Path;

use crate::error::{ModelError, Result};

/// A text tokenizer with the special ids generation needs.
pub struct TextTokenizer {
    pub inner: tokenizers::Tokenizer,
    /// Prepend BOS when encoding a prompt.
    pub add_bos: bool,
    pub bos_id: Option<u32>,
}

impl TextTokenizer {
    /// Load an HF `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self { inner, add_bos: false, bos_id: None })
    }

    /// Token ids of `text` (transformers' `encode` with special tokens).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        if self.add_bos {
            if let Some(b) = self.bos_id {
                if ids.first() != Some(&b) {
                    ids.insert(0, b);
                }
            }
        }
        Ok(ids)
    }

    /// Token strings of `ids`.
    pub fn tokens(&self, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&i| self.inner.id_to_token(i).unwrap_or_default()).collect()
    }

    /// Text of `ids` (special tokens kept, as transformers' default `decode`).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| ModelError::Tokenizer(e.to_string()))
    }
}

/// Incremental detokenizer: yields new text only once it is complete UTF-8, so a multi-byte
/// character split over several tokens is never emitted in halves.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    emitted: usize, // bytes of the decoded text already returned
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a token; returns the text that became complete, if any.
    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() <= self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(None);
        }
        let new = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(Some(new))
    }
}
