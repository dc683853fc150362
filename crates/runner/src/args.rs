//! The arguments of each command (`generate`, `chat`, `tokenize`, …): the model arguments in one
//! struct ([`ModelArgs`]) every command that loads a model flattens in, and the sampling flags
//! `generate` and `chat` share.
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::{backends, load_args};

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A .gguf file, an HF checkpoint directory, or a fetchable model's name (smollm2-135m,
    /// gemma3-270m; fetched on first use) [default: smollm2-135m, SmolLM2-135M-Instruct Q4_1].
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// Backend to run on (compiled in: see `demiurgic backends`).
    #[arg(long, default_value = backends::DEFAULT)]
    pub backend: String,
    /// CPU threads of the flex and ndarray backends, ≥ 1 [default: every core, or
    /// RAYON_NUM_THREADS].
    #[arg(long, short = 't', value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    #[command(flatten)]
    pub load: load_args::LoadArgs,
}

#[derive(Args, Clone)]
pub struct FetchArgs {
    /// The model to fetch: smollm2-135m (the default) or gemma3-270m.
    pub name: Option<String>,
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
    #[arg(long = "max-new-tokens", short = 'n', allow_negative_numbers = true)]
    pub max_new_tokens: Option<usize>,
    /// Prompt + new tokens, at least 1 (--max-new-tokens wins when both are given, as in
    /// transformers).
    #[arg(long = "max-length", allow_negative_numbers = true)]
    pub max_length: Option<usize>,
    /// Sequences per prompt, ≥ 1 (more than 1 needs sampling) [default: 1].
    #[arg(long = "num-return-sequences", allow_negative_numbers = true)]
    pub num_return_sequences: Option<usize>,
    /// Seed of the sampler, 0..=18446744073709551615 [default: drawn from the clock and reported
    /// in the stats line and --json].
    #[arg(long, short = 's', allow_negative_numbers = true)]
    pub seed: Option<u64>,
    /// Stop when this text appears (repeatable); the text ends before it. Escapes \n, \t, \\ and
    /// \" are understood.
    #[arg(long, allow_hyphen_values = true)]
    pub stop: Vec<String>,
    /// Keep the stop string that ended the text (it is cut by default, as the OpenAI API does).
    #[arg(long = "include-stop")]
    pub include_stop: bool,
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
    /// Every logit processor's flag.
    #[command(flatten)]
    pub p: ProcessorFlags,
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
}

impl SamplingArgs {
    /// The stop strings cut from the printed text: the config's, none with `--include-stop`.
    pub fn stops_to_cut(&self, config: &demiurgic_sampling::GenerationConfig) -> Vec<String> {
        if self.include_stop {
            vec![]
        } else {
            config.stop.clone()
        }
    }
}

/// The logit processors' flags. Each is named after its config field (the `GenerationConfig`
/// JSON name, which is also its serde name here): the flags given become a JSON object merged
/// over the config, so a new processor needs only its flag here.
#[derive(Args, Clone, Default, Serialize)]
pub struct ProcessorFlags {
    /// Minimum prompt + new tokens before EOS may end a row, ≥ 0 [default: 0].
    #[arg(long = "min-length", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_length: Option<usize>,
    /// Minimum new tokens before EOS may end a row, ≥ 0 [default: 0].
    #[arg(long = "min-new-tokens", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_new_tokens: Option<usize>,
    /// Softmax temperature, ≥ 0 (0 = greedy) [default: 0.8].
    #[arg(long, allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Keep the k most likely tokens, an integer ≥ 0 (0 = off) [default: 50].
    #[arg(long = "top-k", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// Nucleus sampling mass, in (0, 1] (1 = off) [default: 0.95].
    #[arg(long = "top-p", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Locally typical sampling mass, in (0, 1] (1 = off) [default: 1].
    #[arg(long = "typical-p", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typical_p: Option<f64>,
    /// Drop tokens below min_p × the top probability, in [0, 1] (0 = off) [default: 0].
    #[arg(long = "min-p", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    /// CTRL repetition penalty over prompt + generated tokens, > 0 (1 = off) [default: 1].
    #[arg(long = "repetition-penalty", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f64>,
    /// OpenAI frequency penalty over generated tokens, in [-2, 2] (0 = off) [default: 0].
    #[arg(long = "frequency-penalty", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// OpenAI presence penalty over generated tokens, in [-2, 2] (0 = off) [default: 0].
    #[arg(long = "presence-penalty", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Never repeat an n-gram of this size, an integer ≥ 0 (0 = off) [default: 0].
    #[arg(long = "no-repeat-ngram-size", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_repeat_ngram_size: Option<usize>,
    /// Epsilon sampling: drop tokens below this probability, in (0, 1) (0 = off) [default: 0].
    #[arg(long = "epsilon-cutoff", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon_cutoff: Option<f64>,
    /// Eta sampling cutoff, in (0, 1) (0 = off) [default: 0].
    #[arg(long = "eta-cutoff", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_cutoff: Option<f64>,
    /// START,FACTOR: after START new tokens, EOS logits grow by |logit|·(FACTOR^n − 1).
    #[arg(long = "exponential-decay-length-penalty", allow_hyphen_values = true, value_parser = start_factor)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exponential_decay_length_penalty: Option<(usize, f64)>,
    /// IDS=BIAS: add BIAS to the last id of the comma-separated token ids when the text ends
    /// with the others (repeatable), e.g. `--sequence-bias 1234,56=-5`.
    #[arg(long = "sequence-bias", allow_hyphen_values = true, value_parser = ids_bias)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sequence_bias: Vec<(Vec<u32>, f64)>,
    /// Never generate this token id (repeatable).
    #[arg(long = "suppress-token", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suppress_tokens: Vec<u32>,
    /// Do not start the output with this token id (repeatable).
    #[arg(long = "begin-suppress-token", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub begin_suppress_tokens: Vec<u32>,
    /// Never generate this token sequence: comma-separated ids (repeatable; transformers'
    /// `bad_words_ids`), e.g. `--bad-words-ids 1234,56`.
    #[arg(long = "bad-words-ids", allow_hyphen_values = true, value_parser = ids)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bad_words_ids: Vec<TokenIds>,
    /// DRY repetition penalty multiplier, ≥ 0 (0 = off) [default: 0].
    #[arg(long = "dry-multiplier", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_multiplier: Option<f64>,
    /// DRY base, ≥ 1 [default: 1.75].
    #[arg(long = "dry-base", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_base: Option<f64>,
    /// DRY: repetitions longer than this are penalised, an integer ≥ 1 [default: 2].
    #[arg(long = "dry-allowed-length", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_allowed_length: Option<usize>,
    /// DRY: look at the last N tokens (-1 = the whole context, 0 = off) [default: -1].
    #[arg(long = "dry-penalty-last-n", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_penalty_last_n: Option<i64>,
    /// DRY sequence breaker (repeatable; replaces the default "\n", ":", "\"", "*"). Escapes
    /// \n, \t, \\ and \" are understood.
    #[arg(long = "dry-sequence-breaker", allow_hyphen_values = true, value_parser = unescaped)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dry_sequence_breakers: Vec<String>,
    /// XTC: probability per step of removing the top choices, in [0, 1] (0 = off) [default: 0].
    #[arg(long = "xtc-probability", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xtc_probability: Option<f64>,
    /// XTC: the tokens at or above this probability are the top choices, in [0, 1] [default: 0.1].
    #[arg(long = "xtc-threshold", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xtc_threshold: Option<f64>,
    /// Top-nσ: keep logits within N standard deviations of the top, ≥ 0 (0 = off) [default: 0].
    #[arg(long = "top-n-sigma", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_n_sigma: Option<f64>,
    /// Mirostat: 0 = off, 2 = Mirostat 2.0 (top-k/p and other truncations are then not used).
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirostat: Option<u8>,
    /// Mirostat target entropy (tau), > 0 [default: 5.0].
    #[arg(long = "mirostat-ent", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirostat_tau: Option<f64>,
    /// Mirostat learning rate (eta), in (0, 1] [default: 0.1].
    #[arg(long = "mirostat-lr", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirostat_eta: Option<f64>,
    /// Dynamic temperature: ± range around --temperature, by entropy, ≥ 0 (0 = off) [default: 0].
    #[arg(long = "dynatemp-range", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynatemp_range: Option<f64>,
    /// Dynamic temperature exponent, ≥ 0 [default: 1.0].
    #[arg(long = "dynatemp-exp", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynatemp_exponent: Option<f64>,
}

impl ProcessorFlags {
    /// The flags given, as `GenerationConfig` JSON fields.
    pub fn given(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => Default::default(),
        }
    }

    /// The command-line flag of a config field (`mirostat_tau` → `--mirostat-ent`).
    pub fn flag_of(field: &str) -> Option<String> {
        let cmd = <Self as Args>::augment_args(clap::Command::new("flags"));
        let arg = cmd.get_arguments().find(|a| a.get_id() == field)?;
        arg.get_long().map(|l| format!("--{l}"))
    }
}

fn start_factor(s: &str) -> Result<(usize, f64), String> {
    let bad = || format!("expected START,FACTOR (an integer ≥ 0 and a number > 0), got {s:?}");
    let (start, factor) = s.split_once(',').ok_or_else(bad)?;
    Ok((start.trim().parse().map_err(|_| bad())?, factor.trim().parse().map_err(|_| bad())?))
}

fn ids_bias(s: &str) -> Result<(Vec<u32>, f64), String> {
    let bad = || format!("expected IDS=BIAS, e.g. 1234,56=-5 (comma-separated token ids), got {s:?}");
    let (ids, bias) = s.rsplit_once('=').ok_or_else(bad)?;
    let ids: Vec<u32> = ids.split(',').map(|x| x.trim().parse()).collect::<Result<_, _>>().map_err(|_| bad())?;
    Ok((ids, bias.trim().parse().map_err(|_| bad())?))
}

/// Comma-separated token ids as one flag value (a JSON list).
#[derive(Clone, Serialize)]
#[serde(transparent)]
pub struct TokenIds(Vec<u32>);

fn ids(s: &str) -> Result<TokenIds, String> {
    let ids: Result<Vec<u32>, _> = s.split(',').map(|x| x.trim().parse()).collect();
    ids.map(TokenIds).map_err(|_| format!("expected comma-separated token ids, got {s:?}"))
}

fn unescaped(s: &str) -> Result<String, String> {
    Ok(unescape(s))
}

#[derive(Args, Clone)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    /// Prompt text (repeat for a batch); `-` reads standard input (one trailing newline is
    /// dropped, as llama.cpp does; see --keep-trailing-newline).
    #[arg(long, short = 'p', allow_hyphen_values = true)]
    pub prompt: Vec<String>,
    /// Read a prompt from a file (repeat for a batch; one trailing newline is dropped).
    #[arg(long = "prompt-file", short = 'f')]
    pub prompt_file: Vec<PathBuf>,
    /// Keep the trailing newline of a prompt read from standard input or a file.
    #[arg(long = "keep-trailing-newline")]
    pub keep_trailing_newline: bool,
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
    /// The file of the line history (↑/↓ on a terminal) [default: chat_history.txt in the cache
    /// directory, $DEMIURGIC_HOME or ~/.cache/demiurgic].
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Keep no line history on disk.
    #[arg(long = "no-history", conflicts_with = "history")]
    pub no_history: bool,
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

    fn sampling_args(flags: &[&str]) -> SamplingArgs {
        let mut argv = vec!["demiurgic", "generate"];
        argv.extend_from_slice(flags);
        match <crate::cli::Cli as clap::Parser>::try_parse_from(argv).map(|c| c.cmd) {
            Ok(crate::cli::Cmd::Generate(g)) => g.s,
            Ok(_) => panic!("not generate"),
            Err(e) => panic!("{e}"),
        }
    }

    /// The registry and the flags agree: every processor field has its flag (or is one a JSON
    /// config sets), and every flag names a field.
    #[test]
    fn every_processor_field_has_its_flag() {
        let fields = demiurgic_sampling::Processors::field_names();
        assert!(fields.len() > 20, "{fields:?}");
        // set in a --config file or by their own flags (--json-schema, …, the server's logit_bias)
        let config_only =
            ["logit_bias", "banned_token_ids", "constraint", "repetition_scope", "frequency_presence_scope"];
        for f in &fields {
            assert!(
                ProcessorFlags::flag_of(f).is_some() || config_only.contains(&f.as_str()),
                "processor field `{f}` has no flag in ProcessorFlags"
            );
        }
        let cmd = <ProcessorFlags as Args>::augment_args(clap::Command::new("flags"));
        let ids: Vec<&str> = cmd.get_arguments().map(|a| a.get_id().as_str()).collect();
        assert!(!ids.is_empty());
        for id in ids {
            assert!(fields.iter().any(|f| f == id), "flag `{id}` names no processor field");
        }
    }

    /// Flags land in their fields (renamed ones included) over a preset; a bad value is refused
    /// in the flag's words.
    #[test]
    fn processor_flags_are_merged_over_the_config() {
        let a = sampling_args(&[
            "--preset",
            "precise-code",
            "--mirostat",
            "2",
            "--mirostat-ent",
            "3.5",
            "--dynatemp-exp",
            "0.5",
            "--dry-sequence-breaker",
            r"\n",
            "--sequence-bias",
            "5,6=-2.5",
            "--exponential-decay-length-penalty",
            "4,1.5",
            "--suppress-token",
            "9",
        ]);
        let c = crate::gen::build_config(&a, &mut vec![]).unwrap();
        let p = &c.processors;
        assert_eq!((p.mirostat.mirostat, p.mirostat.mirostat_tau), (2, 3.5));
        assert_eq!(p.temperature.dynatemp_exponent, 0.5);
        assert_eq!(p.dry.dry_sequence_breakers, vec!["\n".to_string()]);
        assert_eq!(p.sequence_bias.sequence_bias, vec![(vec![5, 6], -2.5)]);
        assert_eq!(p.length_decay.exponential_decay_length_penalty, Some((4, 1.5)));
        assert_eq!(p.suppress.suppress_tokens, vec![9]);
        // the preset's own values stay
        assert_eq!((p.temperature.temperature, p.top_k.top_k, p.repetition.repetition_penalty), (0.6, 40, 1.05));
        for (flags, want) in [
            (&["--mirostat-lr", "1.5"][..], "--mirostat-lr 1.5: must be in (0, 1]"),
            (&["--temperature", "1e40"][..], "--temperature 1e40: must be a finite number"),
            (&["--dry-base", "0.5"][..], "--dry-base 0.5: must be a finite number ≥ 1"),
        ] {
            let mut flags = flags.to_vec();
            if flags[0] == "--mirostat-lr" {
                flags.extend(["--mirostat", "2"]);
            }
            let e = crate::gen::build_config(&sampling_args(&flags), &mut vec![]).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e} (want {want})");
        }
    }
}
