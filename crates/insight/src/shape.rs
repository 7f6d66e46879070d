//! Query shapes: the pg_query fingerprint and one normalized text per shape.
//!
//! The proxy's lexer already hashes each query text with literals and
//! comments removed (`pgpilot_sql::Analysis::key`); [`ShapeCache`] maps that
//! key to an `Arc<Shape>` so the parser runs once per new shape, not once per
//! query. The [`Shape`] is what [`crate::stats`] keys its statistics by, and
//! what [`crate::lints`] and [`crate::nplus1`] name in their findings.
//!
//! The fingerprint is libpg_query's: a hash of the parse tree that ignores
//! literal values, `$n` numbers, aliases and comments, so `IN (1,2,3)` and
//! `IN (1)` share one (pganalyze, Dexter and pg_stat_statements tooling use
//! the same value).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

/// Normalized texts longer than this are cut (a 10,000-item `IN` list
/// normalizes to 70 kB of `$n`); the fingerprint still covers the whole text.
pub const MAX_NORMALIZED_LEN: usize = 16 * 1024;

/// Unparseable texts keep at most this much of the raw text.
pub const MAX_UNPARSED_LEN: usize = 256;

/// Marker appended to a cut text.
const CUT_MARKER: &str = " …";

/// One query shape: all texts with this fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// libpg_query fingerprint; for unparseable text, derived from the
    /// lexer key instead (see [`Shape::parsed`]).
    pub fingerprint: u64,
    /// `fingerprint` as 16 lower-case hex digits (pg_query's own rendering).
    pub fingerprint_hex: String,
    /// The first text seen with literals replaced by `$n` (pg_query
    /// `normalize`) and comments removed, cut at [`MAX_NORMALIZED_LEN`]. For unparseable text,
    /// the raw text cut at [`MAX_UNPARSED_LEN`].
    pub normalized: String,
    /// False when PostgreSQL's parser rejected the text (the server will
    /// reject it too); such shapes carry no lints.
    pub parsed: bool,
}

impl Shape {
    /// Computes the shape of `sql`. Parses (twice: fingerprint and
    /// normalize); call it through [`ShapeCache`] on the hot path.
    pub fn of(key: u128, sql: &str) -> Shape {
        match (
            guarded(|| pg_query::fingerprint(sql, 0, 0)),
            guarded(|| pg_query::normalize(sql)),
        ) {
            (Some(fp), Some(normalized)) => Shape {
                fingerprint: fp.value,
                fingerprint_hex: fp.hex,
                normalized: cut(
                    crate::sqlcomment::strip_comments(&normalized),
                    MAX_NORMALIZED_LEN,
                ),
                parsed: true,
            },
            _ => Shape::unparsed(key, sql),
        }
    }

    /// The shape given to text the parser rejects: a fingerprint folded from
    /// the lexer key (texts differing only in literals still share it).
    fn unparsed(key: u128, sql: &str) -> Shape {
        let fingerprint = (key as u64) ^ ((key >> 64) as u64);
        Shape {
            fingerprint,
            fingerprint_hex: fingerprint_hex(fingerprint),
            normalized: cut(sql.to_owned(), MAX_UNPARSED_LEN),
            parsed: false,
        }
    }
}

/// Renders a fingerprint the way pg_query does: 16 lower-case hex digits.
pub fn fingerprint_hex(fingerprint: u64) -> String {
    format!("{fingerprint:016x}")
}

/// Parses a fingerprint from its hex rendering (as found in API paths).
pub fn parse_fingerprint_hex(hex: &str) -> Option<u64> {
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Runs a pg_query call, turning a parser error or a panic in the binding
/// into `None`: a client's text must never take the proxy down.
fn guarded<T>(f: impl FnOnce() -> pg_query::Result<T> + std::panic::UnwindSafe) -> Option<T> {
    std::panic::catch_unwind(f).ok()?.ok()
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
pub(crate) fn cut(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub(CUT_MARKER.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(CUT_MARKER);
    s
}

/// Lexer key → shape, bounded. Shared by all sessions.
pub struct ShapeCache {
    /// Read-mostly: a seen shape costs one shared lock and an `Arc` clone.
    map: RwLock<HashMap<u128, Arc<Shape>>>,
    /// Maximum number of keys; when full, an arbitrary half is dropped
    /// (a miss only costs a parse).
    capacity: usize,
}

impl ShapeCache {
    pub fn new(capacity: usize) -> ShapeCache {
        ShapeCache {
            map: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// The shape for `key`, computing it from `sql` on a miss. The flag is
    /// true for exactly one caller per newly cached key: the one that should
    /// run per-shape work such as lints. `key` must be the lexer's
    /// literal-blind key of `sql`.
    pub fn get_or_insert(&self, key: u128, sql: &str) -> (Arc<Shape>, bool) {
        if let Some(shape) = self.map.read().get(&key) {
            return (shape.clone(), false);
        }
        let shape = Arc::new(Shape::of(key, sql));
        let mut map = self.map.write();
        if let Some(existing) = map.get(&key) {
            return (existing.clone(), false);
        }
        if map.len() >= self.capacity {
            let victims: Vec<u128> = map.keys().take(map.len() / 2 + 1).copied().collect();
            for k in victims {
                map.remove(&k);
            }
        }
        map.insert(key, shape.clone());
        (shape, true)
    }

    /// The cached shape for `key`, without computing one.
    pub fn get(&self, key: u128) -> Option<Arc<Shape>> {
        self.map.read().get(&key).cloned()
    }

    /// Number of cached keys.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_lists_of_any_length_share_a_fingerprint() {
        let a = Shape::of(1, "SELECT * FROM t WHERE id IN (1, 2, 3)");
        let b = Shape::of(2, "SELECT * FROM t WHERE id IN (1)");
        assert!(a.parsed && b.parsed);
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint_hex, b.fingerprint_hex);
    }

    #[test]
    fn literals_and_comments_do_not_change_the_fingerprint() {
        let a = Shape::of(1, "SELECT name FROM users WHERE id = 1");
        let b = Shape::of(1, "select name from users where id = 42 /*route='x'*/");
        let c = Shape::of(1, "SELECT name FROM users WHERE email = 'a'");
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
    }

    #[test]
    fn normalized_text_has_placeholders() {
        let s = Shape::of(1, "SELECT * FROM contacts WHERE name='Paul'");
        assert_eq!(s.normalized, "SELECT * FROM contacts WHERE name=$1");
        assert_eq!(s.fingerprint_hex, "0e2581a461ece536");
        assert_eq!(s.fingerprint_hex, fingerprint_hex(s.fingerprint));
        assert_eq!(
            parse_fingerprint_hex(&s.fingerprint_hex),
            Some(s.fingerprint)
        );
    }

    #[test]
    fn unparseable_text_gets_a_key_fingerprint_and_a_cut_text() {
        let garbage = format!("SELEC oops {}", "x".repeat(1000));
        let s = Shape::of(0xABCD_u128 << 64 | 0x1234, &garbage);
        assert!(!s.parsed);
        assert_eq!(s.fingerprint, 0xABCD ^ 0x1234);
        assert!(s.normalized.len() <= MAX_UNPARSED_LEN);
        assert!(s.normalized.starts_with("SELEC oops"));
    }

    #[test]
    fn nul_bytes_do_not_panic() {
        let s = Shape::of(7, "SELECT 1\0");
        assert!(!s.parsed);
    }

    #[test]
    fn cut_respects_char_boundaries() {
        let s = cut("é".repeat(100), 11);
        assert!(s.len() <= 11);
        assert!(s.ends_with(CUT_MARKER));
    }

    #[test]
    fn cache_reports_new_once_and_stays_bounded() {
        let cache = ShapeCache::new(4);
        let (a, new_a) = cache.get_or_insert(1, "SELECT 1");
        let (b, new_b) = cache.get_or_insert(1, "SELECT 2");
        assert!(new_a);
        assert!(!new_b);
        assert!(Arc::ptr_eq(&a, &b));
        for k in 2..50 {
            cache.get_or_insert(k, "SELECT 1");
            assert!(cache.len() <= 4);
        }
    }

    #[test]
    fn parse_fingerprint_hex_rejects_garbage() {
        assert_eq!(parse_fingerprint_hex("zz"), None);
        assert_eq!(parse_fingerprint_hex(""), None);
        assert_eq!(parse_fingerprint_hex("00000000000000001"), None);
        assert_eq!(parse_fingerprint_hex("ff"), Some(255));
    }
}
