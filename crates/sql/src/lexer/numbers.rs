//! Skipping the lexer for a text that is the last one with other integers.
//!
//! A simple-protocol client re-sends one statement with new values inline
//! (`… WHERE id = 41`, then `… WHERE id = 42`): a new text each time, but the
//! same shape. When the new text equals the last scanned one outside that
//! text's integer literals, and has an integer in each of their places, it
//! lexes to the same tokens with other digits, and so has the same
//! [`super::Scan`]: the bytes before each literal are the same, so the lexer
//! reaches it in the same state; a run of digits is a number token whatever
//! its digits; and the byte after it is the same, so the token ends in the
//! same place (a digit-only number token is never followed by what
//! `number_end` would take: letters, digits, `.`, `_`). Comments, strings,
//! words and operators are compared byte for byte, and numbers hash as "a
//! literal was here" without their digits.

/// Where a scanned text's integer literals (number tokens of ASCII digits
/// only) are, as byte ranges, when reusing its scan is allowed.
#[derive(Debug, Default, Clone)]
pub struct NumberSpans {
    spans: Vec<(usize, usize)>,
    /// The scan may be reused: no statement in it may change session
    /// state (whose effects are read from the exact text, digits included).
    usable: bool,
    /// [`NumberSpans::rematch`]'s spans for the new text, kept for their capacity.
    scratch: Vec<(usize, usize)>,
}

impl NumberSpans {
    /// Forgets the spans: the next [`NumberSpans::rematch`] fails.
    pub fn clear(&mut self) {
        self.spans.clear();
        self.usable = false;
    }

    /// Starts noting the spans of a text about to be scanned.
    pub(crate) fn start(&mut self) {
        self.spans.clear();
        self.usable = true;
    }

    /// A number token of `b` at `start..end`; kept when it is digits only.
    #[inline]
    pub(crate) fn note(&mut self, b: &[u8], start: usize, end: usize) {
        if b[start..end].iter().all(u8::is_ascii_digit) {
            self.spans.push((start, end));
        }
    }

    /// The scan noted may not be reused (see `usable`).
    pub(crate) fn forbid(&mut self) {
        self.usable = false;
    }

    /// Whether `new` is `old` — the text these spans were noted from — with
    /// other digits in its integer literals, so that it has `old`'s scan.
    /// On success the spans describe `new`; on failure nothing changes.
    pub fn rematch(&mut self, old: &[u8], new: &[u8]) -> bool {
        if !self.usable {
            return false;
        }
        self.scratch.clear();
        let (mut i_old, mut i_new) = (0, 0);
        for &(start, end) in &self.spans {
            let Some(at) = same_run(old, i_old, start, new, i_new) else {
                return false;
            };
            let digits = new[at..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return false;
            }
            self.scratch.push((at, at + digits));
            (i_old, i_new) = (end, at + digits);
        }
        if old[i_old..] != new[i_new..] {
            return false;
        }
        std::mem::swap(&mut self.spans, &mut self.scratch);
        true
    }
}

/// Where `old[from..to]` ends in `new` when `new` has the same bytes at
/// `at`, else `None`.
fn same_run(old: &[u8], from: usize, to: usize, new: &[u8], at: usize) -> Option<usize> {
    let run = &old[from..to];
    let end = at.checked_add(run.len())?;
    (new.get(at..end)? == run).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::{scan, scan_noting_numbers};

    fn noted(sql: &str) -> NumberSpans {
        let mut n = NumberSpans::default();
        scan_noting_numbers(sql, &mut n);
        n
    }

    #[test]
    fn other_integers_match_and_move_the_spans() {
        let old = "SELECT abalance FROM pgbench_accounts WHERE aid = 12345 LIMIT 1;";
        let new = "SELECT abalance FROM pgbench_accounts WHERE aid = 7 LIMIT 100;";
        let mut n = noted(old);
        assert!(n.rematch(old.as_bytes(), new.as_bytes()));
        assert_eq!(n.spans, noted(new).spans);
        assert_eq!(scan(old), scan(new));
        // And again from the new text.
        let third = "SELECT abalance FROM pgbench_accounts WHERE aid = 99999999 LIMIT 2;";
        assert!(n.rematch(new.as_bytes(), third.as_bytes()));
    }

    #[test]
    fn anything_but_other_digits_fails() {
        let old = "SELECT * FROM t WHERE a = 5 AND b IN (1, 22) /* 3 */";
        let refused = [
            "SELECT * FROM t WHERE c = 5 AND b IN (1, 22) /* 3 */", // a word
            "SELECT * FROM t WHERE a = 5.5 AND b IN (1, 22) /* 3 */", // a float
            "SELECT * FROM t WHERE a = 0x1F AND b IN (1, 22) /* 3 */", // hex
            "SELECT * FROM t WHERE a = 5e3 AND b IN (1, 22) /* 3 */", // exponent
            "SELECT * FROM t WHERE a = 5_000 AND b IN (1, 22) /* 3 */", // separator
            "SELECT * FROM t WHERE a = x AND b IN (1, 22) /* 3 */", // not a number
            "SELECT * FROM t WHERE a = 5 AND b IN (1, 22) /* 4 */", // a comment's digit
            "SELECT * FROM t WHERE a = 5 AND b IN (1, 22, 3) /* 3 */", // one more
            "SELECT * FROM t WHERE a = 5 AND b IN (1) /* 3 */",     // one fewer
            "SELECT * FROM t WHERE a = 5 AND b IN (1, 22) /* 3 ",   // shorter
            "SELECT * FROM t WHERE a = 5 AND b IN (1, 22) /* 3 */ ", // longer
        ];
        for new in refused {
            let mut n = noted(old);
            assert!(!n.rematch(old.as_bytes(), new.as_bytes()), "{new}");
            assert_eq!(n.spans, noted(old).spans, "{new}: spans kept on failure");
        }
    }

    #[test]
    fn digits_inside_strings_identifiers_and_comments_are_not_literals() {
        let old = "SELECT 't1', \"c2\", x3 FROM t4 -- 5\n";
        assert!(noted(old).spans.is_empty());
        let new = "SELECT 't2', \"c2\", x3 FROM t4 -- 5\n";
        assert!(!noted(old).rematch(old.as_bytes(), new.as_bytes()));
    }

    #[test]
    fn a_scan_that_may_change_the_session_is_not_reused() {
        // SET's effect is read from the exact text, value included.
        let old = "SET statement_timeout = 5";
        let mut n = noted(old);
        assert!(!n.rematch(old.as_bytes(), b"SET statement_timeout = 6"));
    }

    #[test]
    fn cleared_spans_never_match() {
        let old = "SELECT 1";
        let mut n = noted(old);
        n.clear();
        assert!(!n.rematch(old.as_bytes(), b"SELECT 2"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Texts built from pieces the lexer treats differently, digits in
        /// many of them.
        fn piece() -> impl Strategy<Value = String> {
            prop_oneof![
                (0u64..100_000).prop_map(|n| n.to_string()),
                (0u64..100_000).prop_map(|n| format!(" {n} ")),
                Just(" ".to_owned()),
                Just("SELECT ".to_owned()),
                Just("a1".to_owned()),
                Just("x".to_owned()),
                Just("_".to_owned()),
                Just(".".to_owned()),
                Just("e".to_owned()),
                Just("$".to_owned()),
                Just("$1".to_owned()),
                Just("'7'".to_owned()),
                Just("E'\\1'".to_owned()),
                Just("\"q8\"".to_owned()),
                Just("/* 9 */".to_owned()),
                Just("-- 1\n".to_owned()),
                Just("0x".to_owned()),
                Just("=".to_owned()),
                Just("(".to_owned()),
                Just(")".to_owned()),
                Just(",".to_owned()),
                Just(";".to_owned()),
                Just("::".to_owned()),
                Just("SET ".to_owned()),
                Just("now".to_owned()),
                Just("\n".to_owned()),
            ]
        }

        fn text() -> impl Strategy<Value = String> {
            prop::collection::vec(piece(), 0..14).prop_map(|v| v.concat())
        }

        /// `new` is `old` with each digit run replaced by a random one, and
        /// maybe one byte changed.
        fn variant(old: &str, seed: &[u64], poke: Option<(usize, u8)>) -> String {
            let mut out = String::new();
            let mut k = 0;
            let b = old.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i].is_ascii_digit() {
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    out.push_str(
                        &(seed[k % seed.len()] % 10u64.pow((k % 6) as u32 + 1)).to_string(),
                    );
                    k += 1;
                } else {
                    out.push(b[i] as char);
                    i += 1;
                }
            }
            if let Some((at, byte)) = poke {
                let mut bytes = out.into_bytes();
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = byte;
                }
                out = String::from_utf8_lossy(&bytes).into_owned();
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]
            /// Whenever the shortcut accepts a text, the full scan of that
            /// text agrees with the reused one, and so do the spans.
            #[test]
            fn an_accepted_text_scans_the_same(
                old in text(),
                seed in prop::collection::vec(any::<u64>(), 1..6),
                poke in prop::option::of((any::<usize>(), prop::sample::select(
                    b" 0123456789.e_x$'\"-/*=;\n".to_vec()))),
            ) {
                let new = variant(&old, &seed, poke);
                let mut n = noted(&old);
                if n.rematch(old.as_bytes(), new.as_bytes()) {
                    prop_assert_eq!(scan(&old), scan(&new), "{:?} vs {:?}", &old, &new);
                    prop_assert_eq!(&n.spans, &noted(&new).spans);
                }
            }
        }
    }
}
