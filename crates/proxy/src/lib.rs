//! The data path of pgpilot, in call order:
//! [`listener`] accepts → [`handshake`] (startup, [`client_auth`], welcome)
//! → [`session`] event loop → [`client`] handles frontend messages
//! (checkout, prepared-statement translation) → [`server`] handles backend
//! messages (response matching, release at ReadyForQuery).
//!
//! Routing: [`checkout`] asks [`route`] for a server among the [`backends`],
//! which the [`monitor`] keeps current (health, WAL positions, promotion).
//!
//! [`RunningProxy`] builds the [`Runtime`] and runs the listener, the
//! monitor, pool upkeep, the query-insight flush and the plan explainer
//! ([`explain`]).

pub mod backends;
pub mod cache;
pub mod cancel;
mod checkout;
mod client;
pub mod client_auth;
mod clock;
mod effects;
pub mod error;
pub mod expect;
pub mod explain;
pub mod functions;
pub mod handshake;
mod io;
pub mod listener;
pub mod monitor;
mod observe;
pub mod params;
pub mod peers;
pub mod pools;
pub mod relations;
mod reset;
pub mod route;
pub mod runtime;
mod server;
pub mod session;
pub mod statements;
pub mod wal_follow;
pub mod walstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_config::Settings;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use runtime::Runtime;

/// How often pools are maintained (idle expiry, `min_size`).
const MAINTENANCE_PERIOD: Duration = Duration::from_secs(1);

/// Pool upkeep (idle expiry, `min_size`) every [`MAINTENANCE_PERIOD`].
async fn maintain_pools(rt: Arc<Runtime>) {
    let mut tick = tokio::time::interval(MAINTENANCE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for pool in rt.backends.all_pools() {
            pool.maintain().await;
        }
    }
}

/// Result-cache upkeep (moka's pending work, unused invalidation handles)
/// every [`MAINTENANCE_PERIOD`].
async fn maintain_cache(rt: Arc<Runtime>) {
    let mut tick = tokio::time::interval(MAINTENANCE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        rt.cache.maintain();
    }
}

/// How often query insight writes its slow-log file and history store
/// (minute windows must be drained at least once a minute).
const INSIGHT_FLUSH_PERIOD: Duration = Duration::from_secs(60);

/// Flushes query insight every [`INSIGHT_FLUSH_PERIOD`] on a blocking
/// thread (file and SQLite I/O); failures are logged, never fatal.
async fn flush_insight(rt: Arc<Runtime>) {
    let mut tick = tokio::time::interval(INSIGHT_FLUSH_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: nothing to flush yet
    loop {
        tick.tick().await;
        let insight = rt.insight.clone();
        match tokio::task::spawn_blocking(move || insight.flush(Instant::now())).await {
            Ok(Ok(report)) => tracing::debug!(?report, "query insight flushed"),
            Ok(Err(e)) => tracing::error!(error = %e, "query insight flush failed"),
            Err(e) => tracing::error!(error = %e, "query insight flush task failed"),
        }
    }
}

/// A running proxy: its address, its runtime, and its tasks (aborted on drop).
pub struct RunningProxy {
    pub addr: SocketAddr,
    pub rt: Arc<Runtime>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningProxy {
    /// Binds `settings.listen` and starts accepting clients, maintaining
    /// pools and flushing query insight.
    pub async fn start(settings: Settings) -> std::io::Result<RunningProxy> {
        let listener = TcpListener::bind(settings.listen).await?;
        let addr = listener.local_addr()?;
        let rt = Runtime::new(settings);
        let tasks = vec![
            tokio::spawn(listener::accept_loop(rt.clone(), listener)),
            tokio::spawn(maintain_pools(rt.clone())),
            tokio::spawn(monitor::monitor_forever(rt.clone())),
            tokio::spawn(explain::explain_forever(rt.clone())),
            tokio::spawn(flush_insight(rt.clone())),
            tokio::spawn(wal_follow::follow_wal_forever(rt.clone())),
            tokio::spawn(maintain_cache(rt.clone())),
            tokio::spawn(peers::peers_forever(rt.clone())),
        ];
        Ok(RunningProxy { addr, rt, tasks })
    }

    /// Stops accepting and maintaining; sessions already running finish on their own.
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.stop();
    }
}
