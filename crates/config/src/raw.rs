//! Serde structs that mirror the TOML file one to one. Every key is
//! optional here and unknown keys are rejected, so a typo such as
//! `max_szie` fails loudly instead of silently keeping a default.
//!
//! Values stay as written (strings, raw integers): turning them into
//! addresses, durations and bounded numbers happens in [`crate::validate`],
//! which can then name every bad field at once instead of stopping at the
//! first serde error. Nothing here derives `Debug`, so passwords cannot leak
//! through it.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The top level of the config file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub max_client_connections: Option<i64>,
    pub startup_timeout: Option<IntOrString>,
    pub max_message_size: Option<IntOrString>,
    #[serde(default)]
    pub pool: RawPool,
    pub upstream: Option<RawUpstream>,
    pub users: Option<Vec<RawUser>>,
    #[serde(default)]
    pub routing: RawRouting,
    #[serde(default)]
    pub insight: RawInsight,
    #[serde(default)]
    pub cache: RawCache,
}

/// The `[pool]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    pub mode: Option<String>,
    pub min_size: Option<i64>,
    pub max_size: Option<i64>,
    pub connect_timeout: Option<IntOrString>,
    pub checkout_timeout: Option<IntOrString>,
    pub idle_timeout: Option<IntOrString>,
    pub max_lifetime: Option<IntOrString>,
    pub max_prepared_statements: Option<i64>,
    pub server_reset_query: Option<String>,
}

/// The `[upstream]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub primary: Option<String>,
    #[serde(default)]
    pub replicas: Vec<String>,
}

/// The `[routing]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouting {
    pub enabled: Option<bool>,
    pub auto_role: Option<bool>,
    pub fallback: Option<String>,
    pub max_lag: Option<IntOrString>,
    pub max_lag_bytes: Option<IntOrString>,
    pub read_your_writes: Option<bool>,
    pub ryw_scope: Option<String>,
    pub health_check_interval: Option<IntOrString>,
    pub health_check_timeout: Option<IntOrString>,
    pub lsn_poll_interval: Option<IntOrString>,
    pub breaker_failures: Option<i64>,
    pub ban_time: Option<IntOrString>,
    pub monitor_database: Option<String>,
    pub read_only_functions: Option<Vec<String>>,
}

/// The `[insight]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInsight {
    pub enabled: Option<bool>,
    pub max_fingerprints: Option<i64>,
    pub slow_threshold: Option<IntOrString>,
    pub slow_log_capacity: Option<i64>,
    pub slow_log_file: Option<String>,
    pub redact_params: Option<bool>,
    pub lints: Option<bool>,
    pub n_plus_one_min_repeats: Option<i64>,
    pub burst_gap: Option<IntOrString>,
    pub store_path: Option<String>,
    pub retention_days: Option<i64>,
    pub histogram_precision: Option<i64>,
    pub explain: Option<bool>,
    pub explain_analyze: Option<bool>,
    pub explain_interval: Option<IntOrString>,
    pub explain_top: Option<i64>,
}

/// The `[cache]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    pub enabled: Option<bool>,
    pub max_memory: Option<IntOrString>,
    pub max_result_size: Option<IntOrString>,
    pub ttl_min: Option<IntOrString>,
    pub ttl_max: Option<IntOrString>,
    pub ttl_per_ms: Option<IntOrString>,
    pub coalesce_wait: Option<IntOrString>,
    pub refresh_ahead: Option<bool>,
    pub rules: Option<Vec<RawCacheRule>>,
    pub wal: Option<RawWal>,
    pub redis_url: Option<String>,
    pub redis_results: Option<bool>,
}

/// One `[[cache.rules]]` entry.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCacheRule {
    pub table: Option<String>,
    pub contains: Option<String>,
    pub cache: Option<bool>,
    pub ttl: Option<IntOrString>,
}

/// The `[cache.wal]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWal {
    pub enabled: Option<bool>,
    pub publication: Option<String>,
    pub create_publication: Option<bool>,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// One `[[users]]` entry.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUser {
    pub name: Option<String>,
    pub auth: Option<String>,
    pub password: Option<String>,
    pub server_user: Option<String>,
    pub server_password: Option<String>,
}

/// A value the file may write as a TOML integer or a string: durations
/// (where an integer is refused with a helpful message rather than a type
/// error) and sizes (where an integer means bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IntOrString {
    Int(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IntOrStringVisitor)
    }
}

/// Accepts integers and strings; anything else is a type error naming both.
struct IntOrStringVisitor;

impl Visitor<'_> for IntOrStringVisitor {
    type Value = IntOrString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string such as \"10s\" or \"256MiB\", or an integer")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<IntOrString, E> {
        Ok(IntOrString::Int(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<IntOrString, E> {
        i64::try_from(value)
            .map(IntOrString::Int)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(value), &self))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<IntOrString, E> {
        Ok(IntOrString::Str(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_is_all_defaults() {
        let raw: RawConfig = toml::from_str("").unwrap();
        assert!(raw.listen.is_none() && raw.upstream.is_none() && raw.users.is_none());
        assert!(raw.pool.max_size.is_none());
        assert!(raw.routing.enabled.is_none() && raw.routing.read_only_functions.is_none());
        assert!(raw.insight.enabled.is_none() && raw.insight.store_path.is_none());
    }

    #[test]
    fn int_or_string_takes_both_and_refuses_others() {
        let raw: RawConfig =
            toml::from_str("startup_timeout = 10\nmax_message_size = \"1MiB\"").unwrap();
        assert_eq!(raw.startup_timeout, Some(IntOrString::Int(10)));
        assert_eq!(raw.max_message_size, Some(IntOrString::Str("1MiB".into())));
        let error = toml::from_str::<RawConfig>("startup_timeout = true")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("startup_timeout") || error.contains("line 1"),
            "{error}"
        );
        assert!(error.contains("a string such as"), "{error}");
    }

    #[test]
    fn unknown_keys_are_rejected_in_every_table() {
        for doc in [
            "lisen = \"x\"",
            "[pool]\nmax_szie = 3",
            "[upstream]\nprimari = \"x\"",
            "[[users]]\npasswd = \"x\"",
            "[routing]\nmax_lag_byte = 1",
            "[insight]\nslow_treshold = \"1s\"",
        ] {
            assert!(toml::from_str::<RawConfig>(doc).is_err(), "{doc}");
        }
    }
}
