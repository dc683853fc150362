//! Ragged batches: left padding, attention masks and position ids derived from the mask,
//! exactly as transformers does (`position_ids = cumsum(mask) - 1`, padding positions = 1).
use crate::error::{ModelError, Result};

/// A left-padded batch of prompts (host data).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub tokens: Vec<Vec<u32>>,      // [batch, seq]
    pub mask: Vec<Vec<bool>>,       // [batch, seq], true = real token
    pub positions: Vec<Vec<usize>>, // [batch, seq]
}

/// Position ids from an attention mask (transformers' convention).
pub fn positions_from_mask(mask: &[bool]) -> Vec<usize> {
    let mut seen = 0usize;
    mask.iter()
        .map(|&m| {
            if m {
                seen += 1;
                seen - 1
            } else {
                1
            }
        })
        .collect()
}

impl Batch {
    /// Left-pad `prompts` with `pad_id` to the longest one.
    pub fn left_padded(prompts: &[Vec<u32>], pad_id: u32) -> Result<Self> {
        if prompts.is_empty() {
            return Err(ModelError::Input("no prompt given: the batch is empty".into()));
        }
        if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
            return Err(ModelError::Input(format!("prompt {i} is empty: at least one token is needed")));
        }
        let t = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let mut tokens = Vec::with_capacity(prompts.len());
        let mut mask = Vec::with_capacity(prompts.len());
        for p in prompts {
            let pad = t - p.len();
            let mut row = vec![pad_id; pad];
            row.extend_from_slice(p);
            tokens.push(row);
            let mut m = vec![false; pad];
            m.extend(std::iter::repeat_n(true, p.len()));
            mask.push(m);
        }
        let positions = mask.iter().map(|m| positions_from_mask(m)).collect();
        Ok(Self { tokens, mask, positions })
    }

    /// Build from explicit ids and mask (as a transformers caller would pass them).
    pub fn from_ids_and_mask(tokens: Vec<Vec<u32>>, mask: Vec<Vec<bool>>) -> Result<Self> {
        if tokens.is_empty() || tokens.len() != mask.len() {
            return Err(ModelError::Input("tokens and mask must have the same, non-zero number of rows".into()));
        }
        let t = tokens[0].len();
        for (i, (r, m)) in tokens.iter().zip(&mask).enumerate() {
            if r.len() != t || m.len() != t {
                return Err(ModelError::Input(format!("row {i} has a different length than row 0 ({t})")));
            }
            if !m.iter().any(|&x| x) {
                return Err(ModelError::Input(format!("row {i} has no real token in its attention mask")));
            }
        }
        let positions = mask.iter().map(|m| positions_from_mask(m)).collect();
        Ok(Self { tokens, mask, positions })
    }

    pub fn batch_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn seq_len(&self) -> usize {
        self.tokens.first().map_or(0, Vec::len)
    }

    pub fn has_padding(&self) -> bool {
        self.mask.iter().any(|m| m.iter().any(|&x| !x))
    }
}

/// Attention mask for one forward call, `true` = masked out, flattened as
/// `[batch, kv_heads, n_rep * seq, keys]` (query rows of the heads sharing a K/V head stacked).
///
/// `key_valid[b]` covers every key (cached + new, length `keys`); the new queries sit at key
/// slots `keys - seq ..`. A query sees keys at or before its slot that are real tokens; a padding
/// query sees itself only, so no row is fully masked (which would give NaN).
/// With a sliding `window`, a query at slot `s` also sees no key at or before `s - window`.
/// Returns `None` when nothing needs masking (one new token per row, no padding, no key
/// outside the window).
pub fn attention_mask_data(
    key_valid: &[Vec<bool>],
    seq: usize,
    kv_heads: usize,
    n_rep: usize,
    window: Option<usize>,
) -> Option<Vec<bool>> {
    let keys = key_valid.first().map_or(0, Vec::len);
    let any_pad = key_valid.iter().any(|r| r.iter().any(|&v| !v));
    if seq == 1 && !any_pad && window.is_none_or(|w| keys <= w) {
        return None;
    }
    let past = keys - seq;
    let mut out = Vec::with_capacity(key_valid.len() * kv_heads * n_rep * seq * keys);
    for row in key_valid {
        let mut block = Vec::with_capacity(seq * keys);
        for t in 0..seq {
            let slot = past + t;
            let lo = window.map_or(0, |w| (slot + 1).saturating_sub(w));
            for k in 0..keys {
                let allowed = k <= slot && k >= lo && (row[k] || k == slot);
                block.push(!allowed);
            }
        }
        for _ in 0..kv_heads * n_rep {
            out.extend_from_slice(&block);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_padding_mask_and_positions() {
        let b = Batch::left_padded(&[vec![5, 6, 7], vec![9]], 0).unwrap();
        assert_eq!(b.tokens, vec![vec![5, 6, 7], vec![0, 0, 9]]);
        assert_eq!(b.mask, vec![vec![true; 3], vec![false, false, true]]);
        assert_eq!(b.positions, vec![vec![0, 1, 2], vec![1, 1, 0]]);
        assert!(Batch::left_padded(&[vec![]], 0).is_err());
        assert!(Batch::left_padded(&[], 0).is_err());
    }

    #[test]
    fn causal_and_padding_mask() {
        // one row: pad, real, real; 1 kv head, 1 rep
        let m = attention_mask_data(&[vec![false, true, true]], 3, 1, 1, None).unwrap();
        #[rustfmt::skip]
        let want = vec![
            false, true, true,   // pad query sees itself
            true, false, true,   // real query 1 sees itself only (pad hidden)
            true, false, false,
        ];
        assert_eq!(m, want);
        // decode step without padding needs no mask
        assert!(attention_mask_data(&[vec![true, true]], 1, 2, 3, None).is_none());
        // heads repeat the block
        let m = attention_mask_data(&[vec![true, true]], 2, 2, 1, None).unwrap();
        assert_eq!(m.len(), 2 * 2 * 2);
        assert_eq!(&m[0..4], &m[4..8]);
        // a window of 2 hides the first of three keys from the last query
        let m = attention_mask_data(&[vec![true; 3]], 1, 1, 1, Some(2)).unwrap();
        assert_eq!(m, vec![true, false, false]);
        assert!(attention_mask_data(&[vec![true; 2]], 1, 1, 1, Some(2)).is_none());
    }
}
