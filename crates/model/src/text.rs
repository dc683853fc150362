//! Text out of token ids: the incremental detokenizer ([`StreamDecoder`]), stop strings checked
//! as tokens come ([`TextStops`]), the held-back streaming length ([`safe_len`]) and a finished
//! row's text ([`row_text`]). The CLI, the server, chat and eval use these; the strategies use
//! [`TextStops`].
use demiurgic_sampling::{first_stop, FinishReason};

use crate::error::Result;
use crate::load::TextTokenizer;

/// Incremental detokenizer (candle's `TokenOutputStream`): each new token decodes only a short
/// window (the tokens since the last emitted text), never the whole sequence, and text is
/// yielded only once it is complete UTF-8, so a character split over tokens never comes out in
/// halves.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prev: usize,
    cur: usize,
    skip_special: bool,
}

impl StreamDecoder {
    /// Special tokens kept in the text (transformers' default `decode`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Special tokens left out of the text when `skip_special`.
    pub fn with_skip_special(skip_special: bool) -> Self {
        Self { skip_special, ..Self::default() }
    }

    /// Add a token; returns the text that became complete, if any.
    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> Result<Option<String>> {
        let before = if self.prev < self.cur {
            tok.decode_with(&self.ids[self.prev..self.cur], self.skip_special)?
        } else {
            String::new()
        };
        self.ids.push(id);
        let text = tok.decode_with(&self.ids[self.prev..], self.skip_special)?;
        if text.len() > before.len() && !text.ends_with('\u{FFFD}') && text.is_char_boundary(before.len()) {
            let new = text[before.len()..].to_string();
            self.prev = self.cur;
            self.cur = self.ids.len();
            Ok(Some(new))
        } else {
            Ok(None)
        }
    }
}

/// Stop strings checked incrementally per row: each step decodes the new token through a
/// [`StreamDecoder`] and looks for a stop string only in the text that could contain a new
/// match (the new piece plus the longest stop string's length before it).
pub struct TextStops<'a> {
    tok: &'a TextTokenizer,
    strings: Vec<String>,
    rows: Vec<(StreamDecoder, String)>,
    longest: usize,
}

impl<'a> TextStops<'a> {
    pub fn new(tok: &'a TextTokenizer, strings: Vec<String>) -> Self {
        let longest = strings.iter().map(String::len).max().unwrap_or(0);
        Self { tok, strings, rows: vec![], longest }
    }

    /// Feed row `row`'s new token; true when a stop string has appeared.
    pub fn push(&mut self, row: usize, id: u32) -> Result<bool> {
        if self.rows.len() <= row {
            self.rows.resize_with(row + 1, Self::fresh);
        }
        let (dec, tail) = &mut self.rows[row];
        Self::feed(self.tok, &self.strings, self.longest, dec, tail, id)
    }

    /// Whether row `row` followed by `id` would stop, leaving the row as it is (beam search
    /// checks every candidate continuation of a beam).
    pub fn probe(&self, row: usize, id: u32) -> Result<bool> {
        let (mut dec, mut tail) = self.rows.get(row).cloned().unwrap_or_else(Self::fresh);
        Self::feed(self.tok, &self.strings, self.longest, &mut dec, &mut tail, id)
    }

    /// Rows follow their sources: new row `i` continues old row `src[i]` (beams reordered).
    pub fn reorder(&mut self, src: &[usize]) {
        self.rows = src.iter().map(|&s| self.rows.get(s).cloned().unwrap_or_else(Self::fresh)).collect();
    }

    fn fresh() -> (StreamDecoder, String) {
        (StreamDecoder::with_skip_special(false), String::new())
    }

    fn feed(
        tok: &TextTokenizer,
        strings: &[String],
        longest: usize,
        dec: &mut StreamDecoder,
        tail: &mut String,
        id: u32,
    ) -> Result<bool> {
        let Some(piece) = dec.push(tok, id)? else { return Ok(false) };
        tail.push_str(&piece);
        let hit = strings.iter().any(|s| tail.contains(s.as_str()));
        // keep only what a future match could still start in
        if tail.len() > longest {
            let mut cut = tail.len() - longest;
            while !tail.is_char_boundary(cut) {
                cut -= 1;
            }
            tail.drain(..cut);
        }
        Ok(hit)
    }
}

/// How much of a streamed `text` may be sent: up to the first stop string, and never a tail
/// that could be the start of one.
pub fn safe_len(text: &str, stops: &[String]) -> usize {
    if let Some(at) = first_stop(stops, text) {
        return at;
    }
    let mut hold = 0;
    for s in stops {
        for k in (1..s.len()).rev() {
            if s.is_char_boundary(k) && text.ends_with(&s[..k]) {
                hold = hold.max(k);
                break;
            }
        }
    }
    text.len() - hold
}

/// A streamed row's text with its stop strings cut, as `row_text` cuts the finished row: text
/// that could still begin a stop string is held back until it cannot; the row's final text says
/// what is left to print. The CLI, chat and the server's streams all print through it.
pub struct StopCut {
    stops: Vec<String>,
    text: String,
    sent: usize,
}

impl StopCut {
    /// `stops`: the strings to cut (none: everything is printed as it comes).
    pub fn new(stops: &[String]) -> Self {
        Self { stops: stops.to_vec(), text: String::new(), sent: 0 }
    }

    /// Take a decoded piece; returns the text that may be printed now.
    pub fn push(&mut self, piece: &str) -> Option<String> {
        self.push_unless(piece, |_| false)
    }

    /// [`Self::push`], holding everything back while `hold` says so of the text so far (the
    /// server holds what may still be a tool call).
    pub fn push_unless(&mut self, piece: &str, hold: impl FnOnce(&str) -> bool) -> Option<String> {
        self.text.push_str(piece);
        if hold(&self.text) {
            return None;
        }
        let safe = safe_len(&self.text, &self.stops);
        if safe > self.sent && self.text.is_char_boundary(safe) {
            let out = self.text[self.sent..safe].to_string();
            self.sent = safe;
            Some(out)
        } else {
            None
        }
    }

    /// What is left to print of the row's final text.
    pub fn finish(&self, final_text: &str) -> String {
        match final_text.get(self.sent..) {
            Some(rest) if final_text.starts_with(&self.text[..self.sent]) => rest.to_string(),
            _ => String::new(),
        }
    }
}

/// The text of a finished row (its generated `ids`, how it finished): special tokens skipped
/// when `skip_special`, cut before the stop string that ended it.
pub fn row_text(
    t: &TextTokenizer,
    ids: &[u32],
    finish: FinishReason,
    stops: &[String],
    skip_special: bool,
) -> Result<String> {
    let mut text = t.decode_with(ids, skip_special)?;
    if finish == FinishReason::Stop {
        if let Some(at) = first_stop(stops, &text) {
            text.truncate(at);
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_cut_holds_back_what_may_start_a_stop_string() {
        let mut c = StopCut::new(&["blue".to_string()]);
        let mut shown = String::new();
        for piece in ["red", ", b", "lu", "e sky"] {
            shown.extend(c.push(piece));
        }
        assert_eq!(shown, "red, ");
        shown += &c.finish("red, ");
        assert_eq!(shown, "red, ", "the stop string is cut");
        // a held-back start that was not a stop string is printed in the end
        let mut c = StopCut::new(&["blue".to_string()]);
        let mut shown: String = ["red, b"].iter().filter_map(|p| c.push(p)).collect();
        shown += &c.finish("red, b");
        assert_eq!(shown, "red, b");
        // nothing to cut: printed as it comes
        let mut c = StopCut::new(&[]);
        assert_eq!(c.push("red, blue").as_deref(), Some("red, blue"));
        assert_eq!(c.finish("red, blue"), "");
        // held while the predicate says so, then all of it at once
        let mut c = StopCut::new(&[]);
        assert_eq!(c.push_unless(" {", |t| t.trim_start().starts_with('{')), None);
        assert_eq!(c.finish(" {\"a\": 1}"), " {\"a\": 1}");
    }

    #[test]
    fn safe_len_holds_back_a_possible_stop_string_start() {
        let s = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(safe_len("hello", &s), 5);
        assert_eq!(safe_len("hello\n", &s), 5);
        assert_eq!(safe_len("hello E", &s), 6);
        assert_eq!(safe_len("hello EN", &s), 6);
        assert_eq!(safe_len("hello END more", &s), 6);
        assert_eq!(safe_len("a\n\nb", &s), 1);
        assert_eq!(safe_len("abc", &[]), 3);
    }
}
