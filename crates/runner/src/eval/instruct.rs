//! The instruct format of the eval, as EvalPlus and the chat models' cards run HumanEval: the
//! problem goes through the chat template as a request to complete the function (the prompt in a
//! fenced block), the answer's first code block is extracted, and the harness's completion (what
//! follows the prompt in the program) is assembled from it.
use std::path::Path;

/// How a problem is put to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The problem's prompt as plain text; the model continues it (base models).
    Completion,
    /// The prompt in a chat request through the model's chat template (instruct models).
    Instruct,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Completion => "completion",
            Format::Instruct => "instruct",
        }
    }

    /// `--format`: `completion`, `instruct` or `auto` (None).
    pub fn parse(s: &str) -> Result<Option<Format>, String> {
        match s {
            "auto" => Ok(None),
            "completion" => Ok(Some(Format::Completion)),
            "instruct" => Ok(Some(Format::Instruct)),
            _ => Err(format!("--format {s:?}: expected auto, completion or instruct")),
        }
    }
}

/// The words in a checkpoint's name that mark a chat-tuned model (as the model hubs name them:
/// `-Instruct`, `-it`, `-chat`).
const INSTRUCT_WORDS: [&str; 3] = ["instruct", "it", "chat"];

/// `--format auto`: instruct when the checkpoint has a chat template **and** its file or directory
/// name marks it chat-tuned (a word `instruct`, `it` or `chat` between `-`, `_`, `.` or spaces, as
/// `SmolLM2-135M-Instruct.Q4_1.gguf`, `gemma-3-270m-it`); completion otherwise. Both are needed:
/// many base checkpoints ship a chat template (the tokenizer's, for later fine-tuning), and a name
/// alone does not give a template to render. Returns the format and why.
pub fn auto_format(has_chat_template: bool, model_path: &Path) -> (Format, String) {
    let name = model_path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let marked = name.split(['-', '_', '.', ' ']).find(|w| INSTRUCT_WORDS.contains(w));
    match (has_chat_template, marked) {
        (true, Some(w)) => {
            (Format::Instruct, format!("auto: the checkpoint has a chat template and its name {name:?} says {w:?}"))
        }
        (true, None) => (
            Format::Completion,
            format!("auto: a chat template, but the name {name:?} does not mark a chat model (instruct, it, chat)"),
        ),
        (false, _) => (Format::Completion, "auto: the checkpoint has no chat template".into()),
    }
}

/// The user message of the instruct format.
pub fn instruct_message(prompt: &str) -> String {
    format!(
        "Complete the following Python function. Answer with the complete function in one Python code block.\n\n\
         ```python\n{}\n```",
        prompt.trim_end()
    )
}

/// The code of an answer: the first fenced block (its closing fence may be missing when the token
/// limit cut the answer), else the code lines of an unfenced answer (from the first line that
/// starts code — `def`, `import`, `from`, `class`, `@` or an indented line — to the first prose
/// line after it).
pub fn extract_code(answer: &str) -> String {
    let lines: Vec<&str> = answer.lines().collect();
    if let Some(open) = lines.iter().position(|l| l.trim_start().starts_with("```")) {
        let body = &lines[open + 1..];
        let end = body.iter().position(|l| l.trim_start().starts_with("```")).unwrap_or(body.len());
        return trim_blank(&body[..end]);
    }
    let starts_code = |l: &str| {
        let t = l.trim_start();
        ["def ", "import ", "from ", "class ", "@", "async def "].iter().any(|k| t.starts_with(k))
            || (l.starts_with([' ', '\t']) && !t.is_empty())
    };
    let Some(first) = lines.iter().position(|l| starts_code(l)) else { return String::new() };
    let len = lines[first..]
        .iter()
        .position(|l| !(l.trim().is_empty() || starts_code(l) || l.starts_with('#')))
        .unwrap_or(lines.len() - first);
    trim_blank(&lines[first..first + len])
}

fn trim_blank(lines: &[&str]) -> String {
    let a = lines.iter().position(|l| !l.trim().is_empty()).unwrap_or(lines.len());
    let b = lines.iter().rposition(|l| !l.trim().is_empty()).map_or(a, |i| i + 1);
    lines[a..b].join("\n")
}

/// The harness's completion (appended to the problem's prompt to make the program) from an
/// answer's `code`:
/// - the code restates the function (`def entry_point(` at the start of a line, unindented): it
///   follows the prompt whole, so its definition replaces the prompt's docstring-only one while the
///   prompt's imports and helper functions stay;
/// - the code is the body (its first line indented): it follows the prompt as the function's body;
/// - anything else (statements without the `def`) is indented into the body.
pub fn assemble(code: &str, entry_point: &str) -> String {
    let restated = code.lines().any(|l| {
        l.strip_prefix("def ")
            .or_else(|| l.strip_prefix("async def "))
            .is_some_and(|r| r.strip_prefix(entry_point).is_some_and(|rest| rest.trim_start().starts_with('(')))
    });
    if code.trim().is_empty() {
        return String::new();
    }
    if restated {
        return format!("\n{code}\n");
    }
    let first = code.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if first.starts_with([' ', '\t']) {
        format!("{code}\n")
    } else {
        let body: Vec<String> =
            code.lines().map(|l| if l.trim().is_empty() { String::new() } else { format!("    {l}") }).collect();
        format!("{}\n", body.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str = "from typing import List\n\n\ndef add(a: int, b: int) -> int:\n    \"\"\" Add two numbers.\n    >>> add(2, 3)\n    5\n    \"\"\"\n";

    /// Runs prompt + completion + a check in python3: whether the assembled program passes.
    fn passes(completion: &str) -> bool {
        let program = format!("{PROMPT}{completion}\n\nassert add(2, 3) == 5 and add(-1, 1) == 0\n");
        let out = std::process::Command::new("python3").args(["-I", "-c", &program]).output().expect("python3 runs");
        out.status.success()
    }

    /// Hand-written answers in the shapes chat models give them: each one's extracted code and
    /// whether the assembled program passes.
    #[test]
    fn answers_are_extracted_and_assembled() {
        let cases: [(&str, &str, &str, bool); 9] = [
            (
                "fenced, restated signature, prose around",
                "Here is the function:\n\n```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```\n\nIt adds the numbers.",
                "def add(a: int, b: int) -> int:\n    return a + b",
                true,
            ),
            (
                "fenced without a language, restated with its docstring",
                "```\ndef add(a, b):\n    \"\"\"Add.\"\"\"\n    return a + b\n```",
                "def add(a, b):\n    \"\"\"Add.\"\"\"\n    return a + b",
                true,
            ),
            (
                "fenced body only",
                "```python\n    return a + b\n```",
                "    return a + b",
                true,
            ),
            (
                "fenced, cut by the token limit (no closing fence)",
                "Sure!\n```python\nfrom typing import List\n\ndef add(a: int, b: int) -> int:\n    return a + b\n",
                "from typing import List\n\ndef add(a: int, b: int) -> int:\n    return a + b",
                true,
            ),
            (
                "two blocks: the first is taken",
                "```python\ndef add(a, b):\n    return a + b\n```\nTest it:\n```python\nprint(add(1, 2))\n```",
                "def add(a, b):\n    return a + b",
                true,
            ),
            (
                "unfenced, prose before and after",
                "The answer is:\ndef add(a, b):\n    # sum\n    return a + b\n\nThis returns the sum of a and b.",
                "def add(a, b):\n    # sum\n    return a + b",
                true,
            ),
            ("unfenced statement without the def", "return a + b", "", false),
            (
                "a helper and the function",
                "```python\ndef helper(x):\n    return x\n\n\ndef add(a, b):\n    return helper(a) + b\n```",
                "def helper(x):\n    return x\n\n\ndef add(a, b):\n    return helper(a) + b",
                true,
            ),
            ("prose only", "I cannot help with that.", "", false),
        ];
        for (what, answer, code, ok) in cases {
            let got = extract_code(answer);
            assert_eq!(got, code, "{what}");
            assert_eq!(passes(&assemble(&got, "add")), ok, "{what}: {:?}", assemble(&got, "add"));
        }
        // a statement-only code (a fenced `return`) is indented into the body
        assert_eq!(assemble("return a + b", "add"), "    return a + b\n");
        assert!(passes(&assemble("return a + b", "add")));
        // a function of another name that starts with the entry point's is not a restatement
        assert_eq!(assemble("def add_one(x):\n    return x", "add"), "    def add_one(x):\n        return x\n");
    }

    #[test]
    fn auto_format_needs_a_template_and_a_chat_name() {
        let p = |s: &str| std::path::PathBuf::from(s);
        let f = |t: bool, s: &str| auto_format(t, &p(s)).0;
        assert_eq!(f(true, "/c/SmolLM2-135M-Instruct.Q4_1.gguf"), Format::Instruct);
        assert_eq!(f(true, "/c/gemma-3-270m-it"), Format::Instruct);
        assert_eq!(f(true, "qwen2-chat.gguf"), Format::Instruct);
        assert_eq!(f(false, "/c/SmolLM2-135M-Instruct.Q4_1.gguf"), Format::Completion);
        assert_eq!(f(true, "/c/gemma-3-270m-q4_k_m.gguf"), Format::Completion);
        // "it" only as a whole word
        assert_eq!(f(true, "/c/digits-model.gguf"), Format::Completion);
        assert_eq!(Format::parse("auto"), Ok(None));
        assert!(Format::parse("chat").unwrap_err().contains("auto, completion or instruct"));
    }
}
