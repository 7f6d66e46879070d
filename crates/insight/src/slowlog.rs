//! The slow query log: statements that took longer than a threshold
//! (default 500 ms), with parameters, endpoint and trace id, in a bounded
//! ring for the API and optionally appended to a JSON-lines file.
//!
//! [`crate::Insight::record`] calls [`SlowLog::record`] for slow statements
//! only, so its parse (literal redaction) and allocations stay off the path
//! of ordinary queries. File writes are queued and done by
//! [`SlowLog::write_pending`] from the periodic maintenance task, never from
//! a session; a write error is logged and the lines are dropped.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::clock::{duration_micros, micros_to_ms, rfc3339};
use crate::shape::{cut, Shape};
use crate::stats::Location;

/// Logged query texts are cut to this many bytes.
pub const MAX_QUERY_LEN: usize = 8 * 1024;
/// Each logged parameter is cut to this many bytes.
pub const MAX_PARAM_LEN: usize = 1024;
/// Parameters beyond this many are not logged.
pub const MAX_PARAMS: usize = 100;
/// What a redacted parameter value is replaced by.
pub const REDACTED: &str = "<redacted>";

/// Configuration of the slow log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowLogSettings {
    /// Statements taking at least this long are logged.
    pub threshold: Duration,
    /// Entries kept in memory.
    pub capacity: usize,
    /// JSON-lines file to append to.
    pub file: Option<PathBuf>,
    /// Replace literals in the text by `$n` and parameter values by
    /// [`REDACTED`].
    pub redact: bool,
}

impl Default for SlowLogSettings {
    fn default() -> SlowLogSettings {
        SlowLogSettings {
            threshold: Duration::from_millis(500),
            capacity: 1000,
            file: None,
            redact: true,
        }
    }
}

/// A slow statement as the session saw it (borrowed; copied only when logged).
#[derive(Debug, Clone, Copy)]
pub struct SlowQuery<'a> {
    /// The text as sent.
    pub sql: &'a str,
    /// Bind parameters in wire form (`None` = NULL); text-format values
    /// are logged as text, others as `\x` hex.
    pub params: &'a [Option<&'a [u8]>],
    pub shape: &'a Shape,
    pub duration: Duration,
    pub rows: u64,
    /// SQLSTATE when it failed.
    pub error: Option<&'a str>,
    pub location: Location,
    pub endpoint: Option<&'a str>,
    /// 32-hex trace id from the sqlcommenter `traceparent`.
    pub trace_id: Option<&'a str>,
}

/// One logged statement (a JSON line in the file, an element of the API's list).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowEntry {
    /// When it completed, RFC 3339 UTC.
    pub at: String,
    pub fingerprint: String,
    /// The text as sent, literals replaced by `$n` when redaction is on.
    pub query: String,
    pub params: Vec<Option<String>>,
    pub duration_ms: f64,
    pub rows: u64,
    pub error: Option<String>,
    pub endpoint: Option<String>,
    pub trace_id: Option<String>,
    pub location: Location,
}

/// The ring and the file queue.
pub struct SlowLog {
    settings: SlowLogSettings,
    /// Newest at the back, at most `settings.capacity`.
    ring: Mutex<VecDeque<SlowEntry>>,
    /// JSON lines not yet written to `settings.file`, at most `capacity`.
    pending: Mutex<VecDeque<String>>,
}

impl SlowLog {
    pub fn new(settings: SlowLogSettings) -> SlowLog {
        SlowLog {
            settings,
            ring: Mutex::new(VecDeque::new()),
            pending: Mutex::new(VecDeque::new()),
        }
    }

    /// True when a statement of this duration belongs in the log.
    pub fn is_slow(&self, duration: Duration) -> bool {
        duration >= self.settings.threshold
    }

    /// Logs `q` (completed at `at_unix_us`) when it is slow; returns whether
    /// it was logged.
    pub fn record(&self, q: &SlowQuery<'_>, at_unix_us: u64) -> bool {
        if !self.is_slow(q.duration) || self.settings.capacity == 0 {
            return false;
        }
        let entry = self.entry(q, at_unix_us);
        if self.settings.file.is_some() {
            if let Ok(line) = serde_json::to_string(&entry) {
                push_bounded(&mut self.pending.lock(), line, self.settings.capacity);
            }
        }
        push_bounded(&mut self.ring.lock(), entry, self.settings.capacity);
        true
    }

    fn entry(&self, q: &SlowQuery<'_>, at_unix_us: u64) -> SlowEntry {
        let redact = self.settings.redact;
        let query = if redact {
            redact_literals(q.sql)
        } else {
            q.sql.to_owned()
        };
        SlowEntry {
            at: rfc3339(at_unix_us),
            fingerprint: q.shape.fingerprint_hex.clone(),
            query: cut(query, MAX_QUERY_LEN),
            params: q
                .params
                .iter()
                .take(MAX_PARAMS)
                .map(|p| render_param(*p, redact))
                .collect(),
            duration_ms: micros_to_ms(duration_micros(q.duration)),
            rows: q.rows,
            error: q.error.map(str::to_owned),
            endpoint: q.endpoint.map(str::to_owned),
            trace_id: q.trace_id.map(str::to_owned),
            location: q.location,
        }
    }

    /// Up to `limit` entries, newest first.
    pub fn recent(&self, limit: usize) -> Vec<SlowEntry> {
        self.ring.lock().iter().rev().take(limit).cloned().collect()
    }

    /// Appends queued lines to the file (opened in append mode each time,
    /// so log rotation by rename works). Returns the number written; on an
    /// error the batch is dropped and the error logged.
    pub fn write_pending(&self) -> usize {
        let Some(path) = &self.settings.file else {
            return 0;
        };
        let lines: Vec<String> = self.pending.lock().drain(..).collect();
        if lines.is_empty() {
            return 0;
        }
        let mut buf = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in &lines {
            buf.push_str(line);
            buf.push('\n');
        }
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(buf.as_bytes()));
        match written {
            Ok(()) => lines.len(),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, dropped = lines.len(), "slow log file write failed");
                0
            }
        }
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T, capacity: usize) {
    while q.len() >= capacity.max(1) {
        q.pop_front();
    }
    q.push_back(item);
}

/// A parameter for the log: NULL stays `None`.
fn render_param(p: Option<&[u8]>, redact: bool) -> Option<String> {
    let bytes = p?;
    if redact {
        return Some(REDACTED.to_owned());
    }
    let shown = &bytes[..bytes.len().min(MAX_PARAM_LEN)];
    Some(match std::str::from_utf8(shown) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            let mut hex = String::with_capacity(2 + 2 * shown.len());
            hex.push_str("\\x");
            for b in shown {
                hex.push_str(&format!("{b:02x}"));
            }
            hex
        }
    })
}

/// The text with every literal replaced: by `$n` through pg_query
/// `normalize` when it parses, else by `?` with a lexical pass.
pub fn redact_literals(sql: &str) -> String {
    match std::panic::catch_unwind(|| pg_query::normalize(sql)) {
        Ok(Ok(normalized)) => normalized,
        _ => redact_lexically(sql),
    }
}

/// Replaces quoted strings, dollar-quoted bodies and numbers by `?`,
/// keeping comments and quoted identifiers.
fn redact_lexically(sql: &str) -> String {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        let prev_ident =
            i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'$');
        let end = match b[i] {
            b'\'' => Some(pgpilot_sql::lexer::skip_string(
                b,
                i,
                i > 0 && matches!(b[i - 1], b'e' | b'E'),
            )),
            b'0'..=b'9' if !prev_ident => Some(
                i + b[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'.' || *c == b'_'))
                    .unwrap_or(b.len() - i),
            ),
            b'$' if !prev_ident => pgpilot_sql::lexer::dollar_quote_end(b, i),
            b'"' => {
                i = pgpilot_sql::lexer::skip_quoted(b, i, b'"');
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = b[i + 2..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(b.len(), |p| i + 2 + p + 2);
                continue;
            }
            _ => None,
        };
        match end {
            Some(end) => {
                out.push_str(&sql[copied..i]);
                out.push('?');
                i = end;
                copied = end;
            }
            None => i += 1,
        }
    }
    out.push_str(&sql[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            fingerprint: 1,
            fingerprint_hex: "0000000000000001".into(),
            normalized: "SELECT * FROM users WHERE email = $1".into(),
            parsed: true,
        }
    }

    fn slow_query<'a>(
        shape: &'a Shape,
        sql: &'a str,
        params: &'a [Option<&'a [u8]>],
        ms: u64,
    ) -> SlowQuery<'a> {
        SlowQuery {
            sql,
            params,
            shape,
            duration: Duration::from_millis(ms),
            rows: 1,
            error: None,
            location: Location::Primary,
            endpoint: Some("/users"),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        }
    }

    #[test]
    fn only_statements_over_the_threshold_are_logged() {
        let log = SlowLog::new(SlowLogSettings::default());
        let s = shape();
        assert!(!log.record(&slow_query(&s, "SELECT 1", &[], 499), 0));
        assert!(log.record(&slow_query(&s, "SELECT 1", &[], 500), 0));
        assert_eq!(log.recent(10).len(), 1);
    }

    #[test]
    fn redaction_replaces_literals_and_params() {
        let log = SlowLog::new(SlowLogSettings::default());
        let s = shape();
        let params: [Option<&[u8]>; 2] = [Some(b"secret@example.com"), None];
        let sql = "SELECT * FROM users WHERE email = 'bob@example.com' AND id = $1 AND age > 42";
        log.record(&slow_query(&s, sql, &params, 700), 1_700_000_000_000_000);
        let e = &log.recent(1)[0];
        assert!(
            !e.query.contains("bob@example.com") && !e.query.contains("42"),
            "{}",
            e.query
        );
        assert!(e.query.contains("email = $2"), "{}", e.query);
        assert_eq!(e.params, vec![Some(REDACTED.to_owned()), None]);
        assert_eq!(e.at, "2023-11-14T22:13:20.000Z");
        assert_eq!(e.duration_ms, 700.0);
        assert_eq!(
            e.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(e.endpoint.as_deref(), Some("/users"));
    }

    #[test]
    fn without_redaction_text_and_params_are_kept() {
        let log = SlowLog::new(SlowLogSettings {
            redact: false,
            ..SlowLogSettings::default()
        });
        let s = shape();
        let params: [Option<&[u8]>; 2] = [Some(b"bob"), Some(&[0xff, 0x00])];
        log.record(&slow_query(&s, "SELECT 'x'", &params, 900), 0);
        let e = &log.recent(1)[0];
        assert_eq!(e.query, "SELECT 'x'");
        assert_eq!(
            e.params,
            vec![Some("bob".to_owned()), Some("\\xff00".to_owned())]
        );
    }

    #[test]
    fn unparseable_text_is_redacted_lexically() {
        assert_eq!(
            redact_literals("SELEC * FROM t WHERE a = 'x''y' AND b = 12.5 AND c = E'\\'' AND d = $$z$$ AND t2.x = $1 /* 'c' */"),
            "SELEC * FROM t WHERE a = ? AND b = ? AND c = E? AND d = ? AND t2.x = $1 /* 'c' */"
        );
    }

    #[test]
    fn ring_is_bounded_newest_first() {
        let log = SlowLog::new(SlowLogSettings {
            capacity: 3,
            ..SlowLogSettings::default()
        });
        let s = shape();
        for ms in 501..=510 {
            log.record(&slow_query(&s, "SELECT 1", &[], ms), 0);
        }
        let recent = log.recent(10);
        assert_eq!(
            recent.iter().map(|e| e.duration_ms).collect::<Vec<_>>(),
            vec![510.0, 509.0, 508.0]
        );
    }

    #[test]
    fn file_gets_json_lines_and_errors_do_not_panic() {
        let dir = std::env::temp_dir().join(format!("pgpilot-slowlog-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("slow.jsonl");
        let _ = std::fs::remove_file(&path);
        let log = SlowLog::new(SlowLogSettings {
            file: Some(path.clone()),
            ..SlowLogSettings::default()
        });
        let s = shape();
        log.record(&slow_query(&s, "SELECT 1", &[], 600), 0);
        log.record(&slow_query(&s, "SELECT 2", &[], 600), 0);
        assert_eq!(log.write_pending(), 2);
        assert_eq!(log.write_pending(), 0);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["query"], "SELECT $1");
        let _ = std::fs::remove_dir_all(&dir);

        let bad = SlowLog::new(SlowLogSettings {
            file: Some(dir.join("missing-dir").join("x").join("slow.jsonl")),
            ..SlowLogSettings::default()
        });
        bad.record(&slow_query(&s, "SELECT 1", &[], 600), 0);
        assert_eq!(bad.write_pending(), 0);
    }
}
