//! The binary on the default model (SmolLM2, its GGUF tokenizer and chat template): what a new
//! user does in the first hour — stop strings with escapes, chat output, special tokens, prompts
//! from files and stdin, logprobs in text mode, info / tokenize / detokenize, the memory check
//! and a damaged cached model.
use std::io::Write;
use std::process::{Command, Stdio};

fn model() -> String {
    demiurgic_runner::fetch::default_model(false).expect("the default model").display().to_string()
}

fn run(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_demiurgic"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run demiurgic");
    if let Some(text) = stdin {
        // a command refused at start exits before reading its stdin: the pipe may be closed
        // already, which is not the test's failure (its exit code and stderr are checked)
        match child.stdin.take().unwrap().write_all(text.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.unwrap(),
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn stop_strings_understand_escapes() {
    let m = model();
    let (code, out, err) = run(
        &[
            "generate",
            "--model",
            &m,
            "--prompt",
            "def fibonacci(n):",
            "--greedy",
            "--max-new-tokens",
            "40",
            "--stop",
            "\\n",
            "--json",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["config"]["stop"], serde_json::json!(["\n"]), "the escape became a newline");
    assert_eq!(j["finish_reasons"][0], "stop", "{out}");
    assert!(!j["texts"][0].as_str().unwrap().contains('\n'), "the text stops before the stop string: {out}");
    // a stop string that starts with '-' is a value
    let (code, _, err) = run(
        &["generate", "--model", &m, "--prompt", "- item one", "--greedy", "--max-new-tokens", "4", "--stop", "---"],
        None,
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn chat_prints_only_the_answer_without_special_tokens() {
    let m = model();
    let q = "What is the capital of France?";
    let (code, out, err) =
        run(&["generate", "--model", &m, "--chat", "--prompt", q, "--greedy", "--max-new-tokens", "30"], None);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(q), "the user's message is not echoed: {out:?}");
    assert!(!out.contains("<|im_end|>") && !out.contains("<|im_start|>"), "{out:?}");
    assert!(!out.trim().is_empty());
    let (_, out, _) = run(
        &["generate", "--model", &m, "--chat", "--prompt", q, "--greedy", "--max-new-tokens", "64", "--json"],
        None,
    );
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    // the answer ends with the chat's end-of-turn token, which the text leaves out
    assert_eq!(j["finish_reasons"][0], "eos", "the answer ends within 64 tokens: {out}");
    assert!(!j["texts"][0].as_str().unwrap().contains("<|im_end|>"), "{out}");
    {
        let (_, out, _) = run(
            &[
                "generate",
                "--model",
                &m,
                "--chat",
                "--prompt",
                q,
                "--greedy",
                "--max-new-tokens",
                "64",
                "--json",
                "--keep-special-tokens",
            ],
            None,
        );
        let k: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(k["texts"][0].as_str().unwrap().ends_with("<|im_end|>"), "{out}");
    }
    // a system message changes the rendered prompt
    let (_, out, _) = run(
        &[
            "generate",
            "--model",
            &m,
            "--chat",
            "--system",
            "Answer in French.",
            "--prompt",
            q,
            "--greedy",
            "--max-new-tokens",
            "4",
            "--json",
        ],
        None,
    );
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_ne!(s["prompt_ids"], j["prompt_ids"]);
}

#[test]
fn prompts_from_files_and_stdin() {
    let m = model();
    let f = std::env::temp_dir().join(format!("demiurgic-prompt-{}.txt", std::process::id()));
    std::fs::write(&f, "def fibonacci(n):").unwrap();
    let (c1, a, e1) = run(
        &[
            "generate",
            "--model",
            &m,
            "--prompt-file",
            f.to_str().unwrap(),
            "--greedy",
            "--max-new-tokens",
            "6",
            "--json",
        ],
        None,
    );
    let (c2, b, e2) = run(
        &["generate", "--model", &m, "--prompt", "-", "--greedy", "--max-new-tokens", "6", "--json"],
        Some("def fibonacci(n):"),
    );
    let (c3, c, e3) = run(
        &["generate", "--model", &m, "--prompt", "def fibonacci(n):", "--greedy", "--max-new-tokens", "6", "--json"],
        None,
    );
    assert_eq!((c1, c2, c3), (0, 0, 0), "{e1}{e2}{e3}");
    let ids = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["generated_ids"].clone();
    assert_eq!(ids(&a), ids(&c));
    assert_eq!(ids(&b), ids(&c));
}

#[test]
fn logprobs_in_text_mode_with_alternatives() {
    let m = model();
    let (code, out, err) = run(
        &[
            "generate",
            "--model",
            &m,
            "--prompt",
            "The capital of France is",
            "--greedy",
            "--max-new-tokens",
            "3",
            "--top-logprobs",
            "2",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("logprobs (processed distribution):"), "{out}");
    let rows: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())).collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(rows.iter().all(|r| r.contains('[')), "alternatives shown: {out}");
    let (_, out, _) = run(
        &[
            "generate",
            "--model",
            &m,
            "--prompt",
            "The capital of France is",
            "--greedy",
            "--max-new-tokens",
            "3",
            "--top-logprobs",
            "2",
            "--json",
            "--raw-logprobs",
        ],
        None,
    );
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["logprobs_of"], "raw");
    let top = &j["top_logprobs"][0][0];
    assert_eq!(top.as_array().unwrap().len(), 2);
    // greedy: the chosen token is the most likely one
    assert_eq!(top[0]["id"], j["generated_ids"][0][0]);
    assert!((top[0]["logprob"].as_f64().unwrap() - j["logprobs"][0][0].as_f64().unwrap()).abs() < 1e-5);
    // after top-k truncation the processed distribution lists only the tokens it could draw:
    // never a -inf (JSON null) alternative
    let (code, out, err) = run(
        &[
            "generate",
            "--model",
            &m,
            "-p",
            "Once upon a time",
            "-n",
            "6",
            "--top-k",
            "2",
            "--top-logprobs",
            "5",
            "--json",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let steps = j["top_logprobs"][0].as_array().unwrap();
    assert_eq!(steps.len(), 6, "{out}");
    for alts in steps {
        let alts = alts.as_array().unwrap();
        assert!((1..=2).contains(&alts.len()), "top-k 2 leaves at most 2: {alts:?}");
        assert!(alts.iter().all(|a| a["logprob"].as_f64().is_some_and(f64::is_finite)), "{alts:?}");
    }
}

#[test]
fn info_tokenize_and_detokenize() {
    let m = model();
    let (code, out, err) = run(&["info", "--model", &m, "--json"], None);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["architecture"], "llama");
    assert_eq!(j["context_length"], 8192);
    assert!(j["weights"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("Q4_1")));
    assert!(j["weights"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("Q8_0")));
    assert_eq!(j["chat_template"], true);
    assert!(j["eos_token_ids"][0].as_str().unwrap().contains("<|im_end|>"));
    // the layers in words: SmolLM2's 30 are all alike
    let kinds = j["layer_kinds"].as_array().expect("layer_kinds");
    assert_eq!(kinds.len(), 1, "{kinds:?}");
    let k = kinds[0].as_str().unwrap();
    assert!(k.starts_with("30 × full attention, RoPE θ 100000") && k.ends_with("SwiGLU"), "{k}");
    let p = j["parameters"].as_u64().unwrap();
    assert!((130_000_000..140_000_000).contains(&p), "{p}");
    let (code, out, _) = run(&["tokenize", "--model", &m, "--text", "héllo 🦀", "--json"], None);
    assert_eq!(code, 0);
    let t: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<String> = t["ids"].as_array().unwrap().iter().map(|x| x.to_string()).collect();
    assert_eq!(t["texts"].as_array().unwrap().len(), ids.len(), "a readable piece per token");
    let (code, out, _) = run(&["detokenize", "--model", &m, "--ids", &ids.join(",")], None);
    assert_eq!(code, 0);
    assert_eq!(out.trim_end_matches('\n'), "héllo 🦀");
    let (code, out, _) = run(&["tokenize", "--model", &m, "--text", "-x"], None);
    assert_eq!(code, 0, "text starting with '-'");
    assert!(!out.is_empty());
    let (code, _, err) = run(&["detokenize", "--model", &m, "--ids", "1,999999"], None);
    assert_eq!(code, 1);
    assert!(err.contains("999999"), "{err}");
}

#[test]
fn chat_loop_keeps_history_in_the_cache() {
    let m = model();
    let (code, out, err) = run(
        &["chat", "--model", &m, "--greedy", "--max-new-tokens", "12"],
        Some("Hello!\nWhat did I just say?\n/reset\nHi\n/exit\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().filter(|l| !l.trim().is_empty()).count() >= 3, "three answers: {out:?}");
    // the second turn reuses the first turn's keys and values: "[12 new tokens; 40 prompt
    // tokens reused from the previous turn, 9 computed; …]" (or "; 30 prompt tokens computed")
    let reused: Vec<u64> = err
        .lines()
        .filter_map(|l| l.find('[').map(|i| &l[i..]))
        .filter(|l| l.contains("new token"))
        .map(|l| {
            let part = l.split("; ").nth(1).unwrap_or("");
            if part.contains("reused") {
                part.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(u64::MAX)
            } else {
                0
            }
        })
        .collect();
    assert_eq!(reused.len(), 3, "{err}");
    assert_eq!(reused[0], 0, "first turn: nothing cached");
    assert!(reused[1] > 10, "second turn: the first turn comes from the cache: {err}");
    assert_eq!(reused[2], 0, "after /reset: nothing cached");
    assert!(err.contains("conversation forgotten"));
}

#[test]
fn memory_is_checked_before_allocating() {
    let m = model();
    let (code, out, err) = run(
        &[
            "generate",
            "--model",
            &m,
            "--prompt",
            "Hi",
            "--do-sample",
            "--num-return-sequences",
            "512",
            "--max-new-tokens",
            "8000",
        ],
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("MiB") && err.contains("--num-return-sequences") && err.trim().lines().count() == 1, "{err}");
}

#[test]
fn damaged_cached_model_is_detected() {
    let home = std::env::temp_dir().join(format!("demiurgic-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let good = std::fs::read(model()).unwrap();
    std::fs::write(home.join(demiurgic_runner::fetch::FILE_NAME), &good[..good.len() / 2]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_demiurgic"))
        .args(["generate", "--prompt", "Hi", "--max-new-tokens", "2"])
        .env("DEMIURGIC_HOME", &home)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("damaged") && err.contains("fetch-model --force"), "{err}");
}

#[test]
fn fill_in_the_middle_needs_the_model_tokens() {
    let m = model();
    let (code, _, err) = run(
        &["generate", "--model", &m, "--prompt", "def f(x):\n", "--suffix", "\n    return y", "--max-new-tokens", "4"],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("<fim_prefix>"), "{err}");
}

/// Structured output from the command line: every constraint flag on the default model, with
/// greedy and seeded sampling, a stop string, and the errors (bad regex, schema, grammar file,
/// two constraints) exiting 1 with the flag named before anything is generated.
#[test]
fn structured_output_flags() {
    let m = model();
    let gen = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["generate", "--model", &m, "--chat", "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = run(&args, None);
        assert_eq!(code, 0, "{extra:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{extra:?}: {e}: {out}"))
    };
    let texts = |v: &serde_json::Value| -> Vec<String> {
        v["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
    };
    let schema = r#"{"type":"object","properties":{"name":{"type":"string","maxLength":20},"age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"],"additionalProperties":false}"#;
    let person = |t: &str| {
        let d: serde_json::Value = serde_json::from_str(t).unwrap_or_else(|e| panic!("{t:?}: {e}"));
        let keys: Vec<&String> = d.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["name", "age"], "{t}");
        assert!(d["name"].as_str().unwrap().chars().count() <= 20 && d["age"].as_u64().unwrap() <= 120, "{t}");
    };
    let prompt = ["--prompt", "Describe a fictional person as JSON."];
    let v = gen(&[&prompt[..], &["--greedy", "--max-new-tokens", "64", "--json-schema", schema]].concat());
    person(&texts(&v)[0]);
    assert_eq!(v["finish_reasons"][0], "eos", "{v}");
    // the schema from a file, three sampled rows
    let file = std::env::temp_dir().join(format!("demiurgic-schema-{}.json", std::process::id()));
    std::fs::write(&file, schema).unwrap();
    let f = file.to_str().unwrap();
    let v = gen(&[
        &prompt[..],
        &["--seed", "7", "--num-return-sequences", "3", "--max-new-tokens", "64", "--json-schema", f],
    ]
    .concat());
    std::fs::remove_file(&file).unwrap();
    assert_eq!(texts(&v).len(), 3);
    texts(&v).iter().for_each(|t| person(t));
    let v = gen(&[&prompt[..], &["--greedy", "--max-new-tokens", "96", "--json-object"]].concat());
    assert!(serde_json::from_str::<serde_json::Value>(&texts(&v)[0]).is_ok_and(|d| d.is_object()), "{v}");
    let date = |t: &str| {
        t.len() == 10
            && t.chars().enumerate().all(|(i, c)| if i == 4 || i == 7 { c == '-' } else { c.is_ascii_digit() })
    };
    let apollo = [
        "--prompt",
        "When did Apollo 11 land?",
        "--greedy",
        "--max-new-tokens",
        "16",
        "--regex",
        "(19|20)[0-9]{2}-[01][0-9]-[0-3][0-9]",
    ];
    let v = gen(&apollo);
    assert!(date(&texts(&v)[0]), "{v}");
    // with a stop string: the constrained text stops at it
    let v = gen(&[&apollo[..], &["--stop", "-"]].concat());
    let t = &texts(&v)[0];
    assert!(t.len() == 4 && t.chars().all(|c| c.is_ascii_digit()) && v["finish_reasons"][0] == "stop", "{v}");
    let v = gen(&[
        "--prompt",
        "Is the sky blue?",
        "--seed",
        "1",
        "--num-return-sequences",
        "4",
        "--choice",
        "yes",
        "--choice",
        "no",
    ]);
    assert_eq!(texts(&v).len(), 4, "{v}");
    assert!(texts(&v).iter().all(|t| t == "yes" || t == "no"), "{v}");
    let grammar = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/examples/arithmetic.lark");
    let v = gen(&[
        "--prompt",
        "Write an arithmetic expression that equals 12.",
        "--greedy",
        "--max-new-tokens",
        "48",
        "--grammar",
        grammar,
    ]);
    let t = &texts(&v)[0];
    assert!(!t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || " +-*/()".contains(c)), "{v}");
    for (args, needle) in [
        (vec!["--regex", "[0-9"], "--regex"),
        (vec!["--json-schema", r#"{"type":"foo"}"#], "--json-schema"),
        (vec!["--json-schema", "{not json"], "not JSON"),
        (vec!["--grammar", "/no/such/file.lark"], "cannot read --grammar"),
        (vec!["--choice", "a", "--regex", "b"], "choose one"),
    ] {
        let mut a = vec!["generate", "--model", &m, "--prompt", "hi"];
        a.extend(args.iter().copied());
        let (code, out, err) = run(&a, None);
        assert_eq!(code, 1, "{args:?}: {out} {err}");
        assert!(err.contains(needle) && out.is_empty(), "{args:?}: {err}");
    }
}

/// The strategies through the CLI: beam search ends candidates on a stop string and returns
/// logprobs; prompt lookup returns plain greedy's tokens and logprobs; what a strategy cannot
/// honour is refused in the flag's words (exit 1).
#[test]
fn strategies_honour_stop_and_logprobs_or_refuse_by_flag() {
    let m = model();
    let gen = |extra: &[&str]| {
        let mut args =
            vec!["generate", "--model", &m, "--prompt", "def fibonacci(n):", "--max-new-tokens", "24", "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = run(&args, None);
        assert_eq!(code, 0, "{extra:?}: {err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    // beam search with a stop string: no returned text runs past it; logprobs per token
    let j = gen(&["--num-beams", "3", "--num-return-sequences", "2", "--stop", "\\n", "--logprobs"]);
    let texts = j["texts"].as_array().unwrap();
    assert_eq!(texts.len(), 2, "{j}");
    for (i, t) in texts.iter().enumerate() {
        assert!(!t.as_str().unwrap().contains('\n'), "beam row {i} runs past the stop: {j}");
        assert_eq!(
            j["logprobs"][i].as_array().unwrap().len(),
            j["lengths"][i].as_u64().unwrap() as usize,
            "beam row {i}: one logprob per token"
        );
    }
    assert!(j["finish_reasons"].as_array().unwrap().iter().any(|r| r == "stop"), "a beam ends on the stop: {j}");
    // prompt lookup: plain greedy's tokens and logprobs
    let plain = gen(&["--greedy", "--logprobs"]);
    let lookup = gen(&["--greedy", "--prompt-lookup", "4", "--logprobs"]);
    assert_eq!(lookup["generated_ids"], plain["generated_ids"]);
    let (a, b) = (plain["logprobs"][0].as_array().unwrap(), lookup["logprobs"][0].as_array().unwrap());
    assert_eq!(a.len(), b.len(), "{lookup}");
    assert!(!a.is_empty());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
        assert!((x - y).abs() < 1e-3, "step {i}: prompt lookup logprob {y} vs greedy {x}");
    }
    // refused by flag
    for (extra, flag) in [
        (&["--num-beams", "2", "--do-sample", "--seed", "1"][..], "--do-sample"),
        (&["--num-beams", "2", "--no-cache"][..], "--no-cache"),
        (&["--prompt-lookup", "3", "--no-cache"][..], "--no-cache"),
    ] {
        let mut args = vec!["generate", "--model", &m, "--prompt", "x", "--max-new-tokens", "4"];
        args.extend_from_slice(extra);
        let (code, _, err) = run(&args, None);
        assert_eq!(code, 1, "{extra:?} must be refused: {err}");
        assert!(err.contains(flag), "{extra:?}: the refusal names {flag}: {err}");
    }
}

/// Run `demiurgic ARGS` on a pseudo-terminal through `scripts/pty_drive.py` (steps: expect /
/// grow / send / sleep); returns its JSON report.
fn on_a_terminal(args: &[&str], steps: serde_json::Value) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pty_drive.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(steps.to_string())
        .arg(env!("CARGO_BIN_EXE_demiurgic"))
        .args(args)
        .output()
        .expect("python3 runs the pseudo-terminal driver");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Chat on a terminal (issue 29): Ctrl-C stops a reply and keeps the conversation, /help and
/// unknown commands are answered locally, ↑ recalls the previous line (history in a file),
/// Ctrl-C at an empty prompt asks for one more, Ctrl-D leaves on a new line.
#[test]
fn chat_on_a_terminal() {
    let m = model();
    let dir = std::env::temp_dir().join(format!("demiurgic-chat-tty-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let history = dir.join("history.txt");
    let h = history.to_str().unwrap();
    let args =
        ["chat", "--model", &m, "--greedy", "--max-new-tokens", "400", "--min-new-tokens", "400", "--history", h];
    let steps = serde_json::json!([
        {"expect": "> ", "timeout": 120},
        {"send": "Tell me a very long story about a dragon.\r"},
        {"grow": 60, "timeout": 120},
        {"send": "\u{3}"},
        {"expect": "(interrupted", "timeout": 60},
        {"expect": "new tokens", "timeout": 10},
        {"expect": "> ", "timeout": 10},
        {"send": "/help\r"},
        {"expect": "/reset", "timeout": 10},
        {"expect": "> ", "timeout": 10},
        {"send": "/nonsense\r"},
        {"expect": "unknown command /nonsense", "timeout": 10},
        {"expect": "> ", "timeout": 10},
        // ↑ recalls "/nonsense": Enter sends it again, answered locally again
        {"send": "\u{1b}[A"},
        {"sleep": 0.3},
        {"send": "\r"},
        {"expect": "unknown command /nonsense", "timeout": 10},
        {"expect": "> ", "timeout": 10},
        {"send": "\u{3}"},
        {"expect": "Ctrl-C again", "timeout": 10},
        {"expect": "> ", "timeout": 10},
        {"send": "\u{4}"},
    ]);
    let r = on_a_terminal(&args, steps);
    let out = r["output"].as_str().unwrap();
    assert!(r["ok"].as_bool().unwrap(), "step {} failed; output:\n{out}", r["failed"]);
    assert_eq!(r["status"], 0, "Ctrl-D leaves normally: {out}");
    assert!(!out.contains("^[[A"), "the arrow key did not reach the model: {out}");
    // the interrupted reply is part of the conversation: the stats line says what was reused
    assert!(out.contains("prompt tokens computed") || out.contains("prompt token computed"), "{out}");
    // Ctrl-D: the shell's prompt would start on a line of its own
    assert!(out.ends_with('\n'), "{:?}", &out[out.len().saturating_sub(40)..]);
    let saved = std::fs::read_to_string(&history).expect("the history file");
    assert!(saved.contains("Tell me a very long story about a dragon.") && saved.contains("/nonsense"), "{saved}");
    // Ctrl-C twice at the prompt leaves too
    let steps = serde_json::json!([
        {"expect": "> ", "timeout": 120},
        {"send": "\u{3}"},
        {"expect": "Ctrl-C again", "timeout": 10},
        {"expect": "> ", "timeout": 10},
        {"send": "\u{3}"},
    ]);
    let r = on_a_terminal(&["chat", "--model", &m, "--no-history"], steps);
    assert!(r["ok"].as_bool().unwrap(), "{r}");
    assert_eq!(r["status"], 0, "{r}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The chat's flags and messages (issue 29): --stop is honoured (and cut), a flag chat cannot
/// honour is refused at start, a full context is said when it happens, the stats line is plain.
#[test]
fn chat_stop_refusals_and_full_context() {
    let m = model();
    let q = "Count from 1 to 20, separated by commas.\n";
    let reply = |extra: &[&str]| {
        let mut args = vec!["chat", "--model", &m, "--greedy", "--max-new-tokens", "40", "--no-history"];
        args.extend_from_slice(extra);
        let (code, out, err) = run(&args, Some(q));
        assert_eq!(code, 0, "{err}");
        (out, err)
    };
    let (plain, err) = reply(&[]);
    assert!(err.contains("prompt tokens computed"), "{err}");
    let words: Vec<&str> = plain.split_whitespace().collect();
    assert!(words.len() >= 6, "{plain:?}");
    let stop = words[4];
    let (cut, _) = reply(&["--stop", stop]);
    let at = plain.find(stop).unwrap();
    assert_eq!(cut.trim_end(), plain[..at].trim_end(), "--stop {stop:?} ends the reply before it");
    let (kept, _) = reply(&["--stop", stop, "--include-stop"]);
    assert_eq!(kept.trim_end(), plain[..at + stop.len()].trim_end(), "--include-stop keeps it");
    // refused at start, exit 1, naming the flag
    let (code, _, err) = run(&["chat", "--model", &m, "--do-sample", "--num-return-sequences", "2"], Some("Hi\n"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--num-return-sequences 2"), "{err}");
    // the conversation fills --ctx: said when it happens
    let (code, _, err) = run(
        &["chat", "--model", &m, "--greedy", "--max-new-tokens", "200", "--ctx", "48", "--no-history"],
        Some("Tell me a long story.\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("filled the 48 positions") && err.contains("/reset"), "{err}");
}

/// CLI habits (issue 29): one trailing newline of stdin / --prompt-file dropped, the stop string
/// cut in text mode as in --json, the drawn seed in the stats line, an OS error said once.
#[test]
fn cli_prompt_newlines_stop_cut_seed_and_errors() {
    let m = model();
    let p = "The capital of France is";
    let ids = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["generate", "--model", &m, "--greedy", "-n", "1", "--json"];
        all.extend_from_slice(args);
        let (code, out, err) = run(&all, stdin);
        assert_eq!(code, 0, "{err}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        j["prompt_ids"][0].clone()
    };
    let want = ids(&["--prompt", p], None);
    // -t / --threads sizes the CPU backends' pool
    let (code, out, err) = run(&["generate", "--model", &m, "-p", p, "--greedy", "-n", "1", "-t", "1", "--json"], None);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["stats"]["threads"], 1, "{out}");
    assert_eq!(ids(&["--prompt", "-"], Some(&format!("{p}\n"))), want, "echo's newline is dropped");
    assert_ne!(ids(&["--prompt", "-", "--keep-trailing-newline"], Some(&format!("{p}\n"))), want);
    let file = std::env::temp_dir().join(format!("demiurgic-prompt-{}.txt", std::process::id()));
    std::fs::write(&file, format!("{p}\r\n")).unwrap();
    assert_eq!(ids(&["-f", file.to_str().unwrap()], None), want, "the file's newline is dropped");
    let _ = std::fs::remove_file(&file);

    // the stop string: cut in text mode as in --json; --include-stop keeps it in both
    let gen = |extra: &[&str]| {
        let mut all = vec!["generate", "--model", &m, "-p", "Name three colours:", "--greedy", "-n", "24"];
        all.extend_from_slice(extra);
        let (code, out, err) = run(&all, None);
        assert_eq!(code, 0, "{err}");
        out
    };
    let j: serde_json::Value = serde_json::from_str(&gen(&["--json"])).unwrap();
    let full = j["texts"][0].as_str().unwrap().to_string();
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() >= 4, "{full:?}");
    let stop = words[2];
    let at = full.find(stop).unwrap();
    let text = gen(&["--stop", stop]);
    assert_eq!(text, format!("Name three colours:{}\n", &full[..at]), "text mode cuts {stop:?}");
    let j: serde_json::Value = serde_json::from_str(&gen(&["--stop", stop, "--json"])).unwrap();
    assert_eq!(j["texts"][0], full[..at]);
    let text = gen(&["--stop", stop, "--include-stop"]);
    assert_eq!(text, format!("Name three colours:{}\n", &full[..at + stop.len()]));

    // the seed drawn from the clock is in the stats line, and reproduces the text
    let (code, out, err) = run(&["generate", "--model", &m, "-p", "Once upon a time", "-n", "8"], None);
    assert_eq!(code, 0, "{err}");
    let seed = err.split(", seed ").nth(1).and_then(|s| s.split(']').next()).expect("a seed in the stats line");
    let (_, again, _) = run(&["generate", "--model", &m, "-p", "Once upon a time", "-n", "8", "-s", seed], None);
    assert_eq!(out, again, "--seed {seed} reproduces the run");

    // an OS error is said once
    let empty = std::env::temp_dir().join(format!("demiurgic-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let (code, _, err) = run(&["generate", "--model", empty.to_str().unwrap(), "-p", "hi"], None);
    assert_eq!(code, 1);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&empty);
}
