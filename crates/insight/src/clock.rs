//! Time for the insight crate: the caller's monotonic `Instant`s mapped to
//! wall-clock time through one anchor, and RFC 3339 rendering.
//!
//! Every recording call takes `now: Instant` from the caller (tests inject
//! it); windows ([`crate::windows`]), the slow log and findings need wall
//! time, derived here as `anchor_wall + (now - anchor_instant)`. A wall clock
//! stepped by NTP after start is not followed: windows stay contiguous.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Maps `Instant`s to microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The `Instant` that corresponds to `origin_unix_us`.
    origin: Instant,
    /// Wall time at `origin`, µs since the Unix epoch.
    origin_unix_us: u64,
}

impl Clock {
    /// Anchors the clock: `now` and `wall` must be read at the same moment.
    pub fn new(now: Instant, wall: SystemTime) -> Clock {
        Clock {
            origin: now,
            origin_unix_us: unix_micros(wall),
        }
    }

    /// Wall time of `at`, µs since the Unix epoch. Instants before the
    /// anchor map to the anchor.
    pub fn unix_micros(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        self.origin_unix_us.saturating_add(duration_micros(since))
    }

    /// Wall time of `at`, whole seconds since the Unix epoch.
    pub fn unix_secs(&self, at: Instant) -> u64 {
        self.unix_micros(at) / 1_000_000
    }

    /// Wall time of `at` as a `SystemTime`.
    pub fn system_time(&self, at: Instant) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.unix_micros(at))
    }
}

/// µs since the Unix epoch; 0 for times before it.
pub fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, duration_micros)
}

/// A duration in whole µs, saturating.
pub fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// µs → ms as a float, for JSON views.
pub fn micros_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-26T10:33:44.123Z`.
pub fn rfc3339(unix_us: u64) -> String {
    let secs = unix_us / 1_000_000;
    let millis = (unix_us % 1_000_000) / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// RFC 3339 rendering of a `SystemTime`.
pub fn rfc3339_system(t: SystemTime) -> String {
    rfc3339(unix_micros(t))
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123_456), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(4_102_444_799_000_000), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn clock_follows_the_instant() {
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_000);
        let c = Clock::new(t0, wall);
        assert_eq!(c.unix_secs(t0), 1_000);
        assert_eq!(c.unix_secs(t0 + Duration::from_secs(61)), 1_061);
        assert_eq!(c.unix_micros(t0 + Duration::from_micros(5)), 1_000_000_005);
        assert_eq!(
            c.system_time(t0 + Duration::from_secs(1)),
            wall + Duration::from_secs(1)
        );
    }
}
