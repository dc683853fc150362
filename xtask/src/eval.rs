//! `cargo xtask eval`: HumanEval with each preset through `demiurgic eval run`; writes
//! `target/eval/latest.{json,md}` and a bar chart `target/eval/latest.png`.
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bench::capture;
use crate::{cargo, root, target_dir};

/// The seed's quality table ("Generate Python function implementations", pass@1), its own model;
/// the seed's other columns are not known here.
const SEED: [(&str, &str); 3] = [("baseline", "31%"), ("balanced-code", "37%"), ("precise-code", "42%")];

pub fn run(args: &[&str]) -> Result<()> {
    let mut pass: Vec<String> = vec![];
    let mut quick = false;
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        match a {
            "--quick" => quick = true,
            "--presets" | "--samples" | "--limit" | "--backend" | "--batch" | "--model" => {
                let v = it.next().with_context(|| format!("{a} needs a value"))?;
                pass.push(a.to_string());
                pass.push(v.to_string());
            }
            other => bail!("unknown eval argument {other:?} (allowed: --quick, --presets LIST, --samples N, --limit P, --backend B, --batch N, --model PATH)"),
        }
    }
    let has_limit = pass.iter().any(|a| a == "--limit");
    let has_samples = pass.iter().any(|a| a == "--samples");
    if quick {
        if !has_limit {
            pass.extend(["--limit".into(), "30".into()]);
        }
        if !has_samples {
            pass.extend(["--samples".into(), "1".into()]);
        }
    } else if !has_samples {
        pass.extend(["--samples".into(), "5".into()]);
    }
    let backend = pass.iter().position(|a| a == "--backend").map(|i| pass[i + 1].clone());
    let mut build = vec!["build", "--release", "-p", "demiurgic-runner"];
    if let Some(b) = backend.as_deref().filter(|b| ["wgpu", "cuda"].contains(b)) {
        build.extend(["--features", b]);
    }
    cargo(&build)?;
    let bin = target_dir().join("release/demiurgic");
    let out_dir = target_dir().join("eval");
    std::fs::create_dir_all(&out_dir)?;
    eprintln!("+ demiurgic eval run {}", pass.join(" "));
    let out = Command::new(&bin)
        .args(["eval", "run", "--completions-dir"])
        .arg(out_dir.join("completions"))
        .args(&pass)
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !out.status.success() {
        bail!("demiurgic eval run failed ({})", out.status);
    }
    let mut report: Value = serde_json::from_slice(&out.stdout).context("eval run printed no JSON")?;
    let commit = crate::bench::commit();
    let cpu = crate::bench::machine();
    let date = capture(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])).unwrap_or_default();
    report["commit"] = json!(commit);
    report["cpu"] = json!(cpu);
    report["date"] = json!(date);
    report["quick"] = json!(quick);
    std::fs::write(out_dir.join("latest.json"), serde_json::to_string_pretty(&report)?)?;
    let md = markdown(&report);
    std::fs::write(out_dir.join("latest.md"), &md)?;
    let bars: Vec<(String, f64)> = report["presets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| (p["preset"].as_str().unwrap_or("").to_string(), p["pass@1"].as_f64().unwrap_or(0.0)))
                .collect()
        })
        .unwrap_or_default();
    write_png(&out_dir.join("latest.png"), &bars)?;
    println!("{md}");
    eprintln!("wrote {}/latest.{{json,md,png}}", out_dir.display());
    Ok(())
}

fn markdown(r: &Value) -> String {
    let presets = r["presets"].as_array().cloned().unwrap_or_default();
    let problems = presets.first().map(|p| p["problems"].clone()).unwrap_or(json!(0));
    let mut s = format!(
        "# HumanEval — {} problems, {} new tokens at most, stops {:?}\n\n{} · commit {} · {} · backend {} · model {}\n\n",
        problems,
        r["max_new_tokens"],
        r["stops"].as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>()).unwrap_or_default(),
        r["date"].as_str().unwrap_or(""),
        r["commit"].as_str().unwrap_or(""),
        r["cpu"].as_str().unwrap_or(""),
        r["backend"].as_str().unwrap_or(""),
        r["model"].as_str().unwrap_or("")
    );
    s += "| preset | samples / problem | pass@1 | unique solutions | repetition score | s / completion | tokens/s |\n|---|---:|---:|---:|---:|---:|---:|\n";
    for p in &presets {
        s += &format!(
            "| {} | {} | {:.1}% | {:.2} | {:.3} | {:.2} | {:.0} |\n",
            p["preset"].as_str().unwrap_or(""),
            p["samples_per_problem"],
            100.0 * p["pass@1"].as_f64().unwrap_or(0.0),
            p["unique_solutions"].as_f64().unwrap_or(0.0),
            p["repetition_score"].as_f64().unwrap_or(0.0),
            p["seconds_per_completion"].as_f64().unwrap_or(0.0),
            p["tokens_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    s += "\nThe seed's table, beside ours (its model is not ours: its numbers come from a different, \
          larger model and cannot be compared in absolute terms — only the ordering of the presets can):\n\n\
          | preset | seed pass@1 | our pass@1 | our unique solutions | our repetition score | our s / completion |\n|---|---:|---:|---:|---:|---:|\n";
    for (name, pass) in SEED {
        let ours = presets.iter().find(|p| p["preset"] == name);
        let o = |k: &str, scale: f64, prec: usize, unit: &str| {
            ours.and_then(|p| p[k].as_f64()).map_or("—".to_string(), |x| format!("{:.*}{unit}", prec, x * scale))
        };
        s += &format!(
            "| {name} | {pass} | {} | {} | {} | {} |\n",
            o("pass@1", 100.0, 1, "%"),
            o("unique_solutions", 1.0, 2, ""),
            o("repetition_score", 1.0, 3, ""),
            o("seconds_per_completion", 1.0, 2, " s")
        );
    }
    s += &format!(
        "\nIsolation of the generated code: {}\n",
        presets.first().and_then(|p| p["isolation"].as_str()).unwrap_or("")
    );
    s
}

/// A bar chart of pass@1 per preset as an 8-bit grey PNG (stored deflate, no dependency).
fn write_png(path: &std::path::Path, bars: &[(String, f64)]) -> Result<()> {
    let (w, h) = (80 * bars.len().max(1) + 40, 240usize);
    let mut px = vec![255u8; w * h];
    // axis and 25% grid lines
    for q in 0..=4 {
        let y = h - 20 - q * (h - 40) / 4;
        for x in 20..w - 20 {
            px[y * w + x] = if q == 0 { 0 } else { 200 };
        }
    }
    for (i, (_, v)) in bars.iter().enumerate() {
        let bh = ((h - 40) as f64 * v.clamp(0.0, 1.0)).round() as usize;
        let x0 = 40 + i * 80;
        for y in (h - 20 - bh)..(h - 20) {
            for x in x0..x0 + 48 {
                px[y * w + x] = 60 + (i as u8 % 4) * 40;
            }
        }
    }
    let mut raw = Vec::with_capacity((w + 1) * h);
    for row in px.chunks(w) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = vec![0x78, 0x01];
    let mut chunks = raw.chunks(65535).peekable();
    while let Some(c) = chunks.next() {
        z.push(chunks.peek().is_none() as u8);
        z.extend_from_slice(&(c.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(c.len() as u16)).to_le_bytes());
        z.extend_from_slice(c);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit greyscale
    for (kind, data) in [(*b"IHDR", ihdr), (*b"IDAT", z), (*b"IEND", vec![])] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc_in = kind.to_vec();
        crc_in.extend_from_slice(&data);
        png.extend_from_slice(&crc_in);
        png.extend_from_slice(&crc32(&crc_in).to_be_bytes());
    }
    std::fs::write(path, png)?;
    Ok(())
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}
