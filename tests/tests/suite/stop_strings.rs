//! Stop strings on the default model's tokenizer (`stop-strings.json`, made by
//! `scripts/make_fixtures.py stops`): the step at which our incremental check fires equals the
//! first prefix whose decoded text holds a stop string, and transformers' `StopStringCriteria`.
use demiurgic_model::load::gguf::{tokenizer_from_gguf, GgufFile};
use demiurgic_model::text::TextStops;
use demiurgic_tests::{ids1, json_fixture, smollm2_path};

#[test]
fn stop_strings_fire_where_transformers_stops() {
    let f = json_fixture("stop-strings.json");
    let g = GgufFile::open(&smollm2_path()).unwrap();
    let tok = tokenizer_from_gguf(&g).unwrap();
    let cases = f["cases"].as_array().expect("cases");
    assert!(cases.iter().any(|c| c["hf_stops_after"].is_null()), "a case where nothing stops");
    assert!(cases.iter().any(|c| !c["hf_stops_after"].is_null()), "a case that stops");
    for (i, c) in cases.iter().enumerate() {
        let ids = ids1(&c["ids"]);
        let strings: Vec<String> = serde_json::from_value(c["stop"].clone()).unwrap();
        // two rows fed alternately: each row keeps its own text
        let mut stops = TextStops::new(&tok, strings);
        let mut fired = [None, None];
        for (k, &id) in ids.iter().enumerate() {
            for (row, f) in fired.iter_mut().enumerate() {
                if f.is_none() && stops.push(row, id).unwrap() {
                    *f = Some(k + 1);
                }
            }
        }
        let want = c["first_contained_after"].as_u64().map(|x| x as usize);
        assert_eq!(fired[0], want, "case {i} ({:?}): first stop", c["text"]);
        assert_eq!(fired[1], want, "case {i}: second row");
        if let Some(hf) = c["hf_stops_after"].as_u64() {
            assert_eq!(fired[0], Some(hf as usize), "case {i}: transformers stops after {hf} tokens");
        }
    }
}
