//! Whether a statement's result may be cached, for this session, now, and
//! under which key.
//!
//! Three layers, all required: the text (the parse-based refusals in
//! `pgpilot_sql::CacheFacts`: locks, `SELECT INTO`, value functions, system
//! catalogs…), the catalog (every table read is a permanent ordinary table
//! without row-level security; every function is IMMUTABLE), and the
//! session (outside any transaction block, no write pending, not pinned —
//! which covers `SET ROLE` —, no setting change in flight). Opting in is
//! the configuration's: `enabled`, a rule, or a `pgpilot:cache` hint.

use std::time::Duration;

use pgpilot_cache::{CacheKey, KeyBuilder, Protocol};
use pgpilot_config::CacheConfig;
use pgpilot_sql::{Analysis, Target};
use pgpilot_wire::backend::TransactionStatus;

use crate::session::Session;

/// How one eligible statement is cached.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub sql: std::sync::Arc<str>,
    pub shape: u128,
    /// The text's literal-preserving normalized hash.
    pub exact: u128,
    /// Its classification (the tables it reads, for the fill).
    pub class: std::sync::Arc<pgpilot_sql::Classification>,
    pub tags: Vec<String>,
    pub ttl: Option<Duration>,
    /// The shared level's version counters read before the fill's query
    /// was sent (see `cache::shared`); `None` when not storing there.
    pub stamp: Option<Vec<u64>>,
}

/// What the configuration says about a statement.
struct OptIn {
    ttl: Option<Duration>,
    tags: Vec<String>,
}

impl Session {
    /// Whether the cache may answer or fill anything for this session now:
    /// nothing of the client's is in flight (a pipelined `BEGIN` not yet
    /// answered would leave `client_status` idle while the statement runs
    /// inside a transaction), outside any transaction block.
    pub(crate) fn cache_usable(&self) -> bool {
        self.client_status == TransactionStatus::Idle
            && self.expect.is_empty()
            && !self.cache.batch_open
            && !self.wrote
            && self.pinned.is_none()
            && !self.skip_until_sync
            && self.lost_transaction.is_none()
            && !self.copy_in
            && self.txn.effects.is_empty()
    }

    /// The cache plan for `sql` (already analyzed; `exact` gives its
    /// literal-preserving hash, memoized by the caller), or `None` when it
    /// must not be cached.
    pub(crate) fn cache_plan(
        &self,
        sql: &std::sync::Arc<str>,
        analysis: &Analysis,
        exact: impl FnOnce() -> u128,
    ) -> Option<Plan> {
        let settings = self.rt.settings.load();
        let config = &settings.cache;
        if !config.active() || !self.cache_usable() {
            return None;
        }
        let text: &str = sql;
        let class = &analysis.class;
        if class.cache.refusal.is_some()
            || class.target == Target::Primary
            || analysis.hint == pgpilot_sql::RouteHint::Primary
            || analysis.has_effects()
        {
            return None;
        }
        let opt_in = opt_in(config, text, analysis)?;
        if !self.catalog_allows(analysis) {
            return None;
        }
        Some(Plan {
            sql: sql.clone(),
            shape: analysis.key,
            exact: exact(),
            class: class.clone(),
            tags: opt_in.tags,
            ttl: opt_in.ttl,
            stamp: None,
        })
    }

    /// Every table read is cacheable and every function IMMUTABLE, in this
    /// session's database.
    fn catalog_allows(&self, analysis: &Analysis) -> bool {
        let db = &self.database;
        let class = &analysis.class;
        class
            .cache
            .reads
            .iter()
            .all(|t| self.rt.relations.is_cacheable(db, &t.name))
            && class
                .functions
                .iter()
                .all(|f| self.rt.functions.is_immutable(db, f))
    }

    /// The key of `plan` run by this session with `protocol` and, for the
    /// extended protocol, the Bind's parameter section (formats, values,
    /// result formats).
    pub(crate) fn cache_key(
        &mut self,
        plan: &Plan,
        protocol: Protocol,
        param_types: &[u8],
        params: &[u8],
    ) -> CacheKey {
        let session = self.session_key();
        let mut k = KeyBuilder::new();
        k.u128(plan.exact)
            .protocol(protocol)
            .part(param_types)
            .part(params)
            .u128(session);
        k.finish()
    }

    /// User, database and every session setting (search_path, TimeZone,
    /// DateStyle, client_encoding, …) as its SET statement, in name order;
    /// memoized until the settings change.
    fn session_key(&mut self) -> u128 {
        if let Some(k) = self.cache.session_key {
            return k;
        }
        let mut k = KeyBuilder::new();
        k.part(self.user.name.as_bytes())
            .part(self.database.as_bytes());
        for (name, statement) in self.settings.iter() {
            k.part(name.as_bytes()).part(statement.as_bytes());
        }
        let key = k.finish().0;
        self.cache.session_key = Some(key);
        key
    }

    /// Whether invalidation has caught up with this session's own last
    /// write: with the WAL stream, a hit needs the stream to have applied a
    /// primary position sampled after that commit (triggers and functions
    /// may have written tables the proxy could not name). Also false while
    /// an invalidation source the cache relies on is down.
    pub(crate) fn cache_fresh_enough(&mut self) -> bool {
        let settings = self.rt.settings.load();
        let wal = self.rt.wal.db(&self.database);
        if settings.cache.wal.enabled {
            if !wal.as_ref().is_some_and(|w| w.is_connected()) {
                return false;
            }
        } else if settings.cache.redis_url.is_some() && !self.rt.peers.is_healthy() {
            // Other instances' writes reach this one only through Redis.
            return false;
        }
        if !settings.cache.wal.enabled {
            return true;
        }
        // Writes by other connections of the same trace or token count.
        self.merge_shared_writes();
        let Some(written) = self.ryw.last_write else {
            return true;
        };
        // Independent of `routing.read_your_writes`: the cache keeps its
        // promise whatever routing does.
        let needed = self.ryw.needed_lsn.or_else(|| {
            let lsn = self.rt.backends.primary()?.position_after(written)?;
            self.ryw.needed_lsn = Some(lsn);
            Some(lsn)
        });
        let watermark = wal.map_or(0, |w| w.watermark());
        let fresh = needed.is_some_and(|lsn| watermark >= lsn);
        if !fresh {
            self.rt.cache.ryw_bypass();
        }
        fresh
    }
}

/// Hint, then rules, then the global switch: `None` when not opted in or
/// opted out.
fn opt_in(config: &CacheConfig, text: &str, analysis: &Analysis) -> Option<OptIn> {
    let hint = if analysis.cache_hint {
        pgpilot_sql::cache_hint(text)
    } else {
        None
    };
    if hint.as_ref().is_some_and(|h| !h.enabled) {
        return None;
    }
    let rule = matching_rule(config, text, analysis);
    let hinted = hint.as_ref().is_some_and(|h| h.enabled);
    let wanted = match rule {
        Some(r) => r.cache || hinted,
        None => config.enabled || hinted,
    };
    if !wanted {
        return None;
    }
    let hint_ttl = hint.as_ref().and_then(|h| h.ttl);
    Some(OptIn {
        ttl: hint_ttl.or(rule.and_then(|r| r.ttl)),
        tags: hint.map(|h| h.tags).unwrap_or_default(),
    })
}

/// The first rule covering the statement.
fn matching_rule<'a>(
    config: &'a CacheConfig,
    text: &str,
    analysis: &Analysis,
) -> Option<&'a pgpilot_config::CacheRule> {
    if config.rules.is_empty() {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    config.rules.iter().find(|r| {
        let by_table = r.table.as_deref().is_some_and(|want| {
            analysis.class.cache.reads.iter().any(|t| {
                t.name == want
                    || t.schema
                        .as_deref()
                        .is_some_and(|s| want == format!("{s}.{}", t.name))
            })
        });
        let by_text = r.contains.as_deref().is_some_and(|c| lower.contains(c));
        by_table || by_text
    })
}
