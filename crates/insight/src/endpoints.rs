//! Per-endpoint aggregation: database time by application route or
//! `controller#action` (from [`crate::sqlcomment`]), and per fingerprint
//! within each endpoint.
//!
//! Owned by [`crate::stats::QueryStore`] and updated under its lock, so a
//! query's fingerprint and endpoint statistics move together. Bounded: at
//! most `max_endpoints` endpoints (later ones are counted under
//! [`OTHER_ENDPOINT`]) and [`MAX_FINGERPRINTS_PER_ENDPOINT`] fingerprints
//! each (the one with the least total time makes room).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::clock::micros_to_ms;
use crate::shape::fingerprint_hex;
use crate::windows::MAX_TRACKED_US;

/// Where executions of endpoints beyond the limit are counted.
pub const OTHER_ENDPOINT: &str = "(other)";

/// Fingerprints tracked per endpoint.
pub const MAX_FINGERPRINTS_PER_ENDPOINT: usize = 100;

/// Fingerprints listed per endpoint in a view.
const FINGERPRINTS_IN_VIEW: usize = 10;

/// Ordering of the endpoint list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointOrder {
    /// Most database time first ("top endpoints by DB time").
    #[default]
    TotalTime,
    /// Highest mean query time first ("slowest endpoints").
    Mean,
    /// Highest p99 query time first.
    P99,
    Calls,
}

impl FromStr for EndpointOrder {
    type Err = ();
    fn from_str(s: &str) -> Result<EndpointOrder, ()> {
        match s {
            "total_time" | "total" => Ok(EndpointOrder::TotalTime),
            "mean" | "slowest" => Ok(EndpointOrder::Mean),
            "p99" => Ok(EndpointOrder::P99),
            "calls" => Ok(EndpointOrder::Calls),
            _ => Err(()),
        }
    }
}

/// One fingerprint's share of an endpoint.
#[derive(Debug, Clone, Copy, Default)]
struct Share {
    calls: u64,
    errors: u64,
    total_us: u64,
}

/// Statistics of one endpoint.
struct EndpointStats {
    calls: u64,
    errors: u64,
    total_us: u64,
    max_us: u64,
    /// Query durations, µs, 2 significant digits.
    hist: Histogram<u32>,
    /// Fingerprint → its share, at most [`MAX_FINGERPRINTS_PER_ENDPOINT`].
    fingerprints: HashMap<u64, Share>,
}

impl EndpointStats {
    fn new() -> EndpointStats {
        EndpointStats {
            calls: 0,
            errors: 0,
            total_us: 0,
            max_us: 0,
            hist: Histogram::new(2).unwrap_or_else(|_| unreachable!("constant sigfig is valid")),
            fingerprints: HashMap::new(),
        }
    }

    fn record(&mut self, fingerprint: u64, us: u64, error: bool) {
        self.calls += 1;
        self.errors += u64::from(error);
        self.total_us = self.total_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
        let _ = self.hist.record(us.min(MAX_TRACKED_US));
        if !self.fingerprints.contains_key(&fingerprint)
            && self.fingerprints.len() >= MAX_FINGERPRINTS_PER_ENDPOINT
        {
            let least = self
                .fingerprints
                .iter()
                .min_by_key(|(_, s)| s.total_us)
                .map(|(fp, _)| *fp);
            if let Some(fp) = least {
                self.fingerprints.remove(&fp);
            }
        }
        let share = self.fingerprints.entry(fingerprint).or_default();
        share.calls += 1;
        share.errors += u64::from(error);
        share.total_us = share.total_us.saturating_add(us);
    }

    fn mean_us(&self) -> u64 {
        self.total_us.checked_div(self.calls).unwrap_or(0)
    }
}

/// An endpoint for the JSON API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointView {
    pub endpoint: String,
    pub calls: u64,
    pub errors: u64,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// The fingerprints with the most time in this endpoint.
    pub queries: Vec<EndpointQueryView>,
}

/// One fingerprint within an endpoint, or one endpoint of a fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointQueryView {
    pub endpoint: String,
    pub fingerprint: String,
    /// Normalized text, when the fingerprint is still tracked.
    pub query: Option<String>,
    pub calls: u64,
    pub errors: u64,
    pub total_ms: f64,
    pub mean_ms: f64,
}

impl EndpointQueryView {
    fn new(
        endpoint: &str,
        fingerprint: u64,
        share: &Share,
        query: Option<String>,
    ) -> EndpointQueryView {
        EndpointQueryView {
            endpoint: endpoint.to_owned(),
            fingerprint: fingerprint_hex(fingerprint),
            query,
            calls: share.calls,
            errors: share.errors,
            total_ms: micros_to_ms(share.total_us),
            mean_ms: micros_to_ms(share.total_us.checked_div(share.calls).unwrap_or(0)),
        }
    }
}

/// Endpoint → statistics, bounded.
pub struct EndpointTable {
    map: HashMap<Arc<str>, EndpointStats>,
    /// Maximum number of distinct endpoints, [`OTHER_ENDPOINT`] included.
    max: usize,
    other: Arc<str>,
}

impl EndpointTable {
    pub fn new(max_endpoints: usize) -> EndpointTable {
        EndpointTable {
            map: HashMap::new(),
            max: max_endpoints.max(2),
            other: Arc::from(OTHER_ENDPOINT),
        }
    }

    /// Adds one execution. Allocation-free for a known endpoint and
    /// fingerprint.
    pub fn record(&mut self, endpoint: &Arc<str>, fingerprint: u64, us: u64, error: bool) {
        if let Some(stats) = self.map.get_mut(endpoint) {
            stats.record(fingerprint, us, error);
            return;
        }
        let key = if self.map.len() + 1 >= self.max {
            self.other.clone()
        } else {
            endpoint.clone()
        };
        self.map
            .entry(key)
            .or_insert_with(EndpointStats::new)
            .record(fingerprint, us, error);
    }

    /// Endpoints ordered by `order`, at most `limit`. `text` resolves a
    /// fingerprint's normalized text.
    pub fn views(
        &self,
        order: EndpointOrder,
        limit: usize,
        text: impl Fn(u64) -> Option<String>,
    ) -> Vec<EndpointView> {
        let mut ranked: Vec<(&Arc<str>, &EndpointStats, u64)> = self
            .map
            .iter()
            .map(|(name, s)| {
                let key = match order {
                    EndpointOrder::TotalTime => s.total_us,
                    EndpointOrder::Mean => s.mean_us(),
                    EndpointOrder::P99 => s.hist.value_at_quantile(0.99),
                    EndpointOrder::Calls => s.calls,
                };
                (name, s, key)
            })
            .collect();
        ranked.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(b.0)));
        ranked.truncate(limit);
        ranked
            .into_iter()
            .map(|(name, s, _)| view(name, s, &text))
            .collect()
    }

    /// The endpoints that ran `fingerprint`, most time first.
    pub fn shares_of(&self, fingerprint: u64) -> Vec<EndpointQueryView> {
        let mut out: Vec<EndpointQueryView> = self
            .map
            .iter()
            .filter_map(|(name, s)| {
                let share = s.fingerprints.get(&fingerprint)?;
                Some(EndpointQueryView::new(name, fingerprint, share, None))
            })
            .collect();
        out.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        out
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }
}

fn view(name: &str, s: &EndpointStats, text: &impl Fn(u64) -> Option<String>) -> EndpointView {
    let mut shares: Vec<(&u64, &Share)> = s.fingerprints.iter().collect();
    shares.sort_by(|a, b| b.1.total_us.cmp(&a.1.total_us).then_with(|| a.0.cmp(b.0)));
    shares.truncate(FINGERPRINTS_IN_VIEW);
    EndpointView {
        endpoint: name.to_owned(),
        calls: s.calls,
        errors: s.errors,
        total_ms: micros_to_ms(s.total_us),
        mean_ms: micros_to_ms(s.mean_us()),
        max_ms: micros_to_ms(s.max_us),
        p50_ms: micros_to_ms(s.hist.value_at_quantile(0.50)),
        p95_ms: micros_to_ms(s.hist.value_at_quantile(0.95)),
        p99_ms: micros_to_ms(s.hist.value_at_quantile(0.99)),
        queries: shares
            .into_iter()
            .map(|(fp, share)| EndpointQueryView::new(name, *fp, share, text(*fp)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn aggregates_per_endpoint_and_fingerprint() {
        let mut t = EndpointTable::new(10);
        let users = ep("/users");
        t.record(&users, 1, 1_000, false);
        t.record(&users, 1, 3_000, true);
        t.record(&users, 2, 10_000, false);
        t.record(&ep("/orders"), 1, 500, false);
        let views = t.views(EndpointOrder::TotalTime, 10, |fp| Some(format!("q{fp}")));
        assert_eq!(views.len(), 2);
        let v = &views[0];
        assert_eq!(v.endpoint, "/users");
        assert_eq!((v.calls, v.errors), (3, 1));
        assert_eq!(v.total_ms, 14.0);
        assert_eq!(v.queries[0].fingerprint, fingerprint_hex(2));
        assert_eq!(v.queries[0].query.as_deref(), Some("q2"));
        assert_eq!(v.queries[1].calls, 2);
        let shares = t.shares_of(1);
        assert_eq!(shares.len(), 2);
        assert_eq!(shares[0].endpoint, "/users");
    }

    #[test]
    fn slowest_by_mean() {
        let mut t = EndpointTable::new(10);
        for _ in 0..10 {
            t.record(&ep("/busy"), 1, 1_000, false);
        }
        t.record(&ep("/slow"), 2, 5_000, false);
        let by_mean = t.views(EndpointOrder::Mean, 1, |_| None);
        assert_eq!(by_mean[0].endpoint, "/slow");
        let by_total = t.views(EndpointOrder::TotalTime, 1, |_| None);
        assert_eq!(by_total[0].endpoint, "/busy");
    }

    #[test]
    fn endpoints_beyond_the_limit_go_to_other() {
        let mut t = EndpointTable::new(3);
        for i in 0..10 {
            t.record(&ep(&format!("/e{i}")), 1, 100, false);
        }
        assert_eq!(t.len(), 3);
        let views = t.views(EndpointOrder::Calls, 10, |_| None);
        assert_eq!(views[0].endpoint, OTHER_ENDPOINT);
        assert_eq!(views[0].calls, 8);
    }

    #[test]
    fn fingerprints_per_endpoint_are_bounded() {
        let mut t = EndpointTable::new(10);
        let e = ep("/e");
        t.record(&e, 0, 1_000_000, false);
        for fp in 1..=(MAX_FINGERPRINTS_PER_ENDPOINT as u64 + 50) {
            t.record(&e, fp, fp, false);
        }
        let s = &t.map[&e];
        assert_eq!(s.fingerprints.len(), MAX_FINGERPRINTS_PER_ENDPOINT);
        assert!(s.fingerprints.contains_key(&0), "the most valuable stays");
    }
}
