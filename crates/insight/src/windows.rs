//! Time windows of one fingerprint's statistics: per-minute buckets for the
//! last hour and per-hour buckets for the last day, so trends can be read
//! and [`crate::store`] can persist closed windows.
//!
//! Windows are aligned to wall-clock minutes and hours (Unix seconds from
//! [`crate::clock::Clock`]). Each ring keeps one open window with a small
//! histogram (for its p50/p99) and a fixed array of closed buckets; rolling
//! to a new window is lazy (on the next record or read) and never allocates.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::clock::{micros_to_ms, rfc3339};

/// Significant digits of the per-window histograms: 1% is enough for a
/// trend, and keeps each at a few kB.
const WINDOW_SIGFIG: u8 = 2;

/// Durations above this are recorded as this (one hour, in µs).
pub const MAX_TRACKED_US: u64 = 3_600_000_000;

/// Which ring a bucket comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Minute,
    Hour,
}

impl Granularity {
    /// Window length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Granularity::Minute => 60,
            Granularity::Hour => 3600,
        }
    }
}

/// Totals of one window. `start == 0` marks an unused slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowBucket {
    /// Window start, Unix seconds, aligned to the window length.
    pub start: u64,
    pub calls: u64,
    pub errors: u64,
    pub rows: u64,
    pub total_us: u64,
    pub max_us: u64,
    /// Median of the window (2 significant digits).
    pub p50_us: u64,
    /// 99th percentile of the window (2 significant digits).
    pub p99_us: u64,
}

/// A window for the JSON API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowView {
    pub start: String,
    pub start_unix: u64,
    pub calls: u64,
    pub errors: u64,
    pub rows: u64,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl From<&WindowBucket> for WindowView {
    fn from(b: &WindowBucket) -> WindowView {
        WindowView {
            start: rfc3339(b.start.saturating_mul(1_000_000)),
            start_unix: b.start,
            calls: b.calls,
            errors: b.errors,
            rows: b.rows,
            total_ms: micros_to_ms(b.total_us),
            mean_ms: micros_to_ms(b.total_us.checked_div(b.calls).unwrap_or(0)),
            max_ms: micros_to_ms(b.max_us),
            p50_ms: micros_to_ms(b.p50_us),
            p99_ms: micros_to_ms(b.p99_us),
        }
    }
}

/// The window being filled.
struct OpenWindow {
    /// Totals so far; `bucket.start` is the window start (0 before the first record).
    bucket: WindowBucket,
    /// Durations of this window, µs; reset when the window closes.
    hist: Histogram<u32>,
}

impl OpenWindow {
    fn new() -> OpenWindow {
        OpenWindow {
            bucket: WindowBucket::default(),
            hist: new_window_histogram(),
        }
    }

    fn add(&mut self, us: u64, rows: u64, error: bool) {
        let b = &mut self.bucket;
        b.calls += 1;
        b.errors += u64::from(error);
        b.rows = b.rows.saturating_add(rows);
        b.total_us = b.total_us.saturating_add(us);
        b.max_us = b.max_us.max(us);
        let _ = self.hist.record(us.min(MAX_TRACKED_US));
    }

    /// The totals with percentiles filled in.
    fn snapshot(&self) -> WindowBucket {
        let mut b = self.bucket;
        b.p50_us = self.hist.value_at_quantile(0.50);
        b.p99_us = self.hist.value_at_quantile(0.99);
        b
    }
}

/// Histogram for one window (auto-resizing; `Histogram::new` only fails for
/// an invalid significant-digit count, which is a constant here).
fn new_window_histogram() -> Histogram<u32> {
    Histogram::new(WINDOW_SIGFIG).unwrap_or_else(|_| unreachable!("constant sigfig is valid"))
}

/// `N` closed windows of `len` seconds plus the open one.
pub struct Ring<const N: usize> {
    /// Window length in seconds.
    len: u64,
    /// Closed windows by `(start / len) % N`; a slot whose start is outside
    /// the last `N` windows is stale.
    slots: [WindowBucket; N],
    open: OpenWindow,
    /// Start of the newest window handed to [`Ring::drain_closed`].
    flushed_through: u64,
}

impl<const N: usize> Ring<N> {
    pub fn new(granularity: Granularity) -> Ring<N> {
        Ring {
            len: granularity.seconds(),
            slots: [WindowBucket::default(); N],
            open: OpenWindow::new(),
            flushed_through: 0,
        }
    }

    fn start_of(&self, unix_s: u64) -> u64 {
        unix_s - unix_s % self.len
    }

    /// Closes the open window when `now_s` is past it.
    pub fn roll(&mut self, now_s: u64) {
        let current = self.start_of(now_s);
        if self.open.bucket.start == current {
            return;
        }
        if self.open.bucket.start < current && self.open.bucket.calls > 0 {
            let closed = self.open.snapshot();
            let slot = (closed.start / self.len) as usize % N;
            self.slots[slot] = closed;
        }
        if self.open.bucket.start < current {
            self.open.bucket = WindowBucket {
                start: current,
                ..WindowBucket::default()
            };
            self.open.hist.reset();
        }
    }

    /// Adds one execution at `now_s`.
    pub fn record(&mut self, now_s: u64, us: u64, rows: u64, error: bool) {
        self.roll(now_s);
        self.open.add(us, rows, error);
    }

    /// Windows with calls among the last `N` closed ones and the current one
    /// as of `now_s`, oldest first. Read-only: a stale open window is
    /// reported as the closed window it is.
    pub fn recent(&self, now_s: u64) -> Vec<WindowBucket> {
        let current = self.start_of(now_s);
        let oldest = current.saturating_sub(self.len * N as u64);
        let mut out: Vec<WindowBucket> = self
            .slots
            .iter()
            .filter(|b| {
                b.start != 0
                    && b.start > oldest
                    && b.start < current
                    && b.start != self.open.bucket.start
            })
            .copied()
            .collect();
        let open = &self.open.bucket;
        if open.calls > 0 && open.start > oldest && open.start <= current {
            out.push(self.open.snapshot());
        }
        out.sort_by_key(|b| b.start);
        out
    }

    /// Calls, errors and total µs over the window containing `now_s` and the
    /// `N - 1` before it.
    pub fn totals(&self, now_s: u64) -> (u64, u64, u64) {
        let current = self.start_of(now_s);
        let oldest = current.saturating_sub(self.len * N as u64);
        let in_range = |b: &WindowBucket| b.calls > 0 && b.start > oldest && b.start <= current;
        let open = Some(&self.open.bucket).filter(|b| in_range(b));
        self.slots
            .iter()
            .filter(|b| in_range(b) && b.start != self.open.bucket.start)
            .chain(open)
            .fold((0, 0, 0), |(c, e, t), b| {
                (c + b.calls, e + b.errors, t + b.total_us)
            })
    }

    /// Rolls to `now_s` and appends closed windows not handed out before,
    /// oldest first. Windows older than `N` are gone: drain at least once
    /// per `N` windows.
    pub fn drain_closed(&mut self, now_s: u64, out: &mut Vec<WindowBucket>) {
        self.roll(now_s);
        let mut closed: Vec<WindowBucket> = self
            .slots
            .iter()
            .filter(|b| {
                b.start != 0 && b.start > self.flushed_through && b.start < self.open.bucket.start
            })
            .copied()
            .collect();
        closed.sort_by_key(|b| b.start);
        if let Some(last) = closed.last() {
            self.flushed_through = last.start;
        }
        out.extend(closed);
    }
}

/// Minute and hour windows of one fingerprint.
pub struct Windows {
    pub minutes: Ring<60>,
    pub hours: Ring<24>,
}

impl Default for Windows {
    fn default() -> Windows {
        Windows::new()
    }
}

impl Windows {
    pub fn new() -> Windows {
        Windows {
            minutes: Ring::new(Granularity::Minute),
            hours: Ring::new(Granularity::Hour),
        }
    }

    /// Adds one execution at `now_s` (Unix seconds) to both rings.
    pub fn record(&mut self, now_s: u64, us: u64, rows: u64, error: bool) {
        self.minutes.record(now_s, us, rows, error);
        self.hours.record(now_s, us, rows, error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_040; // 10:34:00 UTC, a minute boundary

    #[test]
    fn minutes_roll_over() {
        let mut r: Ring<60> = Ring::new(Granularity::Minute);
        r.record(T0, 1_000, 1, false);
        r.record(T0 + 59, 3_000, 1, true);
        r.record(T0 + 60, 10_000, 2, false);
        let recent = r.recent(T0 + 61);
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].start, T0);
        assert_eq!(
            (recent[0].calls, recent[0].errors, recent[0].total_us),
            (2, 1, 4_000)
        );
        assert_eq!(recent[1].start, T0 + 60);
        assert_eq!(recent[1].calls, 1);
        assert_eq!(recent[1].rows, 2);
        assert!(recent[1].p99_us >= 9_900 && recent[1].p99_us <= 10_100);
        assert_eq!(r.totals(T0 + 61), (3, 1, 14_000));
    }

    #[test]
    fn old_windows_fall_out_of_the_hour() {
        let mut r: Ring<60> = Ring::new(Granularity::Minute);
        r.record(T0, 1_000, 0, false);
        r.record(T0 + 30 * 60, 1_000, 0, false);
        assert_eq!(r.totals(T0 + 30 * 60).0, 2);
        // 61 minutes later the first window is out, the second still in.
        assert_eq!(r.totals(T0 + 61 * 60).0, 1);
        assert_eq!(r.recent(T0 + 61 * 60).len(), 1);
        // A slot reused 60 minutes later holds the new window only.
        r.record(T0 + 60 * 60, 5_000, 0, false);
        let recent = r.recent(T0 + 60 * 60 + 1);
        assert_eq!(recent.iter().map(|b| b.calls).sum::<u64>(), 2);
        assert_eq!(recent.last().map(|b| b.total_us), Some(5_000));
    }

    #[test]
    fn stale_open_window_reads_as_closed() {
        let mut r: Ring<24> = Ring::new(Granularity::Hour);
        r.record(T0, 2_000, 0, false);
        let later = T0 + 5 * 3600;
        let recent = r.recent(later);
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].start, T0 - T0 % 3600);
        assert_eq!(r.totals(later).0, 1);
    }

    #[test]
    fn drain_hands_each_closed_window_out_once() {
        let mut r: Ring<60> = Ring::new(Granularity::Minute);
        r.record(T0, 1_000, 0, false);
        r.record(T0 + 60, 1_000, 0, false);
        let mut out = Vec::new();
        r.drain_closed(T0 + 61, &mut out);
        assert_eq!(out.iter().map(|b| b.start).collect::<Vec<_>>(), vec![T0]);
        out.clear();
        r.drain_closed(T0 + 62, &mut out);
        assert!(out.is_empty(), "the open window is not drained");
        r.drain_closed(T0 + 125, &mut out);
        assert_eq!(
            out.iter().map(|b| b.start).collect::<Vec<_>>(),
            vec![T0 + 60]
        );
    }
}
