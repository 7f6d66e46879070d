//! History of per-window statistics in SQLite, so restarts keep trends and
//! later work can detect regressions.
//!
//! [`HistoryStore::flush`] takes the minute and hour windows that closed
//! since the last flush from [`crate::stats::QueryStore`] and writes them,
//! with each fingerprint's normalized text, then prunes old rows. It does
//! blocking file I/O: the proxy calls it from a periodic task on a blocking
//! thread, at least once a minute (a minute window is kept in memory for an
//! hour only). Hour windows are kept `retention_days`; minute windows
//! [`MINUTE_RETENTION_SECS`] at most.
//!
//! Schema (fingerprints are stored as the `i64` with the same bits):
//! `queries(fingerprint PK, normalized, last_seen)` and
//! `windows(fingerprint, granularity (60|3600), start, calls, errors, rows,
//! total_us, max_us, p50_us, p99_us, PK (fingerprint, granularity, start))`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::{params, Connection};
use serde::Serialize;

use crate::stats::{ClosedWindow, QueryStore};
use crate::windows::{Granularity, WindowBucket, WindowView};
use crate::{Error, Result};

/// Minute windows older than this are deleted (one day).
pub const MINUTE_RETENTION_SECS: u64 = 86_400;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queries (
    fingerprint INTEGER PRIMARY KEY,
    normalized  TEXT NOT NULL,
    last_seen   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS windows (
    fingerprint INTEGER NOT NULL,
    granularity INTEGER NOT NULL,
    start       INTEGER NOT NULL,
    calls       INTEGER NOT NULL,
    errors      INTEGER NOT NULL,
    rows        INTEGER NOT NULL,
    total_us    INTEGER NOT NULL,
    max_us      INTEGER NOT NULL,
    p50_us      INTEGER NOT NULL,
    p99_us      INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, granularity, start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS windows_by_start ON windows (start);
";

/// A window written to the store, for the JSON API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPoint {
    pub granularity: Granularity,
    #[serde(flatten)]
    pub window: WindowView,
}

/// What one flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub windows_written: usize,
    pub rows_pruned: usize,
    /// Slow-log lines appended to the slow-log file (set by [`crate::Insight::flush`]).
    pub slow_lines_written: usize,
}

/// The SQLite file. Shared; one writer at a time.
pub struct HistoryStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Hour windows are deleted after this.
    retention: Duration,
}

impl HistoryStore {
    /// Opens (creating when missing) the store at `path`.
    pub fn open(path: &Path, retention_days: u32) -> Result<HistoryStore> {
        let err = |source| Error::Store {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(HistoryStore {
            conn: Mutex::new(conn),
            path: path.to_owned(),
            retention: Duration::from_secs(u64::from(retention_days.max(1)) * 86_400),
        })
    }

    fn err(&self, source: rusqlite::Error) -> Error {
        Error::Store {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes the windows `stats` closed before `now`, then prunes.
    pub fn flush(&self, stats: &QueryStore, now: Instant) -> Result<FlushReport> {
        let closed = stats.drain_closed_windows(now);
        let now_s = stats.clock().unix_secs(now);
        let windows_written = self.write(&closed)?;
        let rows_pruned = self.prune(now_s)?;
        Ok(FlushReport {
            windows_written,
            rows_pruned,
            slow_lines_written: 0,
        })
    }

    /// Writes windows and their texts in one transaction. A window already
    /// stored (the same minute before and after a restart) is merged:
    /// counts add up, percentiles and maximum take the larger value.
    pub fn write(&self, windows: &[ClosedWindow]) -> Result<usize> {
        if windows.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut text = tx
                .prepare_cached(
                    "INSERT INTO queries (fingerprint, normalized, last_seen) VALUES (?1, ?2, ?3)
                     ON CONFLICT (fingerprint) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
                )
                .map_err(|e| self.err(e))?;
            let mut window = tx
                .prepare_cached(
                    "INSERT INTO windows VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (fingerprint, granularity, start) DO UPDATE SET
                        calls = calls + excluded.calls, errors = errors + excluded.errors,
                        rows = rows + excluded.rows, total_us = total_us + excluded.total_us,
                        max_us = max(max_us, excluded.max_us), p50_us = max(p50_us, excluded.p50_us),
                        p99_us = max(p99_us, excluded.p99_us)",
                )
                .map_err(|e| self.err(e))?;
            for w in windows {
                let fp = w.shape.fingerprint as i64;
                let b = &w.bucket;
                text.execute(params![fp, w.shape.normalized, sql_int(b.start)])
                    .map_err(|e| self.err(e))?;
                window
                    .execute(params![
                        fp,
                        w.granularity.seconds() as i64,
                        sql_int(b.start),
                        sql_int(b.calls),
                        sql_int(b.errors),
                        sql_int(b.rows),
                        sql_int(b.total_us),
                        sql_int(b.max_us),
                        sql_int(b.p50_us),
                        sql_int(b.p99_us),
                    ])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(windows.len())
    }

    /// Deletes hour windows older than the retention, minute windows older
    /// than [`MINUTE_RETENTION_SECS`], and texts no window refers to.
    pub fn prune(&self, now_unix_s: u64) -> Result<usize> {
        let hour_cutoff = now_unix_s.saturating_sub(self.retention.as_secs());
        let minute_cutoff =
            now_unix_s.saturating_sub(MINUTE_RETENTION_SECS.min(self.retention.as_secs()));
        let conn = self.conn.lock();
        let mut pruned = conn
            .execute(
                "DELETE FROM windows WHERE (granularity = 3600 AND start < ?1) OR (granularity = 60 AND start < ?2)",
                params![sql_int(hour_cutoff), sql_int(minute_cutoff)],
            )
            .map_err(|e| self.err(e))?;
        pruned += conn
            .execute(
                "DELETE FROM queries WHERE last_seen < ?1
                 AND NOT EXISTS (SELECT 1 FROM windows w WHERE w.fingerprint = queries.fingerprint)",
                params![sql_int(hour_cutoff)],
            )
            .map_err(|e| self.err(e))?;
        Ok(pruned)
    }

    /// Stored windows of `fingerprint` starting at or after `since_unix_s`,
    /// hours then minutes, oldest first.
    pub fn load_history(&self, fingerprint: u64, since_unix_s: u64) -> Result<Vec<HistoryPoint>> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT granularity, start, calls, errors, rows, total_us, max_us, p50_us, p99_us
                 FROM windows WHERE fingerprint = ?1 AND start >= ?2 ORDER BY granularity DESC, start",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![fingerprint as i64, sql_int(since_unix_s)], |r| {
                let granularity = if r.get::<_, i64>(0)? == 60 {
                    Granularity::Minute
                } else {
                    Granularity::Hour
                };
                let bucket = WindowBucket {
                    start: from_sql(r.get(1)?),
                    calls: from_sql(r.get(2)?),
                    errors: from_sql(r.get(3)?),
                    rows: from_sql(r.get(4)?),
                    total_us: from_sql(r.get(5)?),
                    max_us: from_sql(r.get(6)?),
                    p50_us: from_sql(r.get(7)?),
                    p99_us: from_sql(r.get(8)?),
                };
                Ok(HistoryPoint {
                    granularity,
                    window: WindowView::from(&bucket),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Stored fingerprints with their normalized texts, most recently seen
    /// first, at most `limit`: loaded at start so history stays readable
    /// after a restart.
    pub fn load_texts(&self, limit: usize) -> Result<Vec<(u64, String)>> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT fingerprint, normalized FROM queries ORDER BY last_seen DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![sql_int(limit as u64)], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }
}

/// SQLite integers are signed 64-bit; counters never get near the limit.
fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::clock::Clock;
    use crate::shape::Shape;
    use crate::stats::{Location, QueryEvent, StoreLimits};

    const T0: u64 = 1_700_000_040;

    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> TempFile {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = std::env::temp_dir().join(format!(
                "pgpilot-insight-{name}-{}-{nanos}",
                std::process::id()
            ));
            let _ = std::fs::create_dir_all(&dir);
            TempFile(dir.join("history.sqlite"))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn stats() -> (QueryStore, Instant) {
        let t0 = Instant::now();
        (
            QueryStore::new(
                StoreLimits::default(),
                Clock::new(t0, UNIX_EPOCH + Duration::from_secs(T0)),
            ),
            t0,
        )
    }

    fn record(s: &QueryStore, fp: u64, ms: u64, at: Instant) {
        let shape = Arc::new(Shape {
            fingerprint: fp,
            fingerprint_hex: crate::shape::fingerprint_hex(fp),
            normalized: format!("SELECT $1 /* {fp} */"),
            parsed: true,
        });
        let ev = QueryEvent {
            shape,
            duration: Duration::from_millis(ms),
            rows: 2,
            error: None,
            location: Location::Primary,
            endpoint: None,
        };
        s.record(&ev, at);
    }

    #[test]
    fn round_trip_survives_reopen() {
        let file = TempFile::new("roundtrip");
        let fp = u64::MAX - 5; // above i64::MAX: stored by its bits
        let (s, t0) = stats();
        record(&s, fp, 10, t0);
        record(&s, fp, 30, t0 + Duration::from_secs(1));
        record(&s, fp, 5, t0 + Duration::from_secs(61));
        {
            let store = HistoryStore::open(&file.0, 7).unwrap_or_else(|e| panic!("{e}"));
            let report = store
                .flush(&s, t0 + Duration::from_secs(125))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                report.windows_written, 2,
                "two closed minutes, the hour is still open"
            );
            let again = store
                .flush(&s, t0 + Duration::from_secs(126))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(again.windows_written, 0);
        }
        let store = HistoryStore::open(&file.0, 7).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            store.load_texts(10).ok(),
            Some(vec![(fp, format!("SELECT $1 /* {fp} */"))])
        );
        let history = store.load_history(fp, 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].granularity, Granularity::Minute);
        assert_eq!(history[0].window.start_unix, T0);
        assert_eq!(history[0].window.calls, 2);
        assert_eq!(history[0].window.total_ms, 40.0);
        assert_eq!(history[0].window.rows, 4);
        assert_eq!(history[1].window.start_unix, T0 + 60);
        assert!(store.load_history(fp, T0 + 1).map(|h| h.len()).unwrap_or(0) == 1);
        assert!(store
            .load_history(1, 0)
            .map(|h| h.is_empty())
            .unwrap_or(false));
    }

    #[test]
    fn windows_of_the_same_minute_merge() {
        let file = TempFile::new("merge");
        let store = HistoryStore::open(&file.0, 7).unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..2 {
            let (s, t0) = stats();
            record(&s, 9, 10, t0);
            store
                .flush(&s, t0 + Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let history = store.load_history(9, 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].window.calls, 2);
    }

    #[test]
    fn retention_prunes_old_rows() {
        let file = TempFile::new("retention");
        let store = HistoryStore::open(&file.0, 1).unwrap_or_else(|e| panic!("{e}"));
        let (s, t0) = stats();
        record(&s, 3, 10, t0);
        // Two hours later: the minute and the hour window are closed.
        let report = store
            .flush(&s, t0 + Duration::from_secs(7200))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.windows_written, 2);
        assert_eq!(report.rows_pruned, 0);
        assert_eq!(
            store.prune(T0 + 2 * 86_400).ok(),
            Some(3),
            "both windows and the text"
        );
        assert!(store.load_texts(10).map(|t| t.is_empty()).unwrap_or(false));
    }

    #[test]
    fn open_fails_with_the_path_in_the_error() {
        let path = Path::new("/nonexistent-dir-pgpilot/x/history.sqlite");
        let e = HistoryStore::open(path, 7)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("/nonexistent-dir-pgpilot/x/history.sqlite"),
            "{e}"
        );
    }
}
