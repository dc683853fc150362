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

/// The eval's default checkpoint: Gemma 3 270M base (Q4_K_M), which writes function bodies after
/// a HumanEval prompt; `--model` takes any supported checkpoint (`--model smollm2` for the
/// instruct table).
const DEFAULT_MODEL: &str = "gemma3-270m";
/// Rows decoded together: three problems' 10 samples, the next joining as soon as 10 rows are
/// free. Measured on 2 Xeon cores, flex, precise-code on the first 16 problems × 10 samples
/// (9b64b32): 16 rows 187 tok/s, 32 rows 224, 48 rows 223 (the many-row group kernels keep up to
/// 64 rows; past 32 the batch's tail, where few rows are left, eats the gain).
const DEFAULT_BATCH: &str = "32";

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
            "--presets" | "--samples" | "--limit" | "--backend" | "--batch" | "--model" | "--format"
            | "--max-new-tokens" => {
                let v = it.next().with_context(|| format!("{a} needs a value"))?;
                pass.push(a.to_string());
                pass.push(v.to_string());
            }
            other => bail!("unknown eval argument {other:?} (allowed: --quick, --render FILE, --presets LIST, --samples N, --limit P, --backend B, --batch N, --model PATH|NAME, --format completion|instruct|auto, --max-new-tokens N)"),
        }
    }
    let has = |pass: &[String], a: &str| pass.iter().any(|p| p == a);
    // the default model writes code after a plain HumanEval prompt (a base model, completion
    // format); the table's 10 samples per problem give pass@1, 2, 5 and 10
    if !has(&pass, "--model") {
        pass.extend(["--model".into(), DEFAULT_MODEL.into()]);
    }
    if quick {
        if !has(&pass, "--limit") {
            pass.extend(["--limit".into(), "30".into()]);
        }
        if !has(&pass, "--samples") {
            pass.extend(["--samples".into(), "1".into()]);
        }
    } else if !has(&pass, "--samples") {
        pass.extend(["--samples".into(), "10".into()]);
    }
    if !has(&pass, "--batch") {
        pass.extend(["--batch".into(), DEFAULT_BATCH.into()]);
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
    let bars: Vec<Bar> = report["presets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| Bar {
                    name: p["preset"].as_str().unwrap_or("").to_string(),
                    pass1: p["pass@1"].as_f64().unwrap_or(0.0),
                    ci: interval(p),
                })
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

/// A preset's pass@1 interval, where its report has one.
fn interval(p: &Value) -> Option<(f64, f64)> {
    let c = p["pass@1_ci"].as_array()?;
    Some((c.first()?.as_f64()?, c.get(1)?.as_f64()?))
}

/// A preset's pass@1 interval as table text ("—" for reports written before intervals).
fn ci_text(p: &Value) -> String {
    interval(p).map_or("—".to_string(), |(lo, hi)| format!("{:.1}% – {:.1}%", 100.0 * lo, 100.0 * hi))
}

fn markdown(r: &Value) -> String {
    let presets = r["presets"].as_array().cloned().unwrap_or_default();
    let problems = presets.first().map(|p| p["problems"].clone()).unwrap_or(json!(0));
    let pct = |v: &Value| v.as_f64().map_or("—".to_string(), |x| format!("{:.1}%", 100.0 * x));
    let num = |v: &Value, prec: usize| v.as_f64().map_or("—".to_string(), |x| format!("{x:.prec$}"));
    let stops =
        r["stops"].as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>()).unwrap_or_default();
    let mut s = format!(
        "# HumanEval — {} problems, {} format{}, {} new tokens at most, stops {:?}\n\n{} · commit {} · {} · backend {} · model {}\n\n",
        problems,
        r["format"].as_str().unwrap_or("completion"),
        r["format_reason"].as_str().map_or(String::new(), |w| format!(" ({w})")),
        r["max_new_tokens"],
        stops,
        r["date"].as_str().unwrap_or(""),
        r["commit"].as_str().unwrap_or(""),
        r["cpu"].as_str().unwrap_or(""),
        r["backend"].as_str().unwrap_or(""),
        r["model"].as_str().unwrap_or("")
    );
    // pass@k columns: every k > 1 that some preset reports
    let mut ks: Vec<u64> = presets
        .iter()
        .filter_map(|p| p["pass@k"].as_object())
        .flat_map(|m| m.keys().filter_map(|k| k.parse().ok()).collect::<Vec<u64>>())
        .filter(|&k| k > 1)
        .collect();
    ks.sort_unstable();
    ks.dedup();
    s += "| preset | samples / problem | pass@1 | 95% interval |";
    for k in &ks {
        s += &format!(" pass@{k} |");
    }
    s += " problems solved | unique solutions | repetition score | s / completion | tokens/s |\n|---|---:|---:|---:|";
    s += &"---:|".repeat(ks.len());
    s += "---:|---:|---:|---:|---:|\n";
    for p in &presets {
        let ci = ci_text(p);
        s += &format!(
            "| {} | {} | {} | {ci} |",
            p["preset"].as_str().unwrap_or(""),
            p["samples_per_problem"],
            pct(&p["pass@1"])
        );
        for k in &ks {
            s += &format!(" {} |", pct(&p["pass@k"][k.to_string()]));
        }
        let solved = p["problems_solved"].as_u64().map_or("—".to_string(), |x| x.to_string());
        s += &format!(
            " {solved} | {} | {} | {} | {} |\n",
            num(&p["unique_solutions"], 2),
            num(&p["repetition_score"], 3),
            num(&p["seconds_per_completion"], 2),
            num(&p["tokens_per_s"], 0)
        );
    }
    if let Some(m) = r["ci_method"].as_str() {
        s += &format!(
            "\nIntervals: {m}. pass@k: the HumanEval paper's unbiased estimator over the samples of each problem.\n"
        );
    }
    if let Some(cmp) = r["comparisons"].as_array().filter(|c| !c.is_empty()) {
        s += "\nPaired comparisons on the same problems (Δ = pass@1 of the first − the second; \
              a paired bootstrap over problems; an order is claimed only where the interval excludes 0):\n\n\
              | presets | Δ pass@1 | 95% interval | solved only by the first | solved only by the second | order |\n\
              |---|---:|---:|---|---|---|\n";
        let ids = |v: &Value| {
            let a: Vec<&str> = v.as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect()).unwrap_or_default();
            let short: Vec<&str> = a.iter().map(|id| id.rsplit('/').next().unwrap_or(id)).collect();
            match short.len() {
                0 => "0".to_string(),
                n if n <= 10 => format!("{n}: {}", short.join(", ")),
                n => format!("{n}: {}, …", short[..10].join(", ")),
            }
        };
        for c in cmp {
            let ci = c["delta_ci"].as_array().filter(|a| a.len() == 2).map_or("—".to_string(), |a| {
                format!(
                    "{:+.1} – {:+.1} pt",
                    100.0 * a[0].as_f64().unwrap_or(f64::NAN),
                    100.0 * a[1].as_f64().unwrap_or(f64::NAN)
                )
            });
            s += &format!(
                "| {} vs {} | {:+.1} pt | {ci} | {} | {} | {} |\n",
                c["a"].as_str().unwrap_or(""),
                c["b"].as_str().unwrap_or(""),
                100.0 * c["delta_pass@1"].as_f64().unwrap_or(f64::NAN),
                ids(&c["solved_only_by_a"]),
                ids(&c["solved_only_by_b"]),
                c["order"].as_str().unwrap_or("")
            );
        }
    }
    s += "\nThe seed's table, beside ours (its model is not ours: its numbers come from a different, \
          larger model and cannot be compared in absolute terms — only the ordering of the presets can):\n\n\
          | preset | seed pass@1 | our pass@1 | our 95% interval |\n|---|---:|---:|---:|\n";
    for (name, pass) in SEED {
        let ours = presets.iter().find(|p| p["preset"] == name);
        let ci = ours.map_or("—".to_string(), ci_text);
        s += &format!("| {name} | {pass} | {} | {ci} |\n", ours.map_or("—".to_string(), |p| pct(&p["pass@1"])));
    }
    s += &format!(
        "\nIsolation of the generated code: {}\n",
        presets.first().and_then(|p| p["isolation"].as_str()).unwrap_or("")
    );
    s
}

/// One preset's bar: pass@1 and its 95% interval (absent in reports written before intervals).
struct Bar {
    name: String,
    pass1: f64,
    ci: Option<(f64, f64)>,
}

/// pass@1 per preset as labelled bars with their 95% intervals as whiskers, the seed's own
/// figure (another model) beside ours.
fn write_png(path: &std::path::Path, bars: &[Bar], title: &str) -> Result<()> {
    use plotters::prelude::*;
    plotters::style::register_font("sans-serif", FontStyle::Normal, crate::bench::font()?)
        .map_err(|_| anyhow::anyhow!("font does not load"))?;
    let root = BitMapBackend::new(path, (200 + 170 * bars.len() as u32, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let names: Vec<&str> = bars.iter().map(|b| b.name.as_str()).collect();
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
            bars.iter().enumerate().map(|(i, b)| {
                Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.48, b.pass1 * 100.0)], ours.filled())
            }),
        )?
        .label("ours (this model), with its 95% interval")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], ours.filled()));
    // the interval as a whisker with caps over each of our bars
    chart.draw_series(bars.iter().enumerate().filter_map(|(i, b)| b.ci.map(|c| (i, c))).flat_map(
        |(i, (lo, hi))| {
            let (x, w) = (i as f64 + 0.315, 0.06);
            let (lo, hi) = (lo * 100.0, hi * 100.0);
            [
                PathElement::new(vec![(x, lo), (x, hi)], BLACK.stroke_width(2)),
                PathElement::new(vec![(x - w, lo), (x + w, lo)], BLACK.stroke_width(2)),
                PathElement::new(vec![(x - w, hi), (x + w, hi)], BLACK.stroke_width(2)),
            ]
        },
    ))?;
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(i, b)| {
            seed_of(&b.name).map(|v| Rectangle::new([(i as f64 + 0.52, 0.0), (i as f64 + 0.85, v)], seed.filled()))
        }))?
        .label("the seed's table (another, larger model)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], seed.filled()));
    chart.draw_series(bars.iter().enumerate().flat_map(|(i, b)| {
        // the label above the whisker where there is one
        let top = b.ci.map_or(b.pass1, |c| c.1.max(b.pass1)) * 100.0;
        let mut t =
            vec![Text::new(format!("{:.1}%", b.pass1 * 100.0), (i as f64 + 0.17, top + 5.0), ("sans-serif", 15))];
        if let Some(sv) = seed_of(&b.name) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_shows_intervals_pass_at_k_and_comparisons() {
        let r = json!({"format": "completion", "format_reason": "auto: the checkpoint has no chat template",
            "max_new_tokens": 384, "stops": ["\ndef "], "ci_method": "95% percentile bootstrap over problems",
            "presets": [
                {"preset": "greedy", "samples_per_problem": 1, "problems": 4, "pass@1": 0.25,
                 "pass@1_ci": [0.0, 0.75], "pass@k": {"1": 0.25}, "problems_solved": 1},
                {"preset": "precise-code", "samples_per_problem": 10, "problems": 4, "pass@1": 0.1,
                 "pass@1_ci": [0.025, 0.2], "pass@k": {"1": 0.1, "2": 0.18, "5": 0.3, "10": 0.5}, "problems_solved": 2}],
            "comparisons": [{"a": "greedy", "b": "precise-code", "delta_pass@1": 0.15, "delta_ci": [-0.1, 0.4],
                "solved_only_by_a": ["HumanEval/3"], "solved_only_by_b": [], "order": "no order: the interval holds 0"}]});
        let md = markdown(&r);
        for want in [
            "completion format (auto: the checkpoint has no chat template)",
            "| pass@2 | pass@5 | pass@10 |",
            "| greedy | 1 | 25.0% | 0.0% – 75.0% | — | — | — | 1 |",
            "| precise-code | 10 | 10.0% | 2.5% – 20.0% | 18.0% | 30.0% | 50.0% | 2 |",
            "| greedy vs precise-code | +15.0 pt | -10.0 – +40.0 pt | 1: 3 | 0 | no order: the interval holds 0 |",
            "| precise-code | 42% | 10.0% | 2.5% – 20.0% |",
            "Intervals: 95% percentile bootstrap",
        ] {
            assert!(md.contains(want), "{want:?} not in\n{md}");
        }
    }

    #[test]
    fn markdown_renders_a_report_from_before_intervals() {
        // the committed report of 2026-11-30: no intervals, pass@k, format or comparisons
        let path = root().join("docs/eval/humaneval-smollm2-2026-11-30.json");
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(r.get("pass@1_ci").is_none() && r.get("comparisons").is_none());
        let md = markdown(&r);
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| baseline |")).collect();
        assert_eq!(rows.len(), 2, "the table and the seed's table: {md}");
        assert!(rows.iter().all(|l| l.contains("—")), "no interval shown as —: {rows:?}");
        assert!(!md.contains("pass@2") && !md.contains("Paired comparisons"), "{md}");
    }
}
