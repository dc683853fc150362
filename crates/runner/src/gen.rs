//! `demiurgic generate`: prompts in, text (streamed) or one JSON object out.
use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};
use demiurgic_model::load::{ChatMessage, TextTokenizer};
use demiurgic_model::text::{row_text, StopCut, StreamDecoder, TextStops};
use demiurgic_model::{generate, DecodeOps, GenerateOptions, GenerationOutput};
use demiurgic_sampling::{Constraint, GenerationConfig, SamplingError};
use serde_json::json;

use crate::args::{unescape, GenerateArgs, ProcessorFlags, SamplingArgs};
use crate::backends::BackendJob;
use crate::{emit, load, plural};

/// A number as a user would type it (`1e40`, not forty digits).
fn typed(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e6 || v.abs() < 1e-4) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

/// A float flag as f32: refused (with the value as typed) when it does not fit.
fn f32_flag(flag: &str, v: f64, allowed: &str) -> Result<f32> {
    let x = v as f32;
    if !x.is_finite() {
        bail!("--{flag} {}: out of range, expected {allowed}", typed(v));
    }
    Ok(x)
}

/// The generation config of the sampling flags (preset or config file first, flags over it),
/// with warnings for flags that have no effect.
pub fn build_config(a: &SamplingArgs, warnings: &mut Vec<String>) -> Result<GenerationConfig> {
    if a.preset.is_some() && a.config.is_some() {
        bail!("--preset and --config both given: choose one starting point");
    }
    let mut c = match (&a.preset, &a.config) {
        (Some(p), _) => GenerationConfig::preset(p)?,
        (_, Some(f)) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("cannot read --config {}", f.display()))?;
            let (c, w) = GenerationConfig::from_any_json(&text).with_context(|| format!("--config {}", f.display()))?;
            warnings.extend(w.into_iter().map(|w| format!("--config {}: {w}", f.display())));
            c
        }
        _ => GenerationConfig::default(),
    };
    if let Some(v) = a.num_return_sequences {
        c.num_return_sequences = v;
    }
    apply_processor_flags(&a.p, &mut c)?;
    if a.do_sample {
        c.do_sample = true;
    }
    if a.max_new_tokens.is_some() {
        c.max_new_tokens = a.max_new_tokens;
    }
    if let Some(l) = a.max_length {
        c.max_length = Some(l);
        if a.max_new_tokens.is_none() {
            c.max_new_tokens = None;
        } else {
            warnings.push(
                "both --max-new-tokens and --max-length given: --max-new-tokens wins (as in transformers)".into(),
            );
        }
    }
    if a.seed.is_some() {
        c.seed = a.seed;
    }
    if !a.stop.is_empty() {
        c.stop = a.stop.iter().map(|s| unescape(s)).collect();
    }
    if !a.eos_token_id.is_empty() {
        c.eos_token_ids = Some(a.eos_token_id.clone());
    }
    if let Some(n) = a.num_beams {
        c.num_beams = n;
    }
    if let Some(v) = a.length_penalty {
        c.length_penalty = f32_flag("length-penalty", v, "a finite number")?;
    }
    if let Some(e) = &a.early_stopping {
        c.early_stopping = e.parse().map_err(|e: String| anyhow!(e))?;
    }
    if a.prompt_lookup.is_some() {
        c.prompt_lookup_num_tokens = a.prompt_lookup;
    }
    if let Some(n) = a.max_matching_ngram_size {
        c.max_matching_ngram_size = n;
    }
    if let Some(n) = a.num_assistant_tokens {
        c.num_assistant_tokens = n;
    }
    if let Some(k) = constraint_flag(a)? {
        c.processors.constraint.constraint = Some(k);
    }
    // beam search chooses beams by score (transformers' default do_sample=False): the CLI's
    // default sampling gives way to it; sampling asked for by a flag, preset or config file is
    // kept, and refused by name (beam sampling is not implemented)
    let p = &a.p;
    let sampling_asked = a.do_sample
        || p.temperature.is_some()
        || p.top_k.is_some()
        || p.top_p.is_some()
        || p.typical_p.is_some()
        || p.min_p.is_some()
        || a.preset.is_some()
        || a.config.is_some();
    if c.num_beams > 1 && !sampling_asked {
        c.do_sample = false;
    }
    if a.greedy {
        c.do_sample = false;
        let ignored: Vec<&str> = [
            ("--temperature", p.temperature.is_some()),
            ("--top-k", p.top_k.is_some()),
            ("--top-p", p.top_p.is_some()),
            ("--typical-p", p.typical_p.is_some()),
            ("--min-p", p.min_p.is_some()),
            ("--seed", a.seed.is_some()),
        ]
        .iter()
        .filter(|(_, given)| *given)
        .map(|(f, _)| *f)
        .collect();
        if !ignored.is_empty() {
            warnings.push(format!("--greedy ignores {} (argmax decoding draws nothing)", ignored.join(", ")));
        }
    }
    c.validate().map_err(|e| flag_error(e, a))?;
    Ok(c)
}

/// The processor flags given, merged over the config by their field names (JSON), so a new
/// processor needs no code here.
fn apply_processor_flags(flags: &ProcessorFlags, c: &mut GenerationConfig) -> Result<()> {
    Ok(c.processors.set_by_name(flags.given())?)
}

/// The structured-output flag given (at most one of them).
fn constraint_flag(a: &SamplingArgs) -> Result<Option<Constraint>> {
    let given: Vec<&str> = [
        ("--json-schema", a.json_schema.is_some()),
        ("--json-object", a.json_object),
        ("--regex", a.regex.is_some()),
        ("--grammar", a.grammar.is_some()),
        ("--choice", !a.choice.is_empty()),
    ]
    .iter()
    .filter(|(_, g)| *g)
    .map(|(f, _)| *f)
    .collect();
    if given.len() > 1 {
        bail!("{} given: choose one structured-output constraint", given.join(" and "));
    }
    Ok(if let Some(s) = &a.json_schema {
        let text = if s.trim_start().starts_with('{') {
            s.clone()
        } else {
            std::fs::read_to_string(s).with_context(|| format!("cannot read --json-schema {s}"))?
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("--json-schema {s}: not JSON"))?;
        Some(Constraint::JsonSchema(v))
    } else if a.json_object {
        Some(Constraint::JsonObject)
    } else if let Some(r) = &a.regex {
        Some(Constraint::Regex(r.clone()))
    } else if let Some(g) = &a.grammar {
        let text = std::fs::read_to_string(g).with_context(|| format!("cannot read --grammar {}", g.display()))?;
        Some(Constraint::Grammar(text))
    } else if !a.choice.is_empty() {
        Some(Constraint::Choice(a.choice.iter().map(|c| unescape(c)).collect()))
    } else {
        None
    })
}

/// A validation error of a field the user set with a flag, in the flag's words.
fn flag_error(e: SamplingError, a: &SamplingArgs) -> anyhow::Error {
    if let SamplingError::Invalid { field, allowed, .. } = &e {
        let given = a.p.given();
        let (flag, typed_value) = match *field {
            "num_return_sequences" => {
                ("--num-return-sequences".to_string(), a.num_return_sequences.map(|v| v.to_string()))
            }
            "length_penalty" => ("--length-penalty".into(), a.length_penalty.map(typed)),
            "max_new_tokens" => ("--max-new-tokens".into(), a.max_new_tokens.map(|v| v.to_string())),
            "max_length" => ("--max-length".into(), a.max_length.map(|v| v.to_string())),
            "num_beams" => ("--num-beams".into(), a.num_beams.map(|v| v.to_string())),
            "prompt_lookup_num_tokens" => ("--prompt-lookup".into(), a.prompt_lookup.map(|v| v.to_string())),
            "max_matching_ngram_size" => {
                ("--max-matching-ngram-size".into(), a.max_matching_ngram_size.map(|v| v.to_string()))
            }
            "num_assistant_tokens" => ("--num-assistant-tokens".into(), a.num_assistant_tokens.map(|v| v.to_string())),
            f => match (ProcessorFlags::flag_of(f), given.get(f)) {
                (Some(flag), Some(v)) => (flag, Some(v.as_f64().map_or_else(|| v.to_string(), typed))),
                _ => (String::new(), None),
            },
        };
        if let Some(t) = typed_value {
            return anyhow!("{flag} {t}: {allowed}");
        }
    }
    e.into()
}

/// A strategy's refusal of an option, in the words of the flag that set it.
pub(crate) fn in_flag_words(e: demiurgic_model::ModelError) -> anyhow::Error {
    if let demiurgic_model::ModelError::Unsupported { option, .. } = &e {
        let flag = match *option {
            "do_sample" => "--do-sample",
            "mirostat" => "--mirostat",
            "logprobs" => "--logprobs",
            "top_logprobs" => "--top-logprobs",
            "raw_logprobs" => "--raw-logprobs",
            "stop" => "--stop",
            "num_return_sequences" => "--num-return-sequences",
            "prompts" => "several prompts",
            "use_cache" => "--no-cache",
            "constraint" => "--json-schema / --json-object / --regex / --grammar / --choice",
            "cache" => "a conversation continued on its cache (chat)",
            "on_step" => "streaming",
            other => other,
        };
        return anyhow!("{flag}: {e}");
    }
    e.into()
}

/// A prompt read from standard input or a file without its one trailing newline (what `echo` and
/// editors add; llama.cpp's `-f` drops it too), unless `keep`.
fn strip_newline(mut s: String, keep: bool) -> String {
    if !keep {
        if s.ends_with("\r\n") {
            s.truncate(s.len() - 2);
        } else if s.ends_with('\n') {
            s.pop();
        }
    }
    s
}

/// Prompt texts of `--prompt` (`-` = standard input) and `--prompt-file`.
fn prompt_texts(a: &GenerateArgs) -> Result<Vec<String>> {
    let mut out = vec![];
    let keep = a.keep_trailing_newline;
    for (i, p) in a.prompt.iter().enumerate() {
        if p == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("cannot read the prompt from standard input")?;
            out.push(strip_newline(s, keep));
        } else {
            if p.is_empty() {
                bail!("--prompt {} is empty: give some text", i + 1);
            }
            out.push(p.clone());
        }
    }
    for f in &a.prompt_file {
        let s = std::fs::read_to_string(f).with_context(|| format!("cannot read --prompt-file {}", f.display()))?;
        out.push(strip_newline(s, keep));
    }
    if out.iter().any(String::is_empty) {
        bail!("a prompt read from a file or standard input is empty");
    }
    Ok(out)
}

fn parse_ids(s: &str, flag: &str) -> Result<Vec<u32>> {
    let ids: Result<Vec<u32>, _> = s.split(',').map(|x| x.trim().parse::<u32>()).collect();
    let ids = ids.map_err(|_| anyhow!("{flag} {s:?}: expected comma-separated token ids (integers ≥ 0)"))?;
    if ids.is_empty() {
        bail!("{flag} {s:?}: no token id");
    }
    Ok(ids)
}

/// StarCoder-style fill-in-the-middle: `<fim_prefix>before<fim_suffix>after<fim_middle>`.
fn fim_prompt(tok: &TextTokenizer, before: &str, after: &str) -> Result<String> {
    let names = ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"];
    for n in names {
        if tok.inner.token_to_id(n).is_none() {
            bail!("--suffix: this model's vocabulary has no {n} token, so it cannot fill in the middle (the completion-fim preset still works as a plain completion)");
        }
    }
    Ok(format!("<fim_prefix>{before}<fim_suffix>{after}<fim_middle>"))
}

pub struct GenerateJob {
    pub args: GenerateArgs,
}

impl BackendJob for GenerateJob {
    fn run<B: DecodeOps>(self, backend: &str, device: B::Device) -> Result<()> {
        let a = &self.args;
        let mut warnings = vec![];
        let mut config = build_config(&a.s, &mut warnings)?;
        config.logprobs |= a.logprobs || a.top_logprobs.is_some();
        config.top_logprobs = a.top_logprobs.unwrap_or(0);
        config.raw_logprobs = a.raw_logprobs;
        config.validate()?;
        let texts_in = prompt_texts(a)?;
        if texts_in.is_empty() && a.prompt_ids.is_empty() {
            bail!("no prompt: give --prompt TEXT, --prompt-file FILE or --prompt-ids 1,2,3");
        }
        if a.chat && !a.prompt_ids.is_empty() {
            bail!("--chat applies to text prompts, not to --prompt-ids");
        }
        if a.system.is_some() && !a.chat {
            bail!("--system needs --chat");
        }
        if a.suffix.is_some() && (a.chat || texts_in.len() != 1 || !a.prompt_ids.is_empty()) {
            bail!("--suffix needs exactly one text prompt (the text before the gap) and no --chat");
        }
        let mut id_prompts = vec![];
        for s in &a.prompt_ids {
            id_prompts.push(parse_ids(s, "--prompt-ids")?);
        }
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        let (loaded, path, load_ms) = load::<B>(&a.m, &device)?;
        let model = &loaded.model;
        // token ids outside the vocabulary: refused before anything is printed
        for (i, p) in id_prompts.iter().enumerate() {
            if let Some(&bad) = p.iter().find(|&&id| id as usize >= model.config.vocab_size) {
                bail!(
                    "--prompt-ids {}: token id {bad} is outside the vocabulary (0..{})",
                    i + 1,
                    model.config.vocab_size
                );
            }
        }
        let mut prompts: Vec<Vec<u32>> = vec![];
        let mut shown: Vec<Option<String>> = vec![]; // prompt text echoed before the continuation
        for p in &texts_in {
            let tok = loaded.text_tokenizer()?;
            let text = if a.chat {
                let mut msgs = vec![];
                if let Some(s) = &a.system {
                    msgs.push(ChatMessage { role: "system".into(), content: s.clone() });
                }
                msgs.push(ChatMessage { role: "user".into(), content: p.clone() });
                shown.push(None);
                loaded.render_chat(&msgs, true)?
            } else if let Some(after) = &a.suffix {
                shown.push(None);
                fim_prompt(tok, p, &unescape(after))?
            } else {
                shown.push(Some(p.clone()));
                p.clone()
            };
            prompts.push(tok.encode(&text)?);
        }
        for p in id_prompts {
            shown.push(None);
            prompts.push(p);
        }
        let tok = loaded.tokenizer.as_ref();
        if !config.stop.is_empty() {
            loaded.text_tokenizer().context("--stop needs the model's tokenizer")?;
        }
        let skip_special = !a.keep_special_tokens;
        let stream = !a.json && prompts.len() == 1 && config.num_return_sequences == 1 && config.num_beams == 1;
        // the stop string that ended a text is cut (as the server and the OpenAI API do)
        let cut_stops = a.s.stops_to_cut(&config);
        let mut cut = StopCut::new(&cut_stops);
        let mut decoder = StreamDecoder::with_skip_special(skip_special);
        let mut stream_err = None;
        let mut echo = shown.first().cloned().flatten();
        let mut on_step = |ids: &[Option<u32>]| {
            if let Some(p) = echo.take() {
                emit(&p);
            }
            let Some(Some(id)) = ids.first() else { return };
            match tok {
                Some(tok) => match decoder.push(tok, *id) {
                    Ok(Some(t)) => {
                        if let Some(s) = cut.push(&t) {
                            emit(&s);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => stream_err = Some(e),
                },
                None => emit(&format!("{id} ")),
            }
        };
        let stops = tok.filter(|_| !config.stop.is_empty()).map(|t| TextStops::new(t, config.stop.clone()));
        let draft = match &a.draft_model {
            Some(p) => {
                if config.num_beams > 1 {
                    bail!("--draft-model cannot be combined with --num-beams");
                }
                if config.prompt_lookup_num_tokens.is_some() {
                    bail!("--draft-model and --prompt-lookup both given: choose one source of candidates");
                }
                let opts = demiurgic_model::LoadOptions {
                    activations: if B::host_weights() {
                        demiurgic_model::Activations::Int8
                    } else {
                        demiurgic_model::Activations::F32
                    },
                    ..Default::default()
                };
                Some(
                    demiurgic_model::load_model_with::<B>(p, &device, &opts)
                        .with_context(|| format!("cannot load --draft-model {}", p.display()))?,
                )
            }
            None => None,
        };
        let grammar = match &config.processors.constraint.constraint {
            Some(c) => {
                let flag = format!("--{}", c.kind().replace('_', "-"));
                let g = loaded.grammar_compiler().with_context(|| flag.clone())?;
                // compiled here too, so a bad constraint is reported with its flag
                g.compile(c).with_context(|| flag.clone())?;
                Some(g)
            }
            None if config.needs_vocabulary() => {
                Some(loaded.grammar_compiler().context("--dry-sequence-breaker needs the model's tokenizer")?)
            }
            None => None,
        };
        let opts = GenerateOptions {
            use_cache: !a.no_cache,
            on_step: if stream { Some(&mut on_step) } else { None },
            stops,
            draft: draft.as_ref().map(|d| &d.model as &dyn demiurgic_model::CausalLm<B>),
            grammar: grammar.as_deref(),
            ..Default::default()
        };
        let out = generate(model, &prompts, &config, opts).map_err(in_flag_words)?;
        if let Some(e) = stream_err {
            return Err(e.into());
        }
        let n = config.num_return_sequences;
        let texts: Option<Vec<String>> = match tok {
            Some(t) => Some(
                (0..out.tokens.len())
                    .map(|i| Ok(row_text(t, out.row(i), out.finish_reasons[i], &cut_stops, skip_special)?))
                    .collect::<Result<_>>()?,
            ),
            None => None,
        };
        let mut report = config.to_report();
        if let Some(seed) = out.seed {
            report["seed"] = json!(seed);
        }
        report["eos_token_ids"] = json!(out.eos_token_ids);
        if a.json {
            let prompt_rows: Vec<&Vec<u32>> = prompts.iter().flat_map(|p| std::iter::repeat_n(p, n)).collect();
            let rows: Vec<&[u32]> = (0..out.tokens.len()).map(|i| out.row(i)).collect();
            let mut obj = json!({
                "backend": backend,
                "model": path.display().to_string(),
                "prompt_ids": prompt_rows,
                "generated_ids": rows,
                "lengths": out.lengths,
                "finish_reasons": out.finish_reasons,
                "config": report,
                "stats": {
                    "draft_tokens": out.stats.draft_tokens,
                    "accepted_tokens": out.stats.accepted_tokens,
                    "prompt_tokens": out.stats.prompt_tokens,
                    "generated_tokens": out.stats.generated_tokens,
                    "load_ms": load_ms,
                    "prefill_ms": out.stats.prefill_ms,
                    "decode_ms": out.stats.decode_ms,
                    "decode_tokens_per_s": out.stats.decode_tokens_per_s,
                    "threads": rayon::current_num_threads(),
                }
            });
            if let Some(t) = &texts {
                obj["texts"] = json!(t);
            }
            if let Some(sc) = &out.sequences_scores {
                obj["sequences_scores"] = json!(sc);
            }
            if let Some(lp) = &out.logprobs {
                obj["logprobs"] = json!(lp);
                obj["logprobs_of"] = json!(if config.raw_logprobs { "raw" } else { "processed" });
            }
            if let Some(tl) = &out.top_logprobs {
                let rows: Vec<Vec<Vec<serde_json::Value>>> = tl
                    .iter()
                    .map(|row| {
                        row.iter()
                            .map(|alts| {
                                alts.iter()
                                    .map(|&(id, lp)| json!({"id": id, "token": token_text(tok, id), "logprob": lp}))
                                    .collect()
                            })
                            .collect()
                    })
                    .collect();
                obj["top_logprobs"] = json!(rows);
            }
            emit(&format!("{}\n", serde_json::to_string(&obj)?));
        } else if stream {
            if let Some(t) = texts.as_ref().and_then(|t| t.first()) {
                emit(&cut.finish(t));
            }
            emit("\n");
            if let Some(lp) = &out.logprobs {
                print_logprobs(
                    tok,
                    out.row(0),
                    &lp[0],
                    out.top_logprobs.as_ref().map(|t| &t[0][..]),
                    config.raw_logprobs,
                );
            }
            eprintln!(
                "[{}, finish: {}, prefill {:.0} ms, decode {:.1} tokens/s on {backend}{}]",
                plural(out.stats.generated_tokens, "token"),
                finish_name(&out, 0),
                out.stats.prefill_ms,
                out.stats.decode_tokens_per_s,
                seed_note(&out)
            );
        } else {
            for i in 0..out.tokens.len() {
                emit(&format!("--- sequence {} (prompt {}, finish: {})\n", i, i / n, finish_name(&out, i)));
                match &texts {
                    Some(t) => emit(&format!("{}\n", t[i])),
                    None => emit(&format!("{:?}\n", out.row(i))),
                }
                if let Some(lp) = &out.logprobs {
                    print_logprobs(
                        tok,
                        out.row(i),
                        &lp[i],
                        out.top_logprobs.as_ref().map(|t| &t[i][..]),
                        config.raw_logprobs,
                    );
                }
            }
            eprintln!(
                "[{}, prefill {:.0} ms, decode {:.1} tokens/s on {backend}{}]",
                plural(out.stats.generated_tokens, "token"),
                out.stats.prefill_ms,
                out.stats.decode_tokens_per_s,
                seed_note(&out)
            );
        }
        Ok(())
    }
}

/// `, seed N` when tokens were drawn (the seed given, or the one drawn from the clock): what
/// reproduces the run with `--seed`.
fn seed_note(out: &GenerationOutput) -> String {
    out.seed.map(|s| format!(", seed {s}")).unwrap_or_default()
}

fn finish_name(out: &GenerationOutput, i: usize) -> String {
    serde_json::to_value(out.finish_reasons[i]).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// A token as text (its readable form).
fn token_text(tok: Option<&TextTokenizer>, id: u32) -> String {
    tok.and_then(|t| t.decode_with(&[id], false).ok()).unwrap_or_else(|| id.to_string())
}

fn print_logprobs(tok: Option<&TextTokenizer>, ids: &[u32], lps: &[f32], top: Option<&[Vec<(u32, f32)>]>, raw: bool) {
    emit(&format!("logprobs ({} distribution):\n", if raw { "raw" } else { "processed" }));
    for (k, (&id, lp)) in ids.iter().zip(lps).enumerate() {
        let mut line = format!("{k:>5}  {:<20} {lp:>9.4}", format!("{:?}", token_text(tok, id)));
        if let Some(top) = top {
            let alts: Vec<String> = top[k].iter().map(|&(i, l)| format!("{:?} {l:.3}", token_text(tok, i))).collect();
            line += &format!("   [{}]", alts.join(", "));
        }
        emit(&format!("{line}\n"));
    }
}
