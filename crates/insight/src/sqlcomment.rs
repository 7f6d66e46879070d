//! Request attribution from SQL comments: sqlcommenter and marginalia tags.
//!
//! Applications tag their queries with the page or job that sent them:
//!
//! - sqlcommenter: `/*action='show',route='%2Fusers',traceparent='00-…-01'*/`
//!   (keys sorted, values single-quoted, url-encoded, `\'` escaped);
//! - marginalia (Rails): `/*application:shop,controller:users,action:show*/`;
//! - plain `key=value` pairs.
//!
//! [`parse`] reads every block comment outside string literals and returns
//! the known [`Tags`]. The session passes [`Tags::endpoint`] to
//! [`crate::stats`] as a bounded dimension and [`Tags::trace_id`] to the slow
//! log and [`crate::nplus1`]; `traceparent` is never a statistics dimension
//! (one value per request would make the endpoint table unbounded).

use pgpilot_sql::lexer::{skip_block_comment, skip_quoted};

/// Values longer than this are dropped (a tag is a name, not a payload).
const MAX_VALUE_LEN: usize = 512;

/// The tags this module knows; others are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags {
    /// Route template of the request, e.g. `/users/:id`.
    pub route: Option<String>,
    pub controller: Option<String>,
    pub action: Option<String>,
    pub application: Option<String>,
    pub framework: Option<String>,
    pub db_driver: Option<String>,
    /// W3C trace context as sent; use [`Tags::trace_id`].
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Tags {
    /// True when no known tag was found.
    pub fn is_empty(&self) -> bool {
        *self == Tags::default()
    }

    /// The endpoint a query belongs to: the route when present, else
    /// `controller#action` (either part alone when only one is present).
    pub fn endpoint(&self) -> Option<String> {
        if let Some(route) = &self.route {
            return Some(route.clone());
        }
        match (&self.controller, &self.action) {
            (Some(c), Some(a)) => Some(format!("{c}#{a}")),
            (Some(c), None) => Some(c.clone()),
            (None, Some(a)) => Some(format!("#{a}")),
            (None, None) => None,
        }
    }

    /// The 32-hex-digit trace id of a valid `traceparent`, lower-case.
    pub fn trace_id(&self) -> Option<String> {
        let tp = self.traceparent.as_deref()?;
        valid_traceparent(tp).then(|| tp[3..35].to_ascii_lowercase())
    }

    /// The trace id as a number, for grouping without allocating.
    pub fn trace_id_u128(&self) -> Option<u128> {
        let tp = self.traceparent.as_deref()?;
        if !valid_traceparent(tp) {
            return None;
        }
        u128::from_str_radix(&tp[3..35], 16).ok()
    }

    fn set(&mut self, key: &str, value: String) {
        let slot = match key.to_ascii_lowercase().as_str() {
            "route" => &mut self.route,
            "controller" => &mut self.controller,
            "action" => &mut self.action,
            "application" => &mut self.application,
            "framework" => &mut self.framework,
            "db_driver" => &mut self.db_driver,
            "traceparent" => &mut self.traceparent,
            "tracestate" => &mut self.tracestate,
            _ => return,
        };
        if slot.is_none() && !value.is_empty() && value.len() <= MAX_VALUE_LEN {
            *slot = Some(value);
        }
    }
}

/// `version-traceid-parentid-flags`, W3C Trace Context §3.2: lower- or
/// upper-case hex accepted, version `ff` and all-zero ids rejected.
fn valid_traceparent(tp: &str) -> bool {
    let parts: [&str; 4] = {
        let mut it = tp.split('-');
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(a), Some(b), Some(c), Some(d)) => [a, b, c, d],
            _ => return false,
        }
    };
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    hex(parts[0], 2)
        && !parts[0].eq_ignore_ascii_case("ff")
        && hex(parts[1], 32)
        && nonzero(parts[1])
        && hex(parts[2], 16)
        && nonzero(parts[2])
        && hex(parts[3], 2)
        && (parts[0] != "00" || tp.len() == 55)
}

/// Tags from every block comment of `sql`. The first value of a key wins.
/// Cheap when the text has no comment; never fails.
pub fn parse(sql: &str) -> Tags {
    let mut tags = Tags::default();
    if !sql.contains("/*") {
        return tags;
    }
    for body in block_comments(sql) {
        parse_comment(body, &mut tags);
    }
    tags
}

/// `sql` without its block comments (outside literals), trimmed: the
/// normalized text shown for a shape carries no per-request tags.
pub fn strip_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    for (start, end) in comment_spans(sql) {
        out.push_str(&sql[copied..start]);
        copied = end;
    }
    out.push_str(&sql[copied..]);
    out.trim().to_owned()
}

/// Bodies of the top-level block comments outside literals and quoted
/// identifiers.
fn block_comments(sql: &str) -> Vec<&str> {
    let b = sql.as_bytes();
    comment_spans(sql)
        .into_iter()
        .map(|(start, end)| {
            let body_end = if end >= start + 4 && b[end - 2..end] == *b"*/" {
                end - 2
            } else {
                end
            };
            &sql[start + 2..body_end]
        })
        .collect()
}

/// `(start, end)` byte ranges of the top-level block comments outside
/// literals and quoted identifiers, `/*` and `*/` included. Dollar quotes
/// and nested comments are honoured.
fn comment_spans(sql: &str) -> Vec<(usize, usize)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' => i = skip_quoted(b, i, b'\''),
            b'"' => i = skip_quoted(b, i, b'"'),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = skip_block_comment(b, i);
                out.push((i, end));
                i = end;
            }
            b'$' => i = skip_dollar_quote(b, i),
            _ => i += 1,
        }
    }
    out
}

/// Past a `$tag$ … $tag$` literal at `start`, or one byte when `$` does not
/// open one (`$1` parameters, identifiers containing `$`).
fn skip_dollar_quote(b: &[u8], start: usize) -> usize {
    if start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
        return start + 1;
    }
    let tag_len = b[start + 1..]
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
        .unwrap_or(b.len() - start - 1);
    let close = start + 1 + tag_len;
    if b.get(close) != Some(&b'$') || b.get(start + 1).is_some_and(u8::is_ascii_digit) {
        return start + 1;
    }
    let tag = &b[start..=close];
    let body = close + 1;
    b[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(b.len(), |p| body + p + tag.len())
}

/// Reads `key=value`, `key='value'` and `key:value` pairs separated by commas.
fn parse_comment(body: &str, tags: &mut Tags) {
    let b = body.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let key_start = i;
        while i < b.len() && !matches!(b[i], b'=' | b':' | b',') {
            i += 1;
        }
        if i >= b.len() || b[i] == b',' {
            continue;
        }
        let key = url_decode(body[key_start..i].trim());
        let sep = b[i];
        i += 1;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let (raw, next, quoted) = read_value(body, i);
        i = next;
        let value = match (quoted, sep) {
            (true, _) | (false, b'=') => url_decode(&raw),
            _ => raw,
        };
        tags.set(&key, value);
    }
}

/// A value at `start`: quoted (`\'` escapes) or up to the next comma.
/// Returns the value, the index after it, and whether it was quoted.
fn read_value(body: &str, start: usize) -> (String, usize, bool) {
    let b = body.as_bytes();
    if b.get(start) == Some(&b'\'') {
        let mut out = Vec::new();
        let mut i = start + 1;
        while i < b.len() {
            match b[i] {
                b'\\' if i + 1 < b.len() => {
                    out.push(b[i + 1]);
                    i += 2;
                }
                b'\'' => return (lossy(out), i + 1, true),
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        return (lossy(out), b.len(), true);
    }
    let end = b[start..]
        .iter()
        .position(|&c| c == b',')
        .map_or(b.len(), |p| start + p);
    (body[start..end].trim().to_owned(), end, false)
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Percent-decoding (RFC 3986 §2.1); malformed escapes are kept as written.
fn url_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    lossy(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn sqlcommenter_with_url_encoding() {
        let sql = format!(
            "SELECT * FROM users WHERE id = $1 /*action='show',controller='users',\
             db_driver='django.db.backends.postgresql',framework='django%3A4.2',\
             route='%2Fusers%2F%3Cid%3E',traceparent='{TP}'*/"
        );
        let t = parse(&sql);
        assert_eq!(t.route.as_deref(), Some("/users/<id>"));
        assert_eq!(t.framework.as_deref(), Some("django:4.2"));
        assert_eq!(
            t.db_driver.as_deref(),
            Some("django.db.backends.postgresql")
        );
        assert_eq!(t.endpoint().as_deref(), Some("/users/<id>"));
        assert_eq!(
            t.trace_id().as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(t.trace_id_u128(), Some(0x4bf92f3577b34da6a3ce929d0e0e4736));
    }

    #[test]
    fn escaped_quotes_inside_values() {
        let t = parse(r"SELECT 1 /*action='it\'s',controller='a\\b'*/");
        assert_eq!(t.action.as_deref(), Some("it's"));
        assert_eq!(t.controller.as_deref(), Some(r"a\b"));
        assert_eq!(t.endpoint().as_deref(), Some(r"a\b#it's"));
    }

    #[test]
    fn marginalia() {
        let t = parse("SELECT 1 /*application:shop,controller:orders,action:index*/");
        assert_eq!(t.application.as_deref(), Some("shop"));
        assert_eq!(t.endpoint().as_deref(), Some("orders#index"));
        assert_eq!(t.trace_id(), None);
    }

    #[test]
    fn unquoted_key_value() {
        let t = parse("/* controller=users, action=index */ SELECT 1");
        assert_eq!(t.endpoint().as_deref(), Some("users#index"));
    }

    #[test]
    fn comments_inside_literals_are_ignored() {
        let t = parse(
            "SELECT '/*route=''x''*/', $$ /*route='y'*/ $$, \"/*route='z'*/\" /*route='real'*/",
        );
        assert_eq!(t.route.as_deref(), Some("real"));
        let t = parse("SELECT '/*route=x*/'");
        assert!(t.is_empty());
    }

    #[test]
    fn invalid_traceparent_has_no_trace_id() {
        for tp in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            let t = parse(&format!("SELECT 1 /*traceparent='{tp}'*/"));
            assert_eq!(t.trace_id(), None, "{tp}");
            assert_eq!(t.trace_id_u128(), None, "{tp}");
        }
    }

    #[test]
    fn endpoint_is_never_the_trace() {
        let t = parse(&format!("SELECT 1 /*traceparent='{TP}'*/"));
        assert_eq!(t.endpoint(), None);
    }

    #[test]
    fn garbage_does_not_panic() {
        for sql in [
            "/*",
            "/*'",
            "/*a='",
            "/*a=%",
            "/*a=%4",
            "/*a='%zz'*/",
            "/*===,,,:::*/",
            "$",
            "$a",
            "$$",
            "'unterminated",
            "/* /* nested */ route='x' */",
            "/*route='é%C3%A9'*/",
            "/*\\*/",
        ] {
            let _ = parse(sql);
        }
        assert_eq!(parse("/*route='%C3%A9'*/").route.as_deref(), Some("é"));
        assert_eq!(parse("/*route='50%'*/").route.as_deref(), Some("50%"));
    }

    #[test]
    fn first_value_wins_and_unknown_keys_are_ignored() {
        let t = parse("SELECT 1 /*route='/a',user_id='7'*/ /*route='/b'*/");
        assert_eq!(t.route.as_deref(), Some("/a"));
    }

    #[test]
    fn strip_comments_keeps_literals() {
        assert_eq!(
            strip_comments("SELECT '/*x*/' /* route='a' */ FROM t /*b*/"),
            "SELECT '/*x*/'  FROM t"
        );
        assert_eq!(strip_comments("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn no_comment_is_empty() {
        assert!(parse("SELECT * FROM t WHERE a = '/'").is_empty());
    }
}
