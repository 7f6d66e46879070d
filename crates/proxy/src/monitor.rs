//! Health and replication monitoring: one task per server samples, every
//! `lsn_poll_interval`, whether it is in recovery, its WAL position (replay
//! LSN on a replica, current LSN on the primary) and its replay delay, each
//! bounded by `health_check_timeout` (a primary whose position nothing
//! needs, with no replicas and no WAL-watched cache, every
//! `health_check_interval` instead). Successes close the server's circuit
//! breaker, failures count towards opening it. With `auto_role`, a replica
//! that leaves recovery becomes the primary (promotion). The primary's task
//! also loads each database's function volatility (routing, caching) and
//! relation kinds (which tables the result cache may read).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_pool::login::{self, LoginParams};
use pgpilot_pool::probe::{self, parse_lsn};
use pgpilot_pool::ServerConn;
use tokio::task::JoinHandle;

use crate::backends::{Backend, Role, Sample};
use crate::functions::{Volatility, CATALOG_QUERY};
use crate::relations::{relations_query, Relations};
use crate::runtime::Runtime;

/// One round trip: recovery state, WAL position, replay delay in ms.
///
/// On the primary the *insert* position: an asynchronous commit
/// (`synchronous_commit = off`) is acknowledged before its WAL is written,
/// so the write position (`pg_current_wal_lsn()`) may not include it yet,
/// and a read-your-writes wait for it could end on a replica that lacks the
/// client's write.
const SAMPLE_QUERY: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END, \
     COALESCE((EXTRACT(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint, 0)";

/// How often the function catalogs are refreshed.
const CATALOG_REFRESH: Duration = Duration::from_secs(30);

/// How soon a database whose catalog load failed is tried again. (A
/// database first used since the last load is loaded at the next sample.)
const CATALOG_RETRY: Duration = Duration::from_secs(5);

/// When each database's catalog load was last attempted.
type CatalogAttempts = HashMap<String, Instant>;

/// Starts and stops per-server monitors as servers come and go.
pub async fn monitor_forever(rt: Arc<Runtime>) {
    let mut running: HashMap<u32, JoinHandle<()>> = HashMap::new();
    loop {
        for b in rt.backends.all() {
            running
                .entry(b.id)
                .or_insert_with(|| tokio::spawn(monitor_backend(rt.clone(), b.clone())));
        }
        running.retain(|_, task| !task.is_finished());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Samples one server until it is removed.
async fn monitor_backend(rt: Arc<Runtime>, b: Arc<Backend>) {
    let mut conn: Option<ServerConn> = None;
    let mut catalogs = CatalogAttempts::new();
    while !b.is_removed() {
        let settings = rt.settings.load_full();
        let r = &settings.routing;
        let sent_at = Instant::now();
        let outcome =
            tokio::time::timeout(r.health_check_timeout, sample(&rt, &b, &mut conn, sent_at)).await;
        match outcome {
            Ok(Some(s)) => {
                on_sample(&rt, &b, &s);
                if b.role() == Role::Primary {
                    load_catalogs(&rt, &b, &mut catalogs).await;
                }
            }
            _ => {
                conn = None;
                b.record_failure(Instant::now());
            }
        }
        let pause = if !b.is_healthy() {
            r.health_check_interval.min(r.ban_time)
        } else if positions_needed(&rt, &b, &settings) {
            r.lsn_poll_interval
        } else {
            r.health_check_interval
        };
        tokio::time::sleep(pause).await;
    }
}

/// Whether `b`'s WAL position must be sampled every `lsn_poll_interval`:
/// a replica's always (lag, read-your-writes); the primary's while
/// replicas exist (the position a client's write must reach on them) or
/// the result cache's WAL watermark compares against it. Otherwise a
/// health check every `health_check_interval` is enough, and a primary
/// without replicas is not sent a hundred queries a second.
fn positions_needed(rt: &Runtime, b: &Backend, settings: &pgpilot_config::Settings) -> bool {
    b.role() == Role::Replica
        || rt.backends.has_replicas()
        || (settings.cache.active() && settings.cache.wal.enabled)
}

fn monitor_login(rt: &Runtime, addr: &str, database: &str) -> Option<LoginParams> {
    let settings = rt.settings.load();
    let user = settings.users.first()?;
    Some(LoginParams {
        addr: addr.to_owned(),
        user: user.server_user.clone(),
        password: user.server_password.clone(),
        database: database.to_owned(),
    })
}

async fn sample(
    rt: &Runtime,
    b: &Backend,
    conn: &mut Option<ServerConn>,
    sent_at: Instant,
) -> Option<Sample> {
    if conn.is_none() {
        let db = rt.settings.load().routing.monitor_database.clone();
        let params = monitor_login(rt, &b.addr, &db)?;
        let timeout = rt.settings.load().routing.health_check_timeout;
        match login::connect(&params, timeout).await {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                tracing::debug!(server = %b.addr, error = %e, "health check login failed");
                return None;
            }
        }
    }
    let c = conn.as_mut()?;
    let rows = probe::query(c, SAMPLE_QUERY).await.ok()?;
    let row = rows.first()?;
    let text = |i: usize| row.get(i).cloned().flatten();
    Some(Sample {
        in_recovery: text(0)? == "t",
        lsn: text(1).as_deref().and_then(parse_lsn).unwrap_or(0),
        replay_delay_ms: text(2)
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0)
            .max(0) as u64,
        sent_at,
    })
}

fn on_sample(rt: &Runtime, b: &Arc<Backend>, s: &Sample) {
    let settings = rt.settings.load();
    let primary_lsn = rt.backends.primary().map(|p| p.position().0);
    b.record_sample(s, primary_lsn);
    match (b.role(), s.in_recovery) {
        (Role::Replica, false) if settings.routing.auto_role => promote(rt, b),
        (Role::Primary, true) if settings.routing.auto_role => {
            tracing::warn!(server = %b.addr, "primary is in recovery: demoting it to replica");
            b.set_role(Role::Replica);
        }
        _ => {}
    }
}

/// A replica left recovery: it is the new primary unless a healthy primary
/// is still out of recovery (split brain: keep the current one, loudly).
fn promote(rt: &Runtime, b: &Arc<Backend>) {
    let now = Instant::now();
    if let Some(current) = rt.backends.primary() {
        if current.id != b.id && current.accepts_traffic(now) && current.is_healthy() {
            tracing::error!(server = %b.addr, primary = %current.addr, "two servers out of recovery; keeping the current primary");
            return;
        }
        current.set_role(Role::Replica);
    }
    b.set_role(Role::Primary);
    tracing::warn!(server = %b.addr, "promoted: now routing writes here");
}

/// Whether `db`'s catalog should be (re)loaded now: never tried, missing
/// and not tried for [`CATALOG_RETRY`], or older than [`CATALOG_REFRESH`].
fn catalog_due(rt: &Runtime, db: &str, attempts: &CatalogAttempts) -> bool {
    match attempts.get(db) {
        None => true,
        Some(t) if !rt.functions.has(db) => t.elapsed() >= CATALOG_RETRY,
        Some(t) => t.elapsed() >= CATALOG_REFRESH,
    }
}

/// Loads function volatility for the databases with a pool on the primary
/// whose catalog is due: a database is covered soon after its first client
/// logs in, not only at the next periodic refresh.
async fn load_catalogs(rt: &Runtime, b: &Backend, attempts: &mut CatalogAttempts) {
    let timeout = rt.settings.load().routing.health_check_timeout * 5;
    let mut databases: Vec<String> = b.pools().iter().map(|p| p.key().database.clone()).collect();
    databases.sort();
    databases.dedup();
    // DDL seen by a session (a new table, a view, RLS turned on) asks for
    // a reload now rather than at the next refresh.
    let forced = rt
        .catalog_stale
        .swap(false, std::sync::atomic::Ordering::AcqRel);
    databases.retain(|db| forced || catalog_due(rt, db, attempts));
    for db in databases {
        attempts.insert(db.clone(), Instant::now());
        let Some(params) = monitor_login(rt, &b.addr, &db) else {
            return;
        };
        let settings = rt.settings.load();
        let wal = &settings.cache.wal;
        let relations_sql = relations_query(wal.enabled.then_some(wal.publication.as_str()));
        let load = async {
            let mut conn = login::connect(&params, timeout).await.ok()?;
            let functions = probe::query(&mut conn, CATALOG_QUERY).await.ok()?;
            let relations = probe::query(&mut conn, &relations_sql).await.ok()?;
            Some((functions, relations))
        };
        if let Ok(Some((functions, relations))) = tokio::time::timeout(timeout, load).await {
            rt.functions.set(&db, volatility(functions));
            rt.relations.set(&db, relation_kinds(relations));
        }
    }
}

fn volatility(rows: Vec<probe::Row>) -> Volatility {
    let mut v = Volatility::with_capacity(rows.len());
    for row in rows {
        if let (Some(Some(name)), Some(Some(class))) = (row.first(), row.get(1)) {
            v.insert(name.clone(), class.bytes().next().unwrap_or(b'v'));
        }
    }
    v
}

fn relation_kinds(rows: Vec<probe::Row>) -> Relations {
    let mut r = Relations::with_capacity(rows.len());
    for row in rows {
        if let (Some(Some(name)), Some(Some(ok))) = (row.first(), row.get(1)) {
            r.insert(name.clone(), ok == "t");
        }
    }
    r
}
