//! Keeps the result cache in step with the primary's WAL: one
//! [`crate::walstream`] per database with a pool on the primary, restarted
//! after any failure. Commits invalidate the tables they changed; the
//! watermark tells sessions how far invalidation has caught up (see
//! `cache::policy`, read-your-writes through the cache). While a stream is
//! down its database's cache answers nothing; a (re)start flushes it,
//! since changes may have been missed.

use std::collections::HashMap;
use std::sync::atomic::Ordering::{AcqRel, Release};
use std::sync::Arc;
use std::time::Duration;

use pgpilot_cache::{Invalidation, Source};
use pgpilot_pool::login::LoginParams;
use tokio::task::JoinHandle;

use crate::cache::WalDb;
use crate::runtime::Runtime;
use crate::walstream::{stream_once, WalEvent, WalStreamParams};

/// How often the set of databases is checked.
const SCAN_PERIOD: Duration = Duration::from_millis(200);
/// Pause before reconnecting a failed stream.
const RETRY: Duration = Duration::from_secs(1);

/// Starts streams for databases as they get pools; runs for the proxy's life.
pub async fn follow_wal_forever(rt: Arc<Runtime>) {
    let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        if rt.settings.load().cache.wal.enabled {
            for db in primary_databases(&rt) {
                running
                    .entry(db.clone())
                    .or_insert_with(|| tokio::spawn(follow_database(rt.clone(), db)));
            }
        }
        running.retain(|_, task| !task.is_finished());
        tokio::time::sleep(SCAN_PERIOD).await;
    }
}

fn primary_databases(rt: &Runtime) -> Vec<String> {
    let Some(primary) = rt.backends.primary() else {
        return Vec::new();
    };
    let mut dbs: Vec<String> = primary
        .pools()
        .iter()
        .map(|p| p.key().database.clone())
        .collect();
    dbs.sort();
    dbs.dedup();
    dbs
}

/// Streams `database`'s WAL until WAL invalidation is turned off.
async fn follow_database(rt: Arc<Runtime>, database: String) {
    let state = rt.wal.track(&database);
    while rt.settings.load().cache.wal.enabled {
        let Some(params) = stream_params(&rt, &database) else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let mut on_event = |event| apply(&rt, &database, &state, event);
        let outcome = stream_once(&params, &mut on_event).await;
        state.connected.store(false, Release);
        if let Err(e) = outcome {
            tracing::warn!(database = %database, error = %e, "WAL invalidation stream failed; the cache serves no hits for this database until it is back");
        }
        tokio::time::sleep(RETRY).await;
    }
    state.connected.store(false, Release);
}

/// Least time allowed for the WAL stream's login and slot creation.
const WAL_SETUP_TIMEOUT: Duration = Duration::from_secs(10);

fn stream_params(rt: &Runtime, database: &str) -> Option<WalStreamParams> {
    let settings = rt.settings.load();
    let wal = &settings.cache.wal;
    let primary = rt.backends.primary()?;
    // A configured user logs in with its own password (or none), never
    // with another role's: without one, the first [[users]] entry's login.
    let (user, password) = match &wal.user {
        Some(user) => (user.clone(), wal.password.clone()),
        None => {
            let first = settings.users.first()?;
            (first.server_user.clone(), first.server_password.clone())
        }
    };
    Some(WalStreamParams {
        login: LoginParams {
            addr: primary.addr.to_string(),
            user,
            password,
            database: database.to_owned(),
        },
        publication: wal.publication.clone(),
        create_publication: wal.create_publication,
        slot_prefix: "pgpilot_cache".to_owned(),
        status_interval: settings
            .routing
            .lsn_poll_interval
            .max(Duration::from_millis(5)),
        // Bounds the whole setup, slot creation included (which waits for
        // running transactions): never less than 10 s.
        connect_timeout: settings.pool.connect_timeout.max(WAL_SETUP_TIMEOUT),
    })
}

/// With results shared through Redis, the shared level's counters must
/// move for writes only the WAL shows, too (every instance streams the
/// WAL, so the others need not hear it; the counters do).
fn share(rt: &Runtime, what: &Invalidation) {
    if rt.settings.load().cache.redis_results {
        rt.peers.publish(what);
    }
}

/// Applies one stream event: invalidation first, then the watermark, so
/// a session that sees the watermark also sees the invalidation.
fn apply(rt: &Runtime, database: &str, state: &WalDb, event: WalEvent) {
    match event {
        WalEvent::Started { lsn } => {
            let what = Invalidation::Database(database.to_owned());
            rt.cache.invalidate(Source::Wal, &what);
            share(rt, &what);
            state.watermark.fetch_max(lsn, AcqRel);
            state.starts.fetch_add(1, AcqRel);
            state.connected.store(true, Release);
            tracing::info!(database, "WAL invalidation stream started");
        }
        WalEvent::Commit { end_lsn, tables } => {
            if !tables.is_empty() {
                let tables = tables.into_iter().map(|(_, name)| name).collect();
                let what = Invalidation::Tables {
                    database: database.to_owned(),
                    tables,
                };
                rt.cache.invalidate(Source::Wal, &what);
                share(rt, &what);
            }
            state.commits.fetch_add(1, AcqRel);
            state.watermark.fetch_max(end_lsn, AcqRel);
        }
        WalEvent::Watermark(lsn) => {
            state.watermark.fetch_max(lsn, AcqRel);
        }
    }
}
