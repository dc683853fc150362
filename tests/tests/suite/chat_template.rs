//! The default model's chat template rendered as transformers' `apply_chat_template` renders it
//! (`chat-template.json`, made by `scripts/make_fixtures.py chat`): same text, same ids, for every
//! conversation of the fixture.
use demiurgic_model::families;
use demiurgic_model::load::gguf::{tokenizer_from_gguf, GgufFile};
use demiurgic_model::load::{render_chat_template, ChatMessage};
use demiurgic_tests::{ids1, json_fixture, smollm2_path};

#[test]
fn chat_template_matches_transformers() {
    let f = json_fixture("chat-template.json");
    let g = GgufFile::open(&smollm2_path()).unwrap();
    let tok = tokenizer_from_gguf(&g).unwrap();
    let cfg = families::from_gguf(&g).unwrap();
    let template = g.meta("tokenizer.chat_template").and_then(|v| v.as_str()).expect("chat template in the GGUF");
    let name = |id: Option<u32>| id.map(|i| tok.tokens(&[i]).join("")).unwrap_or_default();
    let (bos, eos) = (name(cfg.bos_token_id), name(cfg.eos_token_ids.first().copied()));
    let cases = f["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    for (i, c) in cases.iter().enumerate() {
        let messages: Vec<ChatMessage> = serde_json::from_value(c["messages"].clone()).expect("messages");
        let add = c["add_generation_prompt"].as_bool().expect("add_generation_prompt");
        let text = render_chat_template(template, &messages, add, &bos, &eos).unwrap();
        assert_eq!(text, c["text"].as_str().unwrap(), "case {i}: rendered text");
        assert_eq!(tok.encode(&text).unwrap(), ids1(&c["ids"]), "case {i}: ids");
    }
}

#[test]
fn a_bad_template_is_a_clear_error() {
    let m = [ChatMessage::new("user", "hi")];
    let e = render_chat_template("{% for m in messages %}", &m, true, "", "").unwrap_err().to_string();
    assert!(e.contains("chat template") && e.contains("parse"), "{e}");
    let t = "{% if messages[0].role != 'system' %}{{ raise_exception('system first') }}{% endif %}";
    let e = render_chat_template(t, &m, true, "", "").unwrap_err().to_string();
    assert!(e.contains("system first"), "{e}");
}
