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
