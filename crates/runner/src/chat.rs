//! `demiurgic chat`: a multi-turn conversation on the terminal. The KV cache lives across turns:
//! each turn computes only the tokens the conversation gained (the new user message and the
//! template around it), unless the re-rendered conversation no longer starts with what is cached
//! (then it is computed again from the start). `/reset` forgets the conversation, `/exit` (or
//! end of input) leaves.
use std::io::BufRead;

use anyhow::Result;
use demiurgic_model::load::ChatMessage;
use demiurgic_model::text::StreamDecoder;
use demiurgic_model::{generate, DecodeOps, GenOption, GenerateOptions, ModelError};

use crate::args::ChatArgs;
use crate::backends::BackendJob;
use crate::gen::{build_config, in_flag_words};
use crate::{emit, load};

pub struct ChatJob {
    pub args: ChatArgs,
}

impl BackendJob for ChatJob {
    fn run<B: DecodeOps>(self, backend: &str, device: B::Device) -> Result<()> {
        let a = &self.args;
        let mut warnings = vec![];
        let config = build_config(&a.s, &mut warnings)?;
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        // every turn streams and continues the conversation's cache: a strategy that cannot is
        // refused before the model loads
        let kind = demiurgic_model::generate::choose::<B>(&config, &GenerateOptions::default())?;
        for o in [GenOption::Cache, GenOption::Streaming] {
            if let Some(reason) = kind.refusal(o) {
                let e = ModelError::Unsupported { strategy: kind.name(), option: o.field(), reason };
                return Err(in_flag_words(e));
            }
        }
        let (loaded, _, _) = load::<B>(&a.m, &device)?;
        let tok = loaded.text_tokenizer()?;
        if loaded.chat_template.is_none() {
            anyhow::bail!("this model has no chat template: use `demiurgic generate` for plain completion");
        }
        let grammar = if config.needs_vocabulary() { Some(loaded.grammar_compiler()?) } else { None };
        let model = &loaded.model;
        let ctx = a.ctx.unwrap_or(4096).min(model.config.max_position_embeddings);
        if ctx == 0 {
            anyhow::bail!("--ctx 0: expected an integer ≥ 1");
        }
        let mut cache = model.new_cache(1, ctx)?;
        let mut cached: Vec<u32> = vec![]; // the tokens whose keys/values the cache holds
        let mut messages: Vec<ChatMessage> = vec![];
        if let Some(s) = &a.system {
            messages.push(ChatMessage { role: "system".into(), content: s.clone() });
        }
        eprintln!("chat on {backend} ({} positions); /reset forgets the conversation, /exit leaves", ctx);
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        loop {
            eprint!("> ");
            let Some(line) = lines.next() else { break };
            let line = line?;
            match line.trim() {
                "" => continue,
                "/exit" | "/quit" => break,
                "/reset" => {
                    messages.retain(|m| m.role == "system");
                    cache.reset();
                    cached.clear();
                    eprintln!("(conversation forgotten)");
                    continue;
                }
                _ => {}
            }
            messages.push(ChatMessage { role: "user".into(), content: line.clone() });
            let text = loaded.render_chat(&messages, true)?;
            let ids = tok.encode(&text)?;
            // reuse the cache only when the conversation still starts with what it holds
            let reusable = !cached.is_empty() && ids.len() > cached.len() && ids[..cached.len()] == cached[..];
            if !reusable {
                cache.reset();
                cached.clear();
            }
            let room = ctx.saturating_sub(ids.len());
            if room < 2 {
                messages.pop();
                eprintln!("(the conversation fills the {ctx} positions: /reset to start again, or a larger --ctx)");
                continue;
            }
            let mut cfg = config.clone();
            cfg.max_new_tokens = Some(cfg.max_new_tokens.unwrap_or(256).min(room - 1));
            cfg.max_length = None;
            let mut decoder = StreamDecoder::with_skip_special(true);
            let mut on_step = |step: &[Option<u32>]| {
                if let Some(Some(id)) = step.first() {
                    if let Ok(Some(t)) = decoder.push(tok, *id) {
                        emit(&t);
                    }
                }
            };
            // an empty cache (first turn, after a reset) is filled by the whole prompt
            let opts = GenerateOptions {
                on_step: Some(&mut on_step),
                cache: Some(&mut cache),
                grammar: grammar.as_deref(),
                ..Default::default()
            };
            let out = match generate(model, &[ids.clone()], &cfg, opts) {
                Ok(o) => o,
                Err(e) => {
                    messages.pop();
                    eprintln!("error: {e}");
                    continue;
                }
            };
            emit("\n");
            let row = out.row(0);
            // the cache now holds the prompt and every generated token but the last
            cached = ids.clone();
            cached.extend_from_slice(&row[..row.len().saturating_sub(1)]);
            let answer = tok.decode_with(row, true)?;
            messages.push(ChatMessage { role: "assistant".into(), content: answer.trim_end().to_string() });
            eprintln!(
                "[{}, {} of them from the cache, decode {:.1} tokens/s]",
                crate::plural(out.stats.generated_tokens, "token"),
                out.stats.cached_prompt_tokens,
                out.stats.decode_tokens_per_s
            );
        }
        Ok(())
    }
}
