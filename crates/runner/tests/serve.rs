//! `demiurgic serve` over plain HTTP on a free loopback port, with the default model on flex:
//! the same tokens as the CLI for the same prompt, parameters and seed; streaming chunks that
//! concatenate to the non-streamed text; n, stop, seeds; every error class as an OpenAI error
//! object; a busy server answering 429; a short request finishing while a long one runs; a
//! client that disconnects freeing its slot.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_demiurgic")
}

struct Server {
    child: Child,
    addr: String,
    name: String,
    /// The line that said where it listens.
    startup: String,
    /// Every later line of its stderr (the request log).
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn model() -> String {
    let out = Command::new(bin()).arg("fetch-model").output().expect("run demiurgic fetch-model");
    assert!(out.status.success(), "fetch-model: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

// the child is killed and waited for by `Server`'s Drop
#[allow(clippy::zombie_processes)]
fn start(extra: &[&str]) -> Server {
    let m = model();
    let mut child = Command::new(bin())
        .args(["serve", "--model", &m, "--port", "0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start demiurgic serve");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server exited before listening");
        }
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            // keep reading stderr so the server never blocks on it; its lines are kept
            let log = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
            let lines = log.clone();
            std::thread::spawn(move || {
                let mut l = String::new();
                while err.read_line(&mut l).map(|n| n > 0).unwrap_or(false) {
                    lines.lock().unwrap().push(l.trim_end().to_string());
                    l.clear();
                }
            });
            let name = std::path::Path::new(&m).file_name().unwrap().to_string_lossy().to_string();
            return Server { child, addr, name, startup: line.trim_end().to_string(), log };
        }
    }
}

const KEY: &str = "test-key";

/// One HTTP/1.1 request: (status, body) with chunked bodies decoded.
fn http(addr: &str, method: &str, path: &str, body: Option<&str>, key: Option<&str>) -> (u16, String) {
    let (st, _, body) = http_with(addr, method, path, body, key, "");
    (st, body)
}

/// [`http`] with extra header lines (each ending in `\r\n`), returning the response's head too
/// (lower-cased).
fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    key: Option<&str>,
    headers: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let body = body.unwrap_or("");
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let head = head.to_ascii_lowercase();
    let chunked = head.contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    (status, head, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn post(srv: &Server, path: &str, body: &Value) -> (u16, Value) {
    let (st, b) = http(&srv.addr, "POST", path, Some(&body.to_string()), Some(KEY));
    (st, serde_json::from_str(&b).unwrap_or_else(|e| panic!("not JSON ({e}): {b}")))
}

/// The `data:` payloads of a server-sent event stream.
fn events(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
}

fn cli(args: &[&str]) -> Value {
    let out = Command::new(bin()).args(["generate", "--json"]).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_error(st: u16, v: &Value, want: u16, param: Option<&str>) {
    assert_eq!(st, want, "{v}");
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string() && e.get("param").is_some() && e.get("code").is_some(), "{v}");
    if let Some(p) = param {
        assert_eq!(e["param"], p, "{v}");
    }
}

#[test]
fn openai_api_over_http() {
    let srv = start(&["--api-key", KEY, "--max-batch", "2"]);
    let m = model();
    let (st, b) = http(&srv.addr, "GET", "/health", None, None);
    assert_eq!((st, b.contains("ok")), (200, true), "{b}");
    let (st, b) = http(&srv.addr, "GET", "/v1/models", None, Some(KEY));
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["data"][0]["id"], srv.name.as_str());

    // completion, greedy: the CLI's tokens
    let prompt = "The capital of France is";
    let (st, v) =
        post(&srv, "/v1/completions", &json!({"model": srv.name, "prompt": prompt, "max_tokens": 8, "temperature": 0}));
    assert_eq!(st, 200, "{v}");
    let want = cli(&["--model", &m, "--prompt", prompt, "--greedy", "--max-new-tokens", "8"]);
    assert_eq!(v["choices"][0]["text"], want["texts"][0], "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["usage"]["completion_tokens"], want["lengths"][0]);
    assert_eq!(v["usage"]["prompt_tokens"], want["prompt_ids"][0].as_array().unwrap().len());

    // chat, greedy: the CLI's --chat answer
    let q = "What is the capital of France?";
    let req =
        json!({"model": srv.name, "messages": [{"role": "user", "content": q}], "max_tokens": 12, "temperature": 0});
    let (st, v) = post(&srv, "/v1/chat/completions", &req);
    assert_eq!(st, 200, "{v}");
    let want = cli(&["--model", &m, "--chat", "--prompt", q, "--greedy", "--max-new-tokens", "12"]);
    assert_eq!(v["choices"][0]["message"]["content"], want["texts"][0]);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");

    // streaming: chunks concatenate to the non-streamed text; usage at the end; [DONE]
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let (st, body) = http(&srv.addr, "POST", "/v1/chat/completions", Some(&sreq.to_string()), Some(KEY));
    assert_eq!(st, 200, "{body}");
    let ev = events(&body);
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert_eq!(text, v["choices"][0]["message"]["content"].as_str().unwrap());
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"].is_string()));
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], v["usage"]["completion_tokens"]);

    // n = 2 with a seed: reproducible, and the CLI's rows for the same seed
    let sreq = json!({"prompt": "Once upon a time", "max_tokens": 10, "temperature": 0.9, "n": 2, "seed": 7});
    let (_, a) = post(&srv, "/v1/completions", &sreq);
    let (_, b) = post(&srv, "/v1/completions", &sreq);
    assert_eq!(a["choices"].as_array().unwrap().len(), 2);
    assert_eq!(a["choices"], b["choices"], "same seed, same text");
    let want = cli(&[
        "--model",
        &m,
        "--prompt",
        "Once upon a time",
        "--max-new-tokens",
        "10",
        "--temperature",
        "0.9",
        "--top-k",
        "0",
        "--top-p",
        "1",
        "--num-return-sequences",
        "2",
        "--seed",
        "7",
    ]);
    for i in 0..2 {
        assert_eq!(a["choices"][i]["text"], want["texts"][i], "row {i}");
    }
    // streamed with n = 2: each choice's chunks concatenate to its text
    let mut st_req = sreq.clone();
    st_req["stream"] = json!(true);
    let (_, body) = http(&srv.addr, "POST", "/v1/completions", Some(&st_req.to_string()), Some(KEY));
    let mut texts = [String::new(), String::new()];
    for e in events(&body).iter().filter(|e| *e != "[DONE]") {
        let c: Value = serde_json::from_str(e).unwrap();
        let i = c["choices"][0]["index"].as_u64().unwrap() as usize;
        texts[i] += c["choices"][0]["text"].as_str().unwrap_or("");
    }
    for i in 0..2 {
        assert_eq!(texts[i], a["choices"][i]["text"].as_str().unwrap(), "streamed choice {i}");
    }

    // stop strings end the text before them, finish_reason "stop"
    let (_, v) = post(
        &srv,
        "/v1/completions",
        &json!({"prompt": "def f(x):", "max_tokens": 40, "temperature": 0, "stop": ["\n"]}),
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(!v["choices"][0]["text"].as_str().unwrap().contains('\n'));
    // logprobs
    let (_, v) =
        post(&srv, "/v1/completions", &json!({"prompt": "2 + 2 =", "max_tokens": 3, "temperature": 0, "logprobs": 2}));
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 2, "{v}");

    // a processor field OpenAI lacks, by its config name: no token repeats
    let tokens = |extra: Value| {
        let mut req = json!({"prompt": "1, 2, 3, 4,", "max_tokens": 12, "temperature": 0, "logprobs": 0});
        req.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (st, v) = post(&srv, "/v1/completions", &req);
        assert_eq!(st, 200, "{v}");
        let t: Vec<String> = serde_json::from_value(v["choices"][0]["logprobs"]["tokens"].clone()).unwrap();
        assert_eq!(t.len(), 12, "{v}");
        t
    };
    let distinct = |t: &[String]| t.iter().collect::<std::collections::HashSet<_>>().len();
    let plain = tokens(json!({}));
    assert!(distinct(&plain) < plain.len(), "the plain continuation repeats a token: {plain:?}");
    let unique = tokens(json!({"no_repeat_ngram_size": 1}));
    assert_eq!(distinct(&unique), unique.len(), "no_repeat_ngram_size 1: {unique:?}");

    // errors, as OpenAI error objects
    let (st, b) = http(&srv.addr, "GET", "/v1/models", None, None);
    assert_error(st, &serde_json::from_str(&b).unwrap(), 401, None);
    let (st, b) = http(&srv.addr, "GET", "/v1/models", None, Some("wrong"));
    assert_error(st, &serde_json::from_str(&b).unwrap(), 401, None);
    let (st, b) = http(&srv.addr, "GET", "/v2/nothing", None, Some(KEY));
    assert_error(st, &serde_json::from_str(&b).unwrap(), 404, None);
    // CORS is off by default: no header lets a browser page read the answer
    let (_, head, _) = http_with(&srv.addr, "GET", "/health", None, None, "Origin: https://app.example\r\n");
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    assert!(srv.startup.contains("2 slots,"), "{}", srv.startup);
    // OPTIONS (no CORS): 405 with an error object, as any method a route does not answer
    let (st, head, b) = http_with(&srv.addr, "OPTIONS", "/v1/chat/completions", None, Some(KEY), "");
    assert_error(st, &serde_json::from_str(&b).unwrap(), 405, None);
    assert!(head.contains("\r\nallow: post"), "{head}");
    let (st, v) = post(&srv, "/v1/completions", &json!({"model": "gpt-4", "prompt": "hi"}));
    assert_error(st, &v, 404, Some("model"));
    for (bad, param) in [
        (json!({"prompt": "hi", "temperature": 3}), "temperature"),
        (json!({"prompt": "hi", "top_p": 0}), "top_p"),
        (json!({"prompt": "hi", "n": 0}), "n"),
        (json!({"prompt": "hi", "max_tokens": "ten"}), "max_tokens"),
        (json!({"prompt": "hi", "presence_penalty": 2.5}), "presence_penalty"),
        (json!({"prompt": "hi", "logit_bias": {"abc": 1}}), "logit_bias"),
        (json!({"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}), "stop"),
        (json!({"prompt": [999999999]}), "prompt"),
        (json!({"temperature": 1}), "prompt"),
        (json!({"messages": []}), "messages"),
        (
            json!({"prompt": "hi", "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "foo"}}}}),
            "response_format",
        ),
        (json!({"prompt": "hi", "response_format": {"type": "yaml"}}), "response_format"),
        (json!({"prompt": "hi", "guided_regex": "[0-9"}), "guided_regex"),
        (json!({"prompt": "hi", "guided_choice": "yes"}), "guided_choice"),
        (json!({"prompt": "hi", "guided_regex": "a", "guided_choice": ["a"]}), "guided_choice"),
        // the processors' own fields, by their config names
        (json!({"prompt": "hi", "dry_base": 0.5}), "dry_base"),
        (json!({"prompt": "hi", "mirostat": "two"}), "mirostat"),
        (json!({"prompt": "hi", "top_k": "x"}), "top_k"),
    ] {
        let path = if bad.get("messages").is_some() { "/v1/chat/completions" } else { "/v1/completions" };
        let (st, v) = post(&srv, path, &bad);
        assert_error(st, &v, 400, Some(param));
    }
    let (st, b) = http(&srv.addr, "POST", "/v1/completions", Some("{not json"), Some(KEY));
    assert_error(st, &serde_json::from_str(&b).unwrap(), 400, None);
    let (st, v) = post(&srv, "/v1/completions", &json!({"prompt": "hi", "max_tokens": 100000}));
    assert_error(st, &v, 400, Some("prompt"));
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let big = json!({"prompt": "x".repeat(2 << 20)}).to_string();
    let (st, b) = http(&srv.addr, "POST", "/v1/completions", Some(&big), Some(KEY));
    assert_error(st, &serde_json::from_str(&b).unwrap(), 413, None);

    // a short request sent while a long stream runs is answered before the stream's [DONE]: a
    // server that ran requests one at a time would answer it only after the stream ended
    let body = json!({"prompt": "Write a long story.", "max_tokens": 200, "min_tokens": 200, "temperature": 0,
        "stream": true})
    .to_string();
    let (started, streaming) = std::sync::mpsc::channel();
    let long = stream_in_background(&srv.addr, &body, started);
    streaming.recv_timeout(Duration::from_secs(60)).expect("the long stream sent nothing");
    let (st, v) = post(&srv, "/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2, "temperature": 0}));
    let short_done = Instant::now();
    assert_eq!(st, 200, "{v}");
    let (head, done_at) = long.join().unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let done_at = done_at.expect("the long stream ended without [DONE]");
    assert!(short_done < done_at, "the short reply came {:?} after the long stream's [DONE]", short_done - done_at);
}

/// Send `body` to `/v1/completions` on a raw connection from a thread: `started` gets a message at
/// the first bytes of the answer; the thread returns the answer's first read and the instant
/// `[DONE]` arrived (None when the connection closed without it).
fn stream_in_background(
    addr: &str,
    body: &str,
    started: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<(String, Option<Instant>)> {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::spawn(move || {
        let (mut all, mut buf, mut head) = (Vec::new(), [0u8; 4096], String::new());
        loop {
            let n = s.read(&mut buf).unwrap_or(0);
            if n == 0 {
                return (head, None);
            }
            if all.is_empty() {
                head = String::from_utf8_lossy(&buf[..n]).to_string();
                let _ = started.send(());
            }
            all.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&all).contains("data: [DONE]") {
                return (head, Some(Instant::now()));
            }
        }
    })
}

/// Structured output through the API: `response_format` json_schema / json_object and vLLM's
/// `guided_*` fields, streamed and not, several seeds at once (`n`) — every answer validates.
#[test]
fn structured_output_over_http() {
    let srv = start(&["--api-key", KEY, "--max-batch", "4"]);
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 16}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let msgs = json!([{"role": "user", "content": "Describe a person as JSON."}]);
    let body = json!({"messages": msgs, "max_tokens": 64, "n": 3, "seed": 5,
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}});
    let (st, v) = post(&srv, "/v1/chat/completions", &body);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"].as_array().unwrap().len(), 3, "n = 3: {v}");
    for c in v["choices"].as_array().unwrap() {
        let text = c["message"]["content"].as_str().unwrap();
        let doc: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["name", "age"], "{text}");
        assert!(doc["name"].as_str().unwrap().chars().count() <= 16 && doc["age"].as_u64().unwrap() <= 120, "{text}");
        assert_eq!(c["finish_reason"], "stop", "{v}");
    }
    // streamed json_object: the chunks concatenate to one JSON object
    let body = json!({"messages": msgs, "max_tokens": 96, "stream": true, "seed": 1, "response_format": {"type": "json_object"}});
    let (st, b) = http(&srv.addr, "POST", "/v1/chat/completions", Some(&body.to_string()), Some(KEY));
    assert_eq!(st, 200, "{b}");
    let text: String = events(&b)
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str().map(String::from))
        .collect();
    assert!(serde_json::from_str::<Value>(&text).is_ok_and(|d| d.is_object()), "{text:?}");
    // vLLM's guided fields on the completions endpoint
    let (st, v) = post(
        &srv,
        "/v1/completions",
        &json!({"prompt": "The answer is", "max_tokens": 8, "guided_choice": ["yes", "no"]}),
    );
    assert_eq!(st, 200, "{v}");
    assert!(["yes", "no"].contains(&v["choices"][0]["text"].as_str().unwrap()), "{v}");
    let (st, v) = post(
        &srv,
        "/v1/completions",
        &json!({"prompt": "Date:", "max_tokens": 16, "guided_regex": "20[0-9]{2}-[01][0-9]-[0-3][0-9]"}),
    );
    assert_eq!(st, 200, "{v}");
    let t = v["choices"][0]["text"].as_str().unwrap();
    assert!(t.len() == 10 && t.starts_with("20") && t.as_bytes()[4] == b'-', "{t:?}");
}

#[test]
fn busy_server_answers_429_and_a_disconnected_client_frees_its_slot() {
    let srv = start(&["--max-batch", "1", "--max-queue", "0", "--max-context", "2048"]);
    // a long streaming request holds the only slot: 2,000 tokens that cannot end early
    // (`min_tokens`), over 20 s of decoding on any machine this runs on
    let mut s = TcpStream::connect(&srv.addr).unwrap();
    let body = json!({"prompt": "Tell me everything.", "max_tokens": 2000, "min_tokens": 2000, "temperature": 0,
        "stream": true})
    .to_string();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 256];
    let n = s.read(&mut first).unwrap();
    let head = String::from_utf8_lossy(&first[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (st, head, b) =
        http_with(&srv.addr, "POST", "/v1/completions", Some(r#"{"prompt": "hi", "max_tokens": 2}"#), None, "");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_error(st, &v, 429, None);
    assert!(head.contains("\r\nretry-after: 1"), "a 429 says when to retry: {head}");
    assert!(srv.startup.contains("1 slot,"), "{}", srv.startup);
    // the client goes away: its generation stops at the next step and the slot frees within a
    // few seconds, far sooner than the 2,000 tokens would have taken
    drop(s);
    let t = Instant::now();
    loop {
        let (st, _) = http(&srv.addr, "POST", "/v1/completions", Some(r#"{"prompt": "hi", "max_tokens": 2}"#), None);
        if st == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "the slot was not freed within 5 s after the client left");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A venv under target/ with the official `openai` package (pinned), made when absent.
fn openai_python() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let venv = target.join("serve-venv");
    let py = venv.join("bin/python");
    let ready = py.exists()
        && Command::new(&py)
            .args(["-c", "import openai, prometheus_client"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !ready {
        let st = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().expect("python3");
        assert!(st.success(), "cannot create a venv at {} (install python3-venv)", venv.display());
        let st = Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "openai==3.57.0", "prometheus-client==0.21.1"])
            .status()
            .expect("pip");
        assert!(st.success(), "pip install openai==3.57.0 prometheus-client==0.21.1 failed");
    }
    py
}

#[test]
fn the_official_openai_client_works_unchanged() {
    let py = openai_python();
    let srv = start(&["--api-key", KEY]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/openai_client_check.py");
    let out = Command::new(py)
        .arg(script)
        .args([&format!("http://{}/v1", srv.addr), KEY, &srv.name])
        .output()
        .expect("run the openai client check");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

/// 32 concurrent clients × 4 requests (mixed lengths, streaming or not, some cancelled mid-way):
/// every request completes with its own prompt's tokens (greedy: the same as alone up to a near-tie) or is
/// cancelled cleanly, and the server's resident memory comes back to its level.
#[test]
fn load_of_32_clients_keeps_every_answer_its_own() {
    let srv = start(&["--max-batch", "4"]);
    let prompts =
        ["The sky is", "My favourite food is", "def add(a, b):", "Paris is the capital of", "1, 2, 3,", "Dear diary,"];
    let lengths = [3usize, 8, 16];
    // the answer of each (prompt, length) alone, as (whole text, the text of its tokens before
    // the first near-tie step): a batched row sees the same weights but its attention sums keys
    // in another order (its cache rows start elsewhere), so a step whose top-2 logprobs are
    // within float noise may go either way ("The sky is a canvas of" colors -1.9635 / endless
    // -1.9665); the tokens before it may not
    const NEAR_TIE: f64 = 0.01;
    let mut alone = std::collections::HashMap::new();
    let mut ties = 0;
    for p in prompts {
        for n in lengths {
            let (st, v) =
                post(&srv, "/v1/completions", &json!({"prompt": p, "max_tokens": n, "temperature": 0, "logprobs": 2}));
            assert_eq!(st, 200, "{v}");
            let lp = &v["choices"][0]["logprobs"];
            let tokens: Vec<String> = serde_json::from_value(lp["tokens"].clone()).unwrap();
            let tops = lp["top_logprobs"].as_array().unwrap();
            assert_eq!(tokens.len(), tops.len(), "{v}");
            let safe = tops
                .iter()
                .position(|t| {
                    let mut l: Vec<f64> = t.as_object().unwrap().values().map(|x| x.as_f64().unwrap()).collect();
                    l.sort_by(|a, b| b.total_cmp(a));
                    l.len() < 2 || l[0] - l[1] < NEAR_TIE
                })
                .unwrap_or(tokens.len());
            ties += usize::from(safe < tokens.len());
            let text = v["choices"][0]["text"].as_str().unwrap().to_string();
            assert_eq!(tokens.concat(), text, "tokens of {p:?}");
            alone.insert((p, n), (text, tokens[..safe].concat()));
        }
    }
    assert!(ties < alone.len(), "every answer has a near-tie: pick other prompts");
    let before = rss_kib(srv.child.id());
    let alone = std::sync::Arc::new(alone);
    let addr = srv.addr.clone();
    let clients: Vec<_> = (0..32)
        .map(|c| {
            let (alone, addr) = (alone.clone(), addr.clone());
            std::thread::spawn(move || {
                let mut done = (0, 0);
                for k in 0..4 {
                    let i = c * 4 + k;
                    let (p, n) = (prompts[i % prompts.len()], lengths[(i / prompts.len()) % lengths.len()]);
                    let stream = i % 3 == 0;
                    let body = json!({"prompt": p, "max_tokens": n, "temperature": 0, "stream": stream}).to_string();
                    if i % 7 == 0 {
                        // cancelled mid-way: read the start of the answer, then hang up
                        let mut s = TcpStream::connect(&addr).unwrap();
                        write!(s, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
                        let mut buf = [0u8; 64];
                        let n = s.read(&mut buf).unwrap();
                        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 "), "request {i}");
                        done.1 += 1;
                        continue;
                    }
                    let (st, b) = http(&addr, "POST", "/v1/completions", Some(&body), None);
                    assert_eq!(st, 200, "request {i}: {b}");
                    let text = if stream {
                        let ev = events(&b);
                        assert_eq!(ev.last().map(String::as_str), Some("[DONE]"), "request {i}");
                        ev[..ev.len() - 1]
                            .iter()
                            .map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap_or("").to_string())
                            .collect::<String>()
                    } else {
                        serde_json::from_str::<Value>(&b).unwrap()["choices"][0]["text"].as_str().unwrap().to_string()
                    };
                    let (whole, safe) = &alone[&(p, n)];
                    assert!(
                        text == *whole || (safe != whole && text.starts_with(safe.as_str())),
                        "request {i} ({p:?}, {n} tokens, stream {stream}) got another answer: {text:?}, alone {whole:?} (the same up to {safe:?} at least)"
                    );
                    done.0 += 1;
                }
                done
            })
        })
        .collect();
    let (mut ok, mut cancelled) = (0, 0);
    for c in clients {
        let (a, b) = c.join().expect("a client failed");
        ok += a;
        cancelled += b;
    }
    assert_eq!(ok + cancelled, 128);
    assert!(cancelled > 0 && ok > 100);
    // the server still answers, and its memory is back near where it was
    let (st, _) = post(&srv, "/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2, "temperature": 0}));
    assert_eq!(st, 200);
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(srv.child.id());
    assert!(after <= before + 64 * 1024, "resident memory grew from {before} KiB to {after} KiB");
    eprintln!("load: {ok} completed, {cancelled} cancelled; RSS {before} KiB before, {after} KiB after");
}

/// The first-hour defects of the server (issue 29): streamed log-probabilities, finite
/// alternatives after truncation, the context the server accepts, greedy `n`, `echo`, `best_of`,
/// user words in errors, 405s, CORS, and one log line per request.
#[test]
fn first_hour_server_defects() {
    let srv = start(&["--max-context", "512", "--log-format", "json", "--cors-origin", "https://app.example"]);
    let mut sent: Vec<(String, String, u64)> = vec![]; // what the request log must list
    let mut call = |method: &str, path: &str, body: Option<&Value>, headers: &str| {
        let (st, head, b) = http_with(&srv.addr, method, path, body.map(|b| b.to_string()).as_deref(), None, headers);
        sent.push((method.to_string(), path.to_string(), st as u64));
        (st, head, b)
    };
    let json_of = |b: &str| -> Value { serde_json::from_str(b).unwrap_or_else(|e| panic!("not JSON ({e}): {b}")) };

    // /v1/models reports the context this server accepts (--max-context), not the model's
    let (_, _, b) = call("GET", "/v1/models", None, "");
    assert_eq!(json_of(&b)["data"][0]["context_length"], 512, "{b}");
    assert!(srv.startup.contains("4 slots,"), "{}", srv.startup);

    // 1. streamed chat logprobs: the non-streamed entries, token for token
    let req = json!({"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8,
        "temperature": 0, "logprobs": true, "top_logprobs": 2});
    let (st, _, b) = call("POST", "/v1/chat/completions", Some(&req), "");
    assert_eq!(st, 200, "{b}");
    let whole = json_of(&b);
    let want = whole["choices"][0]["logprobs"]["content"].as_array().unwrap().clone();
    assert_eq!(want.len() as u64, whole["usage"]["completion_tokens"].as_u64().unwrap(), "{whole}");
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let (_, _, body) = call("POST", "/v1/chat/completions", Some(&sreq), "");
    let mut got = vec![];
    for e in events(&body).iter().filter(|e| *e != "[DONE]") {
        if let Some(c) = json_of(e)["choices"][0]["logprobs"]["content"].as_array() {
            got.extend(c.iter().cloned());
        }
    }
    assert!(!want.is_empty());
    assert_eq!(got.len(), want.len(), "streamed {got:?}\nwhole {want:?}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["token"], w["token"]);
        assert!((g["logprob"].as_f64().unwrap() - w["logprob"].as_f64().unwrap()).abs() < 1e-4, "{g} vs {w}");
        assert_eq!(g["top_logprobs"].as_array().unwrap().len(), 2, "{g}");
    }
    // completions: streamed token_logprobs concatenate to the whole ones, offsets run on
    let creq = json!({"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0, "logprobs": 1});
    let (_, _, b) = call("POST", "/v1/completions", Some(&creq), "");
    let whole = json_of(&b)["choices"][0]["logprobs"].clone();
    let mut sreq = creq.clone();
    sreq["stream"] = json!(true);
    let (_, _, body) = call("POST", "/v1/completions", Some(&sreq), "");
    let (mut lps, mut offsets) = (vec![], vec![]);
    for e in events(&body).iter().filter(|e| *e != "[DONE]") {
        let l = &json_of(e)["choices"][0]["logprobs"];
        if !l.is_null() {
            lps.extend(l["token_logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()));
            offsets.extend(l["text_offset"].as_array().unwrap().iter().cloned());
        }
    }
    let want: Vec<f64> = whole["token_logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(lps.len(), want.len(), "{body}");
    assert!(lps.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4), "{lps:?} vs {want:?}");
    assert_eq!(Value::Array(offsets), whole["text_offset"]);

    // 2. after top-k/top-p truncation every alternative still has a number: the model's own
    // distribution is reported
    let req = json!({"messages": [{"role": "user", "content": "Say something."}], "max_tokens": 6,
        "temperature": 0.7, "top_k": 2, "top_p": 0.5, "seed": 3, "logprobs": true, "top_logprobs": 5});
    let (_, _, b) = call("POST", "/v1/chat/completions", Some(&req), "");
    let v = json_of(&b);
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert!(!content.is_empty(), "{v}");
    for e in content {
        let alts = e["top_logprobs"].as_array().unwrap();
        assert_eq!(alts.len(), 5, "{e}");
        assert!(alts.iter().all(|a| a["logprob"].as_f64().is_some_and(|l| l <= 0.0)), "{e}");
        assert!(e["logprob"].as_f64().is_some(), "{e}");
    }

    // 4. n = 2 at temperature 0: two identical choices (as OpenAI); errors in the request's words
    let (st, _, b) =
        call("POST", "/v1/completions", Some(&json!({"prompt": "Hi", "max_tokens": 4, "temperature": 0, "n": 2})), "");
    let v = json_of(&b);
    assert_eq!(st, 200, "{v}");
    let ch = v["choices"].as_array().unwrap();
    assert_eq!((ch.len(), ch[0]["text"].clone(), ch[1]["index"].clone()), (2, ch[1]["text"].clone(), json!(1)), "{v}");
    let (st, _, b) =
        call("POST", "/v1/completions", Some(&json!({"prompt": "Hi", "max_tokens": 4, "min_new_tokens": 8})), "");
    let v = json_of(&b);
    assert_error(st, &v, 400, Some("min_tokens"));
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("max_tokens") && !m.contains("max_new_tokens") && !m.contains("min_new_tokens"), "{m}");

    // 5. echo: the prompt before the completion, with its log-probabilities (the first has none)
    let prompt = "The capital of France is";
    let base = json!({"prompt": prompt, "max_tokens": 4, "temperature": 0});
    let (_, _, b) = call("POST", "/v1/completions", Some(&base), "");
    let plain = json_of(&b)["choices"][0]["text"].as_str().unwrap().to_string();
    let mut echo = base.clone();
    echo["echo"] = json!(true);
    echo["logprobs"] = json!(1);
    let (st, _, b) = call("POST", "/v1/completions", Some(&echo), "");
    let v = json_of(&b);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"][0]["text"].as_str().unwrap(), format!("{prompt}{plain}"), "{v}");
    let lp = &v["choices"][0]["logprobs"];
    let n_prompt = v["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    let tl = lp["token_logprobs"].as_array().unwrap();
    assert_eq!(tl.len(), n_prompt + 4, "{v}");
    assert!(tl[0].is_null() && tl[1..].iter().all(Value::is_f64), "{v}");
    assert!(lp["top_logprobs"][0].is_null() && lp["top_logprobs"][1].as_object().unwrap().len() == 1, "{v}");
    assert_eq!(lp["text_offset"][n_prompt], prompt.len(), "{v}");
    let tokens: String = lp["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(tokens, v["choices"][0]["text"].as_str().unwrap());
    let mut secho = echo.clone();
    secho["stream"] = json!(true);
    let (_, _, body) = call("POST", "/v1/completions", Some(&secho), "");
    let streamed: String = events(&body)
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| json_of(e)["choices"][0]["text"].as_str().map(String::from))
        .collect();
    assert_eq!(streamed, format!("{prompt}{plain}"));
    // best_of: the n = 3 sample (same seed) of highest mean log-probability
    let samples =
        json!({"prompt": "Once upon a time", "max_tokens": 6, "temperature": 1.0, "seed": 5, "n": 3, "logprobs": 0});
    let (_, _, b) = call("POST", "/v1/completions", Some(&samples), "");
    let v = json_of(&b);
    let mean = |c: &Value| {
        let l: Vec<f64> =
            c["logprobs"]["token_logprobs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        l.iter().sum::<f64>() / l.len() as f64
    };
    let best = v["choices"].as_array().unwrap().iter().max_by(|a, b| mean(a).total_cmp(&mean(b))).unwrap().clone();
    let mut bo = samples.clone();
    bo["n"] = json!(1);
    bo["best_of"] = json!(3);
    bo.as_object_mut().unwrap().remove("logprobs");
    let (st, _, b) = call("POST", "/v1/completions", Some(&bo), "");
    let v = json_of(&b);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"].as_array().unwrap().len(), 1);
    assert_eq!(v["choices"][0]["text"], best["text"], "{v}");
    assert!(v["choices"][0]["logprobs"].is_null(), "not asked: {v}");
    for bad in [json!({"prompt": "Hi", "n": 2, "best_of": 1}), json!({"prompt": "Hi", "best_of": 2, "stream": true})] {
        let (st, _, b) = call("POST", "/v1/completions", Some(&bad), "");
        assert_error(st, &json_of(&b), 400, Some("best_of"));
    }

    // 6. a role this server does not take (OpenAI's deprecated `function`): refused in user words
    // (`tool` messages are accepted since tool calling: the official client's test sends them)
    let req = json!({"messages": [{"role": "user", "content": "hi"}, {"role": "function", "content": "42"}]});
    let (st, _, b) = call("POST", "/v1/chat/completions", Some(&req), "");
    let v = json_of(&b);
    assert_error(st, &v, 400, Some("messages[1].role"));
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains(r#"role "function" is not supported"#) && !m.contains("String("), "{m}");

    // 7. a method a route does not answer: 405 with an error object and Allow
    // (OPTIONS without CORS: in `openai_api_over_http`; here the CORS layer answers it)
    for (method, path, allow) in [("GET", "/v1/completions", "post"), ("POST", "/v1/models", "get")] {
        let (st, head, b) = call(method, path, None, "");
        assert_error(st, &json_of(&b), 405, None);
        assert!(head.contains(&format!("\r\nallow: {allow}")), "{method} {path}: {head}");
    }
    // CORS for the origin given: the preflight and the answer carry it
    let (st, head, _) = call("OPTIONS", "/v1/chat/completions", None,
        "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n");
    assert!(st < 300 && head.contains("access-control-allow-origin: https://app.example"), "{st} {head}");
    let (_, head, _) = call("GET", "/v1/models", None, "Origin: https://app.example\r\n");
    assert!(head.contains("access-control-allow-origin: https://app.example"), "{head}");
    let (_, head, _) = call("GET", "/v1/models", None, "Origin: https://evil.example\r\n");
    assert!(!head.contains("access-control-allow-origin"), "{head}");

    // one JSON log line per request, streams included (written when they end)
    let t = Instant::now();
    let logged = loop {
        let lines: Vec<Value> =
            srv.log.lock().unwrap().iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect();
        if lines.len() >= sent.len() || t.elapsed() > Duration::from_secs(10) {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut got: Vec<(String, String, u64)> = logged
        .iter()
        .map(|l| {
            (l["method"].as_str().unwrap().into(), l["path"].as_str().unwrap().into(), l["status"].as_u64().unwrap())
        })
        .collect();
    let mut want = sent.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "the request log");
    let chat = logged.iter().find(|l| l["path"] == "/v1/chat/completions" && l["status"] == 200).unwrap();
    assert!(chat["completion_tokens"].as_u64().is_some_and(|t| t > 0) && chat["duration_ms"].is_number(), "{chat}");
}

/// `/metrics` text parsed by the official Prometheus client's parser: `name{label="v",…}` → value.
fn scrape(srv: &Server) -> std::collections::HashMap<String, f64> {
    let (st, text) = http(&srv.addr, "GET", "/metrics", None, None);
    assert_eq!(st, 200, "{text}");
    let parse = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()) if k != "model_name")
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new(openai_python())
        .args(["-c", parse])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the Prometheus parser refused:\n{text}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Issue 28's lifecycle and metrics: `/metrics` counts exactly what was served (vLLM's names,
/// read by the Prometheus parser); SIGTERM drains: `/ready` 503, new requests 503 with
/// `Retry-After`, the running stream finishes, the process exits 0.
#[test]
fn metrics_count_exactly_and_sigterm_drains() {
    let mut srv = start(&["--drain-timeout", "120", "--max-context", "2048"]);
    let (mut prompt, mut completion) = (0.0, 0.0);
    for body in [
        json!({"prompt": "The capital of France is", "max_tokens": 5, "temperature": 0}),
        json!({"prompt": "Once upon a time", "max_tokens": 7, "temperature": 0.8, "n": 2, "seed": 1}),
    ] {
        let (st, v) = post(&srv, "/v1/completions", &body);
        assert_eq!(st, 200, "{v}");
        prompt += v["usage"]["prompt_tokens"].as_f64().unwrap();
        completion += v["usage"]["completion_tokens"].as_f64().unwrap();
    }
    let req = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "temperature": 0,
        "stream": true, "stream_options": {"include_usage": true}});
    let (_, body) = http(&srv.addr, "POST", "/v1/chat/completions", Some(&req.to_string()), Some(KEY));
    let last: Value =
        events(&body).iter().rev().find(|e| e.contains("usage")).map(|e| serde_json::from_str(e).unwrap()).unwrap();
    prompt += last["usage"]["prompt_tokens"].as_f64().unwrap();
    completion += last["usage"]["completion_tokens"].as_f64().unwrap();
    let (st, _) = post(&srv, "/v1/completions", &json!({"prompt": "hi", "temperature": 7}));
    assert_eq!(st, 400);
    // the prefix cache: a second prompt sharing ~1,000 tokens with the first computes only the
    // rest, and says so in `usage.prompt_tokens_details.cached_tokens`
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(100);
    let mut cached = 0.0;
    for (i, tail) in ["What did the fox do?", "Who was lazy?"].iter().enumerate() {
        let (st, v) = post(
            &srv,
            "/v1/completions",
            &json!({"prompt": format!("{long}{tail}"), "max_tokens": 4,
            "temperature": 0}),
        );
        assert_eq!(st, 200, "{v}");
        prompt += v["usage"]["prompt_tokens"].as_f64().unwrap();
        completion += v["usage"]["completion_tokens"].as_f64().unwrap();
        let c = v["usage"]["prompt_tokens_details"]["cached_tokens"].as_f64().unwrap();
        if i == 0 {
            assert_eq!(c, 0.0, "{v}");
        } else {
            // all of it but the last block and the tail every prompt recomputes (17 tokens, or
            // AVX2_MAX_ROWS + 1 on AVX2 without VNNI: the server runs on this CPU)
            let tokens = v["usage"]["prompt_tokens"].as_f64().unwrap() as usize;
            let least = tokens - demiurgic_model::engine::prefix_recompute() - demiurgic_model::engine::PREFIX_BLOCK;
            assert!(c >= least as f64 && least > 900, "the shared prefix came from the cache: {v}");
        }
        cached += c;
    }
    let m = scrape(&srv);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("{k} missing: {m:?}"));
    assert_eq!(get("vllm:prompt_tokens_total{}"), prompt);
    assert_eq!(get("vllm:generation_tokens_total{}"), completion);
    assert_eq!(get("vllm:time_to_first_token_seconds_count{}"), 5.0, "five generation requests");
    assert_eq!(get("vllm:e2e_request_latency_seconds_count{}"), 5.0);
    assert_eq!(get("vllm:prefix_cache_hits_total{}"), cached);
    assert_eq!(get("vllm:prefix_cache_queries_total{}"), prompt);
    let finished: f64 = m.iter().filter(|(k, _)| k.starts_with("vllm:request_success_total")).map(|(_, v)| v).sum();
    assert_eq!(finished, 6.0, "six choices finished");
    assert_eq!((get("vllm:num_requests_running{}"), get("vllm:num_requests_waiting{}")), (0.0, 0.0));
    assert_eq!(get(r#"demiurgic_http_requests_total{route="/v1/completions",status="200"}"#), 4.0);
    assert_eq!(get(r#"demiurgic_http_requests_total{route="/v1/completions",status="400"}"#), 1.0);
    assert!((0.0..=1.0).contains(&get("vllm:kv_cache_usage_perc{}")));
    let (st, _) = http(&srv.addr, "GET", "/ready", None, None);
    assert_eq!(st, 200);

    // SIGTERM while a long stream runs
    let body = json!({"prompt": "Tell me a long story.", "max_tokens": 300, "min_tokens": 300, "temperature": 0,
        "stream": true})
    .to_string();
    let (started, streaming) = std::sync::mpsc::channel();
    let long = stream_in_background(&srv.addr, &body, started);
    streaming.recv_timeout(Duration::from_secs(60)).expect("the long stream sent nothing");
    let st = Command::new("kill").args(["-TERM", &srv.child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let t = Instant::now();
    loop {
        let (st, _) = http(&srv.addr, "GET", "/ready", None, None);
        if st == 503 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "/ready still {st} after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (st, head, b) =
        http_with(&srv.addr, "POST", "/v1/completions", Some(r#"{"prompt": "hi", "max_tokens": 2}"#), None, "");
    assert_error(st, &serde_json::from_str(&b).unwrap(), 503, None);
    assert!(head.contains("\r\nretry-after: 1"), "{head}");
    let (head, done_at) = long.join().unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(done_at.is_some(), "the running stream was finished, [DONE] included");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = srv.child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the server did not exit after draining");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    assert!(srv.log.lock().unwrap().iter().any(|l| l.contains("draining")), "the drain is said on stderr");
}

/// Issue 28's deployment check without a cluster: three replicas behind nginx (Debian's
/// `nginx-light`) on loopback, a bounded load, one replica sent SIGTERM mid-run. Its running
/// requests finish, new ones get 503 and nginx retries them on another replica (as a gateway
/// would): every request is answered exactly once — each client gets one 200, and the replicas'
/// request logs hold exactly as many 200 completions as requests were sent.
#[test]
fn three_replicas_behind_nginx_lose_nothing_when_one_drains() {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nginx is needed (apt-get install nginx-light; .ci/run installs it)");
    let mut replicas: Vec<Server> =
        (0..3).map(|_| start(&["--drain-timeout", "60", "--log-format", "json", "--max-batch", "2"])).collect();
    let dir = std::env::temp_dir().join(format!("demiurgic-nginx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let d = dir.display();
    let upstreams: String = replicas.iter().map(|r| format!("server {} max_fails=0;\n", r.addr)).collect();
    let conf = format!(
        "master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 256; }}\n\
         http {{\n access_log {d}/access.log;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n \
         fastcgi_temp_path {d}/fcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n \
         upstream demiurgic {{\n{upstreams} }}\n server {{\n  listen 127.0.0.1:{port};\n  location / {{\n   \
         proxy_pass http://demiurgic;\n   proxy_http_version 1.1;\n   proxy_read_timeout 300s;\n   \
         proxy_next_upstream error timeout http_503 non_idempotent;\n   proxy_next_upstream_tries 3;\n  }}\n }}\n}}\n"
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    struct Nginx(Child);
    impl Drop for Nginx {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _nginx = Nginx(
        Command::new(nginx)
            .args(["-p", &d.to_string(), "-e", &format!("{d}/error.log"), "-c"])
            .arg(&conf_path)
            // one process (`master_process off`), holding none of the test's pipes: killing it
            // leaves no worker behind
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx"),
    );
    let front = format!("127.0.0.1:{port}");
    let t = Instant::now();
    while TcpStream::connect(&front).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "nginx did not listen: {:?}",
            std::fs::read_to_string(dir.join("error.log"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // 4 clients, 9 requests each; replica 0 gets SIGTERM once a third of them are answered
    const CLIENTS: usize = 4;
    const EACH: usize = 9;
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (front, answered) = (front.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut statuses = vec![];
                for i in 0..EACH {
                    let body = json!({"prompt": format!("Request {c}-{i}: the numbers are"), "max_tokens": 16,
                        "temperature": 0})
                    .to_string();
                    let (st, b) = http(&front, "POST", "/v1/completions", Some(&body), None);
                    statuses.push((st, b));
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                statuses
            })
        })
        .collect();
    while answered.load(std::sync::atomic::Ordering::SeqCst) < CLIENTS * EACH / 3 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = Command::new("kill").args(["-TERM", &replicas[0].child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let mut ok = 0;
    for c in clients {
        for (st, b) in c.join().unwrap() {
            assert_eq!(st, 200, "a request was lost: {b}");
            let v: Value = serde_json::from_str(&b).unwrap();
            assert!(v["choices"][0]["text"].is_string(), "{v}");
            ok += 1;
        }
    }
    assert_eq!(ok, CLIENTS * EACH);
    // the drained replica exited cleanly
    let t = Instant::now();
    let status = loop {
        if let Some(s) = replicas[0].child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "replica 0 did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // none duplicated: the replicas completed exactly one generation per request
    std::thread::sleep(Duration::from_millis(200));
    let mut done = 0;
    let mut refused = 0;
    for r in &replicas {
        for l in r.log.lock().unwrap().iter() {
            let Ok(v) = serde_json::from_str::<Value>(l) else { continue };
            if v["path"] == "/v1/completions" {
                match v["status"].as_u64() {
                    Some(200) => done += 1,
                    Some(503) => refused += 1,
                    other => panic!("unexpected status {other:?}: {l}"),
                }
            }
        }
    }
    assert_eq!(done, CLIENTS * EACH, "completions served across the replicas ({refused} refused while draining)");
    replicas.clear();
    let _ = std::fs::remove_dir_all(&dir);
}
