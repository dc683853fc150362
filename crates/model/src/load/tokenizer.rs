//! Tokenizers through the `tokenizers` crate.
use std::path::Path;

use crate::error::{ModelError, Result};

/// A text tokenizer with the special ids generation needs.
pub struct TextTokenizer {
    pub inner: tokenizers::Tokenizer,
    /// Prepend BOS when encoding a prompt.
    pub add_bos: bool,
    pub bos_id: Option<u32>,
    /// llguidance's view of the vocabulary, built on the first constrained generation.
    pub grammar: std::sync::OnceLock<std::sync::Arc<demiurgic_sampling::GrammarCompiler>>,
}

impl TextTokenizer {
    /// Load an HF `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self { inner, add_bos: false, bos_id: None, grammar: Default::default() })
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
        self.decode_with(ids, false)
    }

    /// Text of `ids`, special tokens (`<|im_end|>`, …) left out when `skip_special`.
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// The grammar compiler of this vocabulary (built once, ~0.1–0.5 s for a 50k vocabulary):
    /// `vocab` is the width of the model's logits, `eos` its end ids.
    pub fn grammar_compiler(
        &self,
        vocab: usize,
        eos: &[u32],
    ) -> Result<std::sync::Arc<demiurgic_sampling::GrammarCompiler>> {
        if let Some(g) = self.grammar.get() {
            return Ok(g.clone());
        }
        let json = serde_json::to_value(&self.inner).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let inner = self.inner.clone();
        let tokenize: demiurgic_sampling::Tokenize =
            Box::new(move |s: &str| inner.encode(s, false).map(|e| e.get_ids().to_vec()).unwrap_or_default());
        let g =
            std::sync::Arc::new(demiurgic_sampling::GrammarCompiler::from_tokenizer_json(&json, tokenize, eos, vocab)?);
        Ok(self.grammar.get_or_init(|| g).clone())
    }

    /// Whether `id` is a special (added, control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.inner.get_added_vocabulary().is_special_token(&self.inner.id_to_token(id).unwrap_or_default())
    }
}
