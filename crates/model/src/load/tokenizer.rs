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

/// Incremental detokenizer (candle's `TokenOutputStream`): each new token decodes only a short
/// window (the tokens since the last emitted text), never the whole sequence, and text is
/// yielded only once it is complete UTF-8, so a character split over tokens never comes out in
/// halves.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prev: usize,
    cur: usize,
    skip_special: bool,
}

impl StreamDecoder {
    /// Special tokens kept in the text (transformers' default `decode`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Special tokens left out of the text when `skip_special`.
    pub fn with_skip_special(skip_special: bool) -> Self {
        Self { skip_special, ..Self::default() }
    }

    /// Add a token; returns the text that became complete, if any.
    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> Result<Option<String>> {
        let before = if self.prev < self.cur {
            tok.decode_with(&self.ids[self.prev..self.cur], self.skip_special)?
        } else {
            String::new()
        };
        self.ids.push(id);
        let text = tok.decode_with(&self.ids[self.prev..], self.skip_special)?;
        if text.len() > before.len() && !text.ends_with('\u{FFFD}') && text.is_char_boundary(before.len()) {
            let new = text[before.len()..].to_string();
            self.prev = self.cur;
            self.cur = self.ids.len();
            Ok(Some(new))
        } else {
            Ok(None)
        }
    }
}

/// Stop strings checked incrementally per row: each step decodes the new token through a
/// [`StreamDecoder`] and looks for a stop string only in the text that could contain a new
/// match (the new piece plus the longest stop string's length before it).
pub struct TextStops<'a> {
    tok: &'a TextTokenizer,
    strings: Vec<String>,
    rows: Vec<(StreamDecoder, String)>,
    longest: usize,
}

impl<'a> TextStops<'a> {
    pub fn new(tok: &'a TextTokenizer, strings: Vec<String>) -> Self {
        let longest = strings.iter().map(String::len).max().unwrap_or(0);
        Self { tok, strings, rows: vec![], longest }
    }

    /// Feed row `row`'s new token; true when a stop string has appeared.
    pub fn push(&mut self, row: usize, id: u32) -> Result<bool> {
        if self.rows.len() <= row {
            self.rows.resize_with(row + 1, Self::fresh);
        }
        let (dec, tail) = &mut self.rows[row];
        Self::feed(self.tok, &self.strings, self.longest, dec, tail, id)
    }

    /// Whether row `row` followed by `id` would stop, leaving the row as it is (beam search
    /// checks every candidate continuation of a beam).
    pub fn probe(&self, row: usize, id: u32) -> Result<bool> {
        let (mut dec, mut tail) = self.rows.get(row).cloned().unwrap_or_else(Self::fresh);
        Self::feed(self.tok, &self.strings, self.longest, &mut dec, &mut tail, id)
    }

    /// Rows follow their sources: new row `i` continues old row `src[i]` (beams reordered).
    pub fn reorder(&mut self, src: &[usize]) {
        self.rows = src.iter().map(|&s| self.rows.get(s).cloned().unwrap_or_else(Self::fresh)).collect();
    }

    fn fresh() -> (StreamDecoder, String) {
        (StreamDecoder::with_skip_special(false), String::new())
    }

    fn feed(
        tok: &TextTokenizer,
        strings: &[String],
        longest: usize,
        dec: &mut StreamDecoder,
        tail: &mut String,
        id: u32,
    ) -> Result<bool> {
        let Some(piece) = dec.push(tok, id)? else { return Ok(false) };
        tail.push_str(&piece);
        let hit = strings.iter().any(|s| tail.contains(s.as_str()));
        // keep only what a future match could still start in
        if tail.len() > longest {
            let mut cut = tail.len() - longest;
            while !tail.is_char_boundary(cut) {
                cut -= 1;
            }
            tail.drain(..cut);
        }
        Ok(hit)
    }
}
