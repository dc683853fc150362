//! `demiurgic chat`: a multi-turn conversation on the terminal. The KV cache lives across turns:
//! each turn computes only the tokens the conversation gained (the new user message and the
//! template around it), unless the re-rendered conversation no longer starts with what is cached
//! (then it is computed again from the start).
//!
//! On a terminal the line is read with rustyline (editing, ↑/↓ history kept in a file); Ctrl-C
//! stops a reply and returns to the prompt, Ctrl-C twice at the prompt or Ctrl-D leaves. Lines
//! starting with `/` are commands (`/help`), answered here and never sent to the model.
use std::io::{BufRead, IsTerminal};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};
use demiurgic_model::load::ChatMessage;
use demiurgic_model::text::{row_text, StopCut, StreamDecoder, TextStops};
use demiurgic_model::{generate, DecodeOps, GenOption, GenerateOptions, ModelError};
use demiurgic_sampling::FinishReason;

use crate::args::ChatArgs;
use crate::backends::BackendJob;
use crate::gen::{build_config, in_flag_words};
use crate::{emit, load, plural};

/// Set by Ctrl-C while a reply is generated: the reply stops at the next token.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// A reply is being generated (Ctrl-C stops it); otherwise Ctrl-C ends the program.
static GENERATING: AtomicBool = AtomicBool::new(false);

const HELP: &str = "\
commands:
  /help    this list
  /reset   forget the conversation (the system message stays)
  /exit    leave (also /quit, Ctrl-D, or Ctrl-C twice at an empty prompt)
keys: Ctrl-C stops a reply; ↑/↓ recall earlier lines; a line starting with // sends the text after the first /";

pub struct ChatJob {
    pub args: ChatArgs,
}

/// Where the lines come from: rustyline on a terminal, plain lines otherwise (a pipe, a file).
enum Input {
    Editor { ed: Box<rustyline::DefaultEditor>, history: Option<std::path::PathBuf> },
    Plain(std::io::Lines<std::io::StdinLock<'static>>),
}

/// What the user did at the prompt.
enum Line {
    Text(String),
    /// Ctrl-C at the prompt.
    Interrupted,
    /// Ctrl-D or end of input.
    End,
}

impl Input {
    fn open(history: Option<std::path::PathBuf>) -> Result<Self> {
        if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
            return Ok(Input::Plain(std::io::stdin().lock().lines()));
        }
        let mut ed = rustyline::DefaultEditor::new()?;
        if let Some(h) = &history {
            if h.exists() {
                if let Err(e) = ed.load_history(h) {
                    eprintln!("warning: cannot read the history {}: {e}", h.display());
                }
            }
        }
        Ok(Input::Editor { ed: Box::new(ed), history })
    }

    fn read(&mut self) -> Result<Line> {
        match self {
            Input::Plain(lines) => {
                eprint!("> ");
                match lines.next() {
                    None => Ok(Line::End),
                    Some(l) => Ok(Line::Text(l?)),
                }
            }
            Input::Editor { ed, history } => match ed.readline("> ") {
                Ok(l) => {
                    if !l.trim().is_empty() {
                        let _ = ed.add_history_entry(l.as_str());
                        if let Some(h) = history {
                            if let Some(dir) = h.parent() {
                                let _ = std::fs::create_dir_all(dir);
                            }
                            if let Err(e) = ed.append_history(h) {
                                eprintln!("warning: cannot write the history {}: {e}", h.display());
                            }
                        }
                    }
                    Ok(Line::Text(l))
                }
                Err(rustyline::error::ReadlineError::Interrupted) => Ok(Line::Interrupted),
                Err(rustyline::error::ReadlineError::Eof) => Ok(Line::End),
                Err(e) => Err(e.into()),
            },
        }
    }
}

impl BackendJob for ChatJob {
    fn run<B: DecodeOps>(self, backend: &str, device: B::Device) -> Result<()> {
        let a = &self.args;
        let mut warnings = vec![];
        let config = build_config(&a.s, &mut warnings)?;
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        // one reply per turn, streamed, continuing the conversation's cache: anything else is
        // refused before the model loads (not an error at every turn)
        if config.num_return_sequences > 1 {
            bail!(
                "--num-return-sequences {}: chat shows one reply per turn (use `demiurgic generate` for several)",
                config.num_return_sequences
            );
        }
        let kind = demiurgic_model::generate::choose::<B>(&config, &GenerateOptions::default())?;
        for o in [GenOption::Cache, GenOption::Streaming] {
            if let Some(reason) = kind.refusal(o) {
                let e = ModelError::Unsupported { strategy: kind.name(), option: o.field(), reason };
                return Err(in_flag_words(e));
            }
        }
        let ctx = a.ctx.unwrap_or(4096);
        if ctx == 0 {
            bail!("--ctx 0: expected an integer ≥ 1");
        }
        // Ctrl-C: stops the reply being generated; at any other time it ends the program
        ctrlc::set_handler(|| {
            if GENERATING.load(Ordering::SeqCst) {
                INTERRUPTED.store(true, Ordering::SeqCst);
            } else {
                eprintln!();
                std::process::exit(130);
            }
        })?;
        let (loaded, _, _) = load::<B>(&a.m, &device)?;
        let tok = loaded.text_tokenizer()?;
        if loaded.chat_template.is_none() {
            bail!("this model has no chat template: use `demiurgic generate` for plain completion");
        }
        let grammar = if config.needs_vocabulary() { Some(loaded.grammar_compiler()?) } else { None };
        let model = &loaded.model;
        let ctx = ctx.min(model.config.max_position_embeddings);
        let cut_stops = a.s.stops_to_cut(&config);
        let mut cache = model.new_cache(1, ctx)?;
        let mut cached: Vec<u32> = vec![]; // the tokens whose keys/values the cache holds
        let mut messages: Vec<ChatMessage> = vec![];
        if let Some(s) = &a.system {
            messages.push(ChatMessage { role: "system".into(), content: s.clone() });
        }
        let history = if a.no_history {
            None
        } else {
            Some(a.history.clone().unwrap_or_else(|| crate::fetch::home().join("chat_history.txt")))
        };
        let mut input = Input::open(history)?;
        eprintln!("chat on {backend} ({ctx} positions); /help lists the commands, /exit or Ctrl-D leaves");
        let mut interrupted_before = false;
        loop {
            let line = match input.read()? {
                Line::End => {
                    eprintln!(); // the shell's prompt starts on its own line
                    break;
                }
                Line::Interrupted if interrupted_before => {
                    eprintln!();
                    break;
                }
                Line::Interrupted => {
                    interrupted_before = true;
                    eprintln!("(Ctrl-C again, Ctrl-D or /exit to leave)");
                    continue;
                }
                Line::Text(l) => l,
            };
            interrupted_before = false;
            let text = match line.trim() {
                "" => continue,
                "/exit" | "/quit" => break,
                "/help" | "/?" => {
                    eprintln!("{HELP}");
                    continue;
                }
                "/reset" => {
                    messages.retain(|m| m.role == "system");
                    cache.reset();
                    cached.clear();
                    eprintln!("(conversation forgotten)");
                    continue;
                }
                t if t.starts_with("//") => line.trim_start().strip_prefix('/').unwrap_or(&line).to_string(),
                t if t.starts_with('/') => {
                    let word = t.split_whitespace().next().unwrap_or(t);
                    eprintln!("unknown command {word} (/help lists them; start a line with // to send it as text)");
                    continue;
                }
                _ => line.clone(),
            };
            messages.push(ChatMessage { role: "user".into(), content: text });
            let prompt = loaded.render_chat(&messages, true)?;
            let ids = tok.encode(&prompt)?;
            // reuse the cache only when the conversation still starts with what it holds
            let reusable = !cached.is_empty() && ids.len() > cached.len() && ids[..cached.len()] == cached[..];
            if !reusable {
                cache.reset();
                cached.clear();
            }
            let room = ctx.saturating_sub(ids.len());
            if room < 2 {
                messages.pop();
                eprintln!(
                    "(the conversation fills the {ctx} positions: /reset to start again, or a larger --ctx; this message was not sent)"
                );
                continue;
            }
            let mut cfg = config.clone();
            let wanted = cfg.max_new_tokens.unwrap_or(256);
            cfg.max_new_tokens = Some(wanted.min(room - 1));
            cfg.max_length = None;
            let cut_by_context = wanted > room - 1;
            let mut decoder = StreamDecoder::with_skip_special(true);
            let mut cut = StopCut::new(&cut_stops);
            let mut on_step = |step: &[Option<u32>]| {
                if let Some(Some(id)) = step.first() {
                    if let Ok(Some(t)) = decoder.push(tok, *id) {
                        if let Some(s) = cut.push(&t) {
                            emit(&s);
                        }
                    }
                }
            };
            let interrupt = |_: &[u32]| INTERRUPTED.load(Ordering::SeqCst);
            let stops = (!cfg.stop.is_empty()).then(|| TextStops::new(tok, cfg.stop.clone()));
            // an empty cache (first turn, after a reset) is filled by the whole prompt
            let opts = GenerateOptions {
                on_step: Some(&mut on_step),
                cache: Some(&mut cache),
                grammar: grammar.as_deref(),
                stops,
                stop_check: Some(&interrupt),
                ..Default::default()
            };
            INTERRUPTED.store(false, Ordering::SeqCst);
            GENERATING.store(true, Ordering::SeqCst);
            let out = generate(model, &[ids.clone()], &cfg, opts);
            GENERATING.store(false, Ordering::SeqCst);
            let out = match out {
                Ok(o) => o,
                Err(e) => {
                    messages.pop();
                    eprintln!("error: {}", in_flag_words(e));
                    continue;
                }
            };
            let row = out.row(0);
            let finish = out.finish_reasons[0];
            let answer = row_text(tok, row, finish, &cut_stops, true)?;
            emit(&cut.finish(&answer));
            emit("\n");
            // the cache now holds the prompt and every generated token but the last
            cached = ids.clone();
            cached.extend_from_slice(&row[..row.len().saturating_sub(1)]);
            messages.push(ChatMessage { role: "assistant".into(), content: answer.trim_end().to_string() });
            if INTERRUPTED.swap(false, Ordering::SeqCst) {
                eprintln!("(interrupted: the reply so far stays in the conversation)");
            } else if finish == FinishReason::Length && cut_by_context {
                eprintln!(
                    "(the reply stopped because the conversation filled the {ctx} positions: /reset to start again, or a larger --ctx)"
                );
            }
            let s = &out.stats;
            let reused = s.cached_prompt_tokens;
            let mut stats = format!("[{}", plural(s.generated_tokens, "new token"));
            if reused > 0 {
                stats += &format!("; {} reused from the previous turn", plural(reused, "prompt token"));
                stats += &format!(", {} computed", ids.len() - reused);
            } else {
                stats += &format!("; {} computed", plural(ids.len(), "prompt token"));
            }
            stats += &format!("; {:.1} tokens/s", s.decode_tokens_per_s);
            if let Some(seed) = out.seed {
                stats += &format!("; seed {seed}");
            }
            eprintln!("{stats}]");
        }
        Ok(())
    }
}
