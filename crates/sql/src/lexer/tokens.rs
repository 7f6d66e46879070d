//! PostgreSQL's lexical grammar, as much of it as keys and hints need:
//! comments, the string forms (`'…'`, `E'…'`, `U&'…'`, `$tag$…$tag$`),
//! quoted identifiers, numbers, `$n` parameters and operator runs split
//! where the server's lexer (`src/backend/parser/scan.l`) splits them.
//!
//! [`for_each_token`] is the one scan loop; `scan`, `exact_key` and
//! `cache_hint` in the parent module each drive it.

/// What a [`Token`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `-- …` up to and including the newline.
    LineComment,
    /// `/* … */`, possibly nested.
    BlockComment,
    /// A string constant with its `E`, `B`, `X`, `N` or `U&` prefix.
    String,
    /// A `$tag$ … $tag$` string constant.
    DollarString,
    /// A `$1` parameter.
    Param,
    /// A numeric constant.
    Number,
    /// `"…"` or `U&"…"`.
    QuotedIdent,
    /// A keyword or an unquoted identifier.
    Word,
    /// A run of operator characters (`<=`, `||`, `->>`…).
    Operator,
    /// `;`.
    Semicolon,
    /// Anything else: `( ) [ ] , .`, `::`, `:=`, `..`, a stray `$`.
    Punct,
}

/// One token: `text[start..end]` of the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub start: usize,
    pub end: usize,
    /// White space between the previous token and this one held a newline
    /// (it matters for `'a'` newline `'b'`, which is the string `'ab'`).
    pub newline_before: bool,
}

/// Calls `f` with each token of `text`, in order: white space skipped,
/// comments included. Never panics; an unterminated quote or comment ends
/// at the end of the text.
pub fn for_each_token(text: &[u8], f: impl FnMut(Token)) {
    /// A closure as a sink (not inlined into each arm: fine off the hot path).
    struct Each<F>(F);
    impl<F: FnMut(Token)> TokenSink for Each<F> {
        fn token(&mut self, t: Token) {
            (self.0)(t)
        }
    }
    tokenize(text, &mut Each(f));
}

/// Receives tokens from [`tokenize`].
pub(crate) trait TokenSink {
    /// Mark it `#[inline(always)]` on the hot path: it is then inlined
    /// into each token arm, where the token's kind is a constant, so a
    /// `match` on the kind costs nothing and the whole scan dispatches once
    /// per token, as fast as a hand-written loop.
    fn token(&mut self, t: Token);
}

/// The one scan loop: feeds each token of `text` to `sink`.
#[inline(always)]
pub(crate) fn tokenize(text: &[u8], sink: &mut impl TokenSink) {
    use TokenKind as K;
    let b = text;
    let mut i = 0;
    let mut newline_before = false;
    while i < b.len() {
        let start = i;
        let nl = newline_before;
        let mut emit = |kind, end| {
            sink.token(Token {
                kind,
                start,
                end,
                newline_before: nl,
            });
            end
        };
        let next = b.get(i + 1).copied();
        // Every arm returns an index in start + 1 ..= b.len().
        i = match b[i] {
            b' ' | b'\t' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'\n' | b'\r' => {
                newline_before = true;
                i += 1;
                continue;
            }
            b'-' if next == Some(b'-') => emit(K::LineComment, skip_line(b, i)),
            b'/' if next == Some(b'*') => emit(K::BlockComment, skip_block_comment(b, i)),
            b'\'' => emit(K::String, skip_string(b, i, false)),
            b'"' => emit(K::QuotedIdent, skip_quoted(b, i, b'"')),
            b'0'..=b'9' => emit(K::Number, number_end(b, i)),
            b'.' if next.is_some_and(|c| c.is_ascii_digit()) => emit(K::Number, number_end(b, i)),
            b';' => emit(K::Semicolon, i + 1),
            c if is_ident_start(c) && !matches!(next, Some(b'\'' | b'&')) => {
                emit(K::Word, word_end(b, i))
            }
            c if is_op_char(c) => emit(K::Operator, operator_end(b, i)),
            b'(' | b')' | b',' | b'[' | b']' => emit(K::Punct, i + 1),
            b':' if matches!(next, Some(b':' | b'=')) => emit(K::Punct, i + 2),
            b'.' if next == Some(b'.') => emit(K::Punct, i + 2),
            c => {
                let (kind, end) = rare_token(b, i, c);
                emit(kind, end)
            }
        };
        newline_before = false;
    }
}

/// Tokens whose kind depends on more than their first byte.
fn rare_token(b: &[u8], i: usize, c: u8) -> (TokenKind, usize) {
    match c {
        b'$' => dollar(b, i),
        c if is_ident_start(c) => prefixed_string(b, i),
        _ => (TokenKind::Punct, i + 1),
    }
}

/// `$1`, `$tag$…$tag$`, or a stray `$`.
fn dollar(b: &[u8], i: usize) -> (TokenKind, usize) {
    if b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
        let end = b[i + 1..]
            .iter()
            .position(|c| !c.is_ascii_digit())
            .map_or(b.len(), |p| i + 1 + p);
        return (TokenKind::Param, end);
    }
    match dollar_quote_end(b, i) {
        Some(end) => (TokenKind::DollarString, end),
        None => (TokenKind::Punct, i + 1),
    }
}

/// A string whose prefix letter(s) start here: `E'…'`, `B'…'`, `X'…'`,
/// `N'…'`, `U&'…'`, the identifier `U&"…"`; or else a word.
fn prefixed_string(b: &[u8], i: usize) -> (TokenKind, usize) {
    match (b[i], b.get(i + 1), b.get(i + 2)) {
        (b'e' | b'E', Some(b'\''), _) => (TokenKind::String, skip_string(b, i + 1, true)),
        (b'b' | b'B' | b'x' | b'X' | b'n' | b'N', Some(b'\''), _) => {
            (TokenKind::String, skip_string(b, i + 1, false))
        }
        (b'u' | b'U', Some(b'&'), Some(b'\'')) => (TokenKind::String, skip_string(b, i + 2, false)),
        (b'u' | b'U', Some(b'&'), Some(b'"')) => {
            (TokenKind::QuotedIdent, skip_quoted(b, i + 2, b'"'))
        }
        _ => (TokenKind::Word, word_end(b, i)),
    }
}

/// PostgreSQL's `op_chars`.
fn is_op_char(c: u8) -> bool {
    matches!(
        c,
        b'~' | b'!'
            | b'@'
            | b'#'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'<'
            | b'>'
            | b'='
    )
}

/// End of the operator starting at `start`, as `scan.l` cuts it: before a
/// `--` or `/*` inside the run, and without trailing `+`/`-` unless the
/// operator holds one of `~ ! @ # ^ & | \` ? %` (so `=-1` is `=` then `-1`).
fn operator_end(b: &[u8], start: usize) -> usize {
    let mut end = start + 1;
    while end < b.len() && is_op_char(b[end]) {
        let next = b.get(end + 1);
        if (b[end] == b'-' && next == Some(&b'-')) || (b[end] == b'/' && next == Some(&b'*')) {
            break;
        }
        end += 1;
    }
    let run = &b[start..end];
    let plus_minus = |c: &u8| matches!(c, b'+' | b'-');
    if run.len() > 1 && run.last().is_some_and(plus_minus) {
        let keeps = |c: &u8| b"~!@#^&|`?%".contains(c);
        if !run[..run.len() - 1].iter().any(keeps) {
            while end > start + 1 && plus_minus(&b[end - 1]) {
                end -= 1;
            }
        }
    }
    end
}

/// Digits, a decimal point, an exponent: a numeric literal.
#[inline]
pub(crate) fn number_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
        let exp_sign = matches!(b[i], b'e' | b'E') && matches!(b.get(i + 1), Some(b'+' | b'-'));
        i += if exp_sign { 2 } else { 1 };
    }
    i.min(b.len())
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

#[inline]
fn word_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ident_char(b[i]) {
        i += 1;
    }
    i
}

fn skip_line(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| i + p + 1)
}

/// Index just past the (possibly nested) `/* … */` comment starting at `i`;
/// the end of `b` when it is unterminated.
pub fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth = depth.saturating_sub(1);
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Index just past the `'…'` string starting at `i` (`''` escapes; with
/// `backslash`, as in `E'…'`, a backslash escapes the next byte too).
pub fn skip_string(b: &[u8], mut i: usize, backslash: bool) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' if backslash => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// Index just past the token quoted with `q` starting at `i` (a doubled
/// `q` escapes it); the end of `b` when it is unterminated.
pub fn skip_quoted(b: &[u8], mut i: usize, q: u8) -> usize {
    i += 1;
    while i < b.len() {
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// Index just past the `$tag$ … $tag$` string starting at `i` (the end of
/// `b` when it is unterminated), or `None` when the `$` there opens no
/// dollar quote (a `$1` parameter, a lone `$`).
pub fn dollar_quote_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while j < b.len() && b[j] != b'$' && is_ident_char(b[j]) {
        j += 1;
    }
    if b.get(j) != Some(&b'$') {
        return None;
    }
    let tag = &b[i..=j];
    let body = j + 1;
    Some(
        b[body..]
            .windows(tag.len())
            .position(|w| w == tag)
            .map_or(b.len(), |p| body + p + tag.len()),
    )
}
