//! The OpenAI requests, typed: `/v1/completions` and `/v1/chat/completions` bodies, their checks
//! (each error names its field), and the [`Job`] they become. Fields this server has no use for
//! (`user`, …) are accepted and ignored, as before; the logit processors' fields that OpenAI
//! lacks (`dry_multiplier`, `xtc_probability`, `mirostat`, …) are read by their config names.
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use demiurgic_model::load::ChatMessage;
use demiurgic_model::DecodeOps;
use demiurgic_sampling::{Constraint, GenerationConfig, Processors};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::{now, App};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Completion,
    Chat,
}

/// A parsed request.
pub(crate) struct Job {
    pub kind: Kind,
    pub id: String,
    pub prompts: Vec<Vec<u32>>,
    /// The config of each submission to the engine (its `num_return_sequences` rows).
    pub config: GenerationConfig,
    /// Submissions per prompt: greedy `n > 1` runs `n` one-row submissions (identical choices,
    /// as OpenAI gives), sampling runs one with `num_return_sequences` rows.
    pub copies: usize,
    /// Choices returned per prompt (`n`).
    pub n: usize,
    /// Whether the response carries log-probabilities (`best_of` computes them to rank its
    /// candidates even when they are not asked for).
    pub logprobs: bool,
    /// Completions' `echo`: the prompt's text (and, with `logprobs`, its log-probabilities)
    /// before each choice's completion.
    pub echo: bool,
    /// Completions: each prompt's text (a token-id prompt decoded), what `echo` prints.
    pub prompt_texts: Vec<String>,
    /// Chat's tools (None: none given, or `tool_choice: "none"`).
    pub tools: Option<super::tools::Tools>,
    pub stream: bool,
    pub include_usage: bool,
}

impl Job {
    /// Candidate rows per prompt (`best_of`, or `n`).
    pub fn candidates(&self) -> usize {
        self.copies * self.config.num_return_sequences
    }

    /// Engine submissions in all.
    pub fn submissions(&self) -> usize {
        self.prompts.len() * self.copies
    }
}

/// Both endpoints' bodies (the endpoint decides which of `prompt` / `messages` is needed).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Request {
    model: Option<String>,
    /// A string, a list of strings, token ids, or a list of token-id lists.
    prompt: Option<Value>,
    messages: Option<Vec<Message>>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    min_p: Option<f64>,
    typical_p: Option<f64>,
    repetition_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
    min_tokens: Option<i64>,
    n: Option<i64>,
    best_of: Option<i64>,
    echo: Option<bool>,
    seed: Option<i64>,
    stop: Option<Stop>,
    logit_bias: Option<Map<String, Value>>,
    /// Completions: how many alternatives per token (0–5); chat: true/false.
    logprobs: Option<Value>,
    top_logprobs: Option<i64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    response_format: Option<Value>,
    guided_json: Option<Value>,
    guided_regex: Option<String>,
    guided_choice: Option<Vec<String>>,
    guided_grammar: Option<String>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    /// Everything else: the processors' own fields by name; the rest is ignored.
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: Value,
    #[serde(default)]
    content: Value,
    /// An assistant message's calls (OpenAI's shape).
    #[serde(default)]
    tool_calls: Value,
    /// A tool message's call.
    #[serde(default)]
    tool_call_id: Value,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<Value>),
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StreamOptions {
    include_usage: Option<bool>,
}

fn in_range(k: &str, v: Option<f64>, ok: impl Fn(f64) -> bool, range: &str) -> Result<Option<f64>, ApiError> {
    match v {
        Some(x) if !ok(x) => Err(ApiError::bad(k, format!("`{k}` = {x} is out of range ({range})"))),
        v => Ok(v),
    }
}

fn int_in(k: &str, v: Option<i64>, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    match v {
        Some(x) if x < lo || x > hi => Err(ApiError::bad(k, format!("`{k}` = {x} is out of range ({lo} to {hi})"))),
        v => Ok(v),
    }
}

fn ids_of(v: &Value, vocab: usize) -> Option<Result<Vec<u32>, ApiError>> {
    let a = v.as_array()?;
    if a.is_empty() || !a.iter().all(Value::is_u64) {
        return None;
    }
    Some(
        a.iter()
            .map(|x| {
                let id = x.as_u64().unwrap_or(0);
                if (id as usize) < vocab {
                    Ok(id as u32)
                } else {
                    Err(ApiError::bad(
                        "prompt",
                        format!("token id {id} is outside the vocabulary (0 to {})", vocab - 1),
                    ))
                }
            })
            .collect(),
    )
}

impl Request {
    /// The structured-output request: OpenAI's `response_format` (`json_object`,
    /// `json_schema`), or vLLM's `guided_json` / `guided_regex` / `guided_choice` /
    /// `guided_grammar`. At most one.
    fn constraint(&self) -> Result<Option<(&'static str, Constraint)>, ApiError> {
        let mut found: Vec<(&'static str, Constraint)> = vec![];
        if let Some(rf) = &self.response_format {
            match rf["type"].as_str() {
                Some("text") => {}
                Some("json_object") => found.push(("response_format", Constraint::JsonObject)),
                Some("json_schema") => {
                    let schema = rf["json_schema"]["schema"].clone();
                    if !schema.is_object() {
                        return Err(ApiError::bad(
                            "response_format",
                            "response_format json_schema needs `json_schema.schema` (a JSON schema object)",
                        ));
                    }
                    found.push(("response_format", Constraint::JsonSchema(schema)));
                }
                _ => {
                    return Err(ApiError::bad(
                        "response_format",
                        format!("unknown response_format {rf} (text, json_object or json_schema)"),
                    ))
                }
            }
        }
        if let Some(v) = &self.guided_json {
            let schema = match v {
                Value::String(s) => serde_json::from_str(s)
                    .map_err(|e| ApiError::bad("guided_json", format!("guided_json is not JSON: {e}")))?,
                other => other.clone(),
            };
            found.push(("guided_json", Constraint::JsonSchema(schema)));
        }
        if let Some(r) = &self.guided_regex {
            found.push(("guided_regex", Constraint::Regex(r.clone())));
        }
        if let Some(list) = &self.guided_choice {
            found.push(("guided_choice", Constraint::Choice(list.clone())));
        }
        if let Some(g) = &self.guided_grammar {
            found.push(("guided_grammar", Constraint::Grammar(g.clone())));
        }
        if found.len() > 1 {
            let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
            return Err(ApiError::bad(found[1].0, format!("{} given: choose one constraint", names.join(" and "))));
        }
        Ok(found.pop())
    }

    /// The stop strings (a string or up to 4 non-empty strings).
    fn stops(&self) -> Result<Vec<String>, ApiError> {
        let bad =
            |v: String| ApiError::bad("stop", format!("`stop` must be a string or up to 4 non-empty strings, got {v}"));
        match &self.stop {
            None => Ok(vec![]),
            Some(Stop::One(s)) if s.is_empty() => Err(ApiError::bad("stop", "a stop string is empty")),
            Some(Stop::One(s)) => Ok(vec![s.clone()]),
            Some(Stop::Many(a)) => {
                let strings: Option<Vec<String>> =
                    a.iter().map(|s| s.as_str().filter(|s| !s.is_empty()).map(String::from)).collect();
                match strings {
                    Some(s) if s.len() <= 4 => Ok(s),
                    _ => Err(bad(Value::Array(a.clone()).to_string())),
                }
            }
        }
    }
}

/// Parse and check a request body; the model's tokenizer turns prompts into ids.
pub(crate) fn parse<B: DecodeOps>(app: &App<B>, bytes: &[u8], kind: Kind) -> Result<Job, ApiError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::bad("body", format!("invalid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad("body", "the request body must be a JSON object"));
    }
    let r: Request = serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = path.split(['.', '[']).next().filter(|f| !f.is_empty()).unwrap_or("body").to_string();
        ApiError::bad(&field, format!("`{path}`: {}", e.inner()))
    })?;
    if let Some(m) = &r.model {
        if *m != app.name {
            return Err(super::unknown_model(app, m));
        }
    }
    let loaded = app.loaded;
    let mc = &loaded.model.config;
    let tok = loaded.text_tokenizer().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()));
    let mut prompt_texts = vec![];
    // each endpoint's own fields are refused by name on the other, not ignored
    let (elsewhere, fields) = match kind {
        Kind::Completion => {
            ("/v1/chat/completions", [("tools", r.tools.is_some()), ("tool_choice", r.tool_choice.is_some())])
        }
        Kind::Chat => ("/v1/completions", [("best_of", r.best_of.is_some()), ("echo", r.echo.is_some())]),
    };
    if let Some((field, _)) = fields.iter().find(|(_, given)| *given) {
        return Err(ApiError::bad(field, format!("`{field}` is a {elsewhere} field")));
    }
    let template_tools = loaded.template_renders_tools();
    let tools = super::tools::parse(r.tools.as_ref(), r.tool_choice.as_ref(), r.parallel_tool_calls)?;
    let prompts: Vec<Vec<u32>> = match kind {
        Kind::Completion => {
            let p = r.prompt.as_ref().ok_or_else(|| ApiError::bad("prompt", "`prompt` is required"))?;
            let texts: Vec<&Value> = match p {
                Value::String(_) => vec![p],
                Value::Array(a) if a.is_empty() => return Err(ApiError::bad("prompt", "`prompt` is empty")),
                Value::Array(a) if a.iter().all(Value::is_u64) => vec![p],
                Value::Array(a) => a.iter().collect(),
                _ => return Err(ApiError::bad("prompt", "`prompt` must be a string, a list of strings or token ids")),
            };
            let mut out = vec![];
            for t in texts {
                if let Some(ids) = ids_of(t, mc.vocab_size) {
                    let ids = ids?;
                    let text = tok.as_ref().ok().and_then(|tk| tk.decode_with(&ids, false).ok());
                    prompt_texts.push(text.unwrap_or_default());
                    out.push(ids);
                } else if let Some(s) = t.as_str() {
                    prompt_texts.push(s.to_string());
                    let ids = tok
                        .as_ref()
                        .map_err(|e| ApiError::bad("prompt", e.message.clone()))?
                        .encode(s)
                        .map_err(|e| ApiError::bad("prompt", format!("cannot tokenize the prompt: {e}")))?;
                    if ids.is_empty() {
                        return Err(ApiError::bad("prompt", "the prompt is empty"));
                    }
                    out.push(ids);
                } else {
                    return Err(ApiError::bad("prompt", format!("each prompt must be a string or token ids, got {t}")));
                }
            }
            out
        }
        Kind::Chat => {
            let msgs = r
                .messages
                .as_ref()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| ApiError::bad("messages", "`messages` must be a non-empty list"))?;
            let mut messages = vec![];
            for (i, m) in msgs.iter().enumerate() {
                let role = m.role.as_str().ok_or_else(|| {
                    ApiError::bad(&format!("messages[{i}].role"), format!("`role` must be a string, got {}", m.role))
                })?;
                if !["system", "user", "assistant", "developer", "tool"].contains(&role) {
                    return Err(ApiError::bad(
                        &format!("messages[{i}].role"),
                        format!("role \"{role}\" is not supported (allowed: system, developer, user, assistant, tool)"),
                    ));
                }
                let content = match &m.content {
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => {
                        let mut s = String::new();
                        for p in parts {
                            match (p["type"].as_str(), p["text"].as_str()) {
                                (Some("text"), Some(t)) => s.push_str(t),
                                _ => {
                                    return Err(ApiError::bad(
                                        &format!("messages[{i}].content"),
                                        "only text content parts are supported",
                                    ))
                                }
                            }
                        }
                        s
                    }
                    Value::Null if role == "assistant" => String::new(),
                    Value::Null if role == "tool" => String::new(),
                    other => {
                        return Err(ApiError::bad(
                            &format!("messages[{i}].content"),
                            format!("content must be a string, got {other}"),
                        ))
                    }
                };
                let role = if role == "developer" { "system" } else { role };
                if role == "assistant" && !m.tool_calls.is_null() {
                    // the calls as the model writes them (one object, or a list)
                    let calls = m.tool_calls.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                        ApiError::bad(&format!("messages[{i}].tool_calls"), "`tool_calls` must be a non-empty list")
                    })?;
                    let mut written = vec![];
                    for c in calls {
                        let f = &c["function"];
                        let args = match &f["arguments"] {
                            Value::String(a) => serde_json::from_str(a).unwrap_or(Value::String(a.clone())),
                            other => other.clone(),
                        };
                        written.push(serde_json::json!({"name": f["name"], "arguments": args}));
                    }
                    let text =
                        if written.len() == 1 { written[0].to_string() } else { Value::Array(written).to_string() };
                    messages.push(ChatMessage::new("assistant", format!("{content}{text}")));
                } else if role == "tool" && !template_tools {
                    // a template without tools has no tool turn: the result comes back as a user turn
                    let result = serde_json::json!({"tool_call_id": m.tool_call_id, "result": content});
                    messages.push(ChatMessage::new("user", result.to_string()));
                } else {
                    messages.push(ChatMessage::new(role, content));
                }
            }
            let mut tools_json = None;
            if let Some(t) = &tools {
                if template_tools {
                    tools_json = Some(&t.json);
                } else {
                    // described in the system message
                    match messages.first_mut().filter(|m| m.role == "system") {
                        Some(sys) => sys.content = format!("{}\n\n{}", sys.content, t.system_text()),
                        None => messages.insert(0, ChatMessage::new("system", t.system_text())),
                    }
                }
            }
            let text = loaded
                .render_chat_with(&messages, true, tools_json)
                .map_err(|e| ApiError::bad("messages", e.to_string()))?;
            let tok = tok.as_ref().map_err(|e| ApiError::bad("messages", e.message.clone()))?;
            vec![tok.encode(&text).map_err(|e| ApiError::bad("messages", format!("cannot tokenize: {e}")))?]
        }
    };
    let mut constraint = r.constraint()?;
    if let Some(t) = tools.as_ref().filter(|t| t.mode == super::tools::Mode::Forced) {
        if let Some((other, _)) = &constraint {
            return Err(ApiError::bad(
                "tool_choice",
                format!("`tool_choice` forces a call and `{other}` constrains the answer too: choose one"),
            ));
        }
        constraint = Some(("tool_choice", Constraint::JsonSchema(t.schema())));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let ctx = app.max_context;
    let max_tokens = match int_in("max_completion_tokens", r.max_completion_tokens, 1, i64::MAX)? {
        Some(x) => Some(x),
        None => int_in("max_tokens", r.max_tokens, 1, i64::MAX)?,
    };
    let max_tokens = match max_tokens {
        Some(m) => m as usize,
        None if kind == Kind::Completion => 16, // OpenAI's default for completions
        None => ctx.saturating_sub(longest).clamp(1, 4096),
    };
    if longest + max_tokens > ctx {
        return Err(ApiError::bad(
            if kind == Kind::Chat { "messages" } else { "prompt" },
            format!(
                "this server's maximum context length is {ctx} tokens (--max-context, at most the model's); the request needs {} ({longest} in the prompt, {max_tokens} to generate)",
                longest + max_tokens
            ),
        )
        .code("context_length_exceeded"));
    }
    let mut c = config(&r, kind, max_tokens, mc.vocab_size)?;
    let n = int_in("n", r.n, 1, 128)?.unwrap_or(1) as usize;
    let asked_logprobs = c.logprobs;
    let echo = r.echo.unwrap_or(false);
    let mut best_of = int_in("best_of", r.best_of, 1, 128)?.map_or(n, |b| b as usize);
    if best_of < n {
        return Err(ApiError::bad("best_of", format!("`best_of` = {best_of} must be ≥ `n` = {n}")));
    }
    let stream = r.stream.unwrap_or(false);
    let sampling = c.is_sampling();
    if !sampling {
        best_of = n; // greedy candidates are identical: n copies suffice
    }
    if best_of > n && stream {
        return Err(ApiError::bad(
            "best_of",
            "`best_of` > `n` cannot be streamed (the best choices are known at the end)",
        ));
    }
    // greedy n > 1: n identical one-row submissions; sampling: one submission of best_of rows
    let copies = if sampling { 1 } else { n };
    c.num_return_sequences = if sampling { best_of } else { 1 };
    if best_of > n {
        // candidates are ranked by their mean log-probability, of the distribution the response
        // reports (the model's own), whether or not it was asked for
        c.logprobs = true;
        c.raw_logprobs = true;
    }
    if let Some((field_name, k)) = constraint {
        // compiled here so a bad schema is a 400 naming it, before the request is queued
        let g = loaded.grammar_compiler().map_err(|e| ApiError::bad(field_name, e.to_string()))?;
        g.compile(&k).map_err(|e| ApiError::bad(field_name, e.to_string()))?;
        c.processors.constraint.constraint = Some(k);
    }
    if !c.stop.is_empty() {
        tok.as_ref().map_err(|e| ApiError::bad("stop", e.message.clone()))?;
    }
    c.validate()?;
    let include_usage = match &r.stream_options {
        None => false,
        Some(o) => {
            if !stream {
                return Err(ApiError::bad("stream_options", "`stream_options` needs `stream: true`"));
            }
            o.include_usage.unwrap_or(false)
        }
    };
    let id = format!(
        "{}-{:x}{:04x}",
        if kind == Kind::Chat { "chatcmpl" } else { "cmpl" },
        now(),
        app.counter.fetch_add(1, Ordering::Relaxed) & 0xffff
    );
    Ok(Job {
        kind,
        id,
        prompts,
        config: c,
        copies,
        n,
        logprobs: asked_logprobs,
        echo,
        prompt_texts,
        tools,
        stream,
        include_usage,
    })
}

/// The generation config of a request: OpenAI's defaults and ranges (temperature 1, top_p 1,
/// no top-k), then the processors' own fields given by name.
fn config(r: &Request, kind: Kind, max_tokens: usize, vocab: usize) -> Result<GenerationConfig, ApiError> {
    let temperature = in_range("temperature", r.temperature, |x| (0.0..=2.0).contains(&x), "0 to 2")?.unwrap_or(1.0);
    let unit = |x: f64| x > 0.0 && x <= 1.0;
    let mut c = GenerationConfig {
        max_new_tokens: Some(max_tokens),
        do_sample: temperature > 0.0,
        seed: r.seed.map(|s| s as u64),
        stop: r.stops()?,
        ..GenerationConfig::default()
    };
    // the processors' fields OpenAI lacks, by their config names (merged before OpenAI's own
    // fields, so those keep OpenAI's ranges and defaults)
    let names = Processors::field_names();
    let given: Map<String, Value> = r
        .extra
        .iter()
        .filter(|(k, v)| names.contains(k) && *k != "constraint" && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    c.processors.set_by_name(given)?;
    let p = &mut c.processors;
    p.temperature.temperature = if temperature > 0.0 { temperature as f32 } else { 1.0 };
    p.top_p.top_p = in_range("top_p", r.top_p, unit, "greater than 0, at most 1")?.unwrap_or(1.0) as f32;
    p.top_k.top_k = match int_in("top_k", r.top_k, -1, i64::MAX)? {
        None | Some(-1) | Some(0) => 0,
        Some(k) => (k as usize).min(vocab),
    };
    p.min_p.min_p = in_range("min_p", r.min_p, |x| (0.0..=1.0).contains(&x), "0 to 1")?.unwrap_or(0.0) as f32;
    p.typical_p.typical_p =
        in_range("typical_p", r.typical_p, unit, "greater than 0, at most 1")?.unwrap_or(1.0) as f32;
    p.repetition.repetition_penalty =
        in_range("repetition_penalty", r.repetition_penalty, |x| x > 0.0, "greater than 0")?.unwrap_or(1.0) as f32;
    let pm2 = |x: f64| (-2.0..=2.0).contains(&x);
    p.frequency_presence.frequency_penalty =
        in_range("frequency_penalty", r.frequency_penalty, pm2, "-2 to 2")?.unwrap_or(0.0) as f32;
    p.frequency_presence.presence_penalty =
        in_range("presence_penalty", r.presence_penalty, pm2, "-2 to 2")?.unwrap_or(0.0) as f32;
    if let Some(m) = int_in("min_tokens", r.min_tokens, 0, max_tokens as i64)? {
        p.min_length.min_new_tokens = m as usize;
    }
    if let Some(lb) = &r.logit_bias {
        for (k, v) in lb {
            let id: u32 = k.parse().ok().filter(|&i: &u32| (i as usize) < vocab).ok_or_else(|| {
                ApiError::bad("logit_bias", format!("key {k:?} is not a token id (0 to {})", vocab - 1))
            })?;
            let b = v.as_f64().filter(|b| (-100.0..=100.0).contains(b)).ok_or_else(|| {
                ApiError::bad("logit_bias", format!("bias {v} for token {k} must be a number in [-100, 100]"))
            })?;
            p.bias.logit_bias.insert(id, b as f32);
        }
    }
    match kind {
        Kind::Completion => {
            if let Some(lp) = &r.logprobs {
                let k = lp.as_i64().filter(|k| (0..=5).contains(k)).ok_or_else(|| {
                    ApiError::bad("logprobs", format!("`logprobs` must be an integer (0 to 5), got {lp}"))
                })?;
                c.logprobs = true;
                c.top_logprobs = k as usize;
            }
        }
        Kind::Chat => {
            c.logprobs = match &r.logprobs {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => return Err(ApiError::bad("logprobs", format!("`logprobs` must be true or false, got {v}"))),
            };
            if let Some(k) = int_in("top_logprobs", r.top_logprobs, 0, 20)? {
                if !c.logprobs {
                    return Err(ApiError::bad("top_logprobs", "`top_logprobs` needs `logprobs: true`"));
                }
                c.top_logprobs = k as usize;
            }
        }
    }
    // log-probabilities of the model's own distribution (before temperature, penalties and
    // truncation), as vLLM reports by default: every alternative has a finite value
    c.raw_logprobs = c.logprobs;
    Ok(c)
}
