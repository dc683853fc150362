//! A `tokenizers::Tokenizer` built from a GGUF's embedded vocabulary
//! (`tokenizer.ggml.model = gpt2`: byte-level BPE with merges and a `pre` type).
use serde_json::{json, Value};

use super::reader::GgufFile;
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
    if model != "gpt2" {
        return Err(terr(
            g,
            format!("tokenizer.ggml.model \"{model}\" is not supported (supported: gpt2 byte-level BPE)"),
        ));
    }
    let tokens = g
        .meta("tokenizer.ggml.tokens")
        .and_then(|v| v.as_array())
        .ok_or_else(|| terr(g, "tokenizer.ggml.tokens is missing or not an array"))?;
    let merges = g
        .meta("tokenizer.ggml.merges")
        .and_then(|v| v.as_array())
        .ok_or_else(|| terr(g, "tokenizer.ggml.merges is missing or not an array"))?;
    let types = g.meta("tokenizer.ggml.token_type").and_then(|v| v.as_array());
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = vec![];
    for (i, t) in tokens.iter().enumerate() {
        let s = t.as_str().ok_or_else(|| terr(g, format!("token {i} is not a string")))?;
        vocab.insert(s.to_string(), json!(i));
        // llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
        let ty = types.and_then(|a| a.get(i)).and_then(|v| v.as_u64()).unwrap_or(1);
        if ty == 3 || ty == 4 {
            added.push(json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": ty == 4, "special": ty == 3}));
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
    let add_bos = g.meta("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false);
    let bos_id = g.meta("tokenizer.ggml.bos_token_id").and_then(|v| v.as_u64()).map(|x| x as u32);
    Ok(TextTokenizer { inner, add_bos, bos_id, grammar: Default::default() })
}
