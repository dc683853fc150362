//! What a request's engine messages become: typed OpenAI responses (`text_completion`,
//! `chat.completion`), their streamed chunks, usage and log-probabilities. [`Collect`] follows
//! one request: streamed pieces as the tokens come (never a piece that could start a stop
//! string), the final texts when every prompt is done.
use demiurgic_model::load::TextTokenizer;
use demiurgic_model::text::{row_text, safe_len, StreamDecoder};
use demiurgic_model::GenerationOutput;
use demiurgic_sampling::FinishReason;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::request::{Job, Kind};
use super::worker::EngineMsg;

#[derive(Serialize, Clone, Copy)]
pub(crate) struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// A response or a streamed chunk: `choices` are [`Choice`]s.
#[derive(Serialize)]
pub(crate) struct Response {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

#[derive(Serialize)]
pub(crate) struct Choice {
    pub index: usize,
    /// Completions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Chat, whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// Chat, streamed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
    pub logprobs: Option<Value>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
pub(crate) struct Message {
    pub role: &'static str,
    pub content: String,
}

#[derive(Serialize, Default)]
pub(crate) struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

/// One request's progress.
pub(crate) struct Collect<'a> {
    job: Job,
    model: String,
    tok: Option<&'a TextTokenizer>,
    decoders: Vec<StreamDecoder>,
    text: Vec<String>,
    sent: Vec<usize>,
    started: Vec<bool>,
    outs: Vec<Option<GenerationOutput>>,
}

impl<'a> Collect<'a> {
    pub fn new(job: Job, model: String, tok: Option<&'a TextTokenizer>) -> Self {
        let rows = job.prompts.len() * job.config.num_return_sequences;
        Self {
            decoders: (0..rows).map(|_| StreamDecoder::with_skip_special(true)).collect(),
            text: vec![String::new(); rows],
            sent: vec![0; rows],
            started: vec![false; rows],
            outs: (0..job.prompts.len()).map(|_| None).collect(),
            job,
            model,
            tok,
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.job.kind, chunk) {
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn envelope(&self, choices: Vec<Choice>, chunk: bool) -> Response {
        Response {
            id: self.job.id.clone(),
            object: self.object(chunk),
            created: super::now(),
            model: self.model.clone(),
            choices,
            usage: None,
            system_fingerprint: None,
            seed: None,
        }
    }

    fn chunk(&mut self, row: usize, piece: Option<String>, finish: Option<&'static str>) -> String {
        let first = !self.started[row];
        self.started[row] = true;
        let choice = match self.job.kind {
            Kind::Completion => Choice {
                index: row,
                text: Some(piece.unwrap_or_default()),
                message: None,
                delta: None,
                logprobs: None,
                finish_reason: finish,
            },
            Kind::Chat => Choice {
                index: row,
                text: None,
                message: None,
                delta: Some(Delta { role: first.then_some("assistant"), content: piece }),
                logprobs: None,
                finish_reason: finish,
            },
        };
        serde_json::to_string(&self.envelope(vec![choice], true)).unwrap_or_default()
    }

    /// Take one message of the worker; returns the chunks to stream now (when streaming).
    pub fn push(&mut self, msg: EngineMsg) -> Result<Vec<String>, ApiError> {
        match msg {
            EngineMsg::Tokens { index, tokens } => {
                if !self.job.stream {
                    return Ok(vec![]);
                }
                let mut chunks = vec![];
                let Some(t) = self.tok else { return Ok(chunks) };
                let n = self.job.config.num_return_sequences;
                for (k, id) in tokens.iter().enumerate() {
                    let (Some(id), r) = (id, index * n + k) else { continue };
                    if let Ok(Some(p)) = self.decoders[r].push(t, *id) {
                        self.text[r].push_str(&p);
                    }
                    let safe = safe_len(&self.text[r], &self.job.config.stop);
                    if safe > self.sent[r] && self.text[r].is_char_boundary(safe) {
                        let piece = self.text[r][self.sent[r]..safe].to_string();
                        self.sent[r] = safe;
                        chunks.push(self.chunk(r, Some(piece), None));
                    }
                }
                Ok(chunks)
            }
            EngineMsg::Done { index, output } => {
                self.outs[index] = Some(output);
                Ok(vec![])
            }
            EngineMsg::Error(e) => Err(ApiError::from(e)),
            EngineMsg::Failed(msg) => Err(ApiError::internal(msg)),
        }
    }

    /// Every prompt has its output.
    pub fn done(&self) -> bool {
        self.outs.iter().all(Option::is_some)
    }

    /// The outputs of the request's prompts as one (rows in prompt order), their final texts
    /// and the usage.
    fn merged(&mut self) -> Result<(GenerationOutput, Vec<String>, Usage), ApiError> {
        let mut it = std::mem::take(&mut self.outs).into_iter();
        let mut a = it.next().flatten().ok_or_else(|| ApiError::internal("the engine dropped a request"))?;
        for b in it {
            let b = b.ok_or_else(|| ApiError::internal("the engine dropped a request"))?;
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
        let finals: Vec<String> = (0..a.tokens.len())
            .map(|i| final_text(self.tok, &a, i, &self.job.config.stop))
            .collect::<Result<_, _>>()?;
        let completion_tokens: usize = a.lengths.iter().sum();
        let prompt_tokens: usize = self.job.prompts.iter().map(Vec::len).sum();
        let usage = Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens };
        Ok((a, finals, usage))
    }

    /// The last chunks of a stream: each row's unsent rest with its finish reason, the usage
    /// when asked, `[DONE]`.
    pub fn final_chunks(&mut self) -> Result<Vec<String>, ApiError> {
        let (out, finals, usage) = self.merged()?;
        let mut chunks = vec![];
        for (r, fin) in finals.iter().enumerate() {
            // what the streamed pieces have not said yet (the final text is the reference)
            let sent = self.sent[r];
            let rest = fin.get(sent..).filter(|_| fin.starts_with(&self.text[r][..sent])).unwrap_or("");
            let piece = (!rest.is_empty()).then(|| rest.to_string());
            chunks.push(self.chunk(r, piece, Some(finish_name(out.finish_reasons[r]))));
        }
        if self.job.include_usage {
            let mut e = self.envelope(vec![], true);
            e.usage = Some(usage);
            chunks.push(serde_json::to_string(&e).unwrap_or_default());
        }
        chunks.push("[DONE]".into());
        Ok(chunks)
    }

    /// The whole response (not streamed).
    pub fn response(mut self) -> Result<Response, ApiError> {
        let (out, finals, usage) = self.merged()?;
        let choices = finals
            .into_iter()
            .enumerate()
            .map(|(r, text)| {
                let logprobs = logprobs_json(self.job.kind, self.tok, &out, r);
                let finish_reason = Some(finish_name(out.finish_reasons[r]));
                match self.job.kind {
                    Kind::Completion => {
                        Choice { index: r, text: Some(text), message: None, delta: None, logprobs, finish_reason }
                    }
                    Kind::Chat => Choice {
                        index: r,
                        text: None,
                        message: Some(Message { role: "assistant", content: text }),
                        delta: None,
                        logprobs,
                        finish_reason,
                    },
                }
            })
            .collect();
        let mut e = self.envelope(choices, false);
        e.usage = Some(usage);
        e.system_fingerprint = Some(format!("demiurgic-{}", env!("CARGO_PKG_VERSION")));
        e.seed = out.seed;
        Ok(e)
    }
}

fn final_text(
    tok: Option<&TextTokenizer>,
    out: &GenerationOutput,
    i: usize,
    stops: &[String],
) -> Result<String, ApiError> {
    let Some(t) = tok else {
        return Ok(out.row(i).iter().map(|id| format!("{id} ")).collect());
    };
    row_text(t, out.row(i), out.finish_reasons[i], stops, true)
        .map_err(|e| ApiError::internal(format!("cannot decode: {e:#}")))
}

fn token_str(tok: Option<&TextTokenizer>, id: u32) -> String {
    tok.and_then(|t| t.decode_with(&[id], false).ok()).unwrap_or_else(|| format!("<{id}>"))
}

/// OpenAI's log-probability objects: completions' parallel lists, chat's `content` entries.
fn logprobs_json(kind: Kind, tok: Option<&TextTokenizer>, out: &GenerationOutput, r: usize) -> Option<Value> {
    let lps = out.logprobs.as_ref().map(|l| &l[r])?;
    let ids = out.row(r);
    let top = out.top_logprobs.as_ref().map(|t| &t[r]);
    Some(match kind {
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
    })
}
