//! Checks the `[insight]` table: statistics limits, the slow log, N+1
//! thresholds, the history store and the plan-insight rate limit.
//!
//! Every key is optional; a bad one is recorded under `insight.<key>` and
//! replaced by its default so the remaining checks still run.

use std::path::PathBuf;
use std::time::Duration;

use crate::insight::{InsightConfig, HISTOGRAM_PRECISION_RANGE, MIN_N_PLUS_ONE_REPEATS};
use crate::raw::{IntOrString, RawInsight};

use super::{at_least, duration, non_zero, positive_duration, Problems};

/// Checks the `[insight]` table (all defaults when it is absent).
pub(super) fn insight(p: &mut Problems, raw: RawInsight) -> InsightConfig {
    let default = InsightConfig::default();
    let positive = |p: &mut Problems, key: &str, raw: Option<IntOrString>, default: Duration| {
        p.parse(&format!("insight.{key}"), raw, positive_duration)
            .unwrap_or(default)
    };
    let count = |p: &mut Problems, key: &str, raw: Option<i64>, min: usize, default: usize| {
        p.parse(&format!("insight.{key}"), raw, at_least(min))
            .unwrap_or(default)
    };
    let config = InsightConfig {
        enabled: raw.enabled.unwrap_or(default.enabled),
        max_fingerprints: p
            .parse("insight.max_fingerprints", raw.max_fingerprints, non_zero)
            .unwrap_or(default.max_fingerprints),
        slow_threshold: p
            .parse("insight.slow_threshold", raw.slow_threshold, duration)
            .unwrap_or(default.slow_threshold),
        slow_log_capacity: count(
            p,
            "slow_log_capacity",
            raw.slow_log_capacity,
            0,
            default.slow_log_capacity,
        ),
        slow_log_file: p
            .parse("insight.slow_log_file", raw.slow_log_file, optional_path)
            .unwrap_or(None),
        redact_params: raw.redact_params.unwrap_or(default.redact_params),
        lints: raw.lints.unwrap_or(default.lints),
        n_plus_one_min_repeats: count(
            p,
            "n_plus_one_min_repeats",
            raw.n_plus_one_min_repeats,
            MIN_N_PLUS_ONE_REPEATS,
            default.n_plus_one_min_repeats,
        ),
        burst_gap: positive(p, "burst_gap", raw.burst_gap, default.burst_gap),
        store_path: p
            .parse("insight.store_path", raw.store_path, optional_path)
            .unwrap_or(None),
        retention_days: p
            .parse("insight.retention_days", raw.retention_days, retention_days)
            .unwrap_or(default.retention_days),
        histogram_precision: p
            .parse(
                "insight.histogram_precision",
                raw.histogram_precision,
                histogram_precision,
            )
            .unwrap_or(default.histogram_precision),
        explain: raw.explain.unwrap_or(default.explain),
        explain_analyze: raw.explain_analyze.unwrap_or(default.explain_analyze),
        explain_interval: positive(
            p,
            "explain_interval",
            raw.explain_interval,
            default.explain_interval,
        ),
        explain_top: count(p, "explain_top", raw.explain_top, 0, default.explain_top),
    };
    check_combinations(p, &config);
    config
}

/// Rules between keys: ANALYZE needs EXPLAIN, and the slow-log file and
/// the history store cannot be one file (each would corrupt the other).
fn check_combinations(p: &mut Problems, config: &InsightConfig) {
    if config.explain_analyze && !config.explain {
        p.add(
            "insight.explain_analyze",
            "needs insight.explain = true (ANALYZE is an option of the EXPLAIN runs)",
        );
    }
    if let (Some(log), Some(store)) = (&config.slow_log_file, &config.store_path) {
        if log == store {
            p.add(
                "insight.slow_log_file",
                format!("`{}` is also insight.store_path", log.display()),
            );
        }
    }
}

/// A file path; `""` means none. Relative paths are taken from the working
/// directory pgpilot runs in.
fn optional_path(text: String) -> Result<Option<PathBuf>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.contains('\0') {
        return Err("must not contain NUL characters".into());
    }
    if text.trim().is_empty() {
        return Err("is only whitespace; write \"\" for no file".into());
    }
    Ok(Some(PathBuf::from(text)))
}

fn retention_days(value: i64) -> Result<u32, String> {
    if value < 1 {
        return Err("must be at least 1".into());
    }
    u32::try_from(value).map_err(|_| format!("{value} is too large; the maximum is {}", u32::MAX))
}

fn histogram_precision(value: i64) -> Result<u8, String> {
    match u8::try_from(value) {
        Ok(digits) if HISTOGRAM_PRECISION_RANGE.contains(&digits) => Ok(digits),
        _ => Err(format!(
            "{value} is not between {} and {} significant digits",
            HISTOGRAM_PRECISION_RANGE.start(),
            HISTOGRAM_PRECISION_RANGE.end()
        )),
    }
}

#[cfg(test)]
#[path = "insight_tests.rs"]
mod tests;
