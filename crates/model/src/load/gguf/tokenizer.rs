//! A `tokenizers::Tokenizer` built from a GGUF's embedded vocabulary: `tokenizer.ggml.model =
//! gpt2` (byte-level BPE with merges and a `pre` type) or `llama` (SentencePiece BPE: pieces with
//! scores and no merges, `▁` for spaces, byte fallback — Llama 2, Gemma).
use serde_json::{json, Value};

use super::reader::{GgufFile, MetaValue};
use crate::error::{ModelError, Result};
use crate::load::TextTokenizer;

fn terr(g: &GgufFile, msg: impl Into<String>) -> ModelError {
    ModelError::Tokenizer(format!("{}: {}", g.path.display(), msg.into()))
}

const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer of a llama.cpp `pre` type, as transformers' tokenizer.json has it.
fn pre_tokenizer(pre: &str) -> Value {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
    match pre {
        // StarCoder-family vocabularies (SmolLM, StarCoder, Refact): digits split one by one.
        "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "llama-bpe" | "llama3" | "smaug-bpe" => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]})
        }
        // "default", "gpt-2" and unknown types: GPT-2's regex, as llama.cpp falls back to.
        _ => json!({"type": "Sequence", "pretokenizers": [split(GPT2_REGEX), byte_level(false)]}),
    }
}

/// Build the tokenizer of a GGUF file.
pub fn tokenizer_from_gguf(g: &GgufFile) -> Result<TextTokenizer> {
    let model = g.meta("tokenizer.ggml.model").and_then(|v| v.as_str()).unwrap_or("");
    match model {
        "gpt2" => gpt2(g),
        "llama" => sentencepiece(g),
        _ => Err(terr(
            g,
            format!(
                "tokenizer.ggml.model \"{model}\" is not supported (supported: gpt2 byte-level BPE, llama SentencePiece BPE)"
            ),
        )),
    }
}

fn bos_policy(g: &GgufFile) -> (bool, Option<u32>) {
    let add_bos = g.meta("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false);
    let bos_id = g.meta("tokenizer.ggml.bos_token_id").and_then(|v| v.as_u64()).map(|x| x as u32);
    (add_bos, bos_id)
}

/// A metadata array the tokenizer needs.
fn array<'a>(g: &'a GgufFile, key: &str) -> Result<&'a [MetaValue]> {
    g.meta(key).and_then(|v| v.as_array()).ok_or_else(|| terr(g, format!("{key} is missing or not an array")))
}

/// llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
fn token_type(types: Option<&[MetaValue]>, i: usize) -> u64 {
    types.and_then(|a| a.get(i)).and_then(|v| v.as_u64()).unwrap_or(1)
}

/// An added token of the tokenizers JSON for a control (special) or user-defined piece.
fn added_token(i: usize, s: &str, ty: u64) -> Value {
    json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": ty == 4, "special": ty == 3})
}

/// SentencePiece BPE as transformers converts it (`SentencePieceExtractor`): the merges of each
/// normal piece (every split into two pieces of the vocabulary), ranked by the merged piece's
/// score, highest first; spaces become `▁` (with a leading one when
/// `tokenizer.ggml.add_space_prefix`), unknown characters fall back to `<0xXX>` byte pieces.
fn sentencepiece(g: &GgufFile) -> Result<TextTokenizer> {
    let tokens = array(g, "tokenizer.ggml.tokens")?;
    let scores = array(g, "tokenizer.ggml.scores")?;
    if scores.len() != tokens.len() {
        return Err(terr(g, format!("{} scores for {} tokens", scores.len(), tokens.len())));
    }
    let types = g.meta("tokenizer.ggml.token_type").and_then(|v| v.as_array());
    let mut pieces: Vec<&str> = Vec::with_capacity(tokens.len());
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::with_capacity(tokens.len());
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = vec![];
    for (i, t) in tokens.iter().enumerate() {
        let s = t.as_str().ok_or_else(|| terr(g, format!("token {i} is not a string")))?;
        pieces.push(s);
        index.entry(s).or_insert(i);
        vocab.insert(s.to_string(), json!(i));
        let ty = token_type(types, i);
        if ty == 3 || ty == 4 {
            added.push(added_token(i, s, ty));
        }
    }
    let score =
        |i: usize| -> Result<f64> { scores[i].as_f64().ok_or_else(|| terr(g, format!("score {i} is not a number"))) };
    // pieces by score, highest first (ties: lower id first)
    let mut order: Vec<(f64, usize)> = (0..pieces.len()).map(|i| Ok((score(i)?, i))).collect::<Result<_>>()?;
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut merges: Vec<Value> = vec![];
    for &(_, i) in &order {
        if token_type(types, i) != 1 {
            continue;
        }
        let p = pieces[i];
        let mut local: Vec<(usize, usize, &str, &str)> = p
            .char_indices()
            .skip(1)
            .filter_map(|(k, _)| {
                let (l, r) = p.split_at(k);
                Some((*index.get(l)?, *index.get(r)?, l, r))
            })
            .collect();
        local.sort_unstable();
        merges.extend(local.into_iter().map(|(_, _, l, r)| json!([l, r])));
    }
    let unk = g
        .meta("tokenizer.ggml.unknown_token_id")
        .and_then(|v| v.as_u64())
        .and_then(|i| pieces.get(i as usize))
        .map(|s| json!(s))
        .unwrap_or(Value::Null);
    let space_prefix = g.meta("tokenizer.ggml.add_space_prefix").and_then(|v| v.as_bool()).unwrap_or(true);
    let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let normalizer = if space_prefix {
        json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, replace]})
    } else {
        replace
    };
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    });
    let inner: tokenizers::Tokenizer =
        spec.to_string().parse().map_err(|e| terr(g, format!("cannot build the SentencePiece tokenizer: {e}")))?;
    let (add_bos, bos_id) = bos_policy(g);
    Ok(TextTokenizer { inner, add_bos, bos_id, grammar: Default::default() })
}

fn gpt2(g: &GgufFile) -> Result<TextTokenizer> {
    let tokens = array(g, "tokenizer.ggml.tokens")?;
    let merges = array(g, "tokenizer.ggml.merges")?;
    let types = g.meta("tokenizer.ggml.token_type").and_then(|v| v.as_array());
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = vec![];
    for (i, t) in tokens.iter().enumerate() {
        let s = t.as_str().ok_or_else(|| terr(g, format!("token {i} is not a string")))?;
        vocab.insert(s.to_string(), json!(i));
        let ty = token_type(types, i);
        if ty == 3 || ty == 4 {
            added.push(added_token(i, s, ty));
        }
    }
    let merges: Vec<Value> = merges
        .iter()
        .enumerate()
        .map(|(i, m)| m.as_str().map(|s| json!(s)).ok_or_else(|| terr(g, format!("merge {i} is not a string"))))
        .collect::<Result<_>>()?;
    let pre = g.meta("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(pre),
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    });
    let inner: tokenizers::Tokenizer =
        spec.to_string().parse().map_err(|e| terr(g, format!("cannot build the BPE tokenizer: {e}")))?;
    let (add_bos, bos_id) = bos_policy(g);
    Ok(TextTokenizer { inner, add_bos, bos_id, grammar: Default::default() })
}
