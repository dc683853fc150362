//! The GGUF-embedded tokenizer: round trips and streaming decode on varied text.
use demiurgic_model::load::gguf::{tokenizer_from_gguf, GgufFile};
use demiurgic_model::text::StreamDecoder;
use demiurgic_tests::smollm2_path;

const TEXTS: &[&str] = &[
    "Hello, world!",
    "def f(x):\n\treturn x  # tab-indented\n",
    "  leading spaces and trailing   ",
    "Accents: café, naïve, über, élève",
    "CJK: 你好，世界。日本語のテキスト",
    "Emoji: 🦀🔥👩‍💻 done",
    "digits 1234567890 and 3.14159",
    "<|im_start|>user\nHi<|im_end|>",
];

#[test]
fn round_trips_and_streams_without_splitting_characters() {
    let g = GgufFile::open(&smollm2_path()).unwrap();
    let tok = tokenizer_from_gguf(&g).unwrap();
    for text in TEXTS {
        let ids = tok.encode(text).unwrap();
        assert!(!ids.is_empty());
        assert_eq!(&tok.decode(&ids).unwrap(), text, "round trip of {text:?}");
        let mut dec = StreamDecoder::new();
        let mut streamed = String::new();
        for &id in &ids {
            if let Some(piece) = dec.push(&tok, id).unwrap() {
                assert!(!piece.contains('\u{FFFD}'), "streamed a broken character for {text:?}");
                streamed.push_str(&piece);
            }
        }
        assert_eq!(&streamed, text);
    }
    // digits are split one by one (SmolLM's pre-tokenizer) and special tokens are single ids
    assert_eq!(tok.encode("2024").unwrap().len(), 4);
    assert_eq!(tok.encode("<|im_start|>").unwrap().len(), 1);
}

/// Ids of varied text (CJK, Hangul, emoji with ZWJ/flags/skin tones, accents, code, specials)
/// equal transformers' tokenizer of the same file (`fixtures/tokenizer.json`, made by
/// `scripts/make_fixtures.py tokenizer`), and decode back to the text.
#[test]
fn ids_match_transformers() {
    let f = demiurgic_tests::json_fixture("tokenizer.json");
    let cases = f["cases"].as_array().expect("tokenizer.json cases");
    assert!(!cases.is_empty(), "tokenizer.json has no cases");
    let g = GgufFile::open(&smollm2_path()).unwrap();
    let tok = tokenizer_from_gguf(&g).unwrap();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids, want, "ids of {text:?} differ from transformers'");
        assert_eq!(tok.decode(&ids).unwrap(), text, "decode of transformers' ids for {text:?}");
    }
}
