//! pgpilot's query-result cache: keys, store, eviction, invalidation and
//! stampede protection. No sockets; the clock is passed in.
//!
//! The proxy asks [`ResultCache::lookup`] before running an eligible read.
//! A hit replays the stored backend messages. A miss calls
//! [`ResultCache::begin`]: one session leads (runs the query, captures the
//! response, hands it to [`ResultCache::complete`]), identical concurrent
//! misses follow and look up again when the leader is done. Writes call
//! [`Invalidations`] methods through [`ResultCache::invalidate`]; validity is
//! checked by version at every hit (see [`deps`]), so a result that raced a
//! write is never served.

pub mod deps;
mod entry;
mod flight;
pub mod key;
mod stats;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use deps::{Invalidations, Source};
pub use entry::{Entry, Fill};
pub use flight::{Begin, FillTicket, Waiter};
pub use key::{CacheKey, KeyBuilder, Protocol};
pub use stats::{CacheStats, ShapeStats};

use flight::Flights;

/// Shapes whose hit/miss counts are kept at once.
const MAX_SHAPES: usize = 10_000;

/// The limits a cache is built with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheLimits {
    /// Memory budget in bytes (results, texts and bookkeeping).
    pub max_memory: usize,
    /// Larger responses are not stored.
    pub max_result_size: usize,
    pub ttl_min: Duration,
    pub ttl_max: Duration,
    /// TTL added per millisecond of execution time.
    pub ttl_per_ms: Duration,
    /// Let one caller refresh a hot entry past half its TTL.
    pub refresh_ahead: bool,
}

impl CacheLimits {
    /// The adaptive TTL for a query that took `cost`: expensive results
    /// live longer, within `[ttl_min, ttl_max]`.
    pub fn ttl_for(&self, cost: Duration) -> Duration {
        let ms = cost.as_secs_f64() * 1000.0;
        let extra = self.ttl_per_ms.mul_f64(ms.min(1e9));
        (self.ttl_min + extra).clamp(self.ttl_min, self.ttl_max)
    }
}

/// What a lookup found.
pub enum Lookup {
    Hit(Arc<Entry>),
    /// A valid hot entry past half its TTL that this caller should refresh
    /// (run the query and fill again); serve it if that cannot start.
    Refresh(Arc<Entry>),
    Miss,
}

/// Why a completed result was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    TooLarge,
    /// A table it read was invalidated while its query ran.
    Stale,
}

/// A summary of one entry, for the admin API.
#[derive(Debug, Clone)]
pub struct EntryView {
    pub key: CacheKey,
    pub bytes: usize,
    pub hits: u64,
    pub age: Duration,
    pub ttl: Duration,
    pub database: String,
    pub user: String,
    pub sql: String,
    pub shape: u128,
    pub tables: Vec<String>,
    pub tags: Vec<String>,
}

/// The order of [`ResultCache::entries`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryOrder {
    Biggest,
    Hottest,
}

/// The result cache of one proxy.
pub struct ResultCache {
    store: moka::sync::Cache<CacheKey, Arc<Entry>>,
    limits: CacheLimits,
    invalidations: Invalidations,
    flights: Arc<Flights>,
    stats: Arc<CacheStats>,
    shapes: Mutex<HashMap<u128, Arc<ShapeStats>>>,
}

/// Tells moka each entry's own TTL.
struct EntryExpiry;

impl moka::Expiry<CacheKey, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    /// A refresh (or a fill from the shared level) replacing an entry
    /// lives its own TTL, not what was left of the old one's.
    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<Entry>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl ResultCache {
    pub fn new(limits: CacheLimits) -> ResultCache {
        let stats = Arc::new(CacheStats::default());
        let listener_stats = stats.clone();
        let store = moka::sync::Cache::builder()
            .max_capacity(limits.max_memory as u64)
            .weigher(|_k: &CacheKey, v: &Arc<Entry>| u32::try_from(v.weight()).unwrap_or(u32::MAX))
            .expire_after(EntryExpiry)
            .eviction_listener(move |_k, _v, cause| {
                use moka::notification::RemovalCause;
                match cause {
                    RemovalCause::Size => CacheStats::bump(&listener_stats.evictions),
                    RemovalCause::Expired => CacheStats::bump(&listener_stats.expirations),
                    _ => {}
                }
            })
            .build();
        ResultCache {
            store,
            limits,
            invalidations: Invalidations::default(),
            flights: Arc::new(Flights::default()),
            stats,
            shapes: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> &CacheLimits {
        &self.limits
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Looks `key` (of statement shape `shape`) up at `now`.
    pub fn lookup(&self, key: CacheKey, shape: u128, now: Instant) -> Lookup {
        let Some(entry) = self.store.get(&key) else {
            self.miss(shape);
            return Lookup::Miss;
        };
        if !entry.is_valid() || entry.expired(now) {
            if !entry.is_valid() {
                CacheStats::bump(&self.stats.stale_dropped);
            }
            self.store.invalidate(&key);
            self.miss(shape);
            return Lookup::Miss;
        }
        if self.limits.refresh_ahead && entry.claim_refresh(now) {
            CacheStats::bump(&self.stats.refreshes);
            return Lookup::Refresh(entry);
        }
        self.hit(&entry);
        Lookup::Hit(entry)
    }

    /// Counts a hit on `entry` (also for a refresh that fell back to it).
    pub fn hit(&self, entry: &Entry) {
        CacheStats::bump(&self.stats.hits);
        entry.hits.fetch_add(1, Relaxed);
        entry.shape_stats.hits.fetch_add(1, Relaxed);
    }

    fn miss(&self, shape: u128) {
        CacheStats::bump(&self.stats.misses);
        self.shape(shape).misses.fetch_add(1, Relaxed);
    }

    fn shape(&self, shape: u128) -> Arc<ShapeStats> {
        let mut shapes = self.shapes.lock();
        if shapes.len() >= MAX_SHAPES && !shapes.contains_key(&shape) {
            // Forget shapes no entry refers to; counts restart if they return.
            shapes.retain(|_, s| Arc::strong_count(s) > 1);
        }
        shapes.entry(shape).or_default().clone()
    }

    /// A miss on `key` by session `owner`, right before its query is sent.
    pub fn begin(&self, key: CacheKey, owner: u64, now: Instant) -> Begin {
        self.flights
            .begin(key, owner, self.invalidations.epoch(), now)
    }

    /// Stores the leader's result unless it is too large or raced a write,
    /// and returns the time to live it was given. Ends the flight either
    /// way (followers look up again).
    pub fn complete(
        &self,
        ticket: FillTicket,
        fill: Fill,
        now: Instant,
    ) -> Result<Duration, Refused> {
        if fill.response.len() > self.limits.max_result_size {
            CacheStats::bump(&self.stats.oversize);
            return Err(Refused::TooLarge);
        }
        let deps = self.invalidations.deps(
            &fill.database,
            fill.tables.iter().map(String::as_str),
            fill.tags.iter().map(String::as_str),
        );
        if !deps.valid_at(ticket.epoch) {
            CacheStats::bump(&self.stats.fills_stale);
            return Err(Refused::Stale);
        }
        let cost = now.saturating_duration_since(ticket.started);
        let ttl = fill.ttl.unwrap_or_else(|| self.limits.ttl_for(cost));
        let shape_stats = self.shape(fill.shape);
        let entry = Entry::new(fill, deps, ticket.epoch, (now, ttl, cost), shape_stats);
        self.store.insert(ticket.key, Arc::new(entry));
        CacheStats::bump(&self.stats.fills);
        drop(ticket);
        Ok(ttl)
    }

    /// Counts a follower's wait: answered from the cache or not.
    pub fn coalesce_outcome(&self, answered: bool) {
        CacheStats::bump(if answered {
            &self.stats.coalesced
        } else {
            &self.stats.coalesce_failures
        });
    }

    /// Counts a read that skipped the cache for read-your-writes.
    pub fn ryw_bypass(&self) {
        CacheStats::bump(&self.stats.ryw_bypasses);
    }

    /// The invalidation handles, to invalidate through [`Self::invalidate`].
    pub fn invalidations(&self) -> &Invalidations {
        &self.invalidations
    }

    /// Applies `what` from `source`.
    pub fn invalidate(&self, source: Source, what: &Invalidation) {
        self.stats.invalidated(source);
        let inv = &self.invalidations;
        match what {
            Invalidation::Tables { database, tables } => {
                inv.tables(database, tables.iter().map(String::as_str))
            }
            Invalidation::TablesEverywhere { tables } => {
                for t in tables {
                    inv.table_everywhere(t);
                }
            }
            Invalidation::Tags(tags) => inv.tags(tags.iter().map(String::as_str)),
            Invalidation::Database(db) => inv.database(db),
            Invalidation::All => {
                inv.everything();
                self.store.invalidate_all();
            }
        }
    }

    /// Entries now (approximate while moka has maintenance pending).
    pub fn entry_count(&self) -> u64 {
        self.store.run_pending_tasks();
        self.store.entry_count()
    }

    /// Bytes charged against the budget now.
    pub fn weighted_size(&self) -> u64 {
        self.store.run_pending_tasks();
        self.store.weighted_size()
    }

    /// Periodic upkeep: moka's pending work and unused handles.
    pub fn maintain(&self) {
        self.store.run_pending_tasks();
        self.invalidations.prune();
    }

    /// Identical misses being filled right now.
    pub fn in_flight(&self) -> usize {
        self.flights.in_flight()
    }

    /// Up to `limit` entries, biggest or hottest first. Entries are ranked
    /// by reference; only the ones returned are turned into views (a view
    /// copies the statement text, tables and tags).
    pub fn entries(&self, order: EntryOrder, limit: usize, now: Instant) -> Vec<EntryView> {
        let rank = |e: &Entry| match order {
            EntryOrder::Biggest => e.weight() as u64,
            EntryOrder::Hottest => e.hits.load(Relaxed),
        };
        let mut ranked: Vec<(u64, CacheKey, Arc<Entry>)> = self
            .store
            .iter()
            .filter(|(_, e)| e.is_valid())
            .map(|(k, e)| (rank(&e), *k, e))
            .collect();
        ranked.sort_by_key(|r| std::cmp::Reverse(r.0));
        ranked.truncate(limit);
        ranked.iter().map(|(_, k, e)| view(*k, e, now)).collect()
    }

    /// Hit and miss counts per statement shape, most looked-up first.
    pub fn shapes(&self, limit: usize) -> Vec<(u128, u64, u64)> {
        let mut v: Vec<(u128, u64, u64)> = self
            .shapes
            .lock()
            .iter()
            .map(|(k, s)| (*k, s.hits.load(Relaxed), s.misses.load(Relaxed)))
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.1 + s.2));
        v.truncate(limit);
        v
    }
}

fn view(key: CacheKey, e: &Entry, now: Instant) -> EntryView {
    EntryView {
        key,
        bytes: e.weight(),
        hits: e.hits.load(Relaxed),
        age: now.saturating_duration_since(e.created),
        ttl: e.ttl,
        database: e.database.to_string(),
        user: e.user.to_string(),
        sql: e.sql.to_string(),
        shape: e.shape,
        tables: e.tables.to_vec(),
        tags: e.tags.to_vec(),
    }
}

/// What to invalidate (also the message instances exchange through Redis).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Invalidation {
    Tables {
        database: String,
        tables: Vec<String>,
    },
    /// Tables by name in every database (the admin API without a database).
    TablesEverywhere {
        tables: Vec<String>,
    },
    Tags(Vec<String>),
    Database(String),
    All,
}

#[cfg(test)]
mod tests;
