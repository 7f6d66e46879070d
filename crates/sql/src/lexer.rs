//! One lexical pass over a query string, so the hot path rarely parses.
//!
//! It tokenizes just enough of PostgreSQL's lexical grammar (comments,
//! string and dollar quoting, quoted identifiers, numbers) to compute a
//! normalized key (literals and comments removed: the parse-cache key), to
//! decide conservatively whether any statement could change session state
//! (only then is the exact text parsed for its effects), and to read
//! `pgpilot:` hints out of comments.

/// First words of statements that may change session state.
const START_WORDS: &[&str] = &[
    "set", "reset", "discard", "listen", "prepare", "declare", "load",
];

/// Words that may change session state wherever they appear.
const ANYWHERE_WORDS: &[&str] = &[
    "temp",
    "temporary",
    "set_config",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// A routing hint from a `/* pgpilot:primary */` or `/* pgpilot:replica */` comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteHint {
    #[default]
    None,
    Primary,
    Replica,
}

/// What one lexical pass over a query string found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Hash of the text with comments, white space and literal values
    /// (strings, numbers, `$n`) removed and words lower-cased: texts that
    /// differ only in those share a key, and a classification.
    pub key: u128,
    /// False only when no statement can outlive its transaction's effects
    /// (no SET/RESET/DISCARD/LISTEN/PREPARE/DECLARE/LOAD statement, no temp
    /// object, no session-level advisory lock or `set_config`).
    pub may_affect_session: bool,
    /// A `pgpilot:` routing hint found in a comment.
    pub hint: RouteHint,
}

/// Marker hashed in place of a literal value.
const LITERAL: u8 = 0x01;

/// Two independent FNV-1a-style streams: a 128-bit key, so that distinct
/// shapes do not collide in practice.
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

    fn finish(&self) -> u128 {
        (u128::from(self.0) << 64) | u128::from(self.1)
    }
}

/// One pass over `sql`: normalized key, session-effect pre-check, hints.
pub fn scan(sql: &str) -> Scan {
    let b = sql.as_bytes();
    let mut h = KeyHasher::new();
    let mut out = Scan {
        key: 0,
        may_affect_session: false,
        hint: RouteHint::None,
    };
    let mut i = 0;
    let mut at_start = true;
    while i < b.len() {
        let start = i;
        match b[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = skip_line(b, i);
                read_hint(&b[start..i], &mut out.hint);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(b, i);
                read_hint(&b[start..i], &mut out.hint);
                continue;
            }
            b'\'' => {
                i = skip_string(b, i, is_escape_prefix(b, i));
                h.byte(LITERAL);
            }
            b'"' => {
                i = skip_quoted(b, i, b'"');
                b[start..i].iter().for_each(|&c| h.byte(c));
            }
            b'$' => {
                i = skip_dollar(b, i);
                h.byte(LITERAL);
            }
            b'0'..=b'9' => {
                i = number_end(b, i);
                h.byte(LITERAL);
            }
            b';' => {
                i += 1;
                h.byte(b';');
                at_start = true;
                continue;
            }
            c if is_ident_start(c) => {
                i = word_end(b, i);
                let word = &sql[start..i];
                if (at_start && matches_any(word, START_WORDS)) || matches_any(word, ANYWHERE_WORDS)
                {
                    out.may_affect_session = true;
                }
                word.bytes().for_each(|c| h.byte(c.to_ascii_lowercase()));
            }
            c => {
                i += 1;
                h.byte(c);
            }
        }
        h.byte(b' ');
        at_start = false;
    }
    out.key = h.finish();
    out
}

/// See [`Scan::may_affect_session`].
pub fn may_affect_session(sql: &str) -> bool {
    scan(sql).may_affect_session
}

fn read_hint(comment: &[u8], hint: &mut RouteHint) {
    let text = String::from_utf8_lossy(comment).to_ascii_lowercase();
    if text.contains("pgpilot:primary") {
        *hint = RouteHint::Primary;
    } else if text.contains("pgpilot:replica") {
        *hint = RouteHint::Replica;
    }
}

/// Digits, a decimal point, an exponent: a numeric literal.
fn number_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
        let exp_sign = matches!(b[i], b'e' | b'E') && matches!(b.get(i + 1), Some(b'+' | b'-'));
        i += if exp_sign { 2 } else { 1 };
    }
    i
}

fn matches_any(word: &str, list: &[&str]) -> bool {
    list.iter().any(|w| w.eq_ignore_ascii_case(word))
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn word_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ident_char(b[i]) {
        i += 1;
    }
    i
}

/// `E'...'` strings take backslash escapes.
fn is_escape_prefix(b: &[u8], quote: usize) -> bool {
    quote >= 1 && matches!(b[quote - 1], b'e' | b'E') && (quote < 2 || !is_ident_char(b[quote - 2]))
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
            depth -= 1;
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
/// `$1` parameters and `$tag$ ... $tag$` dollar-quoted strings.
fn skip_dollar(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    if b.get(j).is_some_and(|c| c.is_ascii_digit()) {
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        return j;
    }
    dollar_quote_end(b, i).unwrap_or(i + 1)
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

#[cfg(test)]
mod tests {
    use super::may_affect_session as m;
    use super::{scan, RouteHint};

    #[test]
    fn key_ignores_literals_comments_case_and_spacing() {
        let a = scan("SELECT abalance FROM pgbench_accounts WHERE aid = 17;");
        let b = scan("select  abalance from pgbench_accounts /* c */ where aid = 99123;");
        let c = scan("SELECT abalance FROM pgbench_accounts WHERE aid = 'x'");
        assert_eq!(a.key, b.key);
        assert_ne!(a.key, c.key, "the trailing ';' is a token");
        assert_ne!(scan("select a from t").key, scan("select b from t").key);
        assert_ne!(
            scan("select \"A\" from t").key,
            scan("select \"a\" from t").key
        );
        assert_eq!(scan("select 1.5e-3, $1").key, scan("select 7, $2").key);
    }

    #[test]
    fn hints_come_from_comments() {
        assert_eq!(
            scan("/* pgpilot:primary */ select 1").hint,
            RouteHint::Primary
        );
        assert_eq!(scan("select 1 -- pgpilot:replica").hint, RouteHint::Replica);
        assert_eq!(scan("select 'pgpilot:primary'").hint, RouteHint::None);
    }

    #[test]
    fn ordinary_statements_skip_the_parser() {
        assert!(!m("SELECT abalance FROM pgbench_accounts WHERE aid = 1"));
        assert!(!m(
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 2;"
        ));
        assert!(!m("BEGIN; INSERT INTO t VALUES ('set x'); COMMIT"));
        assert!(!m("select 'reset', \"set\" from t -- set\n"));
        assert!(!m("select $$ set temp $$, $tag$ discard $tag$, $1"));
        assert!(!m("select offset_col from t offset 5"));
    }

    #[test]
    fn session_changing_statements_are_flagged() {
        assert!(m("SET search_path TO a"));
        assert!(m("  /* hi */ set TimeZone = 'UTC'"));
        assert!(m("select 1; RESET ALL"));
        assert!(m("DISCARD ALL"));
        assert!(m("listen chan"));
        assert!(m("create TEMP table t (a int)"));
        assert!(m("select pg_advisory_lock(1)"));
        assert!(m("SELECT set_config('a.b', 'c', false)"));
        assert!(m("PREPARE p AS SELECT 1"));
        assert!(m("DECLARE c CURSOR WITH HOLD FOR SELECT 1"));
    }

    #[test]
    fn escapes_and_unterminated_input_do_not_panic() {
        assert!(!m(r"select E'\'set' from t"));
        assert!(!m("select 'abc"));
        for s in ["'", "\"", "$", "$a", "$a$", "/*", "--", "E'\\", "/* /* */"] {
            let _ = m(s);
        }
    }
}
