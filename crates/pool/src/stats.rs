//! Counters a pool keeps for `/metrics` and the admin console, named after
//! PgBouncer's `SHOW POOLS` / `SHOW STATS` columns so dashboards carry over.
//!
//! The proxy adds to the totals once per transaction, not per message.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Running totals for one pool. All times are in microseconds.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Logged-in clients of this pool.
    pub clients: AtomicI64,
    /// Transactions completed (server released at ReadyForQuery idle).
    pub xact_count: AtomicU64,
    /// Queries completed (CommandComplete/EmptyQueryResponse seen).
    pub query_count: AtomicU64,
    /// Time servers were held for transactions.
    pub xact_time_us: AtomicU64,
    /// Time from sending a query batch to its ReadyForQuery.
    pub query_time_us: AtomicU64,
    /// Time clients waited for a server connection.
    pub wait_time_us: AtomicU64,
    /// Bytes received from clients.
    pub bytes_received: AtomicU64,
    /// Bytes sent to clients.
    pub bytes_sent: AtomicU64,
    /// Server logins that failed.
    pub connect_errors: AtomicU64,
    /// Checkouts that timed out.
    pub checkout_timeouts: AtomicU64,
}

impl PoolStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// A point-in-time view of a pool, for metrics and the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// `host:port` of the server this pool logs into.
    pub server: String,
    /// The client database and user the pool serves.
    pub database: String,
    pub user: String,
    /// Clients logged in and not waiting for a server.
    pub cl_active: u64,
    /// Clients waiting for a server connection.
    pub cl_waiting: u64,
    /// Server connections lent to clients.
    pub sv_active: u64,
    /// Server connections idle in the pool.
    pub sv_idle: u64,
    /// Server connections being opened.
    pub sv_login: u64,
    /// Age of the oldest waiting client, in microseconds.
    pub maxwait_us: u64,
    pub xact_count: u64,
    pub query_count: u64,
    pub xact_time_us: u64,
    pub query_time_us: u64,
    pub wait_time_us: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub connect_errors: u64,
    pub checkout_timeouts: u64,
    /// Configured limits.
    pub min_size: u64,
    pub max_size: u64,
}

impl PoolStats {
    /// Copies the totals into `snap`.
    pub(crate) fn fill(&self, snap: &mut PoolSnapshot) {
        snap.xact_count = self.xact_count.load(Relaxed);
        snap.query_count = self.query_count.load(Relaxed);
        snap.xact_time_us = self.xact_time_us.load(Relaxed);
        snap.query_time_us = self.query_time_us.load(Relaxed);
        snap.wait_time_us = self.wait_time_us.load(Relaxed);
        snap.bytes_received = self.bytes_received.load(Relaxed);
        snap.bytes_sent = self.bytes_sent.load(Relaxed);
        snap.connect_errors = self.connect_errors.load(Relaxed);
        snap.checkout_timeouts = self.checkout_timeouts.load(Relaxed);
    }
}
