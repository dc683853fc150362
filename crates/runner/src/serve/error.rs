//! The server's one error type: every failure becomes an OpenAI error object
//! `{"error": {"message", "type", "param", "code"}}` with its HTTP status.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use demiurgic_model::ModelError;
use demiurgic_sampling::SamplingError;
use serde::Serialize;

#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds a client should wait before retrying (a 429's `Retry-After`).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    /// 4xx are the request's fault (`invalid_request_error`), 5xx the server's (`server_error`).
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let kind = if status.is_server_error() { "server_error" } else { "invalid_request_error" };
        Self { status, message: message.into(), kind, param: None, code: None, retry_after: None }
    }

    /// A 400 naming the request field at fault.
    pub fn bad(param: &str, message: impl Into<String>) -> Self {
        Self { param: Some(param.to_string()), ..Self::new(StatusCode::BAD_REQUEST, message) }
    }

    /// A 500: the engine or the server failed, not the request.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn kind(mut self, k: &'static str) -> Self {
        self.kind = k;
        self
    }

    pub fn code(mut self, c: &'static str) -> Self {
        self.code = Some(c);
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn param(mut self, p: &str) -> Self {
        self.param = Some(p.into());
        self
    }

    /// The OpenAI error object as JSON text (also sent as an SSE event when a stream fails).
    pub fn body(&self) -> String {
        let b = Body {
            error: Inner { message: &self.message, kind: self.kind, param: self.param.as_deref(), code: self.code },
        };
        serde_json::to_string(&b).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body: serde_json::Value = serde_json::from_str(&self.body()).unwrap_or_default();
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, s.into());
        }
        r
    }
}

impl From<SamplingError> for ApiError {
    fn from(e: SamplingError) -> Self {
        let param = match &e {
            SamplingError::Invalid { field, .. } => openai_name(field).to_string(),
            SamplingError::BadField { field, .. } => field.clone(),
            _ => "body".into(),
        };
        ApiError::bad(&param, openai_words(&e.to_string()))
    }
}

impl From<ModelError> for ApiError {
    /// What a request got wrong is a 400 naming the field where one is known; anything else
    /// (reading files, the model's own failures) is the server's: a 500.
    fn from(e: ModelError) -> Self {
        use ModelError as E;
        match e {
            E::Sampling(s) => ApiError::from(s),
            E::Unsupported { option, .. } => ApiError::bad(openai_name(option), openai_words(&e.to_string())),
            E::Input(_) | E::CacheOverflow { .. } | E::Tokenizer(_) => {
                ApiError::bad("body", openai_words(&e.to_string()))
            }
            e => ApiError::internal(e.to_string()),
        }
    }
}

/// A message in the request's words: our config field names replaced by the OpenAI fields that
/// set them (a client never sees `num_return_sequences`).
pub(crate) fn openai_words(message: &str) -> String {
    let mut m = message.to_string();
    for f in ["num_return_sequences", "max_new_tokens", "min_new_tokens"] {
        m = m.replace(f, openai_name(f));
    }
    m
}

/// Our config field names → the request's.
pub(crate) fn openai_name(field: &str) -> &str {
    match field {
        "max_new_tokens" => "max_tokens",
        "num_return_sequences" => "n",
        "min_new_tokens" => "min_tokens",
        f => f,
    }
}
