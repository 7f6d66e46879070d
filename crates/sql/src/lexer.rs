//! A conservative lexical pre-check that lets ordinary statements skip the
//! parser entirely.
//!
//! It tokenizes just enough of PostgreSQL's lexical grammar (comments,
//! string and dollar quoting, quoted identifiers) to find the first keyword
//! of each statement and every bare word. A `true` answer means "parse it";
//! `false` is only returned when no statement can change session state.

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

/// False only when no statement in `sql` can outlive its transaction's
/// effects (no SET/RESET/DISCARD/LISTEN/PREPARE/DECLARE/LOAD statement, no
/// temp object, no session-level advisory lock or `set_config`).
pub fn may_affect_session(sql: &str) -> bool {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut at_start = true;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => i = skip_line(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i),
            b'\'' => {
                i = skip_string(b, i, is_escape_prefix(b, i));
                at_start = false;
            }
            b'"' => {
                i = skip_quoted(b, i, b'"');
                at_start = false;
            }
            b'$' => {
                i = skip_dollar(b, i);
                at_start = false;
            }
            b';' => {
                i += 1;
                at_start = true;
            }
            c if is_ident_start(c) => {
                let end = word_end(b, i);
                let word = &sql[i..end];
                if (at_start && matches_any(word, START_WORDS)) || matches_any(word, ANYWHERE_WORDS)
                {
                    return true;
                }
                at_start = false;
                i = end;
            }
            _ => {
                i += 1;
                at_start = false;
            }
        }
    }
    false
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

fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
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

fn skip_string(b: &[u8], mut i: usize, backslash: bool) -> usize {
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

fn skip_quoted(b: &[u8], mut i: usize, q: u8) -> usize {
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
    while j < b.len() && b[j] != b'$' && is_ident_char(b[j]) {
        j += 1;
    }
    if b.get(j) != Some(&b'$') {
        return i + 1;
    }
    let tag = &b[i..=j];
    let body = j + 1;
    b[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(b.len(), |p| body + p + tag.len())
}

#[cfg(test)]
mod tests {
    use super::may_affect_session as m;

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
