//! What a request's engine messages become: typed OpenAI responses (`text_completion`,
//! `chat.completion`), their streamed chunks, usage and log-probabilities. [`Collect`] follows
//! one request: streamed pieces as the tokens come (never a piece that could start a stop
//! string), the final texts when every prompt is done.
use demiurgic_model::load::TextTokenizer;
use demiurgic_model::text::{row_text, StopCut, StreamDecoder};
use demiurgic_model::{GenerationOutput, StepLogprob};
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
    pub prompt_tokens_details: PromptDetails,
}

/// OpenAI's `usage.prompt_tokens_details`: prompt tokens whose keys/values came from the prefix
/// cache.
#[derive(Serialize, Clone, Copy)]
pub(crate) struct PromptDetails {
    pub cached_tokens: usize,
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
    /// None (JSON null) when the answer is tool calls.
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
}

#[derive(Serialize, Default)]
pub(crate) struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
}

fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

/// One token of a log-probability report: its id, its log-probability (None: the prompt's first
/// token, which nothing predicts) and its alternatives (None: not asked, or that first token).
#[derive(Clone)]
pub(crate) struct Entry {
    id: u32,
    logprob: Option<f32>,
    top: Option<Vec<(u32, f32)>>,
}

impl Entry {
    fn of(id: u32, lp: Option<&StepLogprob>, want_top: bool) -> Self {
        Self { id, logprob: lp.and_then(|l| l.logprob), top: lp.filter(|_| want_top).map(|l| l.top.clone()) }
    }
}

/// One request's progress.
pub(crate) struct Collect<'a> {
    job: Job,
    model: String,
    tok: Option<&'a TextTokenizer>,
    decoders: Vec<StreamDecoder>,
    /// Per row: its streamed text, stop strings (and what may be a tool call) held back.
    cuts: Vec<StopCut>,
    started: Vec<bool>,
    /// Per row: the log-probability entries streamed tokens have not sent yet.
    pending: Vec<Vec<Entry>>,
    /// Per row: bytes of token text reported so far (completions' `text_offset`).
    offsets: Vec<usize>,
    /// Per prompt, with `echo`: its text and (with `logprobs`) its tokens' entries.
    echo: Vec<(String, Vec<Entry>)>,
    outs: Vec<Option<GenerationOutput>>,
    /// The usage, once every submission is done.
    pub usage: Option<Usage>,
    /// When the first token arrived (time to first token).
    pub first_token: Option<std::time::Instant>,
    /// Every generated row's finish reason (`best_of`'s candidates included), once done.
    pub reasons: Vec<&'static str>,
}

impl<'a> Collect<'a> {
    /// `echo`: per prompt, its text and log-probabilities (when the job echoes its prompts).
    pub fn new(
        job: Job,
        model: String,
        tok: Option<&'a TextTokenizer>,
        echo: Vec<(String, Vec<Option<StepLogprob>>)>,
    ) -> Self {
        let rows = job.prompts.len() * job.candidates();
        let want_top = job.config.top_logprobs > 0;
        let echo = echo
            .into_iter()
            .zip(&job.prompts)
            .map(|((text, lps), ids)| {
                let entries = if lps.is_empty() {
                    vec![]
                } else {
                    ids.iter().zip(&lps).map(|(&id, lp)| Entry::of(id, lp.as_ref(), want_top)).collect()
                };
                (text, entries)
            })
            .collect();
        Self {
            decoders: (0..rows).map(|_| StreamDecoder::with_skip_special(true)).collect(),
            cuts: (0..rows).map(|_| StopCut::new(&job.config.stop)).collect(),
            started: vec![false; rows],
            pending: vec![vec![]; rows],
            offsets: vec![0; rows],
            echo,
            outs: (0..job.submissions()).map(|_| None).collect(),
            usage: None,
            first_token: None,
            reasons: vec![],
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

    /// The prompt of a row (rows are `candidates()` per prompt).
    fn prompt_of(&self, row: usize) -> usize {
        row / self.job.candidates()
    }

    /// A streamed chunk of row `row`: its text piece (the prompt's text first with `echo`) or its
    /// tool calls, and the log-probabilities of the tokens received since the last chunk.
    fn chunk(
        &mut self,
        row: usize,
        piece: Option<String>,
        tool_calls: Option<Vec<Value>>,
        finish: Option<&'static str>,
    ) -> String {
        let first = !self.started[row];
        self.started[row] = true;
        let mut piece = piece;
        let mut entries = vec![];
        if first && self.job.echo {
            let (text, lps) = &self.echo[self.prompt_of(row)];
            piece = Some(format!("{text}{}", piece.unwrap_or_default()));
            entries.extend(lps.iter().cloned());
        }
        entries.append(&mut self.pending[row]);
        let logprobs = (self.job.logprobs && !entries.is_empty())
            .then(|| logprobs_json(self.job.kind, self.tok, &entries, &mut self.offsets[row]));
        let choice = match self.job.kind {
            Kind::Completion => Choice {
                index: row,
                text: Some(piece.unwrap_or_default()),
                message: None,
                delta: None,
                logprobs,
                finish_reason: finish,
            },
            Kind::Chat => Choice {
                index: row,
                text: None,
                message: None,
                delta: Some(Delta { role: first.then_some("assistant"), content: piece, tool_calls }),
                logprobs,
                finish_reason: finish,
            },
        };
        serde_json::to_string(&self.envelope(vec![choice], true)).unwrap_or_default()
    }

    /// Take one message of the worker; returns the chunks to stream now (when streaming).
    pub fn push(&mut self, msg: EngineMsg) -> Result<Vec<String>, ApiError> {
        match msg {
            EngineMsg::Tokens { index, tokens, logprobs } => {
                if self.first_token.is_none() && tokens.iter().any(Option::is_some) {
                    self.first_token = Some(std::time::Instant::now());
                }
                if !self.job.stream {
                    return Ok(vec![]);
                }
                let mut chunks = vec![];
                let Some(t) = self.tok else { return Ok(chunks) };
                let n = self.job.config.num_return_sequences;
                let want_top = self.job.config.top_logprobs > 0;
                for (k, id) in tokens.iter().enumerate() {
                    let (Some(id), r) = (id, index * n + k) else { continue };
                    if self.job.logprobs {
                        self.pending[r].push(Entry::of(*id, logprobs.get(k).and_then(Option::as_ref), want_top));
                    }
                    let Ok(Some(p)) = self.decoders[r].push(t, *id) else { continue };
                    // text that may be a tool call is held back until the end
                    let tools = self.job.tools.as_ref();
                    if let Some(piece) = self.cuts[r].push_unless(&p, |text| tools.is_some_and(|t| t.hold(text))) {
                        chunks.push(self.chunk(r, Some(piece), None, None));
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

    /// Every submission has its output.
    pub fn done(&self) -> bool {
        self.outs.iter().all(Option::is_some)
    }

    /// The outputs of the request's submissions as one (rows in prompt order, `candidates()`
    /// per prompt), their final texts and the usage.
    fn merged(&mut self) -> Result<(GenerationOutput, Vec<String>, Usage), ApiError> {
        // each prompt's cached tokens: those of its first submission (its copies reuse it too)
        let copies = self.job.copies;
        let cached_tokens: usize = self
            .outs
            .iter()
            .step_by(copies.max(1))
            .map(|o| o.as_ref().map_or(0, |o| o.stats.cached_prompt_tokens))
            .sum();
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
        let usage = Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptDetails { cached_tokens },
        };
        self.usage = Some(usage);
        self.reasons = a.finish_reasons.iter().map(|&f| finish_name(f)).collect();
        Ok((a, finals, usage))
    }

    /// The last chunks of a stream: each row's unsent rest with its finish reason, the usage
    /// when asked, `[DONE]`.
    pub fn final_chunks(&mut self) -> Result<Vec<String>, ApiError> {
        let (out, finals, usage) = self.merged()?;
        let mut chunks = vec![];
        for (r, fin) in finals.iter().enumerate() {
            if let Some(calls) = self.calls_of(fin) {
                // the calls in one delta, then the finish
                let tool_calls = super::tools::tool_calls_json(&calls, &self.job.id, r, true);
                chunks.push(self.chunk(r, None, Some(tool_calls), None));
                chunks.push(self.chunk(r, None, None, Some("tool_calls")));
                self.reasons[r] = "tool_calls";
                continue;
            }
            // what the streamed pieces have not said yet (the final text is the reference)
            let rest = self.cuts[r].finish(fin);
            let piece = (!rest.is_empty()).then_some(rest);
            chunks.push(self.chunk(r, piece, None, Some(finish_name(out.finish_reasons[r]))));
        }
        if self.job.include_usage {
            let mut e = self.envelope(vec![], true);
            e.usage = Some(usage);
            chunks.push(serde_json::to_string(&e).unwrap_or_default());
        }
        chunks.push("[DONE]".into());
        Ok(chunks)
    }

    /// The tool calls a finished text makes (chat with tools: the only requests that have
    /// them), None for an ordinary answer.
    fn calls_of(&self, text: &str) -> Option<Vec<(String, String)>> {
        self.job.tools.as_ref()?.calls(text)
    }

    /// The rows returned, per prompt in order: every row, or with `best_of` the `n` candidates of
    /// highest mean log-probability (best first, as vLLM orders them).
    fn chosen(&self, out: &GenerationOutput) -> Vec<usize> {
        let (c, n) = (self.job.candidates(), self.job.n);
        if c == n {
            return (0..out.tokens.len()).collect();
        }
        let mean = |r: usize| -> f64 {
            let l = out.logprobs.as_ref().map(|l| &l[r][..]).unwrap_or(&[]);
            if l.is_empty() {
                f64::NEG_INFINITY
            } else {
                l.iter().map(|&x| x as f64).sum::<f64>() / l.len() as f64
            }
        };
        let mut rows = vec![];
        for p in 0..self.job.prompts.len() {
            let mut cands: Vec<usize> = (p * c..(p + 1) * c).collect();
            cands.sort_by(|&a, &b| mean(b).total_cmp(&mean(a)).then(a.cmp(&b)));
            rows.extend(cands.into_iter().take(n));
        }
        rows
    }

    /// Row `r`'s log-probability entries (the prompt's first with `echo`).
    fn entries(&self, out: &GenerationOutput, r: usize) -> Vec<Entry> {
        let mut e = if self.job.echo { self.echo[self.prompt_of(r)].1.clone() } else { vec![] };
        let lps = out.logprobs.as_ref().map(|l| &l[r]);
        let top = out.top_logprobs.as_ref().map(|t| &t[r]);
        for (k, &id) in out.row(r).iter().enumerate() {
            let logprob = lps.and_then(|l| l.get(k).copied());
            e.push(Entry { id, logprob, top: top.and_then(|t| t.get(k).cloned()) });
        }
        e
    }

    /// The whole response (not streamed).
    pub fn response(&mut self) -> Result<Response, ApiError> {
        let (out, finals, usage) = self.merged()?;
        let mut choices = vec![];
        for (index, r) in self.chosen(&out).into_iter().enumerate() {
            let logprobs =
                self.job.logprobs.then(|| logprobs_json(self.job.kind, self.tok, &self.entries(&out, r), &mut 0));
            let mut finish_reason = Some(finish_name(out.finish_reasons[r]));
            let text = match self.job.echo {
                true => format!("{}{}", self.echo[self.prompt_of(r)].0, finals[r]),
                false => finals[r].clone(),
            };
            let calls = self.calls_of(&text);
            if calls.is_some() {
                finish_reason = Some("tool_calls");
                self.reasons[r] = "tool_calls";
            }
            choices.push(match self.job.kind {
                Kind::Completion => {
                    Choice { index, text: Some(text), message: None, delta: None, logprobs, finish_reason }
                }
                Kind::Chat => Choice {
                    index,
                    text: None,
                    message: Some(match &calls {
                        Some(c) => Message {
                            role: "assistant",
                            content: None,
                            tool_calls: Some(super::tools::tool_calls_json(c, &self.job.id, index, false)),
                        },
                        None => Message { role: "assistant", content: Some(text), tool_calls: None },
                    }),
                    delta: None,
                    logprobs,
                    finish_reason,
                },
            });
        }
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

/// OpenAI's log-probability objects for `entries`: completions' parallel lists (`text_offset`
/// counted on from `offset`, which is advanced), chat's `content` entries.
fn logprobs_json(kind: Kind, tok: Option<&TextTokenizer>, entries: &[Entry], offset: &mut usize) -> Value {
    match kind {
        Kind::Completion => {
            let mut offsets = vec![];
            let mut tokens = vec![];
            for e in entries {
                let s = token_str(tok, e.id);
                offsets.push(*offset);
                *offset += s.len();
                tokens.push(s);
            }
            let lps: Vec<Option<f32>> = entries.iter().map(|e| e.logprob).collect();
            let asked_top = entries.iter().any(|e| e.top.is_some());
            let tops: Value = if asked_top {
                json!(entries
                    .iter()
                    .map(|e| e.top.as_ref().map(|alts| alts
                        .iter()
                        .map(|&(i, l)| (token_str(tok, i), json!(l)))
                        .collect::<Map<String, Value>>()))
                    .collect::<Vec<_>>())
            } else {
                Value::Null
            };
            json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
        }
        Kind::Chat => {
            let content: Vec<Value> = entries
                .iter()
                .map(|e| {
                    let s = token_str(tok, e.id);
                    let alts: Vec<Value> = e
                        .top
                        .iter()
                        .flatten()
                        .map(|&(i, l)| {
                            let a = token_str(tok, i);
                            json!({"token": a, "logprob": l, "bytes": a.as_bytes()})
                        })
                        .collect();
                    json!({"token": s, "logprob": e.logprob, "bytes": s.as_bytes(), "top_logprobs": alts})
                })
                .collect();
            json!({"content": content})
        }
    }
}
