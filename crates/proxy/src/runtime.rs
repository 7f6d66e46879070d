//! The one runtime value built at start-up and handed to every task:
//! live settings (swapped on reload), pools, the SQL analyzer, the
//! prepared-statement registry, cancel routing and proxy-wide counters.
//! There are no globals; tests build as many runtimes as they like.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use pgpilot_auth::ScramSecret;
use pgpilot_config::Settings;
use pgpilot_insight::{Insight, InsightSettings};
use pgpilot_sql::Analyzer;

use crate::backends::Backends;
use crate::cancel::CancelRegistry;
use crate::functions::FunctionCatalog;
use crate::params::Settings as ClientSettings;
use crate::relations::RelationCatalog;
use crate::statements::StatementRegistry;

/// Bound on distinct query texts whose analysis is cached.
const ANALYSIS_CACHE: usize = 10_000;

/// Bound on distinct client startup settings shared (beyond it, a client's
/// settings are its own: correct, only compared by content).
const MAX_INTERNED_SETTINGS: usize = 4096;

/// Proxy-wide counters not tied to one pool.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Client connections currently open (any phase).
    pub clients: AtomicUsize,
    /// Connections refused because `max_client_connections` was reached.
    pub refused_connections: AtomicU64,
    /// Client logins that failed authentication.
    pub auth_failures: AtomicU64,
    /// Connections closed for protocol violations.
    pub protocol_errors: AtomicU64,
    /// Clients pinned to one server for session state.
    pub pinned_clients: AtomicU64,
    /// Hidden Parse messages sent to give a server a client's statement.
    pub prepared_reparses: AtomicU64,
    /// Cancel requests forwarded to a server.
    pub cancels_forwarded: AtomicU64,
    /// Server connections that failed in the middle of a client's request.
    pub server_failures: AtomicU64,
}

/// Shared state of one running proxy.
pub struct Runtime {
    /// Current settings; replaced whole on reload.
    pub settings: ArcSwap<Settings>,
    /// The primary and replicas, with their pools.
    pub backends: Backends,
    /// Function volatility per database, for routing.
    pub functions: FunctionCatalog,
    /// Writes shared by wider read-your-writes scopes (trace, token).
    pub shared_writes: crate::route::SharedWrites,
    /// Per-query statistics, findings and slow log.
    pub insight: Arc<Insight>,
    pub analyzer: Analyzer,
    pub statements: StatementRegistry,
    pub cancels: CancelRegistry,
    pub counters: ProxyCounters,
    /// The query-result cache (used only when `[cache]` opts statements in).
    pub cache: Arc<pgpilot_cache::ResultCache>,
    /// The cache has been active at some point since start (until then no
    /// entry exists and writes need not invalidate anything).
    pub cache_ever_active: AtomicBool,
    /// Relation kinds per database, for cache eligibility.
    pub relations: RelationCatalog,
    /// DDL was seen: the monitor reloads the catalogs at its next sample.
    pub catalog_stale: AtomicBool,
    /// Where the WAL invalidation stream stands.
    pub wal: crate::cache::WalState,
    /// Invalidations shared with other instances through Redis.
    pub peers: crate::peers::PeerLink,
    /// SCRAM verifiers derived from plaintext passwords, by (user, password).
    scram_cache: Mutex<HashMap<(String, String), ScramSecret>>,
    /// Distinct client startup settings in use (see [`Runtime::intern_settings`]).
    settings_in_use: Mutex<HashMap<ClientSettings, Weak<ClientSettings>>>,
}

/// Insight settings from the proxy settings' `[insight]` table. Limits
/// the file does not expose (endpoints, shape cache, findings) keep the
/// insight crate's defaults; the `explain*` keys belong to the plan runner.
pub fn insight_settings(settings: &Settings) -> InsightSettings {
    let c = &settings.insight;
    InsightSettings {
        enabled: c.enabled,
        max_fingerprints: c.max_fingerprints.get(),
        histogram_sigfig: c.histogram_precision,
        slow_threshold: c.slow_threshold,
        slow_log_capacity: c.slow_log_capacity,
        slow_log_file: c.slow_log_file.clone(),
        redact_params: c.redact_params,
        lints: c.lints,
        n_plus_one_min_repeats: c.n_plus_one_min_repeats,
        burst_gap: c.burst_gap,
        store_path: c.store_path.clone(),
        retention_days: c.retention_days,
        ..InsightSettings::default()
    }
}

/// The cache's limits from `[cache]` (fixed for the life of the process:
/// the memory budget sizes the store).
pub fn cache_limits(c: &pgpilot_config::CacheConfig) -> pgpilot_cache::CacheLimits {
    pgpilot_cache::CacheLimits {
        max_memory: c.max_memory,
        max_result_size: c.max_result_size,
        ttl_min: c.ttl_min,
        ttl_max: c.ttl_max,
        ttl_per_ms: c.ttl_per_ms,
        refresh_ahead: c.refresh_ahead,
    }
}

/// An [`Insight`], falling back to one without a history store when the
/// store cannot be opened (insight must never stop the proxy).
fn new_insight(settings: InsightSettings) -> Insight {
    let (now, wall) = (std::time::Instant::now(), std::time::SystemTime::now());
    match Insight::new(settings.clone(), now, wall) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "query history store unavailable; keeping insight in memory only");
            let settings = InsightSettings {
                store_path: None,
                ..settings
            };
            Insight::new(settings, now, wall)
                .expect("an insight without a store cannot fail to open")
        }
    }
}

impl Runtime {
    pub fn new(settings: Settings) -> Arc<Runtime> {
        let insight = Arc::new(new_insight(insight_settings(&settings)));
        let settings_cache = settings.cache.clone();
        Arc::new(Runtime {
            backends: Backends::from_settings(&settings),
            settings: ArcSwap::from_pointee(settings),
            functions: FunctionCatalog::default(),
            insight,
            shared_writes: Default::default(),
            analyzer: Analyzer::new(ANALYSIS_CACHE),
            statements: StatementRegistry::default(),
            cancels: CancelRegistry::default(),
            counters: ProxyCounters::default(),
            cache: Arc::new(pgpilot_cache::ResultCache::new(cache_limits(
                &settings_cache,
            ))),
            cache_ever_active: AtomicBool::new(settings_cache.active()),
            relations: RelationCatalog::default(),
            catalog_stale: AtomicBool::new(false),
            wal: Default::default(),
            peers: crate::peers::PeerLink::new(),
            scram_cache: Mutex::new(HashMap::new()),
            settings_in_use: Mutex::new(HashMap::new()),
        })
    }

    /// Installs new settings and pushes pool limits to every pool.
    pub fn reload(&self, settings: Settings) {
        self.backends.apply(&settings);
        if settings.cache.active() {
            self.cache_ever_active
                .store(true, std::sync::atomic::Ordering::Release);
        }
        self.settings.store(Arc::new(settings));
    }

    /// One shared map per distinct set of client startup settings: a
    /// server connection that took one client's settings then matches the
    /// next such client by pointer, with no map comparison per checkout.
    pub fn intern_settings(&self, settings: &ClientSettings) -> Arc<ClientSettings> {
        let mut in_use = self.settings_in_use.lock();
        if let Some(shared) = in_use.get(settings).and_then(Weak::upgrade) {
            return shared;
        }
        if in_use.len() >= MAX_INTERNED_SETTINGS {
            in_use.retain(|_, w| w.strong_count() > 0);
        }
        let shared = Arc::new(settings.clone());
        if in_use.len() < MAX_INTERNED_SETTINGS {
            in_use.insert(settings.clone(), Arc::downgrade(&shared));
        }
        shared
    }

    /// The SCRAM verifier for `user` whose configured secret is `password`
    /// (a stored verifier is parsed; a plaintext password is derived once).
    pub fn scram_secret(&self, user: &str, password: &str) -> Option<ScramSecret> {
        if password.starts_with("SCRAM-SHA-256$") {
            return ScramSecret::parse(password).ok();
        }
        let key = (user.to_owned(), password.to_owned());
        let mut cache = self.scram_cache.lock();
        Some(
            cache
                .entry(key)
                .or_insert_with(|| ScramSecret::generate(password))
                .clone(),
        )
    }
}
