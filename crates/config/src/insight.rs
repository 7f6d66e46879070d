//! The validated `[insight]` table: per-fingerprint statistics, the slow
//! query log, lints, N+1 detection, the history store and plan insights.
//!
//! Checked by `crate::validate::insight`; the proxy maps it onto the insight
//! crate's own settings, and the plan-insight runner reads the `explain*`
//! fields.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

/// Default `insight.max_fingerprints`.
pub const DEFAULT_MAX_FINGERPRINTS: NonZeroUsize = match NonZeroUsize::new(2000) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};
/// Smallest `insight.n_plus_one_min_repeats`: one repeat is not a pattern.
pub const MIN_N_PLUS_ONE_REPEATS: usize = 2;
/// Allowed `insight.histogram_precision` (significant digits of the latency
/// histograms): 1 (10 %) to 3 (0.1 %).
pub const HISTOGRAM_PRECISION_RANGE: std::ops::RangeInclusive<u8> = 1..=3;

/// Query insight settings. Defaults when `[insight]` is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsightConfig {
    /// Record per-query statistics, the slow log, lints and N+1 findings.
    /// Default true.
    pub enabled: bool,
    /// Fingerprints tracked at once; the least valuable one is evicted to
    /// make room (pg_stat_statements.max). Default 2000.
    pub max_fingerprints: NonZeroUsize,
    /// Statements taking at least this long go to the slow log. Default
    /// 500ms; `0ms` logs every statement.
    pub slow_threshold: Duration,
    /// Slow statements kept in memory for the API; 0 turns the slow log off
    /// (the file included). Default 1000.
    pub slow_log_capacity: usize,
    /// Append slow statements to this JSON-lines file; `None` (TOML `""`)
    /// writes no file. Default none.
    pub slow_log_file: Option<PathBuf>,
    /// In the slow log, literals in the text become `$n` and parameter
    /// values `<redacted>`. Default true.
    pub redact_params: bool,
    /// Lint each new statement shape (`SELECT *`, `ORDER BY` without
    /// `LIMIT`, …). Default true.
    pub lints: bool,
    /// Consecutive executions of one fingerprint after a source query that
    /// make an N+1. Default 5, at least [`MIN_N_PLUS_ONE_REPEATS`].
    pub n_plus_one_min_repeats: usize,
    /// Without a trace or a transaction, queries on one client connection
    /// further apart than this belong to different bursts. Default 100ms,
    /// positive.
    pub burst_gap: Duration,
    /// SQLite file keeping the history of statistics windows across
    /// restarts; `None` (TOML `""`) keeps none. Default none.
    pub store_path: Option<PathBuf>,
    /// Days of history kept in the store. Default 7, at least 1.
    pub retention_days: u32,
    /// Significant digits of the latency histograms, in
    /// [`HISTOGRAM_PRECISION_RANGE`]: 2 (1 % precision) costs about
    /// 10–40 kB per fingerprint, 3 (0.1 %) about 30–200 kB. Default 2.
    pub histogram_precision: u8,
    /// Run `EXPLAIN (FORMAT JSON)` for slow and top fingerprints and on
    /// demand. Default true.
    pub explain: bool,
    /// Add `ANALYZE, BUFFERS` for read-only statements (runs them again).
    /// Default false; requires `explain`.
    pub explain_analyze: bool,
    /// At most one EXPLAIN per interval. Default 10s, positive.
    pub explain_interval: Duration,
    /// Fingerprints at the top by total time that are explained besides
    /// the slow ones; 0 explains only slow ones. Default 5.
    pub explain_top: usize,
}

impl Default for InsightConfig {
    /// The documented defaults, as used when `[insight]` is absent.
    fn default() -> InsightConfig {
        InsightConfig {
            enabled: true,
            max_fingerprints: DEFAULT_MAX_FINGERPRINTS,
            slow_threshold: Duration::from_millis(500),
            slow_log_capacity: 1000,
            slow_log_file: None,
            redact_params: true,
            lints: true,
            n_plus_one_min_repeats: 5,
            burst_gap: Duration::from_millis(100),
            store_path: None,
            retention_days: 7,
            histogram_precision: 2,
            explain: true,
            explain_analyze: false,
            explain_interval: Duration::from_secs(10),
            explain_top: 5,
        }
    }
}
