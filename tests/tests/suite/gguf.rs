//! GGUF: dequantization of every block type against gguf-py (`fixtures/gguf-dequant.json`, made
//! by `scripts/make_gguf_fixtures.py`), metadata of every value type, and hostile files.
use std::path::Path;

use demiurgic_model::ggml::{dequantize, GgmlType};
use demiurgic_model::load::gguf::{GgufFile, MetaValue};
use demiurgic_tests::{fixture, json_fixture};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn every_block_type_matches_gguf_py() {
    let f = json_fixture("gguf-dequant.json");
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 13);
    for c in cases {
        let name = c["type"].as_str().unwrap();
        let ty =
            GgmlType::from_u32(c["ggml_type"].as_u64().unwrap() as u32).unwrap_or_else(|| panic!("{name} unsupported"));
        let n = c["n"].as_u64().unwrap() as usize;
        let got = dequantize(ty, &unhex(c["hex"].as_str().unwrap()), n).unwrap();
        let want: Vec<f32> = c["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{name} element {i}: {g} vs {w}");
        }
    }
}

#[test]
fn metadata_of_every_value_type() {
    let g = GgufFile::open(&fixture("all-types.gguf")).unwrap();
    let m = |k: &str| g.meta(k).unwrap_or_else(|| panic!("{k} missing")).clone();
    assert_eq!(m("t.u8"), MetaValue::U8(200));
    assert_eq!(m("t.i8"), MetaValue::I8(-100));
    assert_eq!(m("t.u16"), MetaValue::U16(60000));
    assert_eq!(m("t.i16"), MetaValue::I16(-30000));
    assert_eq!(m("t.u32"), MetaValue::U32(4_000_000_000));
    assert_eq!(m("t.i32"), MetaValue::I32(-2_000_000_000));
    assert_eq!(m("t.f32"), MetaValue::F32(1.5));
    assert_eq!(m("t.bool"), MetaValue::Bool(true));
    assert_eq!(m("t.str"), MetaValue::Str("héllo 🦀".into()));
    assert_eq!(m("t.arr"), MetaValue::Array(vec![MetaValue::I32(1), MetaValue::I32(2), MetaValue::I32(3)]));
    assert_eq!(m("t.strs"), MetaValue::Array(vec![MetaValue::Str("a".into()), MetaValue::Str("bc".into())]));
    assert_eq!(m("t.u64"), MetaValue::U64(1 << 40));
    assert_eq!(m("t.i64"), MetaValue::I64(-(1 << 40)));
    assert_eq!(m("t.f64"), MetaValue::F64(0.25));
    let (x, info) = g.tensor_f32("x").unwrap();
    assert_eq!(info.dims, vec![4, 2]);
    assert_eq!(x, (0..8).map(|v| v as f32).collect::<Vec<_>>());
}

/// Hostile GGUF bytes: each must give an error naming the problem, never a panic.
#[test]
fn hostile_gguf_files_are_clear_errors() {
    let good = std::fs::read(fixture("all-types.gguf")).unwrap();
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "too short"),
        ("bad magic", b"GGML\x03\0\0\0".to_vec(), "magic"),
        ("version 1", [b"GGUF".as_slice(), &1u32.to_le_bytes(), &[0; 16]].concat(), "version 1"),
        ("version 4", [b"GGUF".as_slice(), &4u32.to_le_bytes(), &[0; 16]].concat(), "version 4"),
        (
            "huge tensor count",
            [b"GGUF".as_slice(), &3u32.to_le_bytes(), &u64::MAX.to_le_bytes(), &0u64.to_le_bytes()].concat(),
            "tensor count",
        ),
        (
            "huge kv count",
            [b"GGUF".as_slice(), &3u32.to_le_bytes(), &0u64.to_le_bytes(), &(1u64 << 60).to_le_bytes()].concat(),
            "metadata count",
        ),
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
    ];
    // a string length far beyond the file: the first key's length field sits at byte 24
    let mut long_key = good.clone();
    long_key[24..32].copy_from_slice(&(1u64 << 50).to_le_bytes());
    cases.push(("huge string length", long_key, "string length"));
    // tensor data outside the file: cut the data section
    cases.push(("data outside the file", good[..good.len() - 8].to_vec(), "outside the file"));
    for (what, bytes, needle) in cases {
        let err =
            GgufFile::from_bytes(Path::new("hostile.gguf"), bytes).err().unwrap_or_else(|| panic!("{what}: accepted"));
        let msg = err.to_string();
        assert!(msg.contains(needle), "{what}: {msg:?} should mention {needle:?}");
        assert!(msg.contains("hostile.gguf"), "{what}: {msg} should name the file");
    }
}
