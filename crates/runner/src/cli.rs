//! Command-line arguments and the one-line error for every flag the parser rejects.
use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser, Subcommand};

use crate::{backends, bench, load_args, soak};

#[derive(Parser)]
#[command(name = "demiurgic", version, about = "Run decoder-only language models on Burn")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Generate text or token ids.
    Generate(GenerateArgs),
    /// Talk with the model: a multi-turn chat on the terminal (history kept in the KV cache).
    Chat(ChatArgs),
    /// Show the token ids of a text, with each token's bytes and readable text.
    Tokenize(TokenizeArgs),
    /// Show the text of token ids.
    Detokenize(DetokenizeArgs),
    /// Describe a model: family, parameters, context, weight types, tokenizer, chat template, EOS.
    Info(InfoArgs),
    /// Serve the model over HTTP with the OpenAI API (/v1/completions, /v1/chat/completions,
    /// /v1/models, /health), streaming included.
    Serve(crate::serve::ServeArgs),
    /// List the generation presets with their values.
    Presets,
    /// List the compiled-in backends and whether a device is usable.
    Backends,
    /// Fetch the default model into the cache (DEMIURGIC_HOME) and print its path.
    FetchModel(FetchArgs),
    /// Measure one backend (cache table, decode per batch, prefill, memory) and print JSON;
    /// `cargo xtask bench` runs it per backend and merges the results.
    Bench(bench::BenchArgs),
    /// Generate many tokens (default 10,000) in one process and check resident memory stays flat.
    Soak(soak::SoakArgs),
    /// HumanEval: score completions in a sandbox (`eval score`), or generate and score them with
    /// each preset (`eval run`, what `cargo xtask eval` drives).
    Eval(crate::eval::EvalArgs),
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A .gguf file or an HF checkpoint directory [default: SmolLM2-135M-Instruct Q4_1, fetched
    /// on first use].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Backend to run on (compiled in: see `demiurgic backends`).
    #[arg(long, default_value = backends::DEFAULT)]
    pub backend: String,
    #[command(flatten)]
    pub load: load_args::LoadArgs,
}

#[derive(Args, Clone)]
pub struct FetchArgs {
    /// Download again even when a verified copy is cached.
    #[arg(long)]
    pub force: bool,
}

/// Sampling flags shared by `generate` and `chat`.
#[derive(Args, Clone, Default)]
pub struct SamplingArgs {
    /// Start from a preset: greedy, balanced-code, precise-code, creative-code, natural-text,
    /// completion-fim (see `demiurgic presets`).
    #[arg(long, allow_hyphen_values = true)]
    pub preset: Option<String>,
    /// Start from a JSON file: a Demiurgic GenerationConfig, or a transformers
    /// `generation_config.json` (its field names; fields without a meaning here are ignored with
    /// a warning). Flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Argmax decoding (same as --do-sample false; sampling flags are then ignored, with a warning).
    #[arg(long)]
    pub greedy: bool,
    /// Sample (multinomial) instead of argmax [default: on, unless a preset/config says otherwise].
    #[arg(long = "do-sample", conflicts_with = "greedy")]
    pub do_sample: bool,
    /// New tokens to generate, at least 1 [default: 256].
    #[arg(long = "max-new-tokens", allow_negative_numbers = true)]
    pub max_new_tokens: Option<usize>,
    /// Prompt + new tokens, at least 1 (--max-new-tokens wins when both are given, as in
    /// transformers).
    #[arg(long = "max-length", allow_negative_numbers = true)]
    pub max_length: Option<usize>,
    /// Minimum prompt + new tokens before EOS may end a row [default: 0].
    #[arg(long = "min-length", allow_negative_numbers = true)]
    pub min_length: Option<usize>,
    /// Minimum new tokens before EOS may end a row [default: 0].
    #[arg(long = "min-new-tokens", allow_negative_numbers = true)]
    pub min_new_tokens: Option<usize>,
    /// Softmax temperature, ≥ 0 (0 = greedy) [default: 0.8].
    #[arg(long, allow_hyphen_values = true)]
    pub temperature: Option<f64>,
    /// Keep the k most likely tokens, ≥ 0 (0 = off) [default: 50].
    #[arg(long = "top-k", allow_negative_numbers = true)]
    pub top_k: Option<usize>,
    /// Nucleus sampling mass, in (0, 1] (1 = off) [default: 0.95].
    #[arg(long = "top-p", allow_hyphen_values = true)]
    pub top_p: Option<f64>,
    /// Locally typical sampling mass, in (0, 1] (1 = off) [default: 1].
    #[arg(long = "typical-p", allow_hyphen_values = true)]
    pub typical_p: Option<f64>,
    /// Drop tokens below min_p × the top probability, in [0, 1] (0 = off) [default: 0].
    #[arg(long = "min-p", allow_hyphen_values = true)]
    pub min_p: Option<f64>,
    /// CTRL repetition penalty over prompt + generated tokens, > 0 (1 = off) [default: 1].
    #[arg(long = "repetition-penalty", allow_hyphen_values = true)]
    pub repetition_penalty: Option<f64>,
    /// OpenAI frequency penalty over generated tokens, in [-2, 2] (0 = off) [default: 0].
    #[arg(long = "frequency-penalty", allow_hyphen_values = true)]
    pub frequency_penalty: Option<f64>,
    /// OpenAI presence penalty over generated tokens, in [-2, 2] (0 = off) [default: 0].
    #[arg(long = "presence-penalty", allow_hyphen_values = true)]
    pub presence_penalty: Option<f64>,
    /// Never repeat an n-gram of this size, ≥ 0 (0 = off) [default: 0].
    #[arg(long = "no-repeat-ngram-size", allow_negative_numbers = true)]
    pub no_repeat_ngram_size: Option<usize>,
    /// Sequences per prompt, ≥ 1 (more than 1 needs sampling) [default: 1].
    #[arg(long = "num-return-sequences", allow_negative_numbers = true)]
    pub num_return_sequences: Option<usize>,
    /// Seed of the sampler, 0..=18446744073709551615 [default: drawn from the clock and reported].
    #[arg(long, allow_negative_numbers = true)]
    pub seed: Option<u64>,
    /// Stop when this text appears (repeatable). Escapes \n, \t, \\ and \" are understood.
    #[arg(long, allow_hyphen_values = true)]
    pub stop: Vec<String>,
    /// Override the model's EOS token ids (repeatable; every strategy).
    #[arg(long = "eos-token-id", allow_negative_numbers = true)]
    pub eos_token_id: Vec<u32>,
    /// Beam search with N beams, ≥ 1 (1 = off) [default: 1].
    #[arg(long = "num-beams", allow_negative_numbers = true)]
    pub num_beams: Option<usize>,
    /// Beam scores are divided by length ** F [default: 1.0].
    #[arg(long = "length-penalty", allow_hyphen_values = true)]
    pub length_penalty: Option<f64>,
    /// Beam search stopping rule: true, false or never (transformers' meanings) [default: false].
    #[arg(long = "early-stopping", allow_hyphen_values = true)]
    pub early_stopping: Option<String>,
    /// Speculative decoding with prompt lookup: up to N candidate tokens per step from n-gram
    /// matches in the text so far (no second model).
    #[arg(long = "prompt-lookup", allow_negative_numbers = true)]
    pub prompt_lookup: Option<usize>,
    /// Longest n-gram prompt lookup matches, ≥ 1 [default: 2].
    #[arg(long = "max-matching-ngram-size", allow_negative_numbers = true)]
    pub max_matching_ngram_size: Option<usize>,
    /// Draft tokens per step with --draft-model, ≥ 1, adapted as it goes [default: 5].
    #[arg(long = "num-assistant-tokens", allow_negative_numbers = true)]
    pub num_assistant_tokens: Option<usize>,
    /// Structured output: JSON valid under this JSON schema (a file, or the schema itself when
    /// it starts with `{`).
    #[arg(long = "json-schema", allow_hyphen_values = true)]
    pub json_schema: Option<String>,
    /// Structured output: any JSON object.
    #[arg(long = "json-object")]
    pub json_object: bool,
    /// Structured output: text the regular expression (Rust regex syntax) matches in full.
    #[arg(long, allow_hyphen_values = true)]
    pub regex: Option<String>,
    /// Structured output: text of this Lark grammar (llguidance's dialect; a file).
    #[arg(long)]
    pub grammar: Option<PathBuf>,
    /// Structured output: exactly one of these strings (repeat the flag for each choice).
    #[arg(long, allow_hyphen_values = true)]
    pub choice: Vec<String>,
    /// Epsilon sampling: drop tokens below this probability, in (0, 1) (0 = off) [default: 0].
    #[arg(long = "epsilon-cutoff", allow_hyphen_values = true)]
    pub epsilon_cutoff: Option<f64>,
    /// Eta sampling cutoff, in (0, 1) (0 = off) [default: 0].
    #[arg(long = "eta-cutoff", allow_hyphen_values = true)]
    pub eta_cutoff: Option<f64>,
    /// START,FACTOR: after START new tokens, EOS logits grow by |logit|·(FACTOR^n − 1).
    #[arg(long = "exponential-decay-length-penalty", allow_hyphen_values = true)]
    pub exponential_decay_length_penalty: Option<String>,
    /// IDS=BIAS: add BIAS to the last id of the comma-separated token ids when the text ends
    /// with the others (repeatable), e.g. `--sequence-bias 1234,56=-5`.
    #[arg(long = "sequence-bias", allow_hyphen_values = true)]
    pub sequence_bias: Vec<String>,
    /// Never generate this token id (repeatable).
    #[arg(long = "suppress-token", allow_negative_numbers = true)]
    pub suppress_tokens: Vec<u32>,
    /// Do not start the output with this token id (repeatable).
    #[arg(long = "begin-suppress-token", allow_negative_numbers = true)]
    pub begin_suppress_tokens: Vec<u32>,
    /// DRY repetition penalty multiplier, ≥ 0 (0 = off) [default: 0].
    #[arg(long = "dry-multiplier", allow_hyphen_values = true)]
    pub dry_multiplier: Option<f64>,
    /// DRY base, ≥ 1 [default: 1.75].
    #[arg(long = "dry-base", allow_hyphen_values = true)]
    pub dry_base: Option<f64>,
    /// DRY: repetitions longer than this are penalised, ≥ 1 [default: 2].
    #[arg(long = "dry-allowed-length", allow_negative_numbers = true)]
    pub dry_allowed_length: Option<usize>,
    /// DRY: look at the last N tokens (-1 = the whole context, 0 = off) [default: -1].
    #[arg(long = "dry-penalty-last-n", allow_negative_numbers = true)]
    pub dry_penalty_last_n: Option<i64>,
    /// DRY sequence breaker (repeatable; replaces the default "\n", ":", "\"", "*").
    #[arg(long = "dry-sequence-breaker", allow_hyphen_values = true)]
    pub dry_sequence_breakers: Vec<String>,
    /// XTC: probability per step of removing the top choices, in [0, 1] (0 = off) [default: 0].
    #[arg(long = "xtc-probability", allow_hyphen_values = true)]
    pub xtc_probability: Option<f64>,
    /// XTC: the tokens at or above this probability are the top choices [default: 0.1].
    #[arg(long = "xtc-threshold", allow_hyphen_values = true)]
    pub xtc_threshold: Option<f64>,
    /// Top-nσ: keep logits within N standard deviations of the top, > 0 (0 = off) [default: 0].
    #[arg(long = "top-n-sigma", allow_hyphen_values = true)]
    pub top_n_sigma: Option<f64>,
    /// Mirostat: 0 = off, 2 = Mirostat 2.0 (top-k/p and other truncations are then not used).
    #[arg(long, allow_negative_numbers = true)]
    pub mirostat: Option<u8>,
    /// Mirostat target entropy (tau) [default: 5.0].
    #[arg(long = "mirostat-ent", allow_hyphen_values = true)]
    pub mirostat_ent: Option<f64>,
    /// Mirostat learning rate (eta) [default: 0.1].
    #[arg(long = "mirostat-lr", allow_hyphen_values = true)]
    pub mirostat_lr: Option<f64>,
    /// Dynamic temperature: ± range around --temperature, by entropy (0 = off) [default: 0].
    #[arg(long = "dynatemp-range", allow_hyphen_values = true)]
    pub dynatemp_range: Option<f64>,
    /// Dynamic temperature exponent [default: 1.0].
    #[arg(long = "dynatemp-exp", allow_hyphen_values = true)]
    pub dynatemp_exp: Option<f64>,
}

#[derive(Args, Clone)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    /// Prompt text (repeat for a batch); `-` reads standard input.
    #[arg(long, allow_hyphen_values = true)]
    pub prompt: Vec<String>,
    /// Read a prompt from a file (repeat for a batch).
    #[arg(long = "prompt-file")]
    pub prompt_file: Vec<PathBuf>,
    /// Prompt as comma-separated token ids (repeat for a batch).
    #[arg(long = "prompt-ids", allow_hyphen_values = true)]
    pub prompt_ids: Vec<String>,
    /// Wrap each prompt in the model's chat template (as one user message).
    #[arg(long)]
    pub chat: bool,
    /// A system message before the user message (with --chat).
    #[arg(long, allow_hyphen_values = true)]
    pub system: Option<String>,
    /// Fill in the middle: the text after the gap (the prompt is the text before it). Uses the
    /// model's <fim_prefix>/<fim_suffix>/<fim_middle> tokens; refused when it has none.
    #[arg(long, allow_hyphen_values = true)]
    pub suffix: Option<String>,
    /// Print one JSON object on stdout (errors too).
    #[arg(long)]
    pub json: bool,
    /// Recompute the whole sequence every step (no KV cache).
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Keep special tokens (<|im_end|>, …) in the printed text.
    #[arg(long = "keep-special-tokens")]
    pub keep_special_tokens: bool,
    /// Report the log-probability of each generated token (of the processed distribution the
    /// token was drawn from; see --raw-logprobs).
    #[arg(long)]
    pub logprobs: bool,
    /// Also report the N most likely tokens of every step, 0..=20 (implies --logprobs).
    #[arg(long = "top-logprobs", allow_negative_numbers = true)]
    pub top_logprobs: Option<usize>,
    /// Log-probabilities of the model's raw distribution (before penalties, temperature,
    /// top-k/p…) instead of the processed one.
    #[arg(long = "raw-logprobs")]
    pub raw_logprobs: bool,
    /// Speculative decoding with a draft model (a .gguf file or checkpoint directory with the
    /// same vocabulary), loaded with its native weights and int8 activations on flex.
    #[arg(long = "draft-model")]
    pub draft_model: Option<PathBuf>,
    #[command(flatten)]
    pub s: SamplingArgs,
}

#[derive(Args, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    /// A system message at the start of the conversation.
    #[arg(long, allow_hyphen_values = true)]
    pub system: Option<String>,
    /// Positions the conversation may use (KV cache size) [default: min(4096, the model's context)].
    #[arg(long, allow_negative_numbers = true)]
    pub ctx: Option<usize>,
    #[command(flatten)]
    pub s: SamplingArgs,
}

#[derive(Args, Clone)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    #[arg(long, allow_hyphen_values = true)]
    pub text: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone)]
pub struct DetokenizeArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    /// Comma-separated token ids.
    #[arg(long, allow_hyphen_values = true)]
    pub ids: String,
    /// Keep special tokens in the text.
    #[arg(long = "keep-special-tokens")]
    pub keep_special_tokens: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone)]
pub struct InfoArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    #[arg(long)]
    pub json: bool,
}

/// What a flag's values may be (for the one-line parse errors).
fn allowed(flag: &str) -> &'static str {
    match flag {
        "--max-new-tokens" | "--max-length" | "--num-return-sequences" => "an integer ≥ 1",
        "--min-length" | "--min-new-tokens" => "an integer ≥ 0",
        "--top-k" | "--no-repeat-ngram-size" => "an integer ≥ 0 (0 = off)",
        "--temperature" => "a number ≥ 0 (0 = greedy)",
        "--top-p" | "--typical-p" => "a number in (0, 1] (1 = off)",
        "--min-p" => "a number in [0, 1] (0 = off)",
        "--repetition-penalty" => "a number > 0 (1 = off)",
        "--frequency-penalty" | "--presence-penalty" => "a number in [-2, 2] (0 = off)",
        "--seed" => "an integer in 0..=18446744073709551615",
        "--top-logprobs" => "an integer in 0..=20",
        "--num-beams" | "--prompt-lookup" | "--max-matching-ngram-size" | "--num-assistant-tokens" => "an integer ≥ 1",
        "--length-penalty" => "a finite number",
        "--eos-token-id" => "a token id (an integer ≥ 0)",
        "--ctx" => "an integer ≥ 1",
        "--tokens" | "--per-generation" | "--max-growth-mib" | "--reps" | "--decode-tokens" => "an integer ≥ 1",
        _ => "see --help",
    }
}

fn ctx_str(e: &clap::Error, k: ContextKind) -> Option<String> {
    match e.get(k)? {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::Strings(v) => Some(v.join(", ")),
        other => Some(other.to_string()),
    }
}

/// One line for a parse error: which flag, which value, what is allowed.
pub fn one_line(e: &clap::Error) -> String {
    let arg = ctx_str(e, ContextKind::InvalidArg).unwrap_or_default();
    let flag = arg.split([' ', '=']).next().unwrap_or("").to_string();
    let value = ctx_str(e, ContextKind::InvalidValue).unwrap_or_default();
    match e.kind() {
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => {
            let valid = ctx_str(e, ContextKind::ValidValue);
            match valid {
                Some(v) if !v.is_empty() => format!("{flag} {value:?} is not allowed (allowed: {v})"),
                _ => format!("{flag} {value:?} is not valid: expected {}", allowed(&flag)),
            }
        }
        ErrorKind::UnknownArgument => format!("unknown argument {arg:?} (see --help for the flags)"),
        ErrorKind::InvalidSubcommand => format!("unknown command {arg:?} (see `demiurgic --help`)"),
        ErrorKind::ArgumentConflict => {
            let prior = ctx_str(e, ContextKind::PriorArg).unwrap_or_default();
            format!("{arg} cannot be used with {prior}")
        }
        ErrorKind::MissingRequiredArgument => format!("missing required argument {arg}"),
        ErrorKind::NoEquals | ErrorKind::TooManyValues | ErrorKind::TooFewValues | ErrorKind::WrongNumberOfValues => {
            format!("{flag}: wrong number of values (see --help)")
        }
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ").to_string();
            if first.contains("a value is required") {
                format!("{flag} needs a value: {}", allowed(&flag))
            } else {
                first
            }
        }
    }
}

/// `\n`, `\t`, `\\`, `\"` in a stop string (as llama.cpp's `--reverse-prompt` escapes).
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('\'') => out.push('\''),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_what_llama_cpp_does() {
        assert_eq!(unescape(r"\n\n"), "\n\n");
        assert_eq!(unescape(r#"a\tb\\c\"d"#), "a\tb\\c\"d");
        assert_eq!(unescape(r"\q"), r"\q");
        assert_eq!(unescape("plain"), "plain");
    }

    #[test]
    fn parse_errors_name_flag_value_and_range() {
        let e = Cli::try_parse_from(["demiurgic", "generate", "--top-k", "abc"]).err().unwrap();
        let m = one_line(&e);
        assert!(m.contains("--top-k") && m.contains("abc") && m.contains("≥ 0"), "{m}");
        let e = Cli::try_parse_from(["demiurgic", "generate", "--max-new-tokens", "-3"]).err().unwrap();
        let m = one_line(&e);
        assert!(m.contains("--max-new-tokens") && m.contains("-3") && m.contains("≥ 1"), "{m}");
        let e = Cli::try_parse_from(["demiurgic", "generate", "--bogus"]).err().unwrap();
        assert!(one_line(&e).contains("--bogus"));
        // text starting with '-' is a value, not a flag
        assert!(Cli::try_parse_from(["demiurgic", "generate", "--prompt", "- item one", "--stop", "---"]).is_ok());
        assert!(Cli::try_parse_from(["demiurgic", "generate", "--prompt", "-5 plus 3"]).is_ok());
    }
}
