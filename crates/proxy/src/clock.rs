//! One clock reading per event of a session's loop.
//!
//! A transaction used to read the clock at its checkout, at its send, at
//! its completion and at its release: four vDSO calls, about 5 % of
//! pgpilot's user time at 10 clients (perf). What happens while one
//! socket event is handled happens within microseconds, so the readings
//! of one event are shared: the checkout and the send share the client
//! event's reading, the completion and the release the server event's.
//! Whatever awaits for longer inside an event (a pool wait, a cache
//! lookup) resets or sets the clock after it.

use std::time::Instant;

/// The reading of the event being handled, taken when first asked for.
#[derive(Debug, Default)]
pub(crate) struct EventClock(Option<Instant>);

impl EventClock {
    /// The event's reading (taken now if this is the first ask).
    pub fn now(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }

    /// A new event (or a long wait) begins: the next ask reads the clock.
    pub fn reset(&mut self) {
        self.0 = None;
    }

    /// A reading just taken elsewhere serves the rest of the event.
    pub fn set(&mut self, now: Instant) {
        self.0 = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reading_per_event() {
        let mut clock = EventClock::default();
        let first = clock.now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(clock.now(), first, "same event: same reading");
        clock.reset();
        let second = clock.now();
        assert!(second > first, "a new event reads the clock again");
        let later = second + std::time::Duration::from_secs(1);
        clock.set(later);
        assert_eq!(clock.now(), later);
    }
}
