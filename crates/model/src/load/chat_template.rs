//! Chat templates (Jinja, as in the checkpoint's `tokenizer_config.json` or the GGUF's
//! `tokenizer.chat_template`) rendered as transformers' `apply_chat_template` renders them:
//! `trim_blocks` and `lstrip_blocks` on, Python string methods available, `raise_exception`,
//! `bos_token` / `eos_token` from the tokenizer.
use crate::error::{ModelError, Result};
use crate::load::LoadedModel;
use crate::ops::DecodeOps;

/// One turn of a conversation (`system`, `user` or `assistant`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

fn raise_exception(msg: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
}

/// Render `template` over `messages`.
pub fn render_chat_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    render_chat_template_with(template, messages, add_generation_prompt, bos_token, eos_token, None)
}

/// [`render_chat_template`] with `tools` (OpenAI-style function definitions) in the template's
/// context, as transformers' `apply_chat_template(tools=…)` passes them.
pub fn render_chat_template_with(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
    tools: Option<&serde_json::Value>,
) -> Result<String> {
    let err = |what: &str, e: minijinja::Error| ModelError::Input(format!("chat template: {what}: {e}"));
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_template("chat", template).map_err(|e| err("the template does not parse", e))?;
    env.get_template("chat")
        .and_then(|t| {
            t.render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => bos_token,
                eos_token => eos_token,
                tools => tools.map(minijinja::Value::from_serialize),
            })
        })
        .map_err(|e| err("rendering failed", e))
}

impl<B: DecodeOps> LoadedModel<B> {
    /// The model's chat template rendered over `messages` (as transformers' `apply_chat_template`
    /// with `tokenize=False`).
    pub fn render_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_chat_with(messages, add_generation_prompt, None)
    }

    /// Whether the chat template renders `tools` itself (it reads a `tools` variable).
    pub fn template_renders_tools(&self) -> bool {
        self.chat_template.as_deref().is_some_and(|t| t.contains("tools"))
    }

    /// [`Self::render_chat`] with `tools` passed to the template.
    pub fn render_chat_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
    ) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| ModelError::Input("this model has no chat template (use a plain prompt)".into()))?;
        let tok = self.text_tokenizer()?;
        let name = |id: Option<u32>| id.map(|i| tok.tokens(&[i]).join("")).unwrap_or_default();
        let bos = name(self.model.config.bos_token_id);
        let eos = name(self.model.config.eos_token_ids.first().copied());
        render_chat_template_with(template, messages, add_generation_prompt, &bos, &eos, tools)
    }
}
