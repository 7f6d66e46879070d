//! One fingerprint's statistics: pg_stat_statements-style counters, latency
//! histograms (per location once a second location is seen), time windows
//! and error codes. Updated under [`super::QueryStore`]'s lock.

use std::sync::Arc;

use hdrhistogram::Histogram;

use super::{Location, QueryEvent};
use crate::shape::Shape;
use crate::windows::{Windows, MAX_TRACKED_US};

/// pg_stat_statements-style counters.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counters {
    pub(super) calls: u64,
    pub(super) errors: u64,
    pub(super) rows: u64,
    pub(super) total_us: u64,
    /// Meaningful only when `calls > 0`.
    pub(super) min_us: u64,
    pub(super) max_us: u64,
}

impl Counters {
    pub(super) fn add(&mut self, us: u64, rows: u64, error: bool) {
        self.min_us = if self.calls == 0 {
            us
        } else {
            self.min_us.min(us)
        };
        self.calls += 1;
        self.errors += u64::from(error);
        self.rows = self.rows.saturating_add(rows);
        self.total_us = self.total_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    pub(super) fn mean_us(&self) -> u64 {
        self.total_us.checked_div(self.calls).unwrap_or(0)
    }
}

/// Latency histograms of one fingerprint.
pub(super) struct Latency {
    /// All executions, µs.
    pub(super) all: Histogram<u64>,
    /// Per location, created only once a second location is seen (most
    /// fingerprints run in one place; until then `all` is that place's).
    pub(super) split: Option<Box<[Histogram<u64>; 3]>>,
}

impl Latency {
    fn new(sigfig: u8) -> Latency {
        Latency {
            all: new_histogram(sigfig),
            split: None,
        }
    }

    /// Records `us` at `loc`; `seen` are the per-location counters before
    /// this call.
    fn record(&mut self, loc: Location, us: u64, seen: &[Counters; 3]) {
        let us = us.min(MAX_TRACKED_US);
        if self.split.is_none()
            && seen
                .iter()
                .enumerate()
                .any(|(i, c)| i != loc.index() && c.calls > 0)
        {
            let sigfig = self.all.sigfig();
            let mut split = Box::new([
                new_histogram(sigfig),
                new_histogram(sigfig),
                new_histogram(sigfig),
            ]);
            if let Some(only) = seen.iter().position(|c| c.calls > 0) {
                split[only] = self.all.clone();
            }
            self.split = Some(split);
        }
        let _ = self.all.record(us);
        if let Some(split) = &mut self.split {
            let _ = split[loc.index()].record(us);
        }
    }

    /// The histogram of `loc`, given that it has calls.
    pub(super) fn at(&self, loc: Location) -> &Histogram<u64> {
        self.split.as_ref().map_or(&self.all, |s| &s[loc.index()])
    }
}

fn new_histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new(sigfig.clamp(1, 5))
        .unwrap_or_else(|_| unreachable!("sigfig is clamped to 1..=5"))
}

/// Error count per SQLSTATE, first [`ERROR_CODES`] codes only (no allocation).
const ERROR_CODES: usize = 8;

/// Everything kept for one fingerprint.
pub(super) struct Entry {
    pub(super) shape: Arc<Shape>,
    pub(super) total: Counters,
    /// Indexed by `Location as usize`.
    pub(super) locations: [Counters; 3],
    pub(super) latency: Latency,
    pub(super) windows: Windows,
    /// `(SQLSTATE, count)`; empty slots have count 0.
    pub(super) error_codes: [([u8; 5], u64); ERROR_CODES],
    pub(super) first_seen_us: u64,
    pub(super) last_seen_us: u64,
}

impl Entry {
    pub(super) fn new(shape: Arc<Shape>, sigfig: u8, now_us: u64) -> Entry {
        Entry {
            shape,
            total: Counters::default(),
            locations: [Counters::default(); 3],
            latency: Latency::new(sigfig),
            windows: Windows::new(),
            error_codes: [([0; 5], 0); ERROR_CODES],
            first_seen_us: now_us,
            last_seen_us: now_us,
        }
    }

    pub(super) fn record(&mut self, ev: &QueryEvent, us: u64, now_us: u64) {
        let error = ev.error.is_some();
        self.latency.record(ev.location, us, &self.locations);
        self.total.add(us, ev.rows, error);
        self.locations[ev.location.index()].add(us, ev.rows, error);
        self.windows.record(now_us / 1_000_000, us, ev.rows, error);
        self.last_seen_us = self.last_seen_us.max(now_us);
        if let Some(code) = &ev.error {
            self.count_error(code);
        }
    }

    fn count_error(&mut self, code: &str) {
        let mut key = [0u8; 5];
        for (k, b) in key.iter_mut().zip(code.bytes()) {
            *k = b;
        }
        if let Some(slot) = self
            .error_codes
            .iter_mut()
            .find(|(c, n)| *n > 0 && *c == key)
        {
            slot.1 += 1;
        } else if let Some(slot) = self.error_codes.iter_mut().find(|(_, n)| *n == 0) {
            *slot = (key, 1);
        }
    }
}
