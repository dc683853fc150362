//! The GGUF-embedded tokenizer: round trips and streaming decode on varied text.
use demiurgic_model::load::gguf::{tokenizer_from_gguf, GgufFile};
use demiurgic_model::load::StreamDecoder;
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
