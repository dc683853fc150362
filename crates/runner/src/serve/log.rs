//! One line per request on stderr: method, path, status, tokens, duration; plain text or one
//! JSON object per line (`--log-format json`, for log collectors). A streamed response logs when
//! its stream ends (or its client goes away), with the tokens it generated.
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Tokens a response reports (its usage).
#[derive(Clone, Copy)]
pub(crate) struct Tokens {
    pub prompt: usize,
    pub completion: usize,
}

/// A response extension: its stream writes the line when it ends.
#[derive(Clone, Copy)]
pub(crate) struct Deferred;

/// What the line says about one request (a request extension, for the handler of a stream).
#[derive(Clone)]
pub(crate) struct RequestLog {
    format: LogFormat,
    method: String,
    path: String,
    start: Instant,
}

impl RequestLog {
    pub fn line(&self, status: u16, tokens: Option<Tokens>, note: Option<&str>) -> String {
        let ms = self.start.elapsed().as_secs_f64() * 1e3;
        match self.format {
            LogFormat::Text => {
                let t = match tokens {
                    Some(t) => format!("{} prompt + {} completion tokens", t.prompt, t.completion),
                    None => "no tokens".into(),
                };
                let note = note.map(|n| format!(" ({n})")).unwrap_or_default();
                format!("{} {} {status} {t} {ms:.0} ms{note}", self.method, self.path)
            }
            LogFormat::Json => {
                let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
                let mut v = json!({
                    "ts": (ts * 1e3).round() / 1e3,
                    "method": self.method,
                    "path": self.path,
                    "status": status,
                    "prompt_tokens": tokens.map(|t| t.prompt),
                    "completion_tokens": tokens.map(|t| t.completion),
                    "duration_ms": (ms * 10.0).round() / 10.0,
                });
                if let Some(n) = note {
                    v["note"] = json!(n);
                }
                v.to_string()
            }
        }
    }

    pub fn write(&self, status: u16, tokens: Option<Tokens>, note: Option<&str>) {
        eprintln!("{}", self.line(status, tokens, note));
    }
}

/// Held by a streamed response: writes the request's line when dropped (the stream ended or its
/// client went away before the end).
pub(crate) struct StreamLog {
    pub log: RequestLog,
    pub tokens: Option<Tokens>,
    pub finished: bool,
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        let note = (!self.finished).then_some("client disconnected");
        self.log.write(200, self.tokens, note);
    }
}

/// The middleware: every request gets its line, written here unless its stream writes it.
pub(crate) async fn log_requests(
    State((format, counts)): State<(LogFormat, prometheus::IntCounterVec)>,
    mut req: Request,
    next: Next,
) -> Response {
    // a route's pattern (bounded label values), never the raw path
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let log = RequestLog {
        format,
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        start: Instant::now(),
    };
    req.extensions_mut().insert(log.clone());
    let resp = next.run(req).await;
    counts.with_label_values(&[route.as_str(), resp.status().as_str()]).inc();
    if resp.extensions().get::<Deferred>().is_none() {
        log.write(resp.status().as_u16(), resp.extensions().get::<Tokens>().copied(), None);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_in_both_formats() {
        let mut log = RequestLog {
            format: LogFormat::Text,
            method: "POST".into(),
            path: "/v1/completions".into(),
            start: Instant::now(),
        };
        let t = Some(Tokens { prompt: 5, completion: 16 });
        let line = log.line(200, t, None);
        assert!(line.starts_with("POST /v1/completions 200 5 prompt + 16 completion tokens "), "{line}");
        assert!(line.ends_with(" ms"), "{line}");
        log.format = LogFormat::Json;
        let v: serde_json::Value = serde_json::from_str(&log.line(429, None, Some("busy"))).unwrap();
        assert_eq!(
            (v["method"].as_str(), v["status"].as_u64(), v["note"].as_str()),
            (Some("POST"), Some(429), Some("busy"))
        );
        assert!(v["prompt_tokens"].is_null() && v["duration_ms"].is_number(), "{v}");
    }
}
