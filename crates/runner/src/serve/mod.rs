//! `demiurgic serve`: an OpenAI-compatible HTTP server (axum + tokio).
//!
//! The model loads once; one worker thread owns the continuous-batching engine
//! ([`worker`]); each request is parsed into a typed job ([`request`]), its prompts submitted
//! to the worker, whose tokens come straight back into the request's channel and become the
//! response or its stream ([`response`]); every failure is one [`error::ApiError`]. At most
//! `--max-batch` requests run at once, up to `--max-queue` more wait, and beyond that a request
//! is answered 429. A client that disconnects stops its generation at the next step.
mod error;
mod log;
mod metrics;
mod request;
mod response;
mod tools;
mod worker;

use std::convert::Infallible;
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
use demiurgic_model::load::LoadedModel;
use demiurgic_model::DecodeOps;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::args::ModelArgs;
use crate::backends::BackendJob;
use error::ApiError;
use request::Kind;
use response::Collect;
use worker::{AliveGuard, EngineMsg, Submission};

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
    /// Allow browsers on this origin to call the API (CORS; repeatable; `*` = any origin)
    /// [default: none, CORS off].
    #[arg(long = "cors-origin")]
    pub cors_origin: Vec<String>,
    /// The request log on stderr (one line per request): text or json (one object per line).
    #[arg(long = "log-format", value_enum, default_value = "text")]
    pub log_format: log::LogFormat,
    /// On SIGTERM or Ctrl-C: seconds running requests may take to finish (new ones get 503)
    /// before the server exits.
    #[arg(long = "drain-timeout", default_value_t = 30)]
    pub drain_timeout: u64,
    /// Memory for prompts' keys/values kept across requests (the prefix cache: a request whose
    /// prompt starts like an earlier one's computes only the rest), in MiB; 0 = off [default: an
    /// eighth of the machine's memory, at most 2048].
    #[arg(long = "prefix-cache-mb")]
    pub prefix_cache_mb: Option<u64>,
}

/// An eighth of the machine's memory (`/proc/meminfo`), at most 2 GiB; 512 MiB where unknown.
fn default_prefix_cache_mb() -> u64 {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse::<u64>().ok());
    total_kib.map_or(512, |k| (k / 1024 / 8).min(2048))
}

pub struct ServeJob {
    pub args: ServeArgs,
}

pub(crate) struct App<B: DecodeOps> {
    loaded: &'static LoadedModel<B>,
    name: String,
    api_key: Option<String>,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_queue: usize,
    created: u64,
    counter: AtomicU64,
    engine: std::sync::mpsc::Sender<Submission>,
    /// False once the worker thread has ended (a panic included): `/health` says so.
    engine_alive: Arc<AtomicBool>,
    /// Largest prompt + new tokens one request may need (the engine's cache positions).
    max_context: usize,
    max_batch: usize,
    metrics: metrics::Metrics,
    /// Set on SIGTERM / Ctrl-C: new requests get 503, `/ready` says so.
    draining: AtomicBool,
}

impl<B: DecodeOps> App<B> {
    /// Requests holding a slot now.
    fn running(&self) -> usize {
        self.max_batch - self.slots.available_permits()
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl BackendJob for ServeJob {
    fn run<B: DecodeOps>(self, backend: &str, device: B::Device) -> Result<()> {
        let a = self.args;
        let (loaded, path, load_ms) = crate::load::<B>(&a.m, &device)?;
        let name = a.served_model_name.clone().unwrap_or_else(|| {
            path.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into())
        });
        // the server lives as long as the process: the model is shared by every request
        let loaded: &'static LoadedModel<B> = Box::leak(Box::new(loaded));
        let max_context = (a.max_context as usize).min(loaded.model.config.max_position_embeddings);
        let (etx, erx) = std::sync::mpsc::channel::<Submission>();
        let engine_alive = Arc::new(AtomicBool::new(true));
        let alive = AliveGuard(engine_alive.clone());
        let metrics = metrics::Metrics::new(&name).context("cannot set up the metrics")?;
        let usage = worker::CacheUsage { gauge: metrics.kv_usage.clone(), budget: a.max_batch as usize * max_context };
        let c = &loaded.model.config;
        let per_position = c.num_layers * 2 * c.num_kv_heads * c.head_dim * std::mem::size_of::<f32>();
        let prefix_mb = a.prefix_cache_mb.unwrap_or_else(default_prefix_cache_mb);
        let prefix_positions = (prefix_mb as usize * (1 << 20)) / per_position.max(1);
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                let _alive = alive;
                worker::engine_loop(loaded, max_context, prefix_positions, erx, usage)
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
            max_batch: a.max_batch as usize,
            metrics,
            draining: AtomicBool::new(false),
        });
        let drain_app = app.clone();
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
                "demiurgic serve: listening on http://{addr} (model {name}, backend {backend}, loaded in {load_ms:.0} ms, {}, {} positions per request, prefix cache {prefix_mb} MiB)",
                crate::plural(a.max_batch as usize, "slot"),
                max_context
            );
            let cors = cors_layer(&a.cors_origin)?;
            let requests = app.metrics.requests.clone();
            axum::serve(listener, router(app, a.log_format, requests, cors))
                .with_graceful_shutdown(drain(drain_app, a.drain_timeout))
                .await
                .context("server failed")
        })
    }
}

/// Resolves when the server should stop: after SIGTERM or Ctrl-C, once no request runs or waits
/// (new ones are answered 503 meanwhile), or when `timeout` seconds have passed.
async fn drain<B: DecodeOps>(app: Arc<App<B>>, timeout: u64) {
    let term = async {
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    app.draining.store(true, Ordering::SeqCst);
    let busy = |app: &App<B>| app.running() + app.waiting.load(Ordering::SeqCst);
    eprintln!(
        "demiurgic serve: draining ({} in progress; new requests get 503; at most {timeout} s)",
        crate::plural(busy(&app), "request")
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
    while busy(&app) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if busy(&app) > 0 {
        eprintln!("demiurgic serve: drain timeout: {} cut", crate::plural(busy(&app), "request"));
        std::process::exit(0);
    }
    eprintln!("demiurgic serve: drained, exiting");
}

/// `/ready`: 200 while requests are accepted (model loaded, worker alive, not draining), 503
/// otherwise (a load balancer sends them elsewhere).
fn ready(engine_alive: &AtomicBool, draining: &AtomicBool) -> (StatusCode, Json<Value>) {
    if draining.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"})))
    } else if !engine_alive.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "error", "error": "the engine has stopped"})))
    } else {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    }
}

/// `/health`: 200 while the worker runs, 503 once it has stopped (every request would get a
/// 503 then).
fn health(engine_alive: &AtomicBool) -> (StatusCode, Json<Value>) {
    if engine_alive.load(Ordering::Relaxed) {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "error", "error": "the engine has stopped"})))
    }
}

/// The CORS layer of `--cors-origin` (None: no CORS headers, as by default).
fn cors_layer(origins: &[String]) -> Result<Option<tower_http::cors::CorsLayer>> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| {
                o.parse::<header::HeaderValue>().map_err(|_| {
                    anyhow::anyhow!("--cors-origin {o:?} is not a valid origin (e.g. https://example.com or *)")
                })
            })
            .collect::<Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    ))
}

/// The methods a path answers (what a 405 says).
fn allowed_methods(path: &str) -> &'static str {
    match path {
        "/v1/completions" | "/v1/chat/completions" => "POST",
        _ => "GET",
    }
}

fn router<B: DecodeOps>(
    app: Arc<App<B>>,
    log_format: log::LogFormat,
    requests: prometheus::IntCounterVec,
    cors: Option<tower_http::cors::CorsLayer>,
) -> Router {
    let v1 = Router::new()
        .route("/v1/models", get(models::<B>))
        .route("/v1/models/{id}", get(model_one::<B>))
        .route("/v1/completions", post(completions::<B>))
        .route("/v1/chat/completions", post(chat_completions::<B>))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth::<B>));
    let router = Router::new()
        .route("/health", get(|State(app): State<Arc<App<B>>>| async move { health(&app.engine_alive) }))
        .route("/ready", get(|State(app): State<Arc<App<B>>>| async move { ready(&app.engine_alive, &app.draining) }))
        .route("/metrics", get(metrics_text::<B>))
        .merge(v1)
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError::new(StatusCode::NOT_FOUND, format!("unknown route {method} {}", uri.path()))
                .kind("invalid_request_error")
                .code("not_found")
        })
        .method_not_allowed_fallback(|method: Method, uri: axum::http::Uri| async move {
            let allowed = allowed_methods(uri.path());
            let e = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} does not answer {method} (allowed: {allowed})", uri.path()),
            )
            .code("method_not_allowed");
            let mut r = e.into_response();
            r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allowed));
            r
        })
        .with_state(app);
    // CORS inside the log: a preflight gets its line too
    let router = match cors {
        Some(c) => router.layer(c),
        None => router,
    };
    router.layer(middleware::from_fn_with_state((log_format, requests), log::log_requests))
}

async fn metrics_text<B: DecodeOps>(State(app): State<Arc<App<B>>>) -> Response {
    let m = &app.metrics;
    m.running.set(app.running() as i64);
    m.waiting.set(app.waiting.load(Ordering::SeqCst) as i64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()).into_response()
}

async fn auth<B: DecodeOps>(State(app): State<Arc<App<B>>>, req: Request, next: Next) -> Response {
    if app.draining.load(Ordering::SeqCst) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down: retry on another replica")
            .code("draining")
            .retry_after(1)
            .into_response();
    }
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
        "context_length": app.max_context})
}

pub(crate) fn unknown_model<B: DecodeOps>(app: &App<B>, id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("the model `{id}` does not exist (this server serves `{}`)", app.name))
        .code("model_not_found")
        .param("model")
}

async fn completions<B: DecodeOps>(State(app): State<Arc<App<B>>>, req: Request) -> Response {
    handle(app, req, Kind::Completion).await.unwrap_or_else(IntoResponse::into_response)
}

async fn chat_completions<B: DecodeOps>(State(app): State<Arc<App<B>>>, req: Request) -> Response {
    handle(app, req, Kind::Chat).await.unwrap_or_else(IntoResponse::into_response)
}

/// Sets the flag when dropped: the handler's future (or its stream) is dropped when its client
/// goes away, and the worker then drops the request at its next step.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A slot now, or a place in the queue, or 429.
async fn slot<B: DecodeOps>(app: &App<B>) -> Result<OwnedSemaphorePermit, ApiError> {
    if let Ok(p) = app.slots.clone().try_acquire_owned() {
        return Ok(p);
    }
    if app.waiting.fetch_add(1, Ordering::SeqCst) >= app.max_queue {
        app.waiting.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("the server is busy: every slot is in use and {} requests are waiting", app.max_queue),
        )
        .kind("rate_limit_error")
        .code("queue_full")
        .retry_after(1));
    }
    let p = app.slots.clone().acquire_owned().await;
    app.waiting.fetch_sub(1, Ordering::SeqCst);
    p.map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"))
}

async fn handle<B: DecodeOps>(app: Arc<App<B>>, req: Request, kind: Kind) -> Result<Response, ApiError> {
    let request_log = req.extensions().get::<log::RequestLog>().cloned();
    let t0 = std::time::Instant::now();
    let bytes = to_bytes(req.into_body(), MAX_BODY).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body larger than {MAX_BODY} bytes"))
            .code("request_too_large")
    })?;
    let job = request::parse(&app, &bytes, kind)?;
    let permit = slot(&app).await?;
    // `echo` with `logprobs`: the prompts' own log-probabilities (one forward pass each)
    let mut echo = vec![];
    if job.echo {
        for (p, text) in job.prompts.iter().zip(&job.prompt_texts) {
            let lps = if job.logprobs {
                let (loaded, ids, top) = (app.loaded, p.clone(), job.config.top_logprobs);
                tokio::task::spawn_blocking(move || demiurgic_model::prompt_logprobs(&loaded.model, &ids, top))
                    .await
                    .map_err(|e| ApiError::internal(format!("prompt log-probabilities failed: {e}")))??
            } else {
                vec![]
            };
            echo.push((text.clone(), lps));
        }
    }
    let cancelled = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(cancelled.clone());
    // each submission is one request of the batching engine: prompt p's copy c is submission
    // p · copies + c, its rows the consecutive choices from (p · copies + c) · rows
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<EngineMsg>();
    for (index, p) in job.prompts.iter().flat_map(|p| std::iter::repeat_n(p, job.copies)).enumerate() {
        let sub = Submission {
            prompt: p.clone(),
            config: job.config.clone(),
            index,
            events: tx.clone(),
            cancelled: cancelled.clone(),
        };
        app.engine.send(sub).map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the engine has stopped"))?;
    }
    drop(tx);
    let stream = job.stream;
    let mut col = Collect::new(job, app.name.clone(), app.loaded.tokenizer.as_ref(), echo);
    if !stream {
        while !col.done() {
            let msg = rx.recv().await.ok_or_else(|| ApiError::internal("the engine stopped"))?;
            col.push(msg)?;
        }
        drop((permit, guard));
        let body = col.response()?;
        let mut resp = Json(body).into_response();
        if let Some(t) = finished(&app, &col, t0) {
            resp.extensions_mut().insert(t);
        }
        return Ok(resp);
    }
    // the stream writes the request's log line when it ends (or its client leaves)
    let slog = request_log.map(|log| log::StreamLog { log, tokens: None, finished: false });
    let deferred = slog.is_some();
    let ended = |e: ApiError| vec![e.body(), "[DONE]".to_string()];
    let mapp = app.clone();
    let events = futures_util::stream::unfold(Some((rx, col, guard, permit, slog)), move |state| {
        let app = mapp.clone();
        async move {
            let (mut rx, mut col, guard, permit, mut slog) = state?;
            loop {
                let Some(msg) = rx.recv().await else {
                    return Some((ended(ApiError::internal("the engine stopped")), None));
                };
                match col.push(msg) {
                    Err(e) => return Some((ended(e), None)),
                    Ok(mut chunks) if col.done() => {
                        match col.final_chunks() {
                            Ok(last) => chunks.extend(last),
                            Err(e) => chunks.extend(ended(e)),
                        }
                        let tokens = finished(&app, &col, t0);
                        if let Some(l) = slog.as_mut() {
                            l.finished = true;
                            l.tokens = tokens;
                        }
                        return Some((chunks, None));
                    }
                    Ok(chunks) if !chunks.is_empty() => return Some((chunks, Some((rx, col, guard, permit, slog)))),
                    Ok(_) => {}
                }
            }
        }
    })
    .flat_map(futures_util::stream::iter)
    .map(|data| Ok::<_, Infallible>(Event::default().data(data)));
    let mut resp = Sse::new(events).keep_alive(KeepAlive::default()).into_response();
    if deferred {
        resp.extensions_mut().insert(log::Deferred);
    }
    Ok(resp)
}

/// A request whose generation is done (`col` has its usage): its metrics, and the tokens its log
/// line reports. `t0`: when the request arrived.
fn finished<B: DecodeOps>(app: &App<B>, col: &Collect<'_>, t0: std::time::Instant) -> Option<log::Tokens> {
    let u = col.usage?;
    let ttft = col.first_token.map(|f| (f - t0).as_secs_f64());
    let (prompt, cached) = (u.prompt_tokens, u.prompt_tokens_details.cached_tokens);
    app.metrics.finished(prompt, cached, u.completion_tokens, &col.reasons, ttft, t0.elapsed().as_secs_f64());
    Some(log::Tokens { prompt, completion: u.completion_tokens })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/health` follows the worker thread: ok while it runs, 503 once it has ended (a panic
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
