//! The result cache over JSON and `/metrics`: `GET /api/cache` (counters,
//! memory, WAL streams), `GET /api/cache/entries?order=biggest|hottest`,
//! `GET /api/cache/shapes` (hit ratio per statement shape) and
//! `POST /api/cache/invalidate` (by table, tag, database or everything).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pgpilot_cache::{CacheStats, EntryOrder, Invalidation, Source};
use serde::{Deserialize, Serialize};

use crate::metrics::{Exposition, Kind, Value};
use crate::AdminState;

/// `GET /api/cache`.
#[derive(Debug, Serialize)]
pub struct CacheView {
    pub enabled: bool,
    pub hits: u64,
    pub misses: u64,
    pub hit_ratio: f64,
    pub coalesced: u64,
    pub coalesce_failures: u64,
    pub fills: u64,
    pub fills_stale: u64,
    pub oversize: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub stale_dropped: u64,
    pub refreshes: u64,
    pub ryw_bypasses: u64,
    pub invalidations: InvalidationCounts,
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: usize,
    pub in_flight: usize,
    pub wal: Vec<WalView>,
    /// Redis is configured and this instance is subscribed.
    pub redis_connected: bool,
    /// Lookups of the shared result level in Redis that found a valid
    /// result / did not.
    pub shared_hits: u64,
    pub shared_misses: u64,
    /// Results this instance wrote to the shared level.
    pub shared_stores: u64,
}

#[derive(Debug, Serialize)]
pub struct InvalidationCounts {
    pub proxy: u64,
    pub wal: u64,
    pub api: u64,
    pub peer: u64,
}

/// One database's WAL invalidation stream.
#[derive(Debug, Serialize)]
pub struct WalView {
    pub database: String,
    pub connected: bool,
    pub watermark: String,
    pub commits: u64,
    pub starts: u64,
}

fn view(state: &AdminState) -> CacheView {
    let rt = &state.rt;
    let c = &rt.cache;
    let s: &CacheStats = c.stats();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    CacheView {
        enabled: rt.settings.load().cache.active(),
        hits: get(&s.hits),
        misses: get(&s.misses),
        hit_ratio: s.hit_ratio(),
        coalesced: get(&s.coalesced),
        coalesce_failures: get(&s.coalesce_failures),
        fills: get(&s.fills),
        fills_stale: get(&s.fills_stale),
        oversize: get(&s.oversize),
        evictions: get(&s.evictions),
        expirations: get(&s.expirations),
        stale_dropped: get(&s.stale_dropped),
        refreshes: get(&s.refreshes),
        ryw_bypasses: get(&s.ryw_bypasses),
        invalidations: InvalidationCounts {
            proxy: get(&s.invalidations_proxy),
            wal: get(&s.invalidations_wal),
            api: get(&s.invalidations_api),
            peer: get(&s.invalidations_peer),
        },
        entries: c.entry_count(),
        bytes: c.weighted_size(),
        max_bytes: c.limits().max_memory,
        in_flight: c.in_flight(),
        wal: rt
            .wal
            .all()
            .into_iter()
            .map(|(database, w)| WalView {
                database,
                connected: w.is_connected(),
                watermark: pgpilot_pool::probe::format_lsn(w.watermark()),
                commits: w.commits.load(Relaxed),
                starts: w.starts.load(Relaxed),
            })
            .collect(),
        redis_connected: rt.peers.is_healthy(),
        shared_hits: rt.peers.shared_hits.load(Relaxed),
        shared_misses: rt.peers.shared_misses.load(Relaxed),
        shared_stores: rt.peers.shared_stores.load(Relaxed),
    }
}

pub async fn summary(State(state): State<Arc<AdminState>>) -> Json<CacheView> {
    Json(view(&state))
}

/// `?order=biggest|hottest&limit=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    pub order: Option<String>,
    pub limit: Option<usize>,
}

/// One entry as listed.
#[derive(Debug, Serialize)]
pub struct EntryJson {
    pub key: String,
    pub bytes: usize,
    pub hits: u64,
    pub age_s: f64,
    pub ttl_s: f64,
    pub database: String,
    pub user: String,
    pub query: String,
    pub fingerprint: String,
    pub tables: Vec<String>,
    pub tags: Vec<String>,
}

pub async fn entries(State(state): State<Arc<AdminState>>, q: Query<EntriesQuery>) -> Response {
    let order = match q.order.as_deref() {
        None | Some("hottest") => EntryOrder::Hottest,
        Some("biggest") => EntryOrder::Biggest,
        Some(other) => {
            return bad_request(&format!("order must be biggest or hottest, not {other:?}"))
        }
    };
    let limit = q.limit.unwrap_or(100).min(10_000);
    let list: Vec<EntryJson> = state
        .rt
        .cache
        .entries(order, limit, Instant::now())
        .into_iter()
        .map(|e| EntryJson {
            key: e.key.to_string(),
            bytes: e.bytes,
            hits: e.hits,
            age_s: e.age.as_secs_f64(),
            ttl_s: e.ttl.as_secs_f64(),
            database: e.database,
            user: e.user,
            query: e.sql,
            fingerprint: format!("{:032x}", e.shape),
            tables: e.tables,
            tags: e.tags,
        })
        .collect();
    Json(list).into_response()
}

/// One statement shape's cache use.
#[derive(Debug, Serialize)]
pub struct ShapeJson {
    pub fingerprint: String,
    pub hits: u64,
    pub misses: u64,
    pub hit_ratio: f64,
}

pub async fn shapes(State(state): State<Arc<AdminState>>, q: Query<EntriesQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).min(10_000);
    let list: Vec<ShapeJson> = state
        .rt
        .cache
        .shapes(limit)
        .into_iter()
        .map(|(shape, hits, misses)| ShapeJson {
            fingerprint: format!("{shape:032x}"),
            hits,
            misses,
            hit_ratio: if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            },
        })
        .collect();
    Json(list).into_response()
}

/// `POST /api/cache/invalidate` body: exactly one of the fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    /// Tables to invalidate (in `database`, or in every database).
    pub tables: Option<Vec<String>>,
    pub database: Option<String>,
    pub tags: Option<Vec<String>>,
    pub all: Option<bool>,
}

pub async fn invalidate(
    State(state): State<Arc<AdminState>>,
    Json(req): Json<InvalidateRequest>,
) -> Response {
    let what = match (req.tables, req.tags, req.all, req.database) {
        (Some(tables), None, None, Some(database)) => Invalidation::Tables { database, tables },
        (Some(tables), None, None, None) => Invalidation::TablesEverywhere { tables },
        (None, Some(tags), None, None) => Invalidation::Tags(tags),
        (None, None, Some(true), None) => Invalidation::All,
        (None, None, None, Some(database)) => Invalidation::Database(database),
        _ => {
            return bad_request(
                "give one of: tables (with an optional database), tags, database, or all: true",
            )
        }
    };
    state.rt.cache.invalidate(Source::Api, &what);
    state.rt.peers.publish(&what);
    (
        StatusCode::OK,
        Json(serde_json::json!({"invalidated": true})),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// The `pgpilot_cache_*` families for `/metrics`.
pub fn render_metrics(exp: &mut Exposition, state: &AdminState) {
    let v = view(state);
    let counters: [(&str, &str, u64); 15] = [
        ("pgpilot_cache_hits_total", "Reads answered from the result cache.", v.hits),
        ("pgpilot_cache_shared_hits_total", "Local misses answered by the shared result level in Redis.", v.shared_hits),
        ("pgpilot_cache_shared_misses_total", "Shared result level lookups that found no valid result.", v.shared_misses),
        ("pgpilot_cache_shared_stores_total", "Results this instance wrote to the shared result level in Redis.", v.shared_stores),
        ("pgpilot_cache_misses_total", "Cache lookups that found no valid entry.", v.misses),
        ("pgpilot_cache_coalesced_total", "Misses that waited for an identical query and were answered from its result.", v.coalesced),
        ("pgpilot_cache_fills_total", "Results stored.", v.fills),
        ("pgpilot_cache_fills_stale_total", "Results not stored because a table they read was written while the query ran.", v.fills_stale),
        ("pgpilot_cache_oversize_total", "Results not stored for exceeding max_result_size.", v.oversize),
        ("pgpilot_cache_evictions_total", "Entries evicted to stay within the memory budget.", v.evictions),
        ("pgpilot_cache_expirations_total", "Entries that reached their TTL.", v.expirations),
        ("pgpilot_cache_stale_dropped_total", "Entries found invalidated at lookup.", v.stale_dropped),
        ("pgpilot_cache_refreshes_total", "Hot entries refreshed ahead of their TTL.", v.refreshes),
        ("pgpilot_cache_ryw_bypasses_total", "Reads that skipped the cache until invalidation caught up with the session's own write.", v.ryw_bypasses),
        ("pgpilot_cache_coalesce_failures_total", "Waits for an identical query that ended without a usable result.", v.coalesce_failures),
    ];
    for (name, help, value) in counters {
        exp.family(name, Kind::Counter, help);
        exp.sample(name, &[], Value::Int(value));
    }
    let name = "pgpilot_cache_invalidations_total";
    exp.family(
        name,
        Kind::Counter,
        "Invalidation events applied, by source.",
    );
    let i = &v.invalidations;
    for (source, n) in [
        ("proxy", i.proxy),
        ("wal", i.wal),
        ("api", i.api),
        ("peer", i.peer),
    ] {
        exp.sample(name, &[("source", source)], Value::Int(n));
    }
    let gauges: [(&str, &str, Value); 4] = [
        (
            "pgpilot_cache_bytes",
            "Bytes charged against the cache's memory budget.",
            Value::Int(v.bytes),
        ),
        (
            "pgpilot_cache_max_bytes",
            "The cache's memory budget.",
            Value::Int(v.max_bytes as u64),
        ),
        (
            "pgpilot_cache_entries",
            "Entries cached.",
            Value::Int(v.entries),
        ),
        (
            "pgpilot_cache_hit_ratio",
            "Hits divided by lookups since start.",
            Value::Float(v.hit_ratio),
        ),
    ];
    for (name, help, value) in gauges {
        exp.family(name, Kind::Gauge, help);
        exp.sample(name, &[], value);
    }
    let name = "pgpilot_cache_wal_connected";
    exp.family(
        name,
        Kind::Gauge,
        "1 while the database's WAL invalidation stream is applying changes.",
    );
    for w in &v.wal {
        exp.sample(
            name,
            &[("database", &w.database)],
            Value::Int(u64::from(w.connected)),
        );
    }
}
