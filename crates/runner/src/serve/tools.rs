//! Tool calling on `/v1/chat/completions` (OpenAI's `tools`, `tool_choice`,
//! `parallel_tool_calls`): the tools go into the prompt (the chat template's own `tools` rendering,
//! or, for a template without one, a system message describing them and the answer's form, as
//! llama.cpp's generic format does); `required` and a named function constrain the answer to the
//! functions' JSON schemas (llguidance), `auto` lets the model answer or call and parses what it
//! wrote; calls come back as `tool_calls` with their arguments as JSON strings.
use serde_json::{json, Value};

use super::error::ApiError;

/// One function the model may call.
#[derive(Clone)]
pub(crate) struct Tool {
    pub name: String,
    pub parameters: Value,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `auto`: the model answers or calls; its text is parsed.
    Auto,
    /// `required` or a named function: the answer is constrained to calls.
    Forced,
}

/// A request's tools and how they may be used (None: `tool_choice: "none"` or no tools).
#[derive(Clone)]
pub(crate) struct Tools {
    pub tools: Vec<Tool>,
    pub mode: Mode,
    /// `parallel_tool_calls: true` with `required`: a list of calls.
    pub parallel: bool,
    /// The request's `tools` as given (what a chat template that renders tools reads).
    pub json: Value,
}

/// `tools`, `tool_choice` and `parallel_tool_calls` of a request, checked (each error names its
/// field). None when there are no tools or `tool_choice` is `none`.
pub(crate) fn parse(
    tools: Option<&Value>,
    choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<Tools>, ApiError> {
    let Some(list) = tools else {
        if choice.is_some_and(|c| c != "none") {
            return Err(ApiError::bad("tool_choice", "`tool_choice` needs `tools`"));
        }
        return Ok(None);
    };
    let list = list
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ApiError::bad("tools", "`tools` must be a non-empty list"))?;
    let mut out = vec![];
    for (i, t) in list.iter().enumerate() {
        let field = format!("tools[{i}]");
        if t["type"] != "function" {
            return Err(ApiError::bad(&field, format!("{field}.type must be \"function\", got {}", t["type"])));
        }
        let f = &t["function"];
        let name = f["name"].as_str().filter(|n| {
            !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        let name = name.ok_or_else(|| {
            ApiError::bad(
                &field,
                format!("{field}.function.name must be 1–64 letters, digits, _ or -, got {}", f["name"]),
            )
        })?;
        if out.iter().any(|t: &Tool| t.name == name) {
            return Err(ApiError::bad(&field, format!("function {name:?} is defined twice")));
        }
        let parameters = match &f["parameters"] {
            Value::Null => json!({"type": "object", "properties": {}}),
            p if p.is_object() => p.clone(),
            other => {
                return Err(ApiError::bad(
                    &field,
                    format!("{field}.function.parameters must be a JSON schema object, got {other}"),
                ))
            }
        };
        out.push(Tool { name: name.to_string(), parameters });
    }
    let (mode, only) = match choice {
        None => (Mode::Auto, None),
        Some(Value::String(s)) => match s.as_str() {
            "none" => return Ok(None),
            "auto" => (Mode::Auto, None),
            "required" => (Mode::Forced, None),
            other => {
                return Err(ApiError::bad(
                    "tool_choice",
                    format!("`tool_choice` {other:?} is not allowed (none, auto, required or a function)"),
                ))
            }
        },
        Some(c) => {
            let name = c["function"]["name"].as_str().filter(|_| c["type"] == "function").ok_or_else(|| {
                ApiError::bad("tool_choice", format!("`tool_choice` must be none, auto, required or {{\"type\": \"function\", \"function\": {{\"name\": …}}}}, got {c}"))
            })?;
            if !out.iter().any(|t| t.name == name) {
                return Err(ApiError::bad(
                    "tool_choice",
                    format!("`tool_choice` names {name:?}, which is not in `tools`"),
                ));
            }
            (Mode::Forced, Some(name.to_string()))
        }
    };
    let json = Value::Array(list.clone());
    if let Some(n) = only {
        out.retain(|t| t.name == n);
    }
    // a named function is one call; `required` lists calls only when parallel calls are asked for
    let parallel = mode == Mode::Forced && out.len() > 1 && parallel == Some(true);
    Ok(Some(Tools { tools: out, mode, parallel, json }))
}

impl Tools {
    /// The JSON schema of the answer when calls are forced: one call (`{"name", "arguments"}`)
    /// of any of the tools, or a list of them.
    pub fn schema(&self) -> Value {
        let calls: Vec<Value> = self
            .tools
            .iter()
            .map(|t| {
                json!({"type": "object", "properties": {"name": {"const": t.name}, "arguments": t.parameters},
                    "required": ["name", "arguments"], "additionalProperties": false})
            })
            .collect();
        let one = if calls.len() == 1 { calls[0].clone() } else { json!({"anyOf": calls}) };
        if self.parallel {
            json!({"type": "array", "items": one, "minItems": 1})
        } else {
            one
        }
    }

    /// The system text that describes the tools to a template that does not render them.
    pub fn system_text(&self) -> String {
        let list: Vec<String> = self
            .tools
            .iter()
            .filter_map(|t| self.json.as_array()?.iter().find(|x| x["function"]["name"] == t.name.as_str()))
            .map(|x| x["function"].to_string())
            .collect();
        format!(
            "You can call these functions:\n{}\nTo call a function, answer with only a JSON object \
             {{\"name\": <function name>, \"arguments\": <its arguments>}}{}; otherwise answer normally.",
            list.join("\n"),
            if self.parallel { " (or a JSON list of such objects to call several)" } else { "" }
        )
    }

    /// The calls in a finished answer (name, arguments as JSON text), or None when it is not a
    /// call of these tools (with `auto`, an ordinary answer).
    pub fn calls(&self, text: &str) -> Option<Vec<(String, String)>> {
        let v: Value = serde_json::from_str(text.trim()).ok()?;
        let items = match v {
            Value::Array(a) => a,
            one => vec![one],
        };
        let mut out = vec![];
        for c in &items {
            let name = c["name"].as_str()?;
            if !self.tools.iter().any(|t| t.name == name) || !c["arguments"].is_object() {
                return None;
            }
            out.push((name.to_string(), c["arguments"].to_string()));
        }
        (!out.is_empty()).then_some(out)
    }

    /// Whether streamed text must be held back: forced calls always; with `auto`, while the
    /// answer may still be a call (it starts with `{` or `[`, or has only blanks so far).
    pub fn hold(&self, text: &str) -> bool {
        match self.mode {
            Mode::Forced => true,
            Mode::Auto => matches!(text.trim_start().chars().next(), None | Some('{') | Some('[')),
        }
    }
}

/// OpenAI's `tool_calls` entries for `calls` (ids unique within the response).
pub(crate) fn tool_calls_json(calls: &[(String, String)], id_base: &str, row: usize, streamed: bool) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| {
            let mut v = json!({"id": format!("call_{id_base}_{row}_{i}"), "type": "function",
                "function": {"name": name, "arguments": args}});
            if streamed {
                v["index"] = json!(i);
            }
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_choice_schema_and_parsing() {
        let tools = json!([
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
                "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "now"}}
        ]);
        let t = parse(Some(&tools), Some(&json!("required")), None).unwrap().unwrap();
        assert!(t.mode == Mode::Forced && !t.parallel);
        assert_eq!(t.schema()["anyOf"].as_array().unwrap().len(), 2);
        let named = parse(Some(&tools), Some(&json!({"type": "function", "function": {"name": "now"}})), None)
            .unwrap()
            .unwrap();
        assert_eq!(named.schema()["properties"]["name"]["const"], "now");
        assert!(parse(Some(&tools), Some(&json!("none")), None).unwrap().is_none());
        let calls = t.calls(r#" {"name": "get_weather", "arguments": {"city": "Paris"}} "#).unwrap();
        assert_eq!(calls, vec![("get_weather".to_string(), r#"{"city":"Paris"}"#.to_string())]);
        assert!(t.calls("It is sunny.").is_none());
        assert!(t.calls(r#"{"name": "nope", "arguments": {}}"#).is_none());
        for (tools, choice, field) in [
            (Some(json!([])), None, "tools"),
            (Some(json!([{"type": "function", "function": {"name": "a b"}}])), None, "tools[0]"),
            (Some(tools.clone()), Some(json!("sometimes")), "tool_choice"),
            (Some(tools.clone()), Some(json!({"type": "function", "function": {"name": "missing"}})), "tool_choice"),
            (None, Some(json!("required")), "tool_choice"),
        ] {
            let e = parse(tools.as_ref(), choice.as_ref(), None).err().expect("refused");
            assert_eq!(e.param.as_deref(), Some(field), "{}", e.message);
        }
    }
}
