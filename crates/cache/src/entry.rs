//! One cached result and what it was made from.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::deps::Deps;
use crate::stats::ShapeStats;

/// Fixed bookkeeping counted against the budget besides the bytes.
pub(crate) const ENTRY_OVERHEAD: usize = 256;

/// What a session hands over when its query's result is complete.
#[derive(Debug, Clone)]
pub struct Fill {
    /// The backend messages to replay, byte for byte.
    pub response: Bytes,
    pub database: Box<str>,
    pub user: Box<str>,
    /// The statement text (for the admin API), shared with the session.
    pub sql: Arc<str>,
    /// The statement's shape (literal-free fingerprint).
    pub shape: u128,
    /// Tables the statement reads.
    pub tables: Vec<String>,
    /// Tags from a `pgpilot:cache tags=…` hint.
    pub tags: Vec<String>,
    /// A TTL from a rule or hint, instead of the adaptive one.
    pub ttl: Option<Duration>,
}

/// A cached result.
#[derive(Debug)]
pub struct Entry {
    /// The backend messages to replay.
    pub response: Bytes,
    /// What it depends on, and the clock when its query was sent.
    pub(crate) deps: Deps,
    pub(crate) epoch: u64,
    pub created: Instant,
    pub ttl: Duration,
    /// How long the query took (the adaptive TTL's input).
    pub cost: Duration,
    pub hits: AtomicU64,
    /// One session is already refreshing it.
    refreshing: AtomicBool,
    pub(crate) shape_stats: Arc<ShapeStats>,
    pub database: Box<str>,
    pub user: Box<str>,
    pub sql: Arc<str>,
    pub shape: u128,
    pub tables: Box<[String]>,
    pub tags: Box<[String]>,
}

impl Entry {
    pub(crate) fn new(
        fill: Fill,
        deps: Deps,
        epoch: u64,
        times: (Instant, Duration, Duration),
        shape_stats: Arc<ShapeStats>,
    ) -> Entry {
        let (created, ttl, cost) = times;
        Entry {
            response: fill.response,
            deps,
            epoch,
            created,
            ttl,
            cost,
            hits: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
            shape_stats,
            database: fill.database,
            user: fill.user,
            sql: fill.sql,
            shape: fill.shape,
            tables: fill.tables.into_boxed_slice(),
            tags: fill.tags.into_boxed_slice(),
        }
    }

    /// Bytes charged against the memory budget.
    pub fn weight(&self) -> usize {
        self.response.len()
            + self.sql.len()
            + ENTRY_OVERHEAD
            + self.tables.iter().map(String::len).sum::<usize>()
            + self.tags.iter().map(String::len).sum::<usize>()
    }

    /// Whether nothing it read was invalidated since its query was sent.
    pub fn is_valid(&self) -> bool {
        self.deps.valid_at(self.epoch)
    }

    pub fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) >= self.ttl
    }

    /// A hot entry past half its TTL, claimed for refresh by exactly one
    /// caller.
    pub(crate) fn claim_refresh(&self, now: Instant) -> bool {
        let age = now.saturating_duration_since(self.created);
        age * 2 >= self.ttl
            && self.hits.load(Relaxed) >= 2
            && !self.refreshing.swap(true, Ordering::AcqRel)
    }
}
