//! One lexical pass over a query string, so the hot path rarely parses.
//!
//! [`for_each_token`] knows just enough of PostgreSQL's lexical grammar (comments,
//! string and dollar quoting, quoted identifiers, numbers, operators). On
//! it, [`scan`] computes the shape key (literals and comments removed: the
//! parse-cache key), decides conservatively whether any statement could
//! change session state (only then is the exact text parsed for its
//! effects) and notes `pgpilot:` hints in comments; [`exact_key`] computes
//! the result-cache key (literals kept); [`cache_hint`] reads the options
//! of a `pgpilot:cache` comment.

mod hints;
mod tokens;

pub use hints::{cache_hint, CacheHint, RouteHint, MAX_TAGS, MAX_TAG_LEN};
pub use tokens::{
    dollar_quote_end, for_each_token, skip_block_comment, skip_quoted, skip_string, Token,
    TokenKind,
};
use tokens::{tokenize, TokenSink};

/// First words of statements that may change session state.
const START_WORDS: &[&[u8]] = &[
    b"set", b"reset", b"discard", b"listen", b"prepare", b"declare", b"load",
];

/// Words that may change session state wherever they appear.
const ANYWHERE_WORDS: &[&[u8]] = &[
    b"temp",
    b"temporary",
    b"set_config",
    b"pg_advisory_lock",
    b"pg_advisory_lock_shared",
    b"pg_try_advisory_lock",
    b"pg_try_advisory_lock_shared",
];

/// What one lexical pass over a query string found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Hash of the text with comments, white space and literal values
    /// (strings, numbers, `$n`) removed and words lower-cased: texts that
    /// differ only in those share a key, and a classification. Two kinds
    /// of string keep more than "a literal was here", because facts
    /// computed once per shape depend on them: a string naming the current
    /// time (see [`mentions_current_time`]) hashes apart from other
    /// strings, and `E'…'` strings with backslash escapes, `U&'…'` strings
    /// and `UESCAPE` characters hash verbatim (their decoded value is not
    /// their text).
    pub key: u128,
    /// False only when no statement can outlive its transaction's effects
    /// (no SET/RESET/DISCARD/LISTEN/PREPARE/DECLARE/LOAD statement, no temp
    /// object, no session-level advisory lock or `set_config`).
    pub may_affect_session: bool,
    /// A `pgpilot:` routing hint found in a comment.
    pub hint: RouteHint,
    /// A comment holds `pgpilot:cache` or `pgpilot:nocache`: call
    /// [`cache_hint`] for its options.
    pub cache_hint: bool,
}

/// Marker hashed in place of a literal value.
const LITERAL: u8 = 0x01;
/// Marker hashed in place of a string that names the current time.
const LITERAL_TIME: u8 = 0x02;
/// Marker hashed before a string kept verbatim in the shape key.
const LITERAL_VERBATIM: u8 = 0x03;

/// Two independent FNV-1a-style streams: a 128-bit key, so that distinct
/// texts do not collide in practice. Not collision-resistant against a
/// client that crafts texts on purpose.
struct KeyHasher(u64, u64);

impl KeyHasher {
    fn new() -> KeyHasher {
        KeyHasher(0xcbf2_9ce4_8422_2325, 0x6c62_272e_07bb_0142)
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        self.1 = (self.1 ^ u64::from(b))
            .wrapping_mul(0x0000_0100_0000_0233)
            .rotate_left(5);
    }

    fn bytes(&mut self, s: &[u8]) {
        s.iter().for_each(|&c| self.byte(c));
    }

    fn lower(&mut self, s: &[u8]) {
        s.iter().for_each(|&c| self.byte(c.to_ascii_lowercase()));
    }

    /// A length prefix (LEB128), so that adjacent variable-length parts
    /// cannot trade bytes.
    fn len(&mut self, mut n: usize) {
        while n >= 0x80 {
            self.byte((n & 0x7f) as u8 | 0x80);
            n >>= 7;
        }
        self.byte(n as u8);
    }

    fn finish(&self) -> u128 {
        (u128::from(self.0) << 64) | u128::from(self.1)
    }
}

/// One pass over `sql`: shape key, session-effect pre-check, hints.
pub fn scan(sql: &str) -> Scan {
    let mut shape = Shape::new(sql.as_bytes());
    tokenize(sql.as_bytes(), &mut shape);
    shape.finish()
}

/// [`scan`] and [`exact_key`] of `sql` in one pass over it (a simple query
/// the result cache looks at needs both, and most of the cost is the
/// tokenizing).
pub fn scan_with_exact_key(sql: &str) -> (Scan, u128) {
    let b = sql.as_bytes();
    let mut both = Both {
        shape: Shape::new(b),
        exact: Exact::new(b),
    };
    tokenize(b, &mut both);
    (both.shape.finish(), both.exact.h.finish())
}

/// Feeds every token to both hashers.
struct Both<'a> {
    shape: Shape<'a>,
    exact: Exact<'a>,
}

impl TokenSink for Both<'_> {
    #[inline(always)]
    fn token(&mut self, t: Token) {
        self.shape.token(t);
        self.exact.token(t);
    }
}

/// [`scan`]'s state between tokens.
struct Shape<'a> {
    /// The text being scanned.
    b: &'a [u8],
    h: KeyHasher,
    out: Scan,
    /// The next token starts a statement.
    at_start: bool,
    /// The previous token was `UESCAPE`.
    after_uescape: bool,
    /// String continuation (`'no'` newline `'w'` is the string `'now'`).
    run: StringRun,
}

/// Tracks strings that continue one another across a newline, so a
/// shape key can tell whether the joined value names the current time
/// (each piece alone may not). Allocates only for a continuation.
#[derive(Default)]
struct StringRun {
    /// The previous token (comments aside) was a string: its text range.
    prev: Option<(usize, usize)>,
    /// Since the previous token: a newline outside block comments…
    gap_newline: bool,
    /// … and a block comment (which breaks a continuation).
    gap_block_comment: bool,
    /// The contents joined so far, while a continuation lasts.
    joined: Vec<u8>,
}

impl StringRun {
    /// For a string token `t` of `b`: the marker of the joined value when
    /// it continues the previous string.
    fn continued(&mut self, b: &[u8], t: &Token) -> Option<u8> {
        let text = &b[t.start..t.end];
        let continues = self.prev.is_some()
            && self.gap_newline
            && !self.gap_block_comment
            && text.first() == Some(&b'\'');
        if !continues {
            self.joined.clear();
            return None;
        }
        if self.joined.is_empty() {
            let (start, end) = self.prev.unwrap_or_default();
            self.joined
                .extend_from_slice(string_contents(&b[start..end]));
        }
        self.joined.extend_from_slice(string_contents(text));
        Some(time_marker(&self.joined))
    }

    /// Call after every token other than a comment.
    fn after(&mut self, t: &Token) {
        self.prev = (t.kind == TokenKind::String).then_some((t.start, t.end));
        self.gap_newline = false;
        self.gap_block_comment = false;
    }
}

/// A string token's text without its prefix and outer quotes.
fn string_contents(text: &[u8]) -> &[u8] {
    let quote = text.iter().position(|&c| c == b'\'').unwrap_or(0);
    let body = &text[quote..];
    let inner = body.strip_prefix(b"'").unwrap_or(body);
    inner.strip_suffix(b"'").unwrap_or(inner)
}

impl<'a> Shape<'a> {
    fn new(b: &'a [u8]) -> Shape<'a> {
        Shape {
            b,
            h: KeyHasher::new(),
            out: Scan {
                key: 0,
                may_affect_session: false,
                hint: RouteHint::None,
                cache_hint: false,
            },
            at_start: true,
            after_uescape: false,
            run: StringRun::default(),
        }
    }

    fn finish(mut self) -> Scan {
        self.out.key = self.h.finish();
        self.out
    }
}

impl TokenSink for Shape<'_> {
    #[inline(always)]
    fn token(&mut self, t: Token) {
        let (text, kind) = (&self.b[t.start..t.end], t.kind);
        self.run.gap_newline |= t.newline_before;
        if matches!(kind, TokenKind::LineComment | TokenKind::BlockComment) {
            hints::read_comment(text, &mut self.out.hint, &mut self.out.cache_hint);
            match kind {
                TokenKind::LineComment => self.run.gap_newline = true,
                _ => self.run.gap_block_comment = true,
            }
            return;
        }
        let continued = match kind {
            TokenKind::String => self.run.continued(self.b, &t),
            _ => None,
        };
        self.run.after(&t);
        let h = &mut self.h;
        match kind {
            TokenKind::LineComment | TokenKind::BlockComment => return,
            TokenKind::Semicolon => {
                h.byte(b';');
                self.at_start = true;
                return;
            }
            TokenKind::Word => {
                if (self.at_start && matches_any(text, START_WORDS))
                    || matches_any(text, ANYWHERE_WORDS)
                {
                    self.out.may_affect_session = true;
                }
                h.lower(text);
            }
            TokenKind::String => {
                shape_string(h, text, self.after_uescape);
                if let Some(marker) = continued {
                    h.byte(marker);
                }
            }
            TokenKind::DollarString => h.byte(time_marker(dollar_body(text))),
            TokenKind::Param | TokenKind::Number => h.byte(LITERAL),
            TokenKind::QuotedIdent | TokenKind::Operator | TokenKind::Punct => h.bytes(text),
        }
        self.after_uescape = kind == TokenKind::Word && text.eq_ignore_ascii_case(b"uescape");
        h.byte(b' ');
        self.at_start = false;
    }
}

/// See [`Scan::may_affect_session`].
pub fn may_affect_session(sql: &str) -> bool {
    scan(sql).may_affect_session
}

/// Hash of `sql` for a result cache: comments dropped, white space
/// normalized, keywords and unquoted identifiers lower-cased; quoted
/// identifiers and every literal (strings with their prefix, numbers,
/// dollar-quoted bodies, `$n` markers) kept verbatim, token boundaries
/// kept. Texts that differ only in comments, white space or keyword case
/// share a key; any other difference changes it (barring a 128-bit hash
/// collision). Parameter values are not part of the text: add them.
pub fn exact_key(sql: &str) -> u128 {
    let mut exact = Exact::new(sql.as_bytes());
    tokenize(sql.as_bytes(), &mut exact);
    exact.h.finish()
}

/// [`exact_key`]'s state between tokens.
struct Exact<'a> {
    /// The text being hashed.
    b: &'a [u8],
    h: KeyHasher,
    /// The previous token (comments aside) was a string constant.
    prev_string: bool,
    /// Since the previous token: a newline outside block comments…
    gap_newline: bool,
    /// … and a block comment.
    gap_block_comment: bool,
}

impl<'a> Exact<'a> {
    fn new(b: &'a [u8]) -> Exact<'a> {
        Exact {
            b,
            h: KeyHasher::new(),
            prev_string: false,
            gap_newline: false,
            gap_block_comment: false,
        }
    }
}

impl TokenSink for Exact<'_> {
    #[inline(always)]
    fn token(&mut self, t: Token) {
        let text = &self.b[t.start..t.end];
        self.gap_newline |= t.newline_before;
        match t.kind {
            TokenKind::LineComment => {
                self.gap_newline = true;
                return;
            }
            TokenKind::BlockComment => {
                self.gap_block_comment = true;
                return;
            }
            _ => {}
        }
        let h = &mut self.h;
        h.byte(t.kind as u8);
        h.len(text.len());
        match t.kind {
            TokenKind::Word => h.lower(text),
            TokenKind::String | TokenKind::QuotedIdent => {
                // `'a'` newline `'b'` is the one string `'ab'` (SQL's
                // continuation rule); `'a' 'b'` is an error.
                let continues = self.prev_string && self.gap_newline && !self.gap_block_comment;
                h.byte(u8::from(continues && text.first() == Some(&b'\'')));
                let quote = text.iter().position(|&c| c == b'\'' || c == b'"');
                let (prefix, rest) = text.split_at(quote.unwrap_or(0));
                h.lower(prefix);
                h.bytes(rest);
            }
            _ => h.bytes(text),
        }
        self.prev_string = t.kind == TokenKind::String;
        self.gap_newline = false;
        self.gap_block_comment = false;
    }
}

/// True when `value` (a string constant's text or a parameter value) has
/// one of PostgreSQL's special date/time inputs that mean "now" as a word:
/// `now`, `today`, `tomorrow`, `yesterday` (any case; a word is a maximal
/// run of ASCII letters, so `'today 10:00'` counts and `'snowman'` does
/// not). Such a value read as a date or time changes from one run to the
/// next, so a result computed from it must not be cached.
pub fn mentions_current_time(value: &[u8]) -> bool {
    const WORDS: [&[u8]; 4] = [b"now", b"today", b"tomorrow", b"yesterday"];
    value
        .split(|c| !c.is_ascii_alphabetic())
        .any(|word| WORDS.iter().any(|w| w.eq_ignore_ascii_case(word)))
}

/// Hashes a string constant for the shape key: its prefix, then a marker,
/// or its text when the decoded value may differ from the text.
fn shape_string(h: &mut KeyHasher, text: &[u8], after_uescape: bool) {
    let quote = text.iter().position(|&c| c == b'\'').unwrap_or(0);
    let (prefix, body) = text.split_at(quote);
    h.lower(prefix);
    let escapes = match prefix {
        [b'e' | b'E'] => body.contains(&b'\\'),
        [_, b'&'] => true,
        _ => after_uescape,
    };
    if escapes {
        h.byte(LITERAL_VERBATIM);
        h.len(body.len());
        h.bytes(body);
    } else {
        h.byte(time_marker(body));
    }
}

/// The body of a `$tag$…$tag$` string, without its tags.
fn dollar_body(text: &[u8]) -> &[u8] {
    let tag = text
        .iter()
        .skip(1)
        .position(|&c| c == b'$')
        .map_or(text.len(), |p| p + 2);
    let rest = text.get(tag..).unwrap_or_default();
    match rest.len().checked_sub(tag) {
        Some(n) if rest.get(n..) == text.get(..tag) => &rest[..n],
        _ => rest,
    }
}

fn time_marker(literal: &[u8]) -> u8 {
    if mentions_current_time(literal) {
        LITERAL_TIME
    } else {
        LITERAL
    }
}

fn matches_any(word: &[u8], list: &[&[u8]]) -> bool {
    list.iter().any(|w| w.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests;
