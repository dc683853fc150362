/// Invalid generation parameters: every message names the field, the value and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("invalid generation parameter `{field}` = {value}: {allowed}")]
    Invalid { field: &'static str, value: String, allowed: &'static str },
    #[error("unknown preset \"{0}\" (known: greedy, balanced-code, precise-code, creative-code, natural-text, completion-fim)")]
    UnknownPreset(String),
    #[error("invalid generation config JSON: {0}")]
    Json(String),
    /// A field set by name whose value does not fit its type.
    #[error("invalid generation parameter `{field}`: {message}")]
    BadField { field: String, message: String },
    /// A constraint (JSON schema, regex, grammar, choice) that does not compile, or a constraint
    /// where no tokenizer is at hand to compile it.
    #[error("invalid constraint: {0}")]
    Grammar(String),
}

pub(crate) fn invalid(field: &'static str, value: impl ToString, allowed: &'static str) -> SamplingError {
    SamplingError::Invalid { field, value: value.to_string(), allowed }
}
