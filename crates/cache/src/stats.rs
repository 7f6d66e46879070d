//! Cache counters, read by the admin API and `/metrics`.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use crate::deps::Source;

/// Proxy-wide result-cache counters (monotonic).
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: AtomicU64,
    /// Lookups that found nothing valid.
    pub misses: AtomicU64,
    /// Misses that waited for another session's identical query and were
    /// then answered from the cache.
    pub coalesced: AtomicU64,
    /// Waits for another session's query that ended without a result
    /// (timeout, or the leader's query could not be cached).
    pub coalesce_failures: AtomicU64,
    /// Results stored.
    pub fills: AtomicU64,
    /// Results not stored because a table they read was written while the
    /// query ran.
    pub fills_stale: AtomicU64,
    /// Results not stored for being over `max_result_size`.
    pub oversize: AtomicU64,
    /// Entries removed to stay within the memory budget.
    pub evictions: AtomicU64,
    /// Entries that reached their TTL.
    pub expirations: AtomicU64,
    /// Entries found invalidated at lookup (and dropped).
    pub stale_dropped: AtomicU64,
    /// Hot entries refreshed before their TTL.
    pub refreshes: AtomicU64,
    /// Reads that skipped the cache because invalidation had not yet caught
    /// up with the session's own write (read-your-writes).
    pub ryw_bypasses: AtomicU64,
    /// Invalidation events by source.
    pub invalidations_proxy: AtomicU64,
    pub invalidations_wal: AtomicU64,
    pub invalidations_api: AtomicU64,
    pub invalidations_peer: AtomicU64,
}

impl CacheStats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn invalidated(&self, source: Source) {
        Self::bump(match source {
            Source::Proxy => &self.invalidations_proxy,
            Source::Wal => &self.invalidations_wal,
            Source::Api => &self.invalidations_api,
            Source::Peer => &self.invalidations_peer,
        });
    }

    /// Hits ÷ lookups, 0 before the first lookup.
    pub fn hit_ratio(&self) -> f64 {
        let hits = self.hits.load(Relaxed) as f64;
        let total = hits + self.misses.load(Relaxed) as f64;
        if total == 0.0 {
            0.0
        } else {
            hits / total
        }
    }
}

/// Per-fingerprint (query shape) hit and miss counts.
#[derive(Debug, Default)]
pub struct ShapeStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}
