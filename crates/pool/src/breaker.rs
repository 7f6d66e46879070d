//! A circuit breaker per server: closed → open after N consecutive
//! failures → half-open once the ban expires (one probe decides) → closed on
//! success, open again on failure.
//!
//! Pure state: the caller passes the clock, so tests need no sleeps.

use std::time::{Duration, Instant};

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Traffic flows.
    Closed,
    /// Banned until the instant; no traffic.
    Open { until: Instant },
    /// Ban expired: the next probe decides.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Consecutive-failure circuit breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: BreakerState,
    /// Failures since the last success.
    failures: u32,
    /// Failures that open the breaker.
    threshold: u32,
    /// How long it stays open.
    ban: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, ban: Duration) -> Breaker {
        Breaker {
            state: BreakerState::Closed,
            failures: 0,
            threshold: threshold.max(1),
            ban,
        }
    }

    /// Applies new limits (on reload).
    pub fn configure(&mut self, threshold: u32, ban: Duration) {
        self.threshold = threshold.max(1);
        self.ban = ban;
    }

    /// The state at `now` (an expired ban reads as half-open).
    pub fn state(&mut self, now: Instant) -> BreakerState {
        if let BreakerState::Open { until } = self.state {
            if now >= until {
                self.state = BreakerState::HalfOpen;
            }
        }
        self.state
    }

    /// Whether client traffic may use the server at `now`.
    pub fn allows_traffic(&mut self, now: Instant) -> bool {
        self.state(now) == BreakerState::Closed
    }

    /// A request or probe succeeded.
    pub fn success(&mut self) {
        self.failures = 0;
        self.state = BreakerState::Closed;
    }

    /// A request or probe failed; returns true when this opened the breaker.
    pub fn failure(&mut self, now: Instant) -> bool {
        self.failures = self.failures.saturating_add(1);
        let was_open = matches!(self.state, BreakerState::Open { .. });
        let half_open = self.state(now) == BreakerState::HalfOpen;
        if half_open || self.failures >= self.threshold {
            self.state = BreakerState::Open {
                until: now + self.ban,
            };
            return !was_open;
        }
        false
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_half_opens_after_ban() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(5));
        assert!(!b.failure(t0));
        assert!(!b.failure(t0));
        assert!(b.allows_traffic(t0));
        assert!(b.failure(t0), "third failure opens");
        assert!(!b.allows_traffic(t0 + Duration::from_secs(4)));
        assert_eq!(b.state(t0 + Duration::from_secs(5)), BreakerState::HalfOpen);
        assert!(
            !b.allows_traffic(t0 + Duration::from_secs(5)),
            "half-open waits for a probe"
        );
        b.success();
        assert!(b.allows_traffic(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn failed_probe_reopens_at_once() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(1));
        b.failure(t0);
        b.failure(t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert!(b.failure(t1));
        assert!(matches!(b.state(t1), BreakerState::Open { .. }));
    }

    #[test]
    fn success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(1));
        b.failure(t0);
        b.success();
        assert!(!b.failure(t0));
        assert!(b.allows_traffic(t0));
    }
}
