//! Structured generation: the output is constrained to a JSON schema, any JSON object, a regex,
//! a Lark grammar or one of a list of strings, through [llguidance] (the engine mistral.rs,
//! vLLM and SGLang embed).
//!
//! - [`Constraint`] is the part of a [`crate::GenerationConfig`] (serde: `{"json_schema": {…}}`,
//!   `"json_object"`, `{"regex": "…"}`, `{"grammar": "<lark>"}`, `{"choice": ["a", "b"]}`).
//! - [`GrammarCompiler`] holds llguidance's token trie and parser factory of one tokenizer
//!   (built once per model; the model crate builds it from its tokenizer) and compiles a
//!   constraint, reporting a bad schema / regex / grammar before any generation.
//! - [`GrammarConstraint`] is the logit processor: per row its own parser state, advanced by the
//!   row's generated tokens; each step the allowed-token sets of all rows are computed on the host
//!   (rows in parallel), uploaded as one `[batch, vocab]` bool tensor and applied with one masked
//!   fill. EOS is allowed exactly when the constraint accepts what the row has generated.
//!
//! Rows are matched to parser states by their token history, not by index: beam search reorders
//! rows, speculative decoding scores several positions of a row; a row whose history extends a
//! known state advances that state (cloned when two rows share it), any other is replayed from
//! the start. A row that has finished (its history ends with EOS, or it cannot be replayed
//! because it was stopped and padded) is left unconstrained: its tokens are not used.
use std::sync::{Arc, Mutex};

use burn::tensor::{backend::Backend, Bool, Tensor, TensorData};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::SamplingError;
use crate::pipeline::{LogitsProcessor, ProcessorContext};

use super::{Boxed, BuildContext, ProcessorConfig};

/// What the generated text must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// A JSON document valid under this JSON schema (llguidance's supported subset: types,
    /// properties/required, items/prefixItems, min/maxItems, enum/const, anyOf/oneOf/allOf,
    /// string min/maxLength, pattern and formats, number bounds, `$ref`/`$defs`).
    JsonSchema(Value),
    /// Any JSON object.
    JsonObject,
    /// A regular expression (Rust `regex` syntax) the whole output must match.
    Regex(String),
    /// A grammar in llguidance's Lark syntax (`start: …`).
    Grammar(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
}

/// How JSON is laid out unless a schema says otherwise in its `x-guidance` key: one space after
/// `,` and `:`, no other whitespace (so a model cannot pad its output with endless newlines).
fn json_layout() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

impl Constraint {
    /// Short name for errors and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::JsonSchema(_) => "json_schema",
            Self::JsonObject => "json_object",
            Self::Regex(_) => "regex",
            Self::Grammar(_) => "grammar",
            Self::Choice(_) => "choice",
        }
    }

    /// Checks that need no tokenizer (the grammar itself is checked by [`GrammarCompiler::compile`]).
    pub fn validate(&self) -> Result<(), SamplingError> {
        let bad =
            |value: String, allowed: &'static str| Err(SamplingError::Invalid { field: "constraint", value, allowed });
        match self {
            Self::JsonSchema(v) if !(v.is_object() || v.is_boolean()) => {
                bad(format!("json_schema {v}"), "a JSON schema is an object (or true/false)")
            }
            Self::Regex(r) if r.is_empty() => bad("regex \"\"".into(), "the regex must not be empty"),
            Self::Grammar(g) if g.trim().is_empty() => bad("grammar \"\"".into(), "the grammar must not be empty"),
            Self::Choice(c) if c.is_empty() => bad("choice []".into(), "give at least one choice"),
            Self::Choice(c) if c.iter().any(String::is_empty) => {
                bad(format!("choice {c:?}"), "choices must not be empty strings")
            }
            _ => Ok(()),
        }
    }

    fn grammar(&self) -> TopLevelGrammar {
        let with_layout = |mut schema: Value| {
            if let Value::Object(o) = &mut schema {
                o.entry("x-guidance").or_insert_with(json_layout);
            }
            schema
        };
        match self {
            Self::JsonSchema(s) => TopLevelGrammar::from_json_schema(with_layout(s.clone())),
            Self::JsonObject => TopLevelGrammar::from_json_schema(with_layout(json!({"type": "object"}))),
            Self::Regex(r) => TopLevelGrammar::from_regex(r),
            Self::Grammar(g) => TopLevelGrammar::from_lark(g.clone()),
            Self::Choice(c) => {
                // Lark string literals take JSON's escapes
                let alts: Vec<String> = c.iter().map(|s| serde_json::to_string(s).expect("a string")).collect();
                TopLevelGrammar::from_lark(format!("start: {}", alts.join(" | ")))
            }
        }
    }
}

/// The structured-generation constraint (None = off). Needs the tokenizer's [`GrammarCompiler`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConstraintConfig {
    pub constraint: Option<Constraint>,
}

impl ProcessorConfig for ConstraintConfig {
    fn validate(&self) -> Result<(), SamplingError> {
        self.constraint.as_ref().map_or(Ok(()), Constraint::validate)
    }

    fn needs_vocabulary(&self) -> bool {
        self.constraint.is_some()
    }

    fn build<B: Backend>(&self, ctx: &BuildContext<'_>, out: &mut Boxed<B>) -> Result<(), SamplingError> {
        let Some(c) = &self.constraint else { return Ok(()) };
        let g = ctx.grammar.ok_or_else(|| {
            SamplingError::Grammar(format!(
                "a {} constraint needs the tokenizer's grammar compiler (none was given)",
                c.kind()
            ))
        })?;
        out.push(Box::new(GrammarConstraint::new(g, c, ctx.eos)?));
        Ok(())
    }
}

/// llguidance's tokenizer state for one vocabulary: build once per model, compile many
/// constraints.
pub struct GrammarCompiler {
    factory: ParserFactory,
    eos: Vec<u32>,
    vocab: usize,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarCompiler").field("vocab", &self.vocab).field("eos", &self.eos).finish()
    }
}

/// A tokenizer as llguidance sees it: the trie of every token's bytes, and the real tokenizer
/// for text (byte strings that are not UTF-8 fall back to the trie's greedy tokenization).
struct FnTokEnv {
    trie: TokTrie,
    tokenize: Tokenize,
}

/// Text → token ids without special tokens (the model's own tokenizer).
pub type Tokenize = Box<dyn Fn(&str) -> Vec<u32> + Send + Sync>;

impl TokenizerEnv for FnTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |t| (self.tokenize)(t))
    }
}

impl GrammarCompiler {
    /// From an HF `tokenizer.json` (as a value; byte-level BPE or SentencePiece with byte
    /// fallback), the tokenizer itself, the EOS ids and the width of the model's logits.
    pub fn from_tokenizer_json(
        tokenizer_json: &Value,
        tokenize: Tokenize,
        eos: &[u32],
        vocab: usize,
    ) -> Result<Self, SamplingError> {
        let mut words = llguidance::token_bytes_from_tokenizer_json(tokenizer_json)
            .map_err(|e| SamplingError::Grammar(format!("the tokenizer's vocabulary: {e}")))?;
        if words.len() < vocab {
            words.resize(vocab, vec![]);
        }
        let Some(&first) = eos.first() else {
            return Err(SamplingError::Grammar("the tokenizer has no EOS id to end a constrained output".into()));
        };
        if let Some(&e) = eos.iter().find(|&&e| e as usize >= words.len()) {
            return Err(SamplingError::Grammar(format!("EOS id {e} is outside the vocabulary (0..{})", words.len())));
        }
        let info = TokRxInfo::new(words.len() as u32, first);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(eos);
        Self::new(std::sync::Arc::new(FnTokEnv { trie, tokenize }), vocab)
    }

    /// From a tokenizer environment (its trie holds every token's bytes; special tokens start
    /// with `TokTrie::SPECIAL_TOKEN_MARKER`). `vocab` is the width of the model's logits (it may
    /// exceed the tokenizer's vocabulary; the extra ids are never allowed).
    fn new(env: TokEnv, vocab: usize) -> Result<Self, SamplingError> {
        let eos = env.tok_trie().eos_tokens().to_vec();
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| SamplingError::Grammar(e.to_string()))?;
        factory.quiet();
        Ok(Self { factory, eos, vocab })
    }

    /// The EOS ids the trie knows (allowed exactly when a constraint accepts).
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    /// Every token whose text (bytes) contains one of `texts` (DRY's sequence breakers).
    pub fn tokens_containing(&self, texts: &[String]) -> Vec<u32> {
        let trie = self.factory.tok_env().tok_trie();
        (0..trie.vocab_size() as u32)
            .filter(|&t| {
                let bytes = trie.token(t);
                !bytes.is_empty()
                    && bytes.first() != Some(&TokTrie::SPECIAL_TOKEN_MARKER)
                    && texts.iter().any(|x| bytes.windows(x.len()).any(|w| w == x.as_bytes()))
            })
            .collect()
    }

    /// Compile `c` into a fresh parser, or say what is wrong with it.
    pub fn compile(&self, c: &Constraint) -> Result<Matcher, SamplingError> {
        c.validate()?;
        let parser = self.factory.create_parser(c.grammar());
        let m = Matcher::new(parser);
        match m.get_error() {
            Some(e) => Err(SamplingError::Grammar(format!("{}: {e}", c.kind()))),
            None => Ok(m),
        }
    }
}

struct RowState {
    /// The generated tokens this state has consumed.
    tokens: Vec<u32>,
    matcher: Matcher,
    /// The history could not be consumed (a finished, padded row): unconstrained.
    dead: bool,
}

/// The constraint as a logit processor (see the module docs).
pub struct GrammarConstraint {
    start: Matcher,
    eos: Vec<u32>,
    /// The tokenizer's end tokens that do not end this generation: never allowed.
    other_eos: Vec<u32>,
    vocab: usize,
    states: Mutex<Vec<RowState>>,
}

impl GrammarConstraint {
    /// `eos`: the generation's EOS ids (they end a row; allowed exactly when accepting).
    pub fn new(compiler: &GrammarCompiler, c: &Constraint, eos: &[u32]) -> Result<Self, SamplingError> {
        let start = compiler.compile(c)?;
        let other_eos = compiler.eos.iter().copied().filter(|e| !eos.contains(e)).collect();
        Ok(Self { start, eos: eos.to_vec(), other_eos, vocab: compiler.vocab, states: Mutex::new(vec![]) })
    }

    /// Per row: the allowed ids as a `vocab`-long bool vector, or None (unconstrained).
    fn row_mask(&self, st: &mut RowState) -> Option<Vec<bool>> {
        if st.dead || st.tokens.last().is_some_and(|t| self.eos.contains(t)) {
            return None;
        }
        let accepting = st.matcher.is_accepting().unwrap_or(false);
        let set = match st.matcher.compute_mask_or_eos() {
            Ok(s) => s,
            Err(_) => {
                st.dead = true;
                return None;
            }
        };
        let mut allowed = vec![false; self.vocab];
        set.iter_set_entries(|i| {
            if i < allowed.len() {
                allowed[i] = true;
            }
        });
        for &e in &self.eos {
            if (e as usize) < allowed.len() {
                allowed[e as usize] = accepting || st.matcher.is_stopped();
            }
        }
        for &e in &self.other_eos {
            if (e as usize) < allowed.len() {
                allowed[e as usize] = false;
            }
        }
        if !allowed.iter().any(|&a| a) {
            // nothing can follow and nothing accepts: cannot happen for a compiled grammar; leave
            // the row to the model rather than mask every token
            st.dead = true;
            return None;
        }
        Some(allowed)
    }
}

fn advance(st: &mut RowState, gen: &[u32], eos: &[u32]) {
    let new = &gen[st.tokens.len()..];
    for &t in new {
        if st.dead {
            break;
        }
        if eos.contains(&t) {
            // the row ends here; its mask is no longer used
            st.tokens.push(t);
            return;
        }
        if st.matcher.consume_token(t as TokenId).is_err() {
            st.dead = true;
        }
        st.tokens.push(t);
    }
    if st.dead {
        st.tokens = gen.to_vec();
    }
}

impl<B: Backend> LogitsProcessor<B> for GrammarConstraint {
    fn name(&self) -> &'static str {
        "constraint"
    }

    fn process(&self, logits: Tensor<B, 2>, ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
        let [rows, vocab] = logits.dims();
        let mut prev = std::mem::take(&mut *self.states.lock().expect("constraint state"));
        // which earlier state each row continues: the same index when it fits, else any that fits
        let gens: Vec<&[u32]> = (0..rows).map(|b| ctx.generated(b)).collect();
        let fits = |s: &RowState, g: &[u32]| !s.dead && s.tokens.len() <= g.len() && g.starts_with(&s.tokens);
        let source: Vec<Option<usize>> = (0..rows)
            .map(|b| {
                if prev.get(b).is_some_and(|s| fits(s, gens[b])) {
                    Some(b)
                } else {
                    prev.iter().position(|s| fits(s, gens[b]))
                }
            })
            .collect();
        let mut uses = vec![0usize; prev.len()];
        source.iter().flatten().for_each(|&j| uses[j] += 1);
        let mut slots: Vec<Option<RowState>> = prev.drain(..).map(Some).collect();
        let mut states: Vec<RowState> = source
            .iter()
            .map(|src| match *src {
                Some(j) => {
                    uses[j] -= 1;
                    let s = slots[j].as_ref().expect("kept until its last use");
                    if uses[j] == 0 {
                        slots[j].take().expect("present")
                    } else {
                        RowState { tokens: s.tokens.clone(), matcher: s.matcher.clone(), dead: false }
                    }
                }
                None => RowState { tokens: vec![], matcher: self.start.clone(), dead: false },
            })
            .collect();
        let masks: Vec<Option<Vec<bool>>> = states
            .par_iter_mut()
            .zip(gens.par_iter())
            .map(|(st, g)| {
                advance(st, g, &self.eos);
                self.row_mask(st)
            })
            .collect();
        *self.states.lock().expect("constraint state") = std::mem::take(&mut states);
        if masks.iter().all(Option::is_none) {
            return logits;
        }
        // one upload: true = masked out
        let mut banned = Vec::with_capacity(rows * vocab);
        for m in &masks {
            match m {
                Some(a) => banned.extend((0..vocab).map(|i| !a.get(i).copied().unwrap_or(false))),
                None => banned.extend(std::iter::repeat_n(false, vocab)),
            }
        }
        let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(banned, [rows, vocab]), &logits.device());
        logits.mask_fill(mask, f32::NEG_INFINITY)
    }
}

/// Shared handle used by the pipeline (one compiler per model).
pub type SharedGrammarCompiler = Arc<GrammarCompiler>;
