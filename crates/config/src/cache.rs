//! The validated `[cache]` table: the query-result cache, its memory
//! budget, TTL policy, opt-in rules and invalidation sources.
//!
//! Checked by `crate::validate::cache`; the proxy builds its result cache
//! from it and the CLI's `--cache` flag turns `enabled` on.

use std::time::Duration;

/// Default `cache.max_memory`: 256 MiB.
pub const DEFAULT_CACHE_MEMORY: usize = 256 << 20;
/// Default `cache.max_result_size`: 400 kB, pgpool-II's `memqcache_maxcache`.
pub const DEFAULT_MAX_RESULT_SIZE: usize = 400 * 1024;

/// One `[[cache.rules]]` entry: which statements it covers and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRule {
    /// The rule covers statements reading this table (unqualified name, or
    /// `schema.name`).
    pub table: Option<String>,
    /// The rule covers statements whose text contains this (case-insensitive).
    pub contains: Option<String>,
    /// Cache what the rule covers (true) or never cache it (false).
    pub cache: bool,
    /// TTL for what the rule covers instead of the adaptive one.
    pub ttl: Option<Duration>,
}

/// Where the result cache learns about writes pgpilot does not route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalInvalidation {
    /// Follow the primary's WAL through a logical replication slot
    /// (`pgoutput`). Default false.
    pub enabled: bool,
    /// The publication to stream. Default `pgpilot_cache`.
    pub publication: String,
    /// Create the publication `FOR ALL TABLES` when it is missing (needs a
    /// superuser). Default true.
    pub create_publication: bool,
    /// The role streaming the WAL (needs the REPLICATION attribute); default
    /// the first configured user's server login.
    pub user: Option<String>,
    /// Its password.
    pub password: Option<String>,
}

/// Query-result cache settings. Defaults when `[cache]` is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Cache every eligible read. Default false: only rules and
    /// `/* pgpilot:cache */` hints opt statements in.
    pub enabled: bool,
    /// Memory budget for cached results, in bytes. Default 256 MiB.
    pub max_memory: usize,
    /// Larger results are not cached. Default 400 kB.
    pub max_result_size: usize,
    /// Shortest adaptive TTL. Default 5s.
    pub ttl_min: Duration,
    /// Longest adaptive TTL. Default 5m.
    pub ttl_max: Duration,
    /// TTL added per millisecond the query took to execute: expensive
    /// queries live longer. Default 1s.
    pub ttl_per_ms: Duration,
    /// How long identical concurrent misses wait for the one query that
    /// fills the entry before running their own. Default 5s.
    pub coalesce_wait: Duration,
    /// Refresh hot entries once past half their TTL: one client re-runs the
    /// query while the others keep hitting. Default true.
    pub refresh_ahead: bool,
    /// Opt-in / opt-out rules, first match wins.
    pub rules: Vec<CacheRule>,
    /// Invalidation from the WAL stream.
    pub wal: WalInvalidation,
    /// `redis://host:port[/db]`: fan invalidations out to the other pgpilot
    /// instances using the same Redis. Default none.
    pub redis_url: Option<String>,
    /// Also keep results in Redis, shared by every instance, behind each
    /// one's own cache. Default false.
    pub redis_results: bool,
}

impl Default for CacheConfig {
    /// The documented defaults, as used when `[cache]` is absent.
    fn default() -> CacheConfig {
        CacheConfig {
            enabled: false,
            max_memory: DEFAULT_CACHE_MEMORY,
            max_result_size: DEFAULT_MAX_RESULT_SIZE,
            ttl_min: Duration::from_secs(5),
            ttl_max: Duration::from_secs(300),
            ttl_per_ms: Duration::from_secs(1),
            coalesce_wait: Duration::from_secs(5),
            refresh_ahead: true,
            rules: Vec::new(),
            wal: WalInvalidation {
                enabled: false,
                publication: "pgpilot_cache".to_owned(),
                create_publication: true,
                user: None,
                password: None,
            },
            redis_url: None,
            redis_results: false,
        }
    }
}

impl CacheConfig {
    /// Whether anything can be cached at all (globally on, or some rule
    /// opts statements in; hints only count when this is true).
    pub fn active(&self) -> bool {
        self.enabled || self.rules.iter().any(|r| r.cache)
    }
}
