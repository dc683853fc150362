//! Structured generation on SmolLM2, data-driven over `fixtures/structured.json` (JSON schemas
//! with nested objects, arrays, enums, numbers, patterns and optional fields; JSON object;
//! regexes for dates, emails, identifiers; an arithmetic grammar; choices): through the chat
//! template, greedy (every backend) and with several seeds (flex; rows batched, per-row seeds),
//! every output validates
//! with an independent checker (the `jsonschema` crate, the `regex` crate, an arithmetic parser,
//! string equality) and ends with EOS: 100%. The same prompt unconstrained does not validate
//! (so the check can fail). Beam search, prompt-lookup speculative decoding and a left-padded
//! batch of two prompts keep the constraint too; bad constraints are refused before generating.
use demiurgic_model::load::ChatMessage;
use demiurgic_model::{generate, load_model, DecodeOps, GenerateOptions, GenerationOutput, LoadedModel, ModelError};
use demiurgic_sampling::{Constraint, FinishReason, GenerationConfig};
use demiurgic_tests::{is_flex, json_fixture, per_backend, real_model_strategy_cases, smollm2_path};
use serde_json::Value;

/// An arithmetic expression: numbers, + - * /, parentheses, spaces around operators.
fn is_arithmetic(s: &str) -> bool {
    fn expr(b: &[u8], i: &mut usize) -> bool {
        term(b, i) && {
            loop {
                let save = *i;
                skip(b, i);
                if *i < b.len() && b"+-*/".contains(&b[*i]) {
                    *i += 1;
                    skip(b, i);
                    if !term(b, i) {
                        return false;
                    }
                } else {
                    *i = save;
                    break true;
                }
            }
        }
    }
    fn term(b: &[u8], i: &mut usize) -> bool {
        if *i < b.len() && b[*i] == b'(' {
            *i += 1;
            let ok = expr(b, i);
            if ok && *i < b.len() && b[*i] == b')' {
                *i += 1;
                return true;
            }
            return false;
        }
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    }
    fn skip(b: &[u8], i: &mut usize) {
        while *i < b.len() && b[*i] == b' ' {
            *i += 1;
        }
    }
    let b = s.as_bytes();
    let mut i = 0;
    expr(b, &mut i) && i == b.len()
}

/// Whether `text` satisfies the case (checked without llguidance).
fn validates(case: &Value, c: &Constraint, text: &str) -> bool {
    match c {
        Constraint::JsonSchema(schema) => match serde_json::from_str::<Value>(text) {
            Ok(v) => jsonschema::is_valid(schema, &v),
            Err(_) => false,
        },
        Constraint::JsonObject => serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object()),
        Constraint::Regex(r) => regex::Regex::new(&format!("^(?:{r})$")).unwrap().is_match(text),
        Constraint::Grammar(_) => {
            assert_eq!(case["validate"], "arithmetic", "a grammar case names its checker");
            is_arithmetic(text)
        }
        Constraint::Choice(list) => list.iter().any(|x| x == text),
    }
}

fn chat_prompt<B: DecodeOps>(loaded: &LoadedModel<B>, text: &str) -> Vec<u32> {
    let msg = [ChatMessage { role: "user".into(), content: text.into() }];
    let rendered = loaded.render_chat(&msg, true).unwrap();
    loaded.text_tokenizer().unwrap().encode(&rendered).unwrap()
}

fn run<B: DecodeOps>(
    loaded: &LoadedModel<B>,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    seeds: Option<Vec<u64>>,
) -> Result<GenerationOutput, ModelError> {
    let grammar = loaded.grammar_compiler().unwrap();
    let opts = GenerateOptions { grammar: Some(&grammar), seeds, ..Default::default() };
    generate(&loaded.model, prompts, cfg, opts)
}

/// Every row validates and ended with EOS.
fn check_rows<B: DecodeOps>(loaded: &LoadedModel<B>, case: &Value, c: &Constraint, out: &GenerationOutput, what: &str) {
    let tok = loaded.text_tokenizer().unwrap();
    for i in 0..out.tokens.len() {
        let text = tok.decode_with(out.row(i), true).unwrap();
        assert_eq!(
            out.finish_reasons[i],
            FinishReason::Eos,
            "{} ({what}, row {i}): {text:?} did not end",
            case["name"]
        );
        assert!(validates(case, c, &text), "{} ({what}, row {i}): {text:?} does not validate", case["name"]);
    }
}

fn structured_outputs_validate<B: DecodeOps>(d: &B::Device) {
    // every case greedy and with seeded sampled rows on flex (the fast CPU backend); elsewhere with
    // --full, greedy: the constraint is host code plus one mask upload and masked fill, the same on
    // every backend, and ndarray / lavapipe decode SmolLM2 slowly
    let sampled_here = is_flex::<B>();
    let table = json_fixture("structured.json");
    let cases = table["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    let cases = real_model_strategy_cases::<B, _>("structured on smollm2", cases.iter().collect());
    if cases.is_empty() {
        return;
    }
    let loaded = load_model::<B>(&smollm2_path(), d).unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let c: Constraint = serde_json::from_value(case["constraint"].clone()).unwrap();
        let prompt = chat_prompt(&loaded, case["prompt"].as_str().unwrap());
        let max_new = case["max_new_tokens"].as_u64().unwrap() as usize;
        let base = GenerationConfig { max_new_tokens: Some(max_new), ..Default::default() }
            .with(|p| p.constraint.constraint = Some(c.clone()));

        let greedy = GenerationConfig { do_sample: false, ..base.clone() };
        let out = run(&loaded, &[prompt.clone()], &greedy, None).unwrap();
        check_rows(&loaded, case, &c, &out, "greedy");

        if !sampled_here {
            continue;
        }
        // three sampled rows in one batch, each with its own seed (the CLI's sampling defaults)
        let sampled = GenerationConfig { num_return_sequences: 3, ..base.clone() };
        let out = run(&loaded, &[prompt.clone()], &sampled, Some(vec![1, 2, 3])).unwrap();
        check_rows(&loaded, case, &c, &out, &format!("sampled, {name}"));
    }
}
per_backend!(structured_outputs_validate_on_smollm2, structured_outputs_validate);

/// The table's prompts unconstrained do not validate: the constrained checks above can fail.
#[cfg(feature = "flex")]
#[test]
fn unconstrained_outputs_do_not_validate() {
    let loaded = load_model::<burn::backend::Flex>(&smollm2_path(), &Default::default()).unwrap();
    for case in json_fixture("structured.json")["cases"].as_array().unwrap() {
        let c: Constraint = serde_json::from_value(case["constraint"].clone()).unwrap();
        let prompt = chat_prompt(&loaded, case["prompt"].as_str().unwrap());
        let max_new = case["max_new_tokens"].as_u64().unwrap() as usize;
        let free = GenerationConfig { max_new_tokens: Some(max_new.min(40)), ..GenerationConfig::greedy() };
        let out = run(&loaded, &[prompt], &free, None).unwrap();
        let text = loaded.text_tokenizer().unwrap().decode_with(out.row(0), true).unwrap();
        assert!(!validates(case, &c, &text), "{}: the unconstrained output {text:?} validates too", case["name"]);
    }
}

/// Beam search, prompt lookup and a left-padded batch under a constraint; speculative greedy
/// equals plain greedy under the same constraint. (The strategies themselves are checked on
/// every backend in `strategies`; this checks the constraint's row bookkeeping, host-side.)
#[cfg(feature = "flex")]
#[test]
fn strategies_keep_the_constraint() {
    let loaded = load_model::<burn::backend::Flex>(&smollm2_path(), &Default::default()).unwrap();
    let table = json_fixture("structured.json");
    let pick = |prefix: &str| {
        table["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"].as_str().unwrap().starts_with(prefix))
            .unwrap()
            .clone()
    };
    for case in [pick("person"), pick("date")] {
        let c: Constraint = serde_json::from_value(case["constraint"].clone()).unwrap();
        let prompt = chat_prompt(&loaded, case["prompt"].as_str().unwrap());
        let max_new = case["max_new_tokens"].as_u64().unwrap() as usize;
        let greedy = GenerationConfig { max_new_tokens: Some(max_new), ..GenerationConfig::greedy() }
            .with(|p| p.constraint.constraint = Some(c.clone()));
        let plain = run(&loaded, &[prompt.clone()], &greedy, None).unwrap();
        check_rows(&loaded, &case, &c, &plain, "greedy");

        let beams = GenerationConfig { num_beams: 3, num_return_sequences: 3, ..greedy.clone() };
        let out = run(&loaded, &[prompt.clone()], &beams, None).unwrap();
        check_rows(&loaded, &case, &c, &out, "beam search");

        let lookup = GenerationConfig { prompt_lookup_num_tokens: Some(4), ..greedy.clone() };
        let out = run(&loaded, &[prompt.clone()], &lookup, None).unwrap();
        check_rows(&loaded, &case, &c, &out, "prompt lookup");
        assert_eq!(out.row(0), plain.row(0), "{}: prompt lookup changed the greedy output", case["name"]);

        // two prompts of different lengths, left-padded in one batch
        let other = chat_prompt(&loaded, "Please answer in the required format, and be brief about it.");
        let out = run(&loaded, &[prompt.clone(), other], &greedy, None).unwrap();
        check_rows(&loaded, &case, &c, &out, "batch of two");
        assert_eq!(out.row(0), plain.row(0), "{}: batching changed the greedy output", case["name"]);
    }
}

/// Bad constraints are refused by name before any step; a constraint without a tokenizer too.
#[cfg(feature = "ndarray")]
#[test]
fn bad_constraints_are_refused() {
    let d = Default::default();
    let loaded = load_model::<burn::backend::NdArray>(&smollm2_path(), &d).unwrap();
    let bad = [
        (Constraint::Regex("[0-9".into()), "unclosed character class"),
        (Constraint::JsonSchema(serde_json::json!({"type": "foo"})), "foo"),
        (Constraint::JsonSchema(serde_json::json!([1])), "a JSON schema is an object"),
        (Constraint::Grammar("start: missing_rule".into()), "missing_rule"),
        (Constraint::Grammar("  ".into()), "must not be empty"),
        (Constraint::Choice(vec![]), "at least one choice"),
        (Constraint::Choice(vec!["a".into(), "".into()]), "must not be empty"),
    ];
    for (c, needle) in bad {
        let cfg = GenerationConfig { max_new_tokens: Some(4), ..GenerationConfig::greedy() }
            .with(|p| p.constraint.constraint = Some(c.clone()));
        let err = run(&loaded, &[vec![1, 2, 3]], &cfg, None).unwrap_err().to_string();
        assert!(err.contains(needle) && err.contains("constraint"), "{c:?}: {err}");
    }
    let cfg = GenerationConfig { max_new_tokens: Some(4), ..GenerationConfig::greedy() }
        .with(|p| p.constraint.constraint = Some(Constraint::JsonObject));
    let err = generate(&loaded.model, &[vec![1, 2, 3]], &cfg, GenerateOptions::default()).unwrap_err().to_string();
    assert!(err.contains("grammar compiler"), "{err}");
}
