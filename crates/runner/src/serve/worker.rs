//! The engine worker: one thread owns the continuous-batching [`Engine`], admits submissions
//! between steps, steps every running row at once and sends each request's tokens straight into
//! that request's channel (the HTTP handler reads them; no thread in between).
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use demiurgic_model::load::LoadedModel;
use demiurgic_model::text::TextStops;
use demiurgic_model::{DecodeOps, Engine, GenerationOutput, ModelError, StepLogprob};
use demiurgic_sampling::GenerationConfig;
use tokio::sync::mpsc::UnboundedSender;

/// One prompt of a request, for the worker.
pub(crate) struct Submission {
    pub prompt: Vec<u32>,
    pub config: GenerationConfig,
    /// Which submission of its request (prompt × copy).
    pub index: usize,
    pub events: UnboundedSender<EngineMsg>,
    pub cancelled: Arc<AtomicBool>,
}

/// What the worker tells a request.
pub(crate) enum EngineMsg {
    /// The tokens a step gave the submission's rows (None: a row that has finished), with their
    /// log-probabilities when the request asked for them.
    Tokens {
        index: usize,
        tokens: Vec<Option<u32>>,
        logprobs: Vec<Option<StepLogprob>>,
    },
    Done {
        index: usize,
        output: GenerationOutput,
    },
    /// The request was refused (its fault: a 400).
    Error(ModelError),
    /// A step of the engine failed (the server's fault: a 500).
    Failed(String),
}

/// Clears the flag when dropped: at the end of the worker thread, however it ends (a panic
/// included), so `/health` can say so.
pub(crate) struct AliveGuard(pub Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// The `vllm:kv_cache_usage_perc` gauge and the positions it is a fraction of.
pub(crate) struct CacheUsage {
    pub gauge: prometheus::Gauge,
    pub budget: usize,
}

impl CacheUsage {
    /// The running rows × the positions the shared cache holds for each.
    fn update<B: DecodeOps>(&self, engine: &Engine<'_, B>) {
        let held = engine.rows() * engine.cache_size().unwrap_or(0);
        self.gauge.set((held as f64 / self.budget.max(1) as f64).min(1.0));
    }
}

/// The worker loop: runs until every sender of `rx` is gone (the server stopped).
pub(crate) fn engine_loop<B: DecodeOps>(
    loaded: &'static LoadedModel<B>,
    capacity: usize,
    prefix_positions: usize,
    rx: std::sync::mpsc::Receiver<Submission>,
    usage: CacheUsage,
) {
    let mut engine = match Engine::new(&loaded.model, capacity) {
        Ok(e) => e.with_prefix_cache(prefix_positions),
        Err(e) => {
            eprintln!("error: cannot start the engine: {e}");
            return;
        }
    };
    let tok = loaded.tokenizer.as_ref();
    let mut running: HashMap<u64, Submission> = HashMap::new();
    let mut next_id = 0u64;
    let send = |sub: &Submission, m: EngineMsg| sub.events.send(m).is_ok();
    loop {
        let mut incoming = vec![];
        usage.update(&engine);
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
                    send(&sub, EngineMsg::Tokens { index: sub.index, tokens: step.tokens, logprobs: step.logprobs });
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
                    let alive =
                        send(sub, EngineMsg::Tokens { index: sub.index, tokens: st.tokens, logprobs: st.logprobs });
                    if let Some(output) = st.output {
                        let sub = running.remove(&st.id).expect("running");
                        send(&sub, EngineMsg::Done { index: sub.index, output });
                    } else if !alive {
                        // the request's handler is gone (its client disconnected)
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
                    Ok(e) => e.with_prefix_cache(prefix_positions),
                    Err(_) => return,
                };
                if let Some(g) = loaded.tokenizer.as_ref().and_then(|t| t.grammar.get()) {
                    engine.set_grammar(g.clone());
                }
            }
        }
    }
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
