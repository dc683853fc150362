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
            "--render" => {
                // redraw latest.md / latest.png (to DIR) from a saved report, without running
                let f = it.next().context("--render needs a saved report (latest.json)")?;
                let report: Value = serde_json::from_str(&std::fs::read_to_string(f).with_context(|| format!("cannot read {f}"))?)
                    .with_context(|| format!("{f} is not a JSON report"))?;
                let dir = std::path::Path::new(f).parent().unwrap_or(std::path::Path::new("."));
                return write_outputs(&report, dir);
            }
            "--presets" | "--samples" | "--limit" | "--backend" | "--batch" | "--model" => {
                let v = it.next().with_context(|| format!("{a} needs a value"))?;
                pass.push(a.to_string());
                pass.push(v.to_string());
            }
            other => bail!("unknown eval argument {other:?} (allowed: --quick, --render FILE, --presets LIST, --samples N, --limit P, --backend B, --batch N, --model PATH)"),
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
    write_outputs(&report, &out_dir)
}

/// `latest.md` (also printed) and `latest.png` of a report, into `dir`.
fn write_outputs(report: &Value, dir: &std::path::Path) -> Result<()> {
    let md = markdown(report);
    std::fs::write(dir.join("latest.md"), &md)?;
    let bars: Vec<(String, f64)> = report["presets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| (p["preset"].as_str().unwrap_or("").to_string(), p["pass@1"].as_f64().unwrap_or(0.0)))
                .collect()
        })
        .unwrap_or_default();
    let title = format!(
        "HumanEval pass@1, {} problems · {}",
        report["presets"][0]["problems"],
        report["model"].as_str().unwrap_or("?").rsplit('/').next().unwrap_or("?")
    );
    if let Err(e) = write_png(&dir.join("latest.png"), &bars, &title) {
        eprintln!("no latest.png: {e}");
    }
    println!("{md}");
    eprintln!("wrote {}/latest.{{md,png}}", dir.display());
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
/// pass@1 per preset as labelled bars, the seed's own figure (another model) beside ours.
fn write_png(path: &std::path::Path, bars: &[(String, f64)], title: &str) -> Result<()> {
    use plotters::prelude::*;
    plotters::style::register_font("sans-serif", FontStyle::Normal, crate::bench::font()?)
        .map_err(|_| anyhow::anyhow!("font does not load"))?;
    let root = BitMapBackend::new(path, (200 + 170 * bars.len() as u32, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let names: Vec<&str> = bars.iter().map(|b| b.0.as_str()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..bars.len().max(1) as f64, 0.0..100.0)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(bars.len().max(1) * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 1e-6 {
                names.get(i).map(|n| n.to_string()).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("pass@1 (%)")
        .draw()?;
    let ours = RGBColor(31, 119, 180);
    let seed = RGBColor(170, 170, 170);
    let seed_of = |n: &str| SEED.iter().find(|s| s.0 == n).and_then(|s| s.1.trim_end_matches('%').parse::<f64>().ok());
    chart
        .draw_series(
            bars.iter().enumerate().map(|(i, (_, v))| {
                Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.48, v * 100.0)], ours.filled())
            }),
        )?
        .label("ours (this model)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], ours.filled()));
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(i, (n, _))| {
            seed_of(n).map(|v| Rectangle::new([(i as f64 + 0.52, 0.0), (i as f64 + 0.85, v)], seed.filled()))
        }))?
        .label("the seed's table (another, larger model)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], seed.filled()));
    chart.draw_series(bars.iter().enumerate().flat_map(|(i, (n, v))| {
        let mut t =
            vec![Text::new(format!("{:.1}%", v * 100.0), (i as f64 + 0.17, v * 100.0 + 5.0), ("sans-serif", 15))];
        if let Some(sv) = seed_of(n) {
            t.push(Text::new(format!("{sv:.0}%"), (i as f64 + 0.56, sv + 5.0), ("sans-serif", 15)));
        }
        t
    }))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
