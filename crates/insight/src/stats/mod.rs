//! Per-fingerprint statistics: what pg_stat_statements keeps (calls, errors,
//! rows, total/min/max/mean time) plus latency percentiles from an
//! HdrHistogram, split by where the query ran, with time windows
//! ([`crate::windows`]) and per-endpoint aggregation ([`crate::endpoints`]).
//!
//! The session calls [`QueryStore::record`] once per completed query: one
//! mutex acquisition, and no allocation for a fingerprint already seen
//! (histograms grow only when a new maximum needs a wider range). The admin
//! API reads snapshots ([`QueryStore::top`], [`QueryStore::detail`],
//! [`QueryStore::endpoints`]); [`crate::store`] persists closed windows.
//!
//! Memory is bounded by `max_fingerprints`: when full, the 5% with the least
//! total time are dropped (pg_stat_statements deallocates its 5% least-used
//! entries the same way). Memory per fingerprint is dominated by its
//! latency histogram, which covers 1 µs up to its slowest call: with 3
//! significant digits about 30 kB when that is a few ms, 60 kB at 100 ms,
//! up to 200 kB for an hour-long outlier (2 digits: 10–40 kB); one served
//! from several locations keeps a histogram per location as well.
//!
//! `entry.rs` holds one fingerprint's counters and histograms; `views.rs` the
//! serializable read side.

mod entry;
mod views;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::clock::{duration_micros, Clock};
use crate::endpoints::{EndpointOrder, EndpointTable, EndpointView};
use crate::shape::Shape;
use crate::windows::{Granularity, WindowBucket, WindowView};

use entry::Entry;
pub use views::{ErrorCount, HistogramBucket, LocationView, QueryDetail, QueryView};

/// Where a query was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    Primary,
    Replica,
    /// pgpilot's result cache.
    Cache,
}

impl Location {
    pub const ALL: [Location; 3] = [Location::Primary, Location::Replica, Location::Cache];

    fn index(self) -> usize {
        self as usize
    }
}

/// One completed query, as the session reports it.
#[derive(Debug, Clone)]
pub struct QueryEvent {
    pub shape: Arc<Shape>,
    /// From sending the query to its completion.
    pub duration: Duration,
    /// Rows returned or affected.
    pub rows: u64,
    /// SQLSTATE of the error, when the query failed.
    pub error: Option<String>,
    pub location: Location,
    /// Endpoint from [`crate::sqlcomment::Tags::endpoint`]; never a trace id.
    pub endpoint: Option<Arc<str>>,
}

/// Limits of a [`QueryStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Fingerprints kept (pg_stat_statements.max).
    pub max_fingerprints: usize,
    /// Endpoints kept; more are counted under `(other)`.
    pub max_endpoints: usize,
    /// Significant digits of the per-fingerprint latency histograms (1–5).
    pub histogram_sigfig: u8,
}

impl Default for StoreLimits {
    fn default() -> StoreLimits {
        StoreLimits {
            max_fingerprints: 5000,
            max_endpoints: 1000,
            histogram_sigfig: 3,
        }
    }
}

/// Ordering of [`QueryStore::top`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopBy {
    #[default]
    TotalTime,
    P99,
    Calls,
    Mean,
    Errors,
}

impl FromStr for TopBy {
    type Err = ();
    /// Accepts the API's `order` values: `total_time`, `p99`, `calls`,
    /// `mean`, `errors`.
    fn from_str(s: &str) -> Result<TopBy, ()> {
        match s {
            "total_time" | "total" => Ok(TopBy::TotalTime),
            "p99" => Ok(TopBy::P99),
            "calls" => Ok(TopBy::Calls),
            "mean" => Ok(TopBy::Mean),
            "errors" => Ok(TopBy::Errors),
            _ => Err(()),
        }
    }
}

/// Per-fingerprint statistics, shared by all sessions.
pub struct QueryStore {
    inner: Mutex<Inner>,
    limits: StoreLimits,
    clock: Clock,
}

struct Inner {
    entries: HashMap<u64, Entry>,
    endpoints: EndpointTable,
    /// Fingerprints dropped to stay within `max_fingerprints`.
    evicted: u64,
}

/// A closed window handed to persistence.
#[derive(Debug, Clone)]
pub struct ClosedWindow {
    pub shape: Arc<Shape>,
    pub granularity: Granularity,
    pub bucket: WindowBucket,
}

impl QueryStore {
    pub fn new(limits: StoreLimits, clock: Clock) -> QueryStore {
        QueryStore {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                endpoints: EndpointTable::new(limits.max_endpoints),
                evicted: 0,
            }),
            limits: StoreLimits {
                max_fingerprints: limits.max_fingerprints.max(1),
                ..limits
            },
            clock,
        }
    }

    /// The clock mapping `Instant`s to wall time for this store.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Adds one completed query at `now`.
    pub fn record(&self, ev: &QueryEvent, now: Instant) {
        let us = duration_micros(ev.duration);
        let now_us = self.clock.unix_micros(now);
        let fingerprint = ev.shape.fingerprint;
        let mut inner = self.inner.lock();
        match inner.entries.get_mut(&fingerprint) {
            Some(entry) => entry.record(ev, us, now_us),
            None => {
                inner.make_room(self.limits.max_fingerprints);
                let mut entry = Entry::new(ev.shape.clone(), self.limits.histogram_sigfig, now_us);
                entry.record(ev, us, now_us);
                inner.entries.insert(fingerprint, entry);
            }
        }
        if let Some(endpoint) = &ev.endpoint {
            inner
                .endpoints
                .record(endpoint, fingerprint, us, ev.error.is_some());
        }
    }

    /// The `limit` fingerprints ranked by `by`, as of `now` (for the window
    /// totals). Percentile ranking scans every histogram under the lock.
    pub fn top(&self, by: TopBy, limit: usize, now: Instant) -> Vec<QueryView> {
        let now_s = self.clock.unix_secs(now);
        let inner = self.inner.lock();
        let mut ranked: Vec<(u64, u64)> = inner
            .entries
            .iter()
            .map(|(fp, e)| {
                let key = match by {
                    TopBy::TotalTime => e.total.total_us,
                    TopBy::P99 => e.latency.all.value_at_quantile(0.99),
                    TopBy::Calls => e.total.calls,
                    TopBy::Mean => e.total.mean_us(),
                    TopBy::Errors => e.total.errors,
                };
                (key, *fp)
            })
            .collect();
        ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        ranked
            .iter()
            .take(limit)
            .filter_map(|(_, fp)| inner.entries.get(fp).map(|e| QueryView::of(e, now_s)))
            .collect()
    }

    /// Everything about one fingerprint, or `None` when it is not tracked.
    pub fn detail(&self, fingerprint: u64, now: Instant) -> Option<QueryDetail> {
        let now_s = self.clock.unix_secs(now);
        let inner = self.inner.lock();
        let e = inner.entries.get(&fingerprint)?;
        Some(QueryDetail {
            query: QueryView::of(e, now_s),
            histogram: views::histogram_buckets(&e.latency.all),
            minutes: e
                .windows
                .minutes
                .recent(now_s)
                .iter()
                .map(WindowView::from)
                .collect(),
            hours: e
                .windows
                .hours
                .recent(now_s)
                .iter()
                .map(WindowView::from)
                .collect(),
            endpoints: inner.endpoints.shares_of(fingerprint),
            error_codes: e
                .error_codes
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(code, n)| ErrorCount {
                    sqlstate: String::from_utf8_lossy(code)
                        .trim_end_matches('\0')
                        .to_owned(),
                    count: *n,
                })
                .collect(),
        })
    }

    /// Endpoints ranked by `order`, at most `limit`.
    pub fn endpoints(&self, order: EndpointOrder, limit: usize) -> Vec<EndpointView> {
        let inner = self.inner.lock();
        inner.endpoints.views(order, limit, |fp| {
            inner.entries.get(&fp).map(|e| e.shape.normalized.clone())
        })
    }

    /// The tracked shape of `fingerprint`.
    pub fn shape(&self, fingerprint: u64) -> Option<Arc<Shape>> {
        self.inner
            .lock()
            .entries
            .get(&fingerprint)
            .map(|e| e.shape.clone())
    }

    /// Fingerprints tracked now.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fingerprints dropped since start to stay within the limit.
    pub fn evicted(&self) -> u64 {
        self.inner.lock().evicted
    }

    /// Forgets all statistics (pg_stat_statements_reset).
    pub fn reset(&self) {
        let mut inner = self.inner.lock();
        inner.entries.clear();
        inner.endpoints.clear();
    }

    /// Closed minute and hour windows not handed out before, rolling every
    /// fingerprint to `now`. Call at least once a minute (minute windows
    /// older than an hour are gone); windows of evicted fingerprints are lost.
    pub fn drain_closed_windows(&self, now: Instant) -> Vec<ClosedWindow> {
        let now_s = self.clock.unix_secs(now);
        let mut out = Vec::new();
        let mut buckets = Vec::new();
        let mut inner = self.inner.lock();
        for e in inner.entries.values_mut() {
            for granularity in [Granularity::Minute, Granularity::Hour] {
                buckets.clear();
                match granularity {
                    Granularity::Minute => e.windows.minutes.drain_closed(now_s, &mut buckets),
                    Granularity::Hour => e.windows.hours.drain_closed(now_s, &mut buckets),
                }
                out.extend(buckets.iter().map(|b| ClosedWindow {
                    shape: e.shape.clone(),
                    granularity,
                    bucket: *b,
                }));
            }
        }
        out
    }
}

impl Inner {
    /// Drops the least valuable 5% (at least one) when the store is full.
    fn make_room(&mut self, max: usize) {
        if self.entries.len() < max {
            return;
        }
        let victims = (max / 20).max(1).min(self.entries.len());
        let mut by_value: Vec<(u64, u64)> = self
            .entries
            .iter()
            .map(|(fp, e)| (e.total.total_us, *fp))
            .collect();
        by_value.select_nth_unstable(victims - 1);
        for (_, fp) in &by_value[..victims] {
            self.entries.remove(fp);
        }
        self.evicted += victims as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn store(max: usize) -> (QueryStore, Instant) {
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_040);
        let limits = StoreLimits {
            max_fingerprints: max,
            ..StoreLimits::default()
        };
        (QueryStore::new(limits, Clock::new(t0, wall)), t0)
    }

    fn shape(fp: u64) -> Arc<Shape> {
        Arc::new(Shape {
            fingerprint: fp,
            fingerprint_hex: crate::shape::fingerprint_hex(fp),
            normalized: format!("SELECT {fp}"),
            parsed: true,
        })
    }

    fn event(shape: &Arc<Shape>, ms: u64, location: Location) -> QueryEvent {
        QueryEvent {
            shape: shape.clone(),
            duration: Duration::from_millis(ms),
            rows: 1,
            error: None,
            location,
            endpoint: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b * 0.002 + 0.001
    }

    #[test]
    fn percentiles_of_known_durations() {
        let (s, t0) = store(10);
        let q = shape(1);
        for ms in 1..=1000 {
            s.record(&event(&q, ms, Location::Primary), t0);
        }
        let v = &s.top(TopBy::TotalTime, 10, t0)[0];
        assert_eq!(v.calls, 1000);
        assert_eq!(v.total_ms, 500_500.0);
        assert_eq!(v.mean_ms, 500.5);
        assert_eq!((v.min_ms, v.max_ms), (1.0, 1000.0));
        assert!(close(v.p50_ms, 500.0), "{}", v.p50_ms);
        assert!(close(v.p95_ms, 950.0), "{}", v.p95_ms);
        assert!(close(v.p99_ms, 990.0), "{}", v.p99_ms);
        assert!(close(v.p999_ms, 999.0), "{}", v.p999_ms);
        assert_eq!(v.fingerprint, q.fingerprint_hex);
        assert_eq!(v.query, "SELECT 1");
    }

    #[test]
    fn split_by_location() {
        let (s, t0) = store(10);
        let q = shape(1);
        for _ in 0..10 {
            s.record(&event(&q, 10, Location::Primary), t0);
        }
        for _ in 0..5 {
            s.record(&event(&q, 1, Location::Cache), t0);
        }
        s.record(&event(&q, 100, Location::Replica), t0);
        let v = &s.top(TopBy::Calls, 1, t0)[0];
        assert_eq!(v.calls, 16);
        let by: HashMap<Location, &LocationView> =
            v.locations.iter().map(|l| (l.location, l)).collect();
        assert_eq!(by[&Location::Primary].calls, 10);
        assert!(close(by[&Location::Primary].p99_ms, 10.0));
        assert!(close(by[&Location::Cache].p50_ms, 1.0));
        assert!(close(by[&Location::Replica].p50_ms, 100.0));
    }

    #[test]
    fn eviction_keeps_the_most_valuable() {
        let (s, t0) = store(10);
        for fp in 1..=10 {
            s.record(&event(&shape(fp), fp * 10, Location::Primary), t0);
        }
        s.record(&event(&shape(11), 5, Location::Primary), t0);
        assert_eq!(s.len(), 10);
        assert_eq!(s.evicted(), 1);
        assert!(s.shape(1).is_none(), "least total time evicted");
        assert!(s.shape(10).is_some());
        assert!(s.shape(11).is_some(), "the new one is kept");
        let top: Vec<String> = s
            .top(TopBy::TotalTime, 2, t0)
            .into_iter()
            .map(|v| v.query)
            .collect();
        assert_eq!(top, vec!["SELECT 10", "SELECT 9"]);
    }

    #[test]
    fn top_orders() {
        let (s, t0) = store(10);
        let (busy, slow) = (shape(1), shape(2));
        for _ in 0..100 {
            s.record(&event(&busy, 2, Location::Primary), t0);
        }
        s.record(&event(&slow, 150, Location::Primary), t0);
        assert_eq!(s.top(TopBy::TotalTime, 1, t0)[0].query, "SELECT 1");
        assert_eq!(s.top(TopBy::Calls, 1, t0)[0].query, "SELECT 1");
        assert_eq!(s.top(TopBy::P99, 1, t0)[0].query, "SELECT 2");
        assert_eq!(s.top(TopBy::Mean, 1, t0)[0].query, "SELECT 2");
        assert_eq!("p99".parse::<TopBy>(), Ok(TopBy::P99));
    }

    #[test]
    fn windows_roll_with_the_injected_clock() {
        let (s, t0) = store(10);
        let q = shape(1);
        s.record(&event(&q, 5, Location::Primary), t0);
        s.record(
            &event(&q, 5, Location::Primary),
            t0 + Duration::from_secs(61),
        );
        s.record(
            &event(&q, 5, Location::Primary),
            t0 + Duration::from_secs(122),
        );
        let later = t0 + Duration::from_secs(130);
        let d = s.detail(1, later).unwrap_or_else(|| panic!("tracked"));
        assert_eq!(d.minutes.len(), 3);
        assert_eq!(d.minutes.iter().map(|w| w.calls).sum::<u64>(), 3);
        assert_eq!(d.minutes[1].start_unix - d.minutes[0].start_unix, 60);
        assert_eq!(d.minutes[0].start, "2023-11-14T22:14:00.000Z");
        assert_eq!(d.hours.len(), 1);
        assert_eq!(d.query.calls_last_hour, 3);
        // Two hours later the minute windows are out of the last hour.
        let v = &s.top(TopBy::Calls, 1, t0 + Duration::from_secs(7200))[0];
        assert_eq!(v.calls_last_hour, 0);
        assert_eq!(v.calls_last_day, 3);
        let closed = s.drain_closed_windows(later);
        assert_eq!(
            closed
                .iter()
                .filter(|w| w.granularity == Granularity::Minute)
                .count(),
            2
        );
    }

    #[test]
    fn endpoints_and_errors_in_detail() {
        let (s, t0) = store(10);
        let q = shape(7);
        let mut ev = event(&q, 3, Location::Replica);
        ev.endpoint = Some(Arc::from("/users"));
        ev.error = Some("57014".into());
        s.record(&ev, t0);
        s.record(&ev, t0);
        let d = s.detail(7, t0).unwrap_or_else(|| panic!("tracked"));
        assert_eq!(d.endpoints.len(), 1);
        assert_eq!(d.endpoints[0].endpoint, "/users");
        assert_eq!(
            d.error_codes,
            vec![ErrorCount {
                sqlstate: "57014".into(),
                count: 2
            }]
        );
        assert_eq!(d.histogram.iter().map(|b| b.count).sum::<u64>(), 2);
        let eps = s.endpoints(EndpointOrder::TotalTime, 10);
        assert_eq!(eps[0].queries[0].query.as_deref(), Some("SELECT 7"));
        let json = serde_json::to_value(&d).unwrap_or_default();
        assert_eq!(json["fingerprint"], q.fingerprint_hex.as_str());
        assert!(json["p99_ms"].is_number());
        assert_eq!(json["locations"][0]["location"], "replica");
    }

    #[test]
    fn query_view_has_the_contract_fields() {
        let (s, t0) = store(10);
        s.record(&event(&shape(1), 1, Location::Primary), t0);
        let json = serde_json::to_value(s.top(TopBy::TotalTime, 10, t0)).unwrap_or_default();
        for key in [
            "fingerprint",
            "query",
            "calls",
            "total_ms",
            "p50_ms",
            "p95_ms",
            "p99_ms",
        ] {
            assert!(json[0].get(key).is_some(), "{key}");
        }
    }
}
