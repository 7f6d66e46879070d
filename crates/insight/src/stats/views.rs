//! The read side of [`super::QueryStore`]: serializable views for the JSON
//! API, built under the store's lock from an [`Entry`].

use hdrhistogram::Histogram;
use serde::Serialize;

use super::entry::{Counters, Entry};
use super::Location;
use crate::clock::{micros_to_ms, rfc3339};
use crate::endpoints::EndpointQueryView;
use crate::windows::WindowView;

/// One fingerprint for the JSON API (`GET /api/queries`, a fixed contract:
/// `fingerprint`, `query`, `calls`, `total_ms`, `p50_ms`, `p95_ms`, `p99_ms`
/// must stay).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryView {
    /// 16 hex digits.
    pub fingerprint: String,
    /// Normalized text.
    pub query: String,
    pub calls: u64,
    pub errors: u64,
    pub rows: u64,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Calls and time in the current minute window and the 59 before it.
    pub calls_last_hour: u64,
    pub total_ms_last_hour: f64,
    /// Calls and time in the current hour window and the 23 before it.
    pub calls_last_day: u64,
    pub total_ms_last_day: f64,
    /// Per location with calls.
    pub locations: Vec<LocationView>,
    pub first_seen: String,
    pub last_seen: String,
}

impl QueryView {
    pub(super) fn of(e: &Entry, now_s: u64) -> QueryView {
        let [p50, p95, p99, p999] = quantiles(&e.latency.all);
        let (calls_h, _, total_h) = e.windows.minutes.totals(now_s);
        let (calls_d, _, total_d) = e.windows.hours.totals(now_s);
        QueryView {
            fingerprint: e.shape.fingerprint_hex.clone(),
            query: e.shape.normalized.clone(),
            calls: e.total.calls,
            errors: e.total.errors,
            rows: e.total.rows,
            total_ms: micros_to_ms(e.total.total_us),
            mean_ms: micros_to_ms(e.total.mean_us()),
            min_ms: micros_to_ms(e.total.min_us),
            max_ms: micros_to_ms(e.total.max_us),
            p50_ms: p50,
            p95_ms: p95,
            p99_ms: p99,
            p999_ms: p999,
            calls_last_hour: calls_h,
            total_ms_last_hour: micros_to_ms(total_h),
            calls_last_day: calls_d,
            total_ms_last_day: micros_to_ms(total_d),
            locations: Location::ALL
                .iter()
                .filter(|l| e.locations[l.index()].calls > 0)
                .map(|&l| LocationView::of(l, &e.locations[l.index()], e.latency.at(l)))
                .collect(),
            first_seen: rfc3339(e.first_seen_us),
            last_seen: rfc3339(e.last_seen_us),
        }
    }
}

/// p50, p95, p99, p99.9 in ms.
fn quantiles(h: &Histogram<u64>) -> [f64; 4] {
    let mut out = [0.0; 4];
    for (slot, value) in out
        .iter_mut()
        .zip(h.value_at_quantiles([0.50, 0.95, 0.99, 0.999]))
    {
        *slot = micros_to_ms(value);
    }
    out
}

/// Statistics of one fingerprint at one location.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocationView {
    pub location: Location,
    pub calls: u64,
    pub errors: u64,
    pub rows: u64,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl LocationView {
    fn of(location: Location, c: &Counters, h: &Histogram<u64>) -> LocationView {
        let [p50, p95, p99, _] = quantiles(h);
        LocationView {
            location,
            calls: c.calls,
            errors: c.errors,
            rows: c.rows,
            total_ms: micros_to_ms(c.total_us),
            mean_ms: micros_to_ms(c.mean_us()),
            p50_ms: p50,
            p95_ms: p95,
            p99_ms: p99,
        }
    }
}

/// Calls with durations up to `le_ms` (and above the previous bucket's).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramBucket {
    pub le_ms: f64,
    pub count: u64,
}

/// Power-of-two buckets from 1 µs, between the first and last non-empty one.
pub(super) fn histogram_buckets(h: &Histogram<u64>) -> Vec<HistogramBucket> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<HistogramBucket> = h
        .iter_log(1, 2.0)
        .map(|v| HistogramBucket {
            le_ms: micros_to_ms(v.value_iterated_to()),
            count: v.count_since_last_iteration(),
        })
        .skip_while(|b| b.count == 0)
        .collect();
    while out.last().is_some_and(|b| b.count == 0) {
        out.pop();
    }
    out
}

/// Failures of one SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    pub sqlstate: String,
    pub count: u64,
}

/// One fingerprint's detail for the JSON API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryDetail {
    #[serde(flatten)]
    pub query: QueryView,
    pub histogram: Vec<HistogramBucket>,
    /// Minute windows of the last hour with calls, oldest first.
    pub minutes: Vec<WindowView>,
    /// Hour windows of the last day with calls, oldest first.
    pub hours: Vec<WindowView>,
    /// Endpoints that ran this fingerprint, most time first.
    pub endpoints: Vec<EndpointQueryView>,
    pub error_codes: Vec<ErrorCount>,
}
