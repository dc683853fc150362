//! Command-line arguments and the one-line error for every flag the parser rejects.
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Parser, Subcommand};

use crate::args::{ChatArgs, DetokenizeArgs, FetchArgs, GenerateArgs, InfoArgs, TokenizeArgs};
use crate::{bench, soak};

#[derive(Parser)]
#[command(name = "demiurgic", version, about = "Run decoder-only language models on Burn")]
// a repeated flag: the last value wins (as llama.cpp); repeatable flags (--prompt, --stop…) add up
#[command(args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Generate text or token ids.
    Generate(GenerateArgs),
    /// Talk with the model: a multi-turn chat on the terminal (history kept in the KV cache;
    /// /help lists the commands, Ctrl-C stops a reply, ↑/↓ recall earlier lines).
    Chat(ChatArgs),
    /// Show the token ids of a text, with each token's bytes and readable text.
    Tokenize(TokenizeArgs),
    /// Show the text of token ids.
    Detokenize(DetokenizeArgs),
    /// Describe a model: family, parameters, context, weight types, tokenizer, chat template, EOS.
    Info(InfoArgs),
    /// Serve the model over HTTP with the OpenAI API (/v1/completions, /v1/chat/completions with
    /// tools, /v1/models, /health, /ready, /metrics), streaming included; SIGTERM drains.
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

/// What a flag's values may be (for the one-line parse errors): the flag's help text, which
/// says its range (every processor flag's does), or a word for the others.
fn allowed(flag: &str) -> String {
    let fixed = match flag {
        "--max-new-tokens" | "--max-length" | "--num-return-sequences" => "an integer ≥ 1",
        "--seed" => "an integer in 0..=18446744073709551615",
        "--top-logprobs" => "an integer in 0..=20",
        "--num-beams" | "--prompt-lookup" | "--max-matching-ngram-size" | "--num-assistant-tokens" => "an integer ≥ 1",
        "--length-penalty" => "a finite number",
        "--eos-token-id" => "a token id (an integer ≥ 0)",
        "--ctx" | "--threads" => "an integer ≥ 1",
        "--tokens" | "--per-generation" | "--max-growth-mib" | "--reps" | "--decode-tokens" => "an integer ≥ 1",
        _ => return help_of(flag).unwrap_or_else(|| "see --help".into()),
    };
    format!("expected {fixed}")
}

/// The help text of a flag of any command.
fn help_of(flag: &str) -> Option<String> {
    let long = flag.strip_prefix("--")?;
    let cmd = <Cli as clap::CommandFactory>::command();
    let help =
        cmd.get_subcommands().flat_map(|c| c.get_arguments()).find(|a| a.get_long() == Some(long))?.get_help()?;
    Some(help.to_string().trim_end_matches('.').to_string())
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
                _ => format!("{flag} {value:?} is not valid: {}", allowed(&flag)),
            }
        }
        ErrorKind::UnknownArgument => match ctx_str(e, ContextKind::SuggestedArg) {
            Some(s) => format!("unknown argument {arg:?}: did you mean {s}? (see --help for the flags)"),
            None => format!("unknown argument {arg:?} (see --help for the flags)"),
        },
        ErrorKind::InvalidSubcommand => match ctx_str(e, ContextKind::SuggestedSubcommand) {
            Some(s) => format!("unknown command {arg:?}: did you mean `demiurgic {s}`?"),
            None => format!("unknown command {arg:?} (see `demiurgic --help`)"),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(argv: &[&str]) -> crate::args::GenerateArgs {
        let mut all = vec!["demiurgic", "generate"];
        all.extend_from_slice(argv);
        match Cli::try_parse_from(all).map(|c| c.cmd) {
            Ok(Cmd::Generate(g)) => g,
            Ok(_) => panic!("not generate"),
            Err(e) => panic!("{}", one_line(&e)),
        }
    }

    /// llama-cli habits: the last value of a repeated flag wins, repeatable flags add up, and the
    /// short flags -m -p -f -n -s -t.
    #[test]
    fn repeated_flags_and_short_flags() {
        let g =
            generate(&["--seed", "1", "--seed", "2", "--max-new-tokens", "3", "-n", "5", "--prompt", "a", "-p", "b"]);
        assert_eq!((g.s.seed, g.s.max_new_tokens), (Some(2), Some(5)));
        assert_eq!(g.prompt, ["a", "b"]);
        let g = generate(&["--stop", "x", "--stop", "y", "-m", "m.gguf", "-f", "p.txt", "-s", "9", "-t", "3"]);
        assert_eq!(g.s.stop, ["x", "y"]);
        assert_eq!(g.m.model.as_deref(), Some(std::path::Path::new("m.gguf")));
        assert_eq!(g.prompt_file, [std::path::PathBuf::from("p.txt")]);
        assert_eq!((g.s.seed, g.m.threads), (Some(9), Some(3)));
        let e = Cli::try_parse_from(["demiurgic", "generate", "-t", "0"]).err().unwrap();
        let m = one_line(&e);
        assert!(m.contains("--threads") && m.contains("0"), "{m}");
    }

    #[test]
    fn parse_errors_name_flag_value_and_range() {
        let e = Cli::try_parse_from(["demiurgic", "generate", "--top-k", "abc"]).err().unwrap();
        let m = one_line(&e);
        assert!(m.contains("--top-k") && m.contains("abc") && m.contains("≥ 0"), "{m}");
        // a processor flag's range comes from its help text
        let e = Cli::try_parse_from(["demiurgic", "generate", "--dry-base", "high"]).err().unwrap();
        let m = one_line(&e);
        assert!(m.contains("--dry-base") && m.contains("high") && m.contains("≥ 1"), "{m}");
        let e = Cli::try_parse_from(["demiurgic", "generate", "--max-new-tokens", "-3"]).err().unwrap();
        let m = one_line(&e);
        assert!(m.contains("--max-new-tokens") && m.contains("-3") && m.contains("≥ 1"), "{m}");
        let e = Cli::try_parse_from(["demiurgic", "generate", "--bogus"]).err().unwrap();
        assert!(one_line(&e).contains("--bogus"));
        // a typo gets clap's suggestion
        let e = Cli::try_parse_from(["demiurgic", "generate", "--temprature", "0.5"]).err().unwrap();
        let m = one_line(&e);
        assert!(m.contains("--temprature") && m.contains("did you mean --temperature"), "{m}");
        let e = Cli::try_parse_from(["demiurgic", "generat"]).err().unwrap();
        assert!(one_line(&e).contains("did you mean `demiurgic generate`"), "{}", one_line(&e));
        // text starting with '-' is a value, not a flag
        assert!(Cli::try_parse_from(["demiurgic", "generate", "--prompt", "- item one", "--stop", "---"]).is_ok());
        assert!(Cli::try_parse_from(["demiurgic", "generate", "--prompt", "-5 plus 3"]).is_ok());
    }
}
