//! `pgpilot:` directives in comments: routing (`pgpilot:primary`,
//! `pgpilot:replica`) and result caching (`pgpilot:cache ttl=30s
//! tags=user:42,org:7`, `pgpilot:nocache`).
//!
//! `scan` only notes that a directive is there (no allocation); the proxy
//! then calls [`cache_hint`] for the options of a cache directive.

use std::time::Duration;

use super::tokens::{for_each_token, TokenKind};

/// A routing hint from a `/* pgpilot:primary */` or `/* pgpilot:replica */` comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteHint {
    #[default]
    None,
    Primary,
    Replica,
}

/// A result-cache directive from a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheHint {
    /// False for `pgpilot:nocache`: do not serve or store this text's results.
    pub enabled: bool,
    /// `ttl=`: how long a stored result may be served (`ms`, `s`, `m`, `h`;
    /// a bare number is seconds). `None` when absent or malformed.
    pub ttl: Option<Duration>,
    /// `tags=a,b`: labels for invalidation by tag, in order, without
    /// duplicates; at most [`MAX_TAGS`] of at most [`MAX_TAG_LEN`] bytes.
    pub tags: Vec<String>,
}

/// Tags beyond this many are ignored.
pub const MAX_TAGS: usize = 32;
/// Longer tags are ignored.
pub const MAX_TAG_LEN: usize = 128;

const PREFIX: &[u8] = b"pgpilot:";

/// One `pgpilot:` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    Primary,
    Replica,
    Cache,
    NoCache,
}

/// Calls `f` with each directive in `comment` and the index just past its
/// word. Case-insensitive; unknown words are skipped.
fn directives(comment: &[u8], mut f: impl FnMut(Directive, usize)) {
    let mut i = 0;
    while let Some(p) = find_prefix(comment, i) {
        let word_start = p + PREFIX.len();
        let word_end = comment[word_start..]
            .iter()
            .position(|c| !c.is_ascii_alphabetic())
            .map_or(comment.len(), |n| word_start + n);
        let word = &comment[word_start..word_end];
        let directive = [
            (&b"primary"[..], Directive::Primary),
            (b"replica", Directive::Replica),
            (b"cache", Directive::Cache),
            (b"nocache", Directive::NoCache),
        ]
        .into_iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(word));
        if let Some((_, d)) = directive {
            f(d, word_end);
        }
        i = word_end;
    }
}

/// Index of the next case-insensitive `pgpilot:` at or after `from`.
fn find_prefix(s: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(p) = s.get(i..)?.iter().position(|&c| c | 0x20 == b'p') {
        let at = i + p;
        if s.get(at..at + PREFIX.len())?.eq_ignore_ascii_case(PREFIX) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// Notes the directives of one comment: its routing hint (`primary` wins
/// over `replica`; a later comment's hint replaces an earlier one's) and
/// whether it holds a cache directive.
pub(super) fn read_comment(comment: &[u8], route: &mut RouteHint, cache: &mut bool) {
    let mut hint = None;
    directives(comment, |d, _| match d {
        Directive::Primary => hint = Some(RouteHint::Primary),
        Directive::Replica if hint.is_none() => hint = Some(RouteHint::Replica),
        Directive::Replica => {}
        Directive::Cache | Directive::NoCache => *cache = true,
    });
    if let Some(hint) = hint {
        *route = hint;
    }
}

/// The cache directive in `sql`'s comments, or `None` when there is none.
/// `pgpilot:nocache` anywhere wins; otherwise the options of every
/// `pgpilot:cache` combine (the last valid `ttl`, all `tags`). Malformed
/// options are ignored; text inside string constants is never read.
pub fn cache_hint(sql: &str) -> Option<CacheHint> {
    let mut hint: Option<CacheHint> = None;
    let mut disabled = false;
    for_each_token(sql.as_bytes(), |t| {
        if !matches!(t.kind, TokenKind::LineComment | TokenKind::BlockComment) {
            return;
        }
        let Some(comment) = sql.get(t.start..t.end) else {
            return;
        };
        directives(comment.as_bytes(), |d, end| match d {
            Directive::NoCache => disabled = true,
            Directive::Cache => {
                let h = hint.get_or_insert_with(|| CacheHint {
                    enabled: true,
                    ttl: None,
                    tags: Vec::new(),
                });
                read_options(options_text(comment, end), h);
            }
            _ => {}
        });
    });
    if disabled {
        return Some(CacheHint {
            enabled: false,
            ttl: None,
            tags: Vec::new(),
        });
    }
    hint
}

/// The text after a directive word: up to the next `pgpilot:` or the end
/// of the comment (without its closing `*/`).
fn options_text(comment: &str, from: usize) -> &str {
    let rest = comment.get(from..).unwrap_or("");
    let rest = match find_prefix(rest.as_bytes(), 0) {
        Some(p) => rest.get(..p).unwrap_or(""),
        None => rest,
    };
    rest.trim_end().trim_end_matches("*/")
}

/// Applies `ttl=` and `tags=` options to `hint`.
fn read_options(options: &str, hint: &mut CacheHint) {
    for option in options.split_ascii_whitespace() {
        let Some((key, value)) = option.split_once('=') else {
            continue;
        };
        if key.eq_ignore_ascii_case("ttl") {
            if let Some(ttl) = parse_ttl(value) {
                hint.ttl = Some(ttl);
            }
        } else if key.eq_ignore_ascii_case("tags") {
            for tag in value.split(',').map(str::trim) {
                let fits = !tag.is_empty() && tag.len() <= MAX_TAG_LEN;
                if fits && hint.tags.len() < MAX_TAGS && !hint.tags.iter().any(|t| t == tag) {
                    hint.tags.push(tag.to_owned());
                }
            }
        }
    }
}

/// `30`, `30s`, `500ms`, `5m`, `2h` (unit case-insensitive).
fn parse_ttl(value: &str) -> Option<Duration> {
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = value.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let secs = |per: u64| n.checked_mul(per).map(Duration::from_secs);
    match unit {
        "" => secs(1),
        u if u.eq_ignore_ascii_case("ms") => Some(Duration::from_millis(n)),
        u if u.eq_ignore_ascii_case("s") => secs(1),
        u if u.eq_ignore_ascii_case("m") => secs(60),
        u if u.eq_ignore_ascii_case("h") => secs(3600),
        _ => None,
    }
}
