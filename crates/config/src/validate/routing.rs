//! Checks the `[routing]` table: read/write splitting, replica lag limits,
//! the health monitor's timing and circuit breaker, and the read-only
//! function list the query classifier consults.
//!
//! Every key is optional; a bad one is recorded under `routing.<key>` and
//! replaced by its default so the remaining checks still run.

use std::time::Duration;

use crate::duration::format_duration;
use crate::raw::{IntOrString, RawRouting};
use crate::settings::{
    Fallback, RoutingSettings, RywScope, MAX_HEALTH_CHECK_TIMEOUT, MIN_LSN_POLL_INTERVAL,
};

use super::users::non_empty_name;
use super::{byte_size, duration, positive_duration, Problems};

/// PostgreSQL keeps the first `NAMEDATALEN - 1` bytes of an identifier and
/// silently drops the rest, so a longer name could never match a call.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Checks the `[routing]` table (all defaults when it is absent).
pub(super) fn routing(p: &mut Problems, raw: RawRouting) -> RoutingSettings {
    let default = RoutingSettings::default();
    let positive = |p: &mut Problems, key: &str, raw: Option<IntOrString>, default: Duration| {
        p.parse(&format!("routing.{key}"), raw, positive_duration)
            .unwrap_or(default)
    };
    let (health_check_interval, lsn_poll_interval) =
        polling_intervals(p, raw.health_check_interval, raw.lsn_poll_interval);
    RoutingSettings {
        enabled: raw.enabled.unwrap_or(default.enabled),
        auto_role: raw.auto_role.unwrap_or(default.auto_role),
        fallback: p
            .parse("routing.fallback", raw.fallback, fallback)
            .unwrap_or(default.fallback),
        max_lag: positive(p, "max_lag", raw.max_lag, default.max_lag),
        max_lag_bytes: p
            .parse("routing.max_lag_bytes", raw.max_lag_bytes, lag_bytes)
            .unwrap_or(default.max_lag_bytes),
        read_your_writes: raw.read_your_writes.unwrap_or(default.read_your_writes),
        ryw_scope: p
            .parse("routing.ryw_scope", raw.ryw_scope, ryw_scope)
            .unwrap_or(default.ryw_scope),
        health_check_interval,
        health_check_timeout: p
            .parse(
                "routing.health_check_timeout",
                raw.health_check_timeout,
                health_check_timeout,
            )
            .unwrap_or(default.health_check_timeout),
        lsn_poll_interval,
        breaker_failures: p
            .parse(
                "routing.breaker_failures",
                raw.breaker_failures,
                breaker_failures,
            )
            .unwrap_or(default.breaker_failures),
        ban_time: positive(p, "ban_time", raw.ban_time, default.ban_time),
        monitor_database: p
            .parse(
                "routing.monitor_database",
                raw.monitor_database,
                non_empty_name,
            )
            .unwrap_or(default.monitor_database),
        read_only_functions: read_only_functions(p, raw.read_only_functions),
    }
}

/// `health_check_interval` and `lsn_poll_interval`, which must not exceed
/// it: the LSN poll is the finer of the two samplings. When both are valid
/// but out of order the one that was written is blamed (the poll interval
/// if both were).
fn polling_intervals(
    p: &mut Problems,
    raw_health: Option<IntOrString>,
    raw_poll: Option<IntOrString>,
) -> (Duration, Duration) {
    let default = RoutingSettings::default();
    let poll_written = raw_poll.is_some();
    let health = p.parse(
        "routing.health_check_interval",
        raw_health,
        positive_duration,
    );
    let poll = p.parse("routing.lsn_poll_interval", raw_poll, lsn_poll_interval);
    let health_valid = !p.has("routing.health_check_interval");
    let poll_valid = !p.has("routing.lsn_poll_interval");
    let health = health.unwrap_or(default.health_check_interval);
    let poll = poll.unwrap_or(default.lsn_poll_interval);
    if poll > health && health_valid && poll_valid {
        let (poll_text, health_text) = (format_duration(poll), format_duration(health));
        if poll_written {
            p.add(
                "routing.lsn_poll_interval",
                format!("{poll_text} is longer than routing.health_check_interval ({health_text})"),
            );
        } else {
            p.add(
                "routing.health_check_interval",
                format!(
                    "{health_text} is shorter than routing.lsn_poll_interval \
                     (default {poll_text}); lower lsn_poll_interval too"
                ),
            );
        }
    }
    (health, poll)
}

fn fallback(text: String) -> Result<Fallback, String> {
    Fallback::from_name(&text).ok_or_else(|| {
        format!(
            "`{}` is not a fallback; use \"primary\" or \"error\"",
            text.escape_default()
        )
    })
}

fn ryw_scope(text: String) -> Result<RywScope, String> {
    RywScope::from_name(&text).ok_or_else(|| {
        format!(
            "`{}` is not a read-your-writes scope; use \"connection\", \"trace\" or \"token\"",
            text.escape_default()
        )
    })
}

fn lag_bytes(value: IntOrString) -> Result<u64, String> {
    match byte_size(value)? {
        0 => Err(
            "must be greater than 0 (a replica under write load is never 0 bytes behind)".into(),
        ),
        bytes => u64::try_from(bytes).map_err(|_| "is too large".into()),
    }
}

fn health_check_timeout(value: IntOrString) -> Result<Duration, String> {
    let timeout = positive_duration(value)?;
    if timeout > MAX_HEALTH_CHECK_TIMEOUT {
        return Err(format!(
            "{} is longer than the maximum {}",
            format_duration(timeout),
            format_duration(MAX_HEALTH_CHECK_TIMEOUT)
        ));
    }
    Ok(timeout)
}

fn lsn_poll_interval(value: IntOrString) -> Result<Duration, String> {
    let interval = duration(value)?;
    if interval < MIN_LSN_POLL_INTERVAL {
        return Err(format!(
            "must be at least {}",
            format_duration(MIN_LSN_POLL_INTERVAL)
        ));
    }
    Ok(interval)
}

fn breaker_failures(value: i64) -> Result<u32, String> {
    if value < 1 {
        return Err("must be at least 1".into());
    }
    u32::try_from(value).map_err(|_| format!("{value} is too large; the maximum is {}", u32::MAX))
}

/// Checks each name (recorded at `routing.read_only_functions[i]`) and
/// that none repeats another once lower-cased.
fn read_only_functions(p: &mut Problems, raw: Option<Vec<String>>) -> Vec<String> {
    let raw = raw.unwrap_or_default();
    let mut names: Vec<String> = Vec::with_capacity(raw.len());
    for (i, text) in raw.into_iter().enumerate() {
        let path = format!("routing.read_only_functions[{i}]");
        let Some(name) = p.parse(&path, Some(text), function_name) else {
            continue;
        };
        match names.iter().position(|earlier| *earlier == name) {
            Some(first) => p.add(
                path,
                format!(
                    "`{}` is already listed at read_only_functions[{first}]",
                    name.escape_default()
                ),
            ),
            None => names.push(name),
        }
    }
    names
}

/// `name` or `schema.name`, each an unquoted SQL identifier, with ASCII
/// letters lower-cased as PostgreSQL folds unquoted identifiers (other
/// characters are kept, as PostgreSQL does in UTF-8 databases).
fn function_name(text: String) -> Result<String, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    let parts: Vec<&str> = text.split('.').collect();
    let well_formed = parts.len() <= 2 && parts.iter().all(|part| is_identifier(part));
    if !well_formed {
        return Err(format!(
            "`{}` is not a function name; write an unquoted identifier, optionally \
             schema-qualified, e.g. \"my_func\" or \"reporting.my_func\"",
            text.escape_default()
        ));
    }
    if let Some(long) = parts.iter().find(|part| part.len() > MAX_IDENTIFIER_BYTES) {
        return Err(format!(
            "`{}` is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte identifier limit",
            long.escape_default()
        ));
    }
    Ok(text.to_ascii_lowercase())
}

/// An unquoted identifier as PostgreSQL's scanner reads one: a letter,
/// underscore or non-ASCII character, then those, digits or `$`.
fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || !c.is_ascii());
    starts_well && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii())
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
