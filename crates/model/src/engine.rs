//! Continuous batching: requests join a running batch at a step boundary and leave when done.
//!
//! One [`KvCache`] holds every running row. A request's prompt is prefilled on its own, once for
//! all its rows (and for the requests added with it by [`Engine::add_shared`]), then its rows are
//! appended to the shared cache with their keys right-aligned to its end, so every row writes its
//! next key at the same cache position; each row's own positions (RoPE) and its valid keys (the
//! mask) keep it independent of the others. The decode step runs all rows in one forward pass;
//! each request's rows then go through that request's own pipeline and sampler
//! (`SampleState`, shared with `generate`), so a request gets the tokens
//! `generate` gives it alone, whatever runs beside it. When the cache's end reaches its size the
//! cache grows (doubling, up to the engine's limit), then the rows are shifted left over
//! positions no row uses.
use std::time::Instant;

use burn::tensor::{s, Tensor};
use demiurgic_sampling::GenerationConfig;

use crate::decoder::{Decoder, StepInput};
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::ops::DecodeOps;
use crate::strategy::{prepare, GenerationOutput, GenerationStats, SampleState, StepLogprob};
use crate::text::TextStops;

/// What one request did in one step: each of its rows' new token (None once the row finished),
/// its log-probabilities (when the request asked for them: what a stream sends with the token),
/// and its output when the request has finished.
pub struct EngineStep {
    pub id: u64,
    pub tokens: Vec<Option<u32>>,
    /// Per row: the new token's log-probabilities (None for a finished row or when not asked).
    pub logprobs: Vec<Option<StepLogprob>>,
    pub output: Option<GenerationOutput>,
}

/// Prompts' keys and values kept after their prefill, in blocks of [`PREFIX_BLOCK`] tokens keyed
/// by the whole prefix they end (a hash chain: a block's key covers its parent's), so prompts that
/// share a beginning share its blocks. Any later request whose prompt starts with at least
/// [`PREFIX_MIN`] cached tokens reuses them: multi-turn chats resend the conversation, agents
/// resend one long system prompt. Held up to a budget; the least recently used block goes first
/// (a parent is used whenever its children are, so leaves go before the blocks they extend).
struct PrefixCache<B: DecodeOps> {
    blocks: std::collections::HashMap<u64, PrefixBlock<B>>,
    budget_blocks: usize,
    clock: u64,
}

struct PrefixBlock<B: DecodeOps> {
    parent: Option<u64>,
    tokens: Vec<u32>,
    /// Every layer's keys and values of the block's positions (`[1, kv_heads, PREFIX_BLOCK, d]`).
    kv: Vec<(Tensor<B, 4>, Tensor<B, 4>)>,
    used: u64,
}

/// Tokens per prefix-cache block.
pub const PREFIX_BLOCK: usize = 16;

/// Shorter shared prefixes are computed again (a lookup would save next to nothing).
pub const PREFIX_MIN: usize = 16;

/// How many of a prompt's last tokens are computed even when cached: the request's first logits
/// then come from the prefill kernels a whole prompt takes (on flex, more than
/// [`crate::kernels::cpu::group_rows_before_prefill`] rows — 16, or [`crate::kernels::cpu::AVX2_MAX_ROWS`] on AVX2 without VNNI —
/// take the prefill paths, fewer the decode kernels), so the cache does not change them.
pub fn prefix_recompute() -> usize {
    crate::kernels::cpu::group_rows_before_prefill() + 1
}

/// The key of the block `tokens` after the block keyed `parent`.
fn block_key(parent: Option<u64>, tokens: &[u32]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

impl<B: DecodeOps> PrefixCache<B> {
    /// The keys of the cached blocks `prompt` starts with, in order.
    fn chain(&self, prompt: &[u32]) -> Vec<u64> {
        let mut keys = vec![];
        let mut parent = None;
        for tokens in prompt.chunks_exact(PREFIX_BLOCK) {
            let key = block_key(parent, tokens);
            match self.blocks.get(&key) {
                Some(b) if b.parent == parent && b.tokens == tokens => keys.push(key),
                _ => break,
            }
            parent = Some(key);
        }
        keys
    }

    /// A cache of `capacity` positions holding the longest cached prefix of `prompt` (at most
    /// all but its last [`prefix_recompute`] tokens), and its length; None under [`PREFIX_MIN`].
    fn lookup(&mut self, model: &Decoder<B>, prompt: &[u32], capacity: usize) -> Result<Option<(KvCache<B>, usize)>> {
        let keys = self.chain(prompt);
        let n = (keys.len() * PREFIX_BLOCK).min(prompt.len().saturating_sub(prefix_recompute()));
        if n < PREFIX_MIN {
            return Ok(None);
        }
        self.clock += 1;
        let keys = &keys[..n.div_ceil(PREFIX_BLOCK)];
        for key in keys {
            self.blocks.get_mut(key).expect("a block of the chain").used = self.clock;
        }
        // each layer's blocks joined, then written at once
        let chosen: Vec<&PrefixBlock<B>> = keys.iter().map(|k| &self.blocks[k]).collect();
        let joined: Vec<(Tensor<B, 4>, Tensor<B, 4>)> = (0..chosen[0].kv.len())
            .map(|l| {
                let k = Tensor::cat(chosen.iter().map(|b| b.kv[l].0.clone()).collect(), 2);
                let v = Tensor::cat(chosen.iter().map(|b| b.kv[l].1.clone()).collect(), 2);
                (k, v)
            })
            .collect();
        let mut kv = model.new_cache(1, capacity)?;
        kv.write_positions(0, &joined)?;
        kv.set_len(n)?;
        Ok(Some((kv, n)))
    }

    /// Keep the whole blocks of `prompt` from its prefilled cache `kv` (those already held are
    /// marked used), then drop the least recently used blocks past the budget.
    fn insert(&mut self, prompt: &[u32], kv: &KvCache<B>) {
        self.clock += 1;
        let mut parent = None;
        for (i, tokens) in prompt.chunks_exact(PREFIX_BLOCK).enumerate() {
            let key = block_key(parent, tokens);
            match self.blocks.get_mut(&key) {
                Some(b) if b.parent == parent && b.tokens == tokens => b.used = self.clock,
                Some(_) => return, // a hash collision: keep what is there
                None => {
                    let block = PrefixBlock {
                        parent,
                        tokens: tokens.to_vec(),
                        kv: kv.positions(i * PREFIX_BLOCK, PREFIX_BLOCK),
                        used: self.clock,
                    };
                    self.blocks.insert(key, block);
                }
            }
            parent = Some(key);
        }
        while self.blocks.len() > self.budget_blocks {
            let oldest = *self.blocks.iter().min_by_key(|(_, b)| b.used).map(|(k, _)| k).expect("blocks");
            self.blocks.remove(&oldest);
        }
    }
}

struct Active<'m, B: DecodeOps> {
    id: u64,
    state: SampleState<B>,
    stops: Option<TextStops<'m>>,
    /// First cache position holding this request's keys.
    start: usize,
    /// Position id of the next token its rows feed.
    next_pos: usize,
    t_start: Instant,
    prefill_ms: f64,
    /// Prompt tokens whose keys/values came from the prefix cache.
    reused: usize,
}

impl<B: DecodeOps> Active<'_, B> {
    fn finish(self) -> GenerationOutput {
        let total = self.t_start.elapsed().as_secs_f64() * 1e3;
        let decode_ms = total - self.prefill_ms;
        let rows = self.state.rows();
        let steps = self.state.step.saturating_sub(1);
        let stats = GenerationStats {
            prompt_tokens: self.state.t0 * rows,
            prefill_ms: self.prefill_ms,
            decode_ms,
            decode_tokens_per_s: if decode_ms > 0.0 { (steps * rows) as f64 / (decode_ms / 1e3) } else { 0.0 },
            cached_prompt_tokens: self.reused,
            ..Default::default()
        };
        self.state.into_output(stats)
    }
}

/// A running batch of requests over one model.
pub struct Engine<'m, B: DecodeOps> {
    model: &'m Decoder<B>,
    capacity: usize,
    cache: Option<KvCache<B>>,
    active: Vec<Active<'m, B>>,
    grammar: Option<std::sync::Arc<demiurgic_sampling::GrammarCompiler>>,
    prefix: Option<PrefixCache<B>>,
}

impl<'m, B: DecodeOps> Engine<'m, B> {
    /// An engine whose shared cache holds `capacity` positions (at most the model's context): a
    /// request's prompt + new tokens must fit in it.
    pub fn new(model: &'m Decoder<B>, capacity: usize) -> Result<Self> {
        let ctx = model.config.max_position_embeddings;
        if capacity == 0 || capacity > ctx {
            return Err(ModelError::Input(format!(
                "engine cache size {capacity} must be between 1 and the model's context ({ctx})"
            )));
        }
        Ok(Self { model, capacity, cache: None, active: vec![], grammar: None, prefix: None })
    }

    /// Keep prompts' keys and values after their prefill (in blocks of [`PREFIX_BLOCK`]
    /// positions, shared between prompts), up to `positions` positions in all, and start later
    /// requests that share a prefix of at least [`PREFIX_MIN`] tokens from them (their stats'
    /// `cached_prompt_tokens` say how many). Under one block keeps none.
    pub fn with_prefix_cache(mut self, positions: usize) -> Self {
        let budget_blocks = positions / PREFIX_BLOCK;
        self.prefix = (budget_blocks > 0).then(|| PrefixCache { blocks: Default::default(), budget_blocks, clock: 0 });
        self
    }

    /// Let requests carry a `constraint` (structured generation) compiled with this tokenizer's
    /// compiler ([`crate::load::TextTokenizer::grammar_compiler`]).
    pub fn with_grammar(mut self, grammar: std::sync::Arc<demiurgic_sampling::GrammarCompiler>) -> Self {
        self.grammar = Some(grammar);
        self
    }

    /// [`Self::with_grammar`] on a running engine.
    pub fn set_grammar(&mut self, grammar: std::sync::Arc<demiurgic_sampling::GrammarCompiler>) {
        self.grammar = Some(grammar);
    }

    /// Whether a grammar compiler is set.
    pub fn has_grammar(&self) -> bool {
        self.grammar.is_some()
    }

    /// Rows running now.
    pub fn rows(&self) -> usize {
        self.active.iter().map(|a| a.state.rows()).sum()
    }

    /// Positions the shared cache holds now (None while idle).
    pub fn cache_size(&self) -> Option<usize> {
        self.cache.as_ref().map(KvCache::capacity)
    }

    pub fn is_idle(&self) -> bool {
        self.active.is_empty()
    }

    /// Start request `id` (one prompt, `config.num_return_sequences` rows): validate, prefill,
    /// draw the first token of each row. The returned step holds those tokens (and the output if
    /// the request is already done); otherwise the request runs in the following [`Self::step`]s.
    pub fn add(
        &mut self,
        id: u64,
        prompt: Vec<u32>,
        config: &GenerationConfig,
        stops: Option<TextStops<'m>>,
    ) -> Result<EngineStep> {
        let mut steps = self.add_shared(prompt, vec![(id, config.clone(), stops)])?;
        Ok(steps.remove(0))
    }

    /// Start several requests on one prompt (e.g. independent samples of it, each with its own
    /// seed): the prompt is prefilled once and its cache row copied to every request's rows; each
    /// request then runs and leaves the batch on its own, exactly as if added alone with
    /// [`Self::add`]. One step per request, in order.
    pub fn add_shared(
        &mut self,
        prompt: Vec<u32>,
        requests: Vec<(u64, GenerationConfig, Option<TextStops<'m>>)>,
    ) -> Result<Vec<EngineStep>> {
        let mut preps = Vec::with_capacity(requests.len());
        for (_, config, _) in &requests {
            config.validate()?;
            // the engine advances every request one token per step: greedy and sampling only
            let refused = if config.num_beams > 1 {
                Some(("num_beams", "beam search is not run by the batching engine"))
            } else if config.prompt_lookup_num_tokens.is_some() {
                Some(("prompt_lookup_num_tokens", "speculative decoding is not run by the batching engine"))
            } else {
                None
            };
            if let Some((option, reason)) = refused {
                return Err(ModelError::Unsupported { strategy: "the batching engine", option, reason });
            }
            let n = config.num_return_sequences;
            let prep = prepare::<B>(&self.model.config, std::slice::from_ref(&prompt), config, n)?;
            if prep.t0 + prep.max_new > self.capacity {
                return Err(ModelError::Input(format!(
                    "prompt ({} tokens) + max_new_tokens ({}) exceed the server's cache of {} positions",
                    prep.t0, prep.max_new, self.capacity
                )));
            }
            preps.push(prep);
        }
        let Some(first) = preps.first() else { return Ok(vec![]) };
        let t0 = first.t0;
        let t_start = Instant::now();
        // prefill the prompt once (one row; every row of every request holds the same prompt),
        // from the prefix cache's keys/values of its longest cached prefix when there is one
        let ids = first.batch.tokens[0].clone();
        let looked = match self.prefix.as_mut() {
            Some(p) => p.lookup(self.model, &ids, t0)?,
            None => None,
        };
        let (mut tmp, reused) = match looked {
            Some((kv, n)) => (kv, n),
            None => (self.model.new_cache(1, t0)?, 0),
        };
        let input = StepInput {
            tokens: vec![ids[reused..].to_vec()],
            positions: vec![first.batch.positions[0][reused..].to_vec()],
            key_valid: first.batch.mask[..1].to_vec(),
        };
        let raw = self.model.forward_last(&input, Some(&mut tmp))?;
        if let Some(p) = self.prefix.as_mut() {
            p.insert(&ids, &tmp);
        }
        let mut steps = vec![];
        let mut joining = vec![];
        for ((id, config, mut stops), prep) in requests.into_iter().zip(&preps) {
            let n = config.num_return_sequences;
            let mut state = SampleState::<B>::new(&config, prep, None, None, self.grammar.as_deref())?;
            let tokens = state.advance(raw.clone().repeat_dim(0, n), stops.as_mut(), None)?;
            let logprobs = state.last_logprobs(&tokens);
            let prefill_ms = t_start.elapsed().as_secs_f64() * 1e3;
            let a = Active { id, state, stops, start: 0, next_pos: t0, t_start, prefill_ms, reused };
            if a.state.done() {
                steps.push(EngineStep { id, tokens, logprobs, output: Some(a.finish()) });
            } else {
                steps.push(EngineStep { id, tokens, logprobs, output: None });
                joining.push(a);
            }
        }
        let rows: usize = joining.iter().map(|a| a.state.rows()).sum();
        if rows == 0 {
            return Ok(steps);
        }
        tmp.reorder(&vec![0; rows])?;
        match self.cache.as_mut() {
            None => {
                let cap = self.sized(t0 + 1);
                self.cache = Some(KvCache::from_prefix(&self.model.config, &tmp, t0, cap)?);
            }
            Some(cache) => {
                let len = cache.len();
                let cap = (self.capacity).min((len.max(t0) + 1).next_power_of_two().max(64));
                cache.grow(cap)?;
                if len < t0 {
                    // right-align the running rows so the new prompt fits before the end
                    let d = t0 - len;
                    cache.shift(0, d)?;
                    for r in &mut self.active {
                        r.start += d;
                    }
                }
                cache.append_rows(&tmp, t0)?;
            }
        }
        let start = self.cache.as_ref().map_or(0, |c| c.len() - t0);
        for mut a in joining {
            a.start = start;
            self.active.push(a);
        }
        Ok(steps)
    }

    /// A cache size for `need` positions: a power of two (at least 64), at most the engine's limit.
    fn sized(&self, need: usize) -> usize {
        need.next_power_of_two().max(64).min(self.capacity)
    }

    /// Make sure `extra` more positions fit after the cache's end, shifting every row left over
    /// the positions no row uses.
    fn make_room(&mut self, extra: usize) -> Result<()> {
        let Some(cache) = self.cache.as_mut() else { return Ok(()) };
        if cache.len() + extra <= cache.capacity() {
            return Ok(());
        }
        // grow (doubling, up to the engine's limit) before shifting rows
        let want = (cache.len() + extra).next_power_of_two().max(64).min(self.capacity);
        if want >= cache.len() + extra {
            return cache.grow(want);
        }
        let unused = self.active.iter().map(|a| a.start).min().unwrap_or(0);
        if unused > 0 {
            cache.shift(unused, 0)?;
            for a in &mut self.active {
                a.start -= unused;
            }
        }
        cache.check_room(extra)
    }

    /// Drop request `id` (its client went away); its rows leave the batch.
    pub fn cancel(&mut self, id: u64) -> Result<()> {
        let keep: Vec<bool> = self.active.iter().map(|a| a.id != id).collect();
        self.retain(&keep)?;
        Ok(())
    }

    /// Keep the requests flagged true (and their cache rows).
    fn retain(&mut self, keep: &[bool]) -> Result<Vec<Active<'m, B>>> {
        if keep.iter().all(|&k| k) {
            return Ok(vec![]);
        }
        let mut rows = vec![];
        let mut r = 0;
        for (a, &k) in self.active.iter().zip(keep) {
            let n = a.state.rows();
            if k {
                rows.extend(r..r + n);
            }
            r += n;
        }
        let mut gone = vec![];
        let mut kept = vec![];
        for (a, &k) in std::mem::take(&mut self.active).into_iter().zip(keep) {
            if k {
                kept.push(a);
            } else {
                gone.push(a);
            }
        }
        self.active = kept;
        if rows.is_empty() {
            self.cache = None;
        } else if let Some(c) = self.cache.as_mut() {
            c.reorder(&rows)?;
        }
        Ok(gone)
    }

    /// One decode step for every running row.
    pub fn step(&mut self) -> Result<Vec<EngineStep>> {
        if self.active.is_empty() {
            return Ok(vec![]);
        }
        self.make_room(1)?;
        let cache = self.cache.as_mut().expect("rows run on a cache");
        let len = cache.len();
        let mut input = StepInput { tokens: vec![], positions: vec![], key_valid: vec![] };
        for a in &self.active {
            let valid: Vec<bool> = (0..=len).map(|p| p >= a.start).collect();
            for t in a.state.last_tokens() {
                input.tokens.push(vec![t]);
                input.positions.push(vec![a.next_pos]);
                input.key_valid.push(valid.clone());
            }
        }
        let raw = self.model.forward_last(&input, Some(cache))?;
        // each request draws from its own rows with its own processors and generator: on a host
        // backend the requests' sampling steps run in parallel (a 262k vocabulary makes them a
        // large part of a step); the results are the same in any order
        let starts: Vec<usize> = self
            .active
            .iter()
            .scan(0, |r, a| {
                let s = *r;
                *r += a.state.rows();
                Some(s)
            })
            .collect();
        let advance = |(a, &r): (&mut Active<'m, B>, &usize)| -> Result<EngineStep> {
            let rows = raw.clone().slice(s![r..r + a.state.rows(), ..]);
            let tokens = a.state.advance(rows, a.stops.as_mut(), None)?;
            let logprobs = a.state.last_logprobs(&tokens);
            a.next_pos += 1;
            Ok(EngineStep { id: a.id, tokens, logprobs, output: None })
        };
        let mut out: Vec<EngineStep> = if B::host_weights() && self.active.len() > 1 {
            use rayon::prelude::*;
            self.active.par_iter_mut().zip(&starts).map(advance).collect::<Result<_>>()?
        } else {
            self.active.iter_mut().zip(&starts).map(advance).collect::<Result<_>>()?
        };
        let keep: Vec<bool> = self.active.iter().map(|a| !a.state.done()).collect();
        for a in self.retain(&keep)? {
            let id = a.id;
            if let Some(s) = out.iter_mut().find(|s| s.id == id) {
                s.output = Some(a.finish());
            }
        }
        Ok(out)
    }
}
