//! `demiurgic serve`: an OpenAI-compatible HTTP server (axum + tokio).
//!
//! The model loads once. Each request runs the same `generate()` as the CLI with the same
//! parameters (so the same tokens for the same seed), on a blocking thread of its own; at most
//! `--max-batch` generations run at once, up to `--max-queue` more wait, and beyond that a request
//! is answered 429. A short request never waits for a long one to finish while a slot is free, and
//! a client that disconnects stops its generation at the next step.
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use demiurgic_model::load::{ChatMessage, LoadedModel, StreamDecoder, TextStops};
use demiurgic_model::{DecodeOps, Engine, GenerationOutput};
use demiurgic_sampling::{Constraint, FinishReason, GenerationConfig, SamplingError};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::args::ModelArgs;
use crate::backends::BackendJob;

/// Largest request body accepted (bytes); larger ones are answered 413.
const MAX_BODY: usize = 1 << 20;

#[derive(clap::Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    /// Address to bind (loopback by default; 0.0.0.0 exposes the server to the network).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 = any free port; the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Generations running at once (1–256).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_batch: u16,
    /// Requests waiting for a free slot before new ones are answered 429 (0–100000).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub max_queue: u32,
    /// Most positions (prompt + new tokens) one request may use; the engine's KV cache holds this
    /// many per running row (16–1048576; capped at the model's context).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub max_context: u32,
    /// Require `Authorization: Bearer KEY` on every /v1 route.
    #[arg(long)]
    pub api_key: Option<String>,
    /// The model id reported by /v1/models and expected in requests [default: the file name].
    #[arg(long)]
    pub served_model_name: Option<String>,
}

pub struct ServeJob {
    pub args: ServeArgs,
}

struct App<B: DecodeOps> {
    loaded: &'static LoadedModel<B>,
    name: String,
    api_key: Option<String>,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_queue: usize,
    created: u64,
    counter: AtomicU64,
    engine: std::sync::mpsc::Sender<Submission>,
    /// False once the engine thread has ended (a panic included): `/health` says so.
    engine_alive: Arc<AtomicBool>,
    /// Largest prompt + new tokens one request may need (the engine's cache positions).
    max_context: usize,
}

/// One prompt of a request, for the engine thread.
struct Submission {
    prompt: Vec<u32>,
    config: GenerationConfig,
    /// Which prompt of its request.
    index: usize,
    events: std::sync::mpsc::Sender<EngineMsg>,
    cancelled: Arc<AtomicBool>,
}

enum EngineMsg {
    Tokens {
        index: usize,
        tokens: Vec<Option<u32>>,
    },
    Done {
        index: usize,
        output: GenerationOutput,
    },
    /// The request was refused (its fault: a 400).
    Error(demiurgic_model::ModelError),
    /// A step of the engine failed (the server's fault: a 500).
    Failed(String),
}

/// The engine thread: owns the batching engine, admits submissions between steps, steps every
/// running row at once, drops requests whose client went away.
fn engine_loop<B: DecodeOps>(
    loaded: &'static LoadedModel<B>,
    capacity: usize,
    rx: std::sync::mpsc::Receiver<Submission>,
) {
    let mut engine = match Engine::new(&loaded.model, capacity) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot start the engine: {e}");
            return;
        }
    };
    let tok = loaded.tokenizer.as_ref();
    let mut running: std::collections::HashMap<u64, Submission> = Default::default();
    let mut next_id = 0u64;
    let send = |sub: &Submission, m: EngineMsg| sub.events.send(m).is_ok();
    loop {
        let mut incoming = vec![];
        if engine.is_idle() {
            release_free_memory();
            match rx.recv() {
                Ok(s) => incoming.push(s),
                Err(_) => return, // the server has stopped
            }
        }
        while let Ok(s) = rx.try_recv() {
            incoming.push(s);
        }
        for sub in incoming {
            if sub.cancelled.load(Ordering::Relaxed) {
                continue;
            }
            let id = next_id;
            next_id += 1;
            let stops = tok.filter(|_| !sub.config.stop.is_empty()).map(|t| TextStops::new(t, sub.config.stop.clone()));
            if sub.config.needs_vocabulary() && !engine.has_grammar() {
                match loaded.grammar_compiler() {
                    Ok(g) => engine.set_grammar(g),
                    Err(e) => {
                        send(&sub, EngineMsg::Error(e));
                        continue;
                    }
                }
            }
            match engine.add(id, sub.prompt.clone(), &sub.config, stops) {
                Ok(step) => {
                    send(&sub, EngineMsg::Tokens { index: sub.index, tokens: step.tokens });
                    match step.output {
                        Some(output) => {
                            send(&sub, EngineMsg::Done { index: sub.index, output });
                        }
                        None => {
                            running.insert(id, sub);
                        }
                    }
                }
                Err(e) => {
                    send(&sub, EngineMsg::Error(e));
                }
            }
        }
        let gone: Vec<u64> =
            running.iter().filter(|(_, s)| s.cancelled.load(Ordering::Relaxed)).map(|(&id, _)| id).collect();
        for id in gone {
            running.remove(&id);
            if let Err(e) = engine.cancel(id) {
                eprintln!("error: engine: {e}");
            }
        }
        match engine.step() {
            Ok(steps) => {
                for st in steps {
                    let Some(sub) = running.get(&st.id) else { continue };
                    let alive = send(sub, EngineMsg::Tokens { index: sub.index, tokens: st.tokens });
                    if let Some(output) = st.output {
                        let sub = running.remove(&st.id).expect("running");
                        send(&sub, EngineMsg::Done { index: sub.index, output });
                    } else if !alive {
                        sub.cancelled.store(true, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => {
                // a failed step fails every running request; the engine starts over
                let msg = e.to_string();
                for (_, sub) in running.drain() {
                    send(&sub, EngineMsg::Failed(format!("generation failed: {msg}")));
                }
                engine = match Engine::new(&loaded.model, capacity) {
                    Ok(e) => e,
                    Err(_) => return,
                };
                if let Some(g) = loaded.tokenizer.as_ref().and_then(|t| t.grammar.get()) {
                    engine.set_grammar(g.clone());
                }
            }
        }
    }
}

/// The structured-output request: OpenAI's `response_format` (`json_object`, `json_schema`), or
/// vLLM's `guided_json` / `guided_regex` / `guided_choice` / `guided_grammar`. At most one.
fn request_constraint(body: &Value) -> Result<Option<(&'static str, Constraint)>, ApiError> {
    let mut found: Vec<(&'static str, Constraint)> = vec![];
    if let Some(rf) = field(body, "response_format") {
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
    if let Some(v) = field(body, "guided_json") {
        let schema = match v {
            Value::String(s) => serde_json::from_str(s)
                .map_err(|e| ApiError::bad("guided_json", format!("guided_json is not JSON: {e}")))?,
            other => other.clone(),
        };
        found.push(("guided_json", Constraint::JsonSchema(schema)));
    }
    if let Some(v) = field(body, "guided_regex") {
        let r = v.as_str().ok_or_else(|| ApiError::bad("guided_regex", "guided_regex must be a string"))?;
        found.push(("guided_regex", Constraint::Regex(r.to_string())));
    }
    if let Some(v) = field(body, "guided_choice") {
        let list: Option<Vec<String>> =
            v.as_array().and_then(|a| a.iter().map(|x| x.as_str().map(String::from)).collect());
        let list = list.ok_or_else(|| ApiError::bad("guided_choice", "guided_choice must be a list of strings"))?;
        found.push(("guided_choice", Constraint::Choice(list)));
    }
    if let Some(v) = field(body, "guided_grammar") {
        let g = v.as_str().ok_or_else(|| ApiError::bad("guided_grammar", "guided_grammar must be a string (Lark)"))?;
        found.push(("guided_grammar", Constraint::Grammar(g.to_string())));
    }
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
        return Err(ApiError::bad(found[1].0, format!("{} given: choose one constraint", names.join(" and "))));
    }
    Ok(found.pop())
}

/// Give freed memory back to the OS when the engine goes idle: glibc keeps large freed blocks
/// (the batch's KV cache) in its heap once its mmap threshold has grown, so resident memory would
/// stay at its peak after a burst of requests.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the OS; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The outputs of a request's prompts as one (rows in prompt order).
fn merge(outs: Vec<GenerationOutput>) -> GenerationOutput {
    let mut it = outs.into_iter();
    let mut a = it.next().expect("at least one prompt");
    for b in it {
        a.tokens.extend(b.tokens);
        a.lengths.extend(b.lengths);
        a.finish_reasons.extend(b.finish_reasons);
        if let (Some(x), Some(y)) = (a.logprobs.as_mut(), b.logprobs) {
            x.extend(y);
        }
        if let (Some(x), Some(y)) = (a.top_logprobs.as_mut(), b.top_logprobs) {
            x.extend(y);
        }
    }
    a
}

impl BackendJob for ServeJob {
    fn run<B: DecodeOps>(self, backend: &str, device: B::Device) -> Result<()> {
        let a = self.args;
        let (loaded, path, load_ms) = crate::load::<B>(&a.m, &device)?;
        let name = a.served_model_name.clone().unwrap_or_else(|| {
            path.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into())
        });
        // the server lives as long as the process: the model is shared by every request thread
        let loaded: &'static LoadedModel<B> = Box::leak(Box::new(loaded));
        let max_context = (a.max_context as usize).min(loaded.model.config.max_position_embeddings);
        let (etx, erx) = std::sync::mpsc::channel::<Submission>();
        let engine_alive = Arc::new(AtomicBool::new(true));
        let alive = AliveGuard(engine_alive.clone());
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                let _alive = alive;
                engine_loop(loaded, max_context, erx)
            })
            .context("cannot start the engine thread")?;
        let app = Arc::new(App {
            engine: etx,
            engine_alive,
            max_context,
            loaded,
            name: name.clone(),
            api_key: a.api_key.clone(),
            slots: Arc::new(Semaphore::new(a.max_batch as usize)),
            waiting: AtomicUsize::new(0),
            max_queue: a.max_queue as usize,
            created: now(),
            counter: AtomicU64::new(0),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
                .await
                .with_context(|| format!("cannot listen on {}:{}", a.host, a.port))?;
            let addr = listener.local_addr()?;
            eprintln!(
                "demiurgic serve: listening on http://{addr} (model {name}, backend {backend}, loaded in {load_ms:.0} ms, {} slots)",
                a.max_batch
            );
            axum::serve(listener, router(app))
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .context("server failed")
        })
    }
}

/// Clears the flag when dropped: at the end of the engine thread, however it ends.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// `/health`: 200 while the engine thread runs, 503 once it has stopped (every request would
/// get a 503 then).
fn health(engine_alive: &AtomicBool) -> (StatusCode, Json<Value>) {
    if engine_alive.load(Ordering::Relaxed) {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "error", "error": "the engine has stopped"})))
    }
}

fn router<B: DecodeOps>(app: Arc<App<B>>) -> Router {
    let v1 = Router::new()
        .route("/v1/models", get(models::<B>))
        .route("/v1/models/{id}", get(model_one::<B>))
        .route("/v1/completions", post(completions::<B>))
        .route("/v1/chat/completions", post(chat_completions::<B>))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth::<B>));
    Router::new()
        .route("/health", get(|State(app): State<Arc<App<B>>>| async move { health(&app.engine_alive) }))
        .merge(v1)
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::new(StatusCode::NOT_FOUND, format!("unknown route {method} {}", uri.path()))
                .kind("invalid_request_error")
                .code("not_found")
        })
        .with_state(app)
}

// ------------------------------------------------------------------ errors

/// An OpenAI error object: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let kind = if status.is_server_error() { "server_error" } else { "invalid_request_error" };
        Self { status, message: message.into(), kind, param: None, code: None }
    }
    fn bad(param: &str, message: impl Into<String>) -> Self {
        Self { param: Some(param.to_string()), ..Self::new(StatusCode::BAD_REQUEST, message) }
    }
    fn kind(mut self, k: &'static str) -> Self {
        self.kind = k;
        self
    }
    fn code(mut self, c: &'static str) -> Self {
        self.code = Some(c);
        self
    }
    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<SamplingError> for ApiError {
    fn from(e: SamplingError) -> Self {
        let param = match &e {
            SamplingError::Invalid { field, .. } => openai_name(field).to_string(),
            _ => "body".into(),
        };
        ApiError::bad(&param, e.to_string())
    }
}

impl From<demiurgic_model::ModelError> for ApiError {
    /// What a request got wrong is a 400 naming the field where one is known; anything else
    /// (reading files, the model's own failures) is the server's: a 500.
    fn from(e: demiurgic_model::ModelError) -> Self {
        use demiurgic_model::ModelError as E;
        match e {
            E::Sampling(s) => ApiError::from(s),
            E::Unsupported { option, .. } => ApiError::bad(openai_name(option), e.to_string()),
            E::Input(_) | E::CacheOverflow { .. } | E::Tokenizer(_) => ApiError::bad("body", e.to_string()),
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

/// Our config field names → the request's.
fn openai_name(field: &str) -> &str {
    match field {
        "max_new_tokens" => "max_tokens",
        "num_return_sequences" => "n",
        "min_new_tokens" => "min_tokens",
        "top_logprobs" => "top_logprobs",
        f => f,
    }
}

async fn auth<B: DecodeOps>(State(app): State<Arc<App<B>>>, req: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if given != Some(key.as_str()) {
            return ApiError::new(StatusCode::UNAUTHORIZED, "invalid or missing API key (Authorization: Bearer KEY)")
                .code("invalid_api_key")
                .into_response();
        }
    }
    next.run(req).await
}

// ------------------------------------------------------------------ routes

async fn models<B: DecodeOps>(State(app): State<Arc<App<B>>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_card(&app)]}))
}

async fn model_one<B: DecodeOps>(
    State(app): State<Arc<App<B>>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if id == app.name {
        Json(model_card(&app)).into_response()
    } else {
        unknown_model(&app, &id).into_response()
    }
}

fn model_card<B: DecodeOps>(app: &App<B>) -> Value {
    json!({"id": app.name, "object": "model", "created": app.created, "owned_by": "demiurgic",
        "context_length": app.loaded.model.config.max_position_embeddings})
}

fn unknown_model<B: DecodeOps>(app: &App<B>, id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("the model `{id}` does not exist (this server serves `{}`)", app.name))
        .code("model_not_found")
        .param("model")
}

impl ApiError {
    fn param(mut self, p: &str) -> Self {
        self.param = Some(p.into());
        self
    }
}

async fn completions<B: DecodeOps>(State(app): State<Arc<App<B>>>, req: Request) -> Response {
    handle(app, req, Kind::Completion).await.unwrap_or_else(IntoResponse::into_response)
}

async fn chat_completions<B: DecodeOps>(State(app): State<Arc<App<B>>>, req: Request) -> Response {
    handle(app, req, Kind::Chat).await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

/// A parsed request.
struct Job {
    kind: Kind,
    id: String,
    prompts: Vec<Vec<u32>>,
    config: GenerationConfig,
    stream: bool,
    include_usage: bool,
}

/// Sets the flag when dropped: the handler's future is dropped when its client goes away.
struct CancelOnDrop(Arc<AtomicBool>);
impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn handle<B: DecodeOps>(app: Arc<App<B>>, req: Request, kind: Kind) -> Result<Response, ApiError> {
    let bytes = to_bytes(req.into_body(), MAX_BODY).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body larger than {MAX_BODY} bytes"))
            .code("request_too_large")
    })?;
    let body: Value =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad("body", format!("invalid JSON: {e}")))?;
    let job = parse(&app, &body, kind)?;
    // a slot now, or a place in the queue, or 429
    let permit = match app.slots.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            if app.waiting.fetch_add(1, Ordering::SeqCst) >= app.max_queue {
                app.waiting.fetch_sub(1, Ordering::SeqCst);
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("the server is busy: every slot is in use and {} requests are waiting", app.max_queue),
                )
                .kind("rate_limit_error")
                .code("queue_full"));
            }
            let p = app.slots.clone().acquire_owned().await;
            app.waiting.fetch_sub(1, Ordering::SeqCst);
            p.map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"))?
        }
    };
    let cancelled = Arc::new(AtomicBool::new(false));
    if job.stream {
        let (tx, rx) = mpsc::channel::<String>(256);
        let c = cancelled.clone();
        let a = app.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let err_tx = tx.clone();
            if let Err(e) = run(&a, &job, Some(tx), &c) {
                let _ = err_tx.blocking_send(e.body().to_string());
                let _ = err_tx.blocking_send("[DONE]".into());
            }
        });
        let stream = ReceiverStream::new(rx).map(|data| Ok::<_, std::convert::Infallible>(Event::default().data(data)));
        let guard = CancelOnDrop(cancelled);
        let stream = stream.map(move |e| {
            let _g = &guard; // dropped with the stream when the client goes away
            e
        });
        return Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response());
    }
    let guard = CancelOnDrop(cancelled.clone());
    let a = app.clone();
    let res = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        run(&a, &job, None, &cancelled)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("generation failed: {e}")))?;
    drop(guard); // finished: setting the flag now changes nothing
    Ok(Json(res?).into_response())
}

// ------------------------------------------------------------------ request parsing

fn field<'a>(body: &'a Value, k: &str) -> Option<&'a Value> {
    body.get(k).filter(|v| !v.is_null())
}

fn number(body: &Value, k: &str, lo: f64, hi: f64, range: &str) -> Result<Option<f64>, ApiError> {
    match field(body, k) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x >= lo && x <= hi => Ok(Some(x)),
            Some(x) => Err(ApiError::bad(k, format!("`{k}` = {x} is out of range ({range})"))),
            None => Err(ApiError::bad(k, format!("`{k}` must be a number ({range}), got {v}"))),
        },
    }
}

fn integer(body: &Value, k: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    match field(body, k) {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(x) if x >= lo && x <= hi => Ok(Some(x)),
            Some(x) => Err(ApiError::bad(k, format!("`{k}` = {x} is out of range ({lo} to {hi})"))),
            None => Err(ApiError::bad(k, format!("`{k}` must be an integer ({lo} to {hi}), got {v}"))),
        },
    }
}

fn boolean(body: &Value, k: &str) -> Result<Option<bool>, ApiError> {
    match field(body, k) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ApiError::bad(k, format!("`{k}` must be true or false, got {v}"))),
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

fn parse<B: DecodeOps>(app: &App<B>, body: &Value, kind: Kind) -> Result<Job, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad("body", "the request body must be a JSON object"));
    }
    if let Some(m) = field(body, "model") {
        let m = m.as_str().ok_or_else(|| ApiError::bad("model", "`model` must be a string"))?;
        if m != app.name {
            return Err(unknown_model(app, m));
        }
    }
    let loaded = app.loaded;
    let mc = &loaded.model.config;
    let tok = loaded.text_tokenizer().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()));
    // prompts
    let prompts: Vec<Vec<u32>> = match kind {
        Kind::Completion => {
            let p = field(body, "prompt").ok_or_else(|| ApiError::bad("prompt", "`prompt` is required"))?;
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
                    out.push(ids?);
                } else if let Some(s) = t.as_str() {
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
            let msgs = field(body, "messages")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| ApiError::bad("messages", "`messages` must be a non-empty list"))?;
            let mut messages = vec![];
            for (i, m) in msgs.iter().enumerate() {
                let role = m["role"].as_str().unwrap_or("");
                if !["system", "user", "assistant", "developer"].contains(&role) {
                    return Err(ApiError::bad(
                        &format!("messages[{i}].role"),
                        format!("role {:?} is not supported (system, user, assistant)", m["role"]),
                    ));
                }
                let content = match &m["content"] {
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
                    other => {
                        return Err(ApiError::bad(
                            &format!("messages[{i}].content"),
                            format!("content must be a string, got {other}"),
                        ))
                    }
                };
                let role = if role == "developer" { "system" } else { role };
                messages.push(ChatMessage::new(role, content));
            }
            let text = loaded.render_chat(&messages, true).map_err(|e| ApiError::bad("messages", e.to_string()))?;
            let tok = tok.as_ref().map_err(|e| ApiError::bad("messages", e.message.clone()))?;
            vec![tok.encode(&text).map_err(|e| ApiError::bad("messages", format!("cannot tokenize: {e}")))?]
        }
    };
    let constraint = request_constraint(body)?;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let ctx = app.max_context;
    let max_tokens = match integer(body, "max_completion_tokens", 1, i64::MAX)? {
        Some(x) => Some(x),
        None => integer(body, "max_tokens", 1, i64::MAX)?,
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
    let temperature = number(body, "temperature", 0.0, 2.0, "0 to 2")?.unwrap_or(1.0);
    let n = integer(body, "n", 1, 128)?.unwrap_or(1) as usize;
    let mut c = GenerationConfig {
        max_new_tokens: Some(max_tokens),
        do_sample: temperature > 0.0,
        temperature: if temperature > 0.0 { temperature as f32 } else { 1.0 },
        top_p: number(body, "top_p", f64::MIN_POSITIVE, 1.0, "greater than 0, at most 1")?.unwrap_or(1.0) as f32,
        top_k: match integer(body, "top_k", -1, i64::MAX)? {
            None | Some(-1) | Some(0) => 0,
            Some(k) => k as usize,
        },
        min_p: number(body, "min_p", 0.0, 1.0, "0 to 1")?.unwrap_or(0.0) as f32,
        typical_p: number(body, "typical_p", f64::MIN_POSITIVE, 1.0, "greater than 0, at most 1")?.unwrap_or(1.0)
            as f32,
        repetition_penalty: number(body, "repetition_penalty", f64::MIN_POSITIVE, f64::MAX, "greater than 0")?
            .unwrap_or(1.0) as f32,
        frequency_penalty: number(body, "frequency_penalty", -2.0, 2.0, "-2 to 2")?.unwrap_or(0.0) as f32,
        presence_penalty: number(body, "presence_penalty", -2.0, 2.0, "-2 to 2")?.unwrap_or(0.0) as f32,
        min_new_tokens: integer(body, "min_tokens", 0, max_tokens as i64)?.unwrap_or(0) as usize,
        num_return_sequences: n,
        seed: integer(body, "seed", i64::MIN, i64::MAX)?.map(|s| s as u64),
        ..GenerationConfig::default()
    };
    if let Some((field_name, k)) = constraint {
        // compiled here so a bad schema is a 400 naming it, before the request is queued
        let g = loaded.grammar_compiler().map_err(|e| ApiError::bad(field_name, e.to_string()))?;
        g.compile(&k).map_err(|e| ApiError::bad(field_name, e.to_string()))?;
        c.constraint = Some(k);
    }
    c.top_k = c.top_k.min(mc.vocab_size);
    c.stop = match field(body, "stop") {
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(|s| s.as_str().is_some_and(|s| !s.is_empty())) => {
            a.iter().map(|s| s.as_str().unwrap_or_default().to_string()).collect()
        }
        Some(v) => {
            return Err(ApiError::bad("stop", format!("`stop` must be a string or up to 4 non-empty strings, got {v}")))
        }
    };
    if c.stop.iter().any(String::is_empty) {
        return Err(ApiError::bad("stop", "a stop string is empty"));
    }
    if !c.stop.is_empty() {
        tok.as_ref().map_err(|e| ApiError::bad("stop", e.message.clone()))?;
    }
    if let Some(lb) = field(body, "logit_bias") {
        let m = lb
            .as_object()
            .ok_or_else(|| ApiError::bad("logit_bias", "`logit_bias` must be an object {token id: bias}"))?;
        for (k, v) in m {
            let id: u32 = k.parse().ok().filter(|&i: &u32| (i as usize) < mc.vocab_size).ok_or_else(|| {
                ApiError::bad("logit_bias", format!("key {k:?} is not a token id (0 to {})", mc.vocab_size - 1))
            })?;
            let b = v.as_f64().filter(|b| (-100.0..=100.0).contains(b)).ok_or_else(|| {
                ApiError::bad("logit_bias", format!("bias {v} for token {k} must be a number in [-100, 100]"))
            })?;
            c.logit_bias.insert(id, b as f32);
        }
    }
    match kind {
        Kind::Completion => {
            if let Some(k) = integer(body, "logprobs", 0, 5)? {
                c.logprobs = true;
                c.top_logprobs = k as usize;
            }
        }
        Kind::Chat => {
            c.logprobs = boolean(body, "logprobs")?.unwrap_or(false);
            if let Some(k) = integer(body, "top_logprobs", 0, 20)? {
                if !c.logprobs {
                    return Err(ApiError::bad("top_logprobs", "`top_logprobs` needs `logprobs: true`"));
                }
                c.top_logprobs = k as usize;
            }
        }
    }
    c.validate()?;
    let stream = boolean(body, "stream")?.unwrap_or(false);
    let include_usage = match field(body, "stream_options") {
        None => false,
        Some(o) => {
            if !stream {
                return Err(ApiError::bad("stream_options", "`stream_options` needs `stream: true`"));
            }
            boolean(o, "include_usage")
                .map_err(|e| ApiError { param: Some("stream_options.include_usage".into()), ..e })?
                .unwrap_or(false)
        }
    };
    let id = format!(
        "{}-{:x}{:04x}",
        if kind == Kind::Chat { "chatcmpl" } else { "cmpl" },
        now(),
        app.counter.fetch_add(1, Ordering::Relaxed) & 0xffff
    );
    Ok(Job { kind, id, prompts, config: c, stream, include_usage })
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

// ------------------------------------------------------------------ generation

/// How much of `text` may be sent: up to the first stop string, and never a tail that could be
/// the start of one.
fn safe_len(text: &str, stops: &[String]) -> usize {
    if let Some(at) = demiurgic_sampling::first_stop(stops, text) {
        return at;
    }
    let mut hold = 0;
    for s in stops {
        for k in (1..s.len()).rev() {
            if s.is_char_boundary(k) && text.ends_with(&s[..k]) {
                hold = hold.max(k);
                break;
            }
        }
    }
    text.len() - hold
}

fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

fn run<B: DecodeOps>(
    app: &App<B>,
    job: &Job,
    tx: Option<mpsc::Sender<String>>,
    cancelled: &Arc<AtomicBool>,
) -> Result<Value, ApiError> {
    let loaded = app.loaded;
    let tok = loaded.tokenizer.as_ref();
    let c = &job.config;
    let rows = job.prompts.len() * c.num_return_sequences;
    let chunk = |row: usize, piece: Option<&str>, finish: Option<&str>, first: bool| -> Value {
        let choice = match job.kind {
            Kind::Completion => {
                json!({"index": row, "text": piece.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
            Kind::Chat => {
                let mut delta = Map::new();
                if first {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(p) = piece {
                    delta.insert("content".into(), json!(p));
                }
                json!({"index": row, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        };
        json!({"id": job.id, "object": if job.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
            "created": now(), "model": app.name, "choices": [choice]})
    };
    let mut decoders: Vec<StreamDecoder> = (0..rows).map(|_| StreamDecoder::with_skip_special(true)).collect();
    let mut text: Vec<String> = vec![String::new(); rows];
    let mut sent = vec![0usize; rows];
    let mut started = vec![false; rows];
    let send = |v: &Value| -> bool {
        match &tx {
            Some(tx) => {
                let ok = tx.blocking_send(v.to_string()).is_ok();
                if !ok {
                    cancelled.store(true, Ordering::Relaxed);
                }
                ok
            }
            None => true,
        }
    };
    let mut on_step = |ids: &[Option<u32>]| {
        let Some(t) = tok else { return };
        for (r, id) in ids.iter().enumerate() {
            let Some(id) = id else { continue };
            if let Ok(Some(p)) = decoders[r].push(t, *id) {
                text[r].push_str(&p);
            }
            let safe = safe_len(&text[r], &c.stop);
            if safe > sent[r] && text[r].is_char_boundary(safe) {
                let v = chunk(r, Some(&text[r][sent[r]..safe]), None, !started[r]);
                started[r] = true;
                sent[r] = safe;
                if !send(&v) {
                    return;
                }
            }
        }
    };
    // each prompt is one request of the batching engine; its rows are `n` consecutive choices
    let n = c.num_return_sequences;
    let (etx, erx) = std::sync::mpsc::channel::<EngineMsg>();
    for (pi, p) in job.prompts.iter().enumerate() {
        let sub = Submission {
            prompt: p.clone(),
            config: c.clone(),
            index: pi,
            events: etx.clone(),
            cancelled: cancelled.clone(),
        };
        app.engine.send(sub).map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the engine has stopped"))?;
    }
    drop(etx);
    let mut outs: Vec<Option<GenerationOutput>> = vec![None; job.prompts.len()];
    while let Ok(msg) = erx.recv() {
        match msg {
            EngineMsg::Tokens { index, tokens } => {
                if tx.is_some() {
                    let mut all = vec![None; rows];
                    all[index * n..index * n + tokens.len()].copy_from_slice(&tokens);
                    on_step(&all);
                }
            }
            EngineMsg::Done { index, output } => outs[index] = Some(output),
            EngineMsg::Error(e) => {
                cancelled.store(true, Ordering::Relaxed);
                return Err(ApiError::from(e));
            }
            EngineMsg::Failed(msg) => {
                cancelled.store(true, Ordering::Relaxed);
                return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, msg));
            }
        }
    }
    if cancelled.load(Ordering::Relaxed) {
        return Ok(Value::Null);
    }
    let out = merge(
        outs.into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the engine dropped a request"))?,
    );
    let finals: Vec<String> = (0..rows).map(|i| final_text(tok, &out, i, &c.stop)).collect::<Result<_, _>>()?;
    let completion_tokens: usize = out.lengths.iter().sum();
    let prompt_tokens: usize = job.prompts.iter().map(Vec::len).sum();
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens});
    if tx.is_some() {
        for r in 0..rows {
            // what the streamed pieces have not said yet (the final text is the reference)
            let rest = finals[r].get(sent[r]..).filter(|_| finals[r].starts_with(&text[r][..sent[r]])).unwrap_or("");
            let v = chunk(r, (!rest.is_empty()).then_some(rest), Some(finish_name(out.finish_reasons[r])), !started[r]);
            if !send(&v) {
                return Ok(Value::Null);
            }
        }
        if job.include_usage {
            let v = json!({"id": job.id, "object": if job.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" },
                "created": now(), "model": app.name, "choices": [], "usage": usage});
            send(&v);
        }
        if let Some(tx) = &tx {
            let _ = tx.blocking_send("[DONE]".into());
        }
        return Ok(Value::Null);
    }
    let choices: Vec<Value> = (0..rows)
        .map(|r| {
            let lp = logprobs_json(job.kind, tok, &out, r);
            match job.kind {
                Kind::Completion => json!({"index": r, "text": finals[r], "logprobs": lp,
                    "finish_reason": finish_name(out.finish_reasons[r])}),
                Kind::Chat => json!({"index": r, "message": {"role": "assistant", "content": finals[r]},
                    "logprobs": lp, "finish_reason": finish_name(out.finish_reasons[r])}),
            }
        })
        .collect();
    Ok(json!({
        "id": job.id,
        "object": if job.kind == Kind::Chat { "chat.completion" } else { "text_completion" },
        "created": now(),
        "model": app.name,
        "choices": choices,
        "usage": usage,
        "system_fingerprint": format!("demiurgic-{}", env!("CARGO_PKG_VERSION")),
        "seed": out.seed,
    }))
}

fn final_text(
    tok: Option<&demiurgic_model::load::TextTokenizer>,
    out: &GenerationOutput,
    i: usize,
    stops: &[String],
) -> Result<String, ApiError> {
    let Some(t) = tok else {
        return Ok(out.row(i).iter().map(|id| format!("{id} ")).collect());
    };
    crate::gen::row_text(t, out, i, stops, true)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot decode: {e:#}")))
}

fn token_str(tok: Option<&demiurgic_model::load::TextTokenizer>, id: u32) -> String {
    tok.and_then(|t| t.decode_with(&[id], false).ok()).unwrap_or_else(|| format!("<{id}>"))
}

fn logprobs_json(
    kind: Kind,
    tok: Option<&demiurgic_model::load::TextTokenizer>,
    out: &GenerationOutput,
    r: usize,
) -> Value {
    let Some(lps) = out.logprobs.as_ref().map(|l| &l[r]) else { return Value::Null };
    let ids = out.row(r);
    let top = out.top_logprobs.as_ref().map(|t| &t[r]);
    match kind {
        Kind::Completion => {
            let mut offset = 0usize;
            let mut offsets = vec![];
            let tokens: Vec<String> = ids
                .iter()
                .map(|&id| {
                    let s = token_str(tok, id);
                    offsets.push(offset);
                    offset += s.len();
                    s
                })
                .collect();
            let tops: Value = match top {
                Some(t) => json!(t
                    .iter()
                    .map(|alts| alts
                        .iter()
                        .map(|&(i, l)| (token_str(tok, i), json!(l)))
                        .collect::<Map<String, Value>>())
                    .collect::<Vec<_>>()),
                None => Value::Null,
            };
            json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
        }
        Kind::Chat => {
            let content: Vec<Value> = ids
                .iter()
                .enumerate()
                .map(|(k, &id)| {
                    let s = token_str(tok, id);
                    let alts: Vec<Value> = top
                        .map(|t| {
                            t[k].iter()
                                .map(|&(i, l)| {
                                    let a = token_str(tok, i);
                                    json!({"token": a, "logprob": l, "bytes": a.as_bytes()})
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    json!({"token": s, "logprob": lps[k], "bytes": s.as_bytes(), "top_logprobs": alts})
                })
                .collect();
            json!({"content": content})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_len_holds_back_a_possible_stop_string_start() {
        let s = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(safe_len("hello", &s), 5);
        assert_eq!(safe_len("hello\n", &s), 5);
        assert_eq!(safe_len("hello E", &s), 6);
        assert_eq!(safe_len("hello EN", &s), 6);
        assert_eq!(safe_len("hello END more", &s), 6);
        assert_eq!(safe_len("a\n\nb", &s), 1);
        assert_eq!(safe_len("abc", &[]), 3);
    }

    /// `/health` follows the engine thread: ok while it runs, 503 once it has ended (a panic
    /// included: the guard clears the flag while the thread unwinds).
    #[test]
    fn health_reports_a_dead_engine() {
        let alive = Arc::new(AtomicBool::new(true));
        assert_eq!(health(&alive).0, StatusCode::OK);
        let guard = AliveGuard(alive.clone());
        let t = std::thread::spawn(move || {
            let _alive = guard;
            panic!("the engine fails");
        });
        assert!(t.join().is_err(), "the thread panicked");
        let (status, Json(body)) = health(&alive);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "error", "{body}");
    }
}
