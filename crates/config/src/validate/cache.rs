//! Checks the `[cache]` table: the memory budget, result-size limit, TTL
//! bounds, rules, WAL invalidation and Redis.
//!
//! Every key is optional; a bad one is recorded under `cache.<key>` and
//! replaced by its default so the remaining checks still run.

use crate::cache::{CacheConfig, CacheRule, WalInvalidation};
use crate::raw::{RawCache, RawCacheRule, RawWal};

use super::users::{non_empty_name, server_secret};
use super::{byte_size, duration, no_nul, positive_duration, Problems};

/// Checks the `[cache]` table (all defaults when it is absent).
pub(super) fn cache(p: &mut Problems, raw: RawCache) -> CacheConfig {
    let d = CacheConfig::default();
    let size = |p: &mut Problems, key: &str, raw, default| {
        p.parse(&format!("cache.{key}"), raw, byte_size)
            .unwrap_or(default)
    };
    let positive = |p: &mut Problems, key: &str, raw, default| {
        p.parse(&format!("cache.{key}"), raw, positive_duration)
            .unwrap_or(default)
    };
    let config = CacheConfig {
        enabled: raw.enabled.unwrap_or(d.enabled),
        max_memory: size(p, "max_memory", raw.max_memory, d.max_memory),
        max_result_size: size(p, "max_result_size", raw.max_result_size, d.max_result_size),
        ttl_min: positive(p, "ttl_min", raw.ttl_min, d.ttl_min),
        ttl_max: positive(p, "ttl_max", raw.ttl_max, d.ttl_max),
        ttl_per_ms: p
            .parse("cache.ttl_per_ms", raw.ttl_per_ms, duration)
            .unwrap_or(d.ttl_per_ms),
        coalesce_wait: p
            .parse("cache.coalesce_wait", raw.coalesce_wait, duration)
            .unwrap_or(d.coalesce_wait),
        refresh_ahead: raw.refresh_ahead.unwrap_or(d.refresh_ahead),
        rules: rules(p, raw.rules.unwrap_or_default()),
        wal: wal(p, raw.wal.unwrap_or_default(), d.wal),
        redis_url: p
            .parse("cache.redis_url", raw.redis_url, redis_url)
            .unwrap_or(None),
        redis_results: raw.redis_results.unwrap_or(d.redis_results),
    };
    check_combinations(p, &config);
    config
}

fn rules(p: &mut Problems, raw: Vec<RawCacheRule>) -> Vec<CacheRule> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let path = format!("cache.rules[{i}]");
        if r.table.is_none() == r.contains.is_none() {
            p.add(&path, "give exactly one of `table` or `contains`");
            continue;
        }
        let ttl = p.parse(&format!("{path}.ttl"), r.ttl, positive_duration);
        out.push(CacheRule {
            table: r.table.map(|t| t.to_ascii_lowercase()),
            contains: r.contains.map(|t| t.to_ascii_lowercase()),
            cache: r.cache.unwrap_or(true),
            ttl,
        });
    }
    out
}

/// The user, password and publication reach the wire and SQL text: the
/// same checks as a `[[users]]` entry's server login.
fn wal(p: &mut Problems, raw: RawWal, d: WalInvalidation) -> WalInvalidation {
    WalInvalidation {
        enabled: raw.enabled.unwrap_or(d.enabled),
        publication: p
            .parse("cache.wal.publication", raw.publication, no_nul)
            .unwrap_or(d.publication),
        create_publication: raw.create_publication.unwrap_or(d.create_publication),
        user: p
            .parse("cache.wal.user", raw.user, non_empty_name)
            .or(d.user),
        password: p
            .parse("cache.wal.password", raw.password, server_secret)
            .or(d.password),
    }
}

fn redis_url(text: String) -> std::result::Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if !text.starts_with("redis://") {
        return Err(format!("expected redis://host[:port][/db], got {text:?}"));
    }
    Ok(Some(text))
}

fn check_combinations(p: &mut Problems, c: &CacheConfig) {
    if c.ttl_min > c.ttl_max && !p.has("cache.ttl_min") && !p.has("cache.ttl_max") {
        p.add("cache.ttl_min", "must not exceed cache.ttl_max");
    }
    if c.max_result_size > c.max_memory && !p.has("cache.max_result_size") {
        p.add("cache.max_result_size", "must not exceed cache.max_memory");
    }
    if c.wal.publication.is_empty() && !p.has("cache.wal.publication") {
        p.add("cache.wal.publication", "must not be empty");
    }
    if c.wal.password.is_some() && c.wal.user.is_none() && !p.has("cache.wal.user") {
        p.add(
            "cache.wal.password",
            "needs cache.wal.user (without it the stream logs in as the first [[users]] entry, with that entry's password)",
        );
    }
    if c.redis_results && c.redis_url.is_none() && !p.has("cache.redis_url") {
        p.add("cache.redis_results", "needs cache.redis_url");
    }
}

#[cfg(test)]
mod tests {
    use crate::from_toml_str;

    const BASE: &str =
        "[upstream]\nprimary = \"127.0.0.1:5432\"\n[[users]]\nname = \"app\"\npassword = \"x\"\n";

    fn errors(extra: &str) -> Vec<String> {
        match from_toml_str(&format!("{BASE}{extra}")) {
            Ok(_) => Vec::new(),
            Err(crate::Error::Invalid(list)) => list.into_iter().map(|e| e.path).collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn defaults_are_off_and_bounded() {
        let s = from_toml_str(BASE).expect("valid");
        assert!(!s.cache.enabled && !s.cache.active());
        assert_eq!(s.cache.max_memory, 256 << 20);
        assert!(s.cache.ttl_min <= s.cache.ttl_max);
    }

    #[test]
    fn a_full_table_parses() {
        let s = from_toml_str(&format!(
            "{BASE}[cache]\nenabled = true\nmax_memory = \"64MiB\"\nttl_min = \"1s\"\nttl_max = \"1m\"\nredis_url = \"redis://127.0.0.1:6379\"\n\
[cache.wal]\nenabled = true\npublication = \"p\"\n\
             [[cache.rules]]\ntable = \"Products\"\nttl = \"30s\"\n[[cache.rules]]\ncontains = \"report\"\ncache = false\n"
        ))
        .expect("valid");
        assert_eq!(s.cache.max_memory, 64 << 20);
        assert_eq!(s.cache.rules.len(), 2);
        assert_eq!(s.cache.rules[0].table.as_deref(), Some("products"));
        assert!(!s.cache.rules[1].cache);
        assert!(s.cache.wal.enabled);
        assert_eq!(s.cache.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
    }

    #[test]
    fn wal_login_and_redis_combinations_are_checked() {
        assert_eq!(
            errors("[cache.wal]\npassword = \"s\"\n"),
            ["cache.wal.password"],
            "a password without its user"
        );
        assert_eq!(errors("[cache.wal]\nuser = \"\"\n"), ["cache.wal.user"]);
        assert_eq!(
            errors("[cache.wal]\npublication = \"p\\u0000q\"\n"),
            ["cache.wal.publication"]
        );
        assert_eq!(
            errors("[cache]\nredis_results = true\n"),
            ["cache.redis_results"]
        );
        assert!(errors("[cache.wal]\nuser = \"walker\"\npassword = \"s\"\n").is_empty());
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(
            errors("[cache]\nttl_min = \"2m\"\nttl_max = \"1m\"\n"),
            ["cache.ttl_min"]
        );
        assert_eq!(
            errors("[cache]\nmax_memory = \"lots\"\n"),
            ["cache.max_memory"]
        );
        assert_eq!(
            errors("[cache]\nredis_url = \"localhost\"\n"),
            ["cache.redis_url"]
        );
        assert_eq!(
            errors("[[cache.rules]]\ntable = \"a\"\ncontains = \"b\"\n"),
            ["cache.rules[0]"]
        );
        assert_eq!(
            errors("[[cache.rules]]\ntable = \"a\"\nttl = \"0s\"\n"),
            ["cache.rules[0].ttl"]
        );
    }
}
