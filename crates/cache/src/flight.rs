//! Stampede protection: of many identical concurrent misses, one runs the
//! query (the *leader*, holding a [`FillTicket`]) and the others wait for
//! its result, bounded by a timeout, then look the cache up again.
//!
//! A ticket always ends its flight when dropped — filled, refused or
//! abandoned (the leader's client left, the query failed) — so waiters are
//! never stranded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::key::CacheKey;

/// One query in flight.
struct Flight {
    /// The session running it (its own later identical misses don't wait).
    owner: u64,
    done: watch::Receiver<bool>,
}

/// Fills in flight, by key.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<CacheKey, Flight>>,
}

/// What a miss should do.
pub enum Begin {
    /// Run the query and fill the entry.
    Lead(FillTicket),
    /// Another session is filling it: wait, then look up again.
    Follow(Waiter),
    /// This same session is already filling it (a pipelined repeat):
    /// run the query without filling; waiting would deadlock.
    Own,
}

/// The right and duty to fill one entry.
pub struct FillTicket {
    pub(crate) key: CacheKey,
    /// The invalidation clock when the query was about to be sent.
    pub(crate) epoch: u64,
    /// When the query was sent (for the adaptive TTL).
    pub(crate) started: Instant,
    flights: Arc<Flights>,
    done: watch::Sender<bool>,
}

impl FillTicket {
    pub fn key(&self) -> CacheKey {
        self.key
    }
}

impl std::fmt::Debug for FillTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FillTicket")
            .field("key", &self.key)
            .finish()
    }
}

impl Drop for FillTicket {
    fn drop(&mut self) {
        self.flights.map.lock().remove(&self.key);
        let _ = self.done.send(true);
    }
}

/// A follower's wait for the leader.
pub struct Waiter {
    done: watch::Receiver<bool>,
}

impl Waiter {
    /// Waits until the leader ends its flight or `limit` passes; true when
    /// the flight ended in time.
    pub async fn wait(mut self, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.done.wait_for(|d| *d)).await,
            Ok(Ok(_)) | Ok(Err(_))
        )
    }
}

impl Flights {
    /// Joins or starts the flight for `key`.
    pub(crate) fn begin(
        self: &Arc<Self>,
        key: CacheKey,
        owner: u64,
        epoch: u64,
        now: Instant,
    ) -> Begin {
        let mut map = self.map.lock();
        if let Some(f) = map.get(&key) {
            if f.owner == owner {
                return Begin::Own;
            }
            return Begin::Follow(Waiter {
                done: f.done.clone(),
            });
        }
        let (tx, rx) = watch::channel(false);
        map.insert(key, Flight { owner, done: rx });
        Begin::Lead(FillTicket {
            key,
            epoch,
            started: now,
            flights: self.clone(),
            done: tx,
        })
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.map.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_wake_when_the_leader_ends() {
        let flights = Arc::new(Flights::default());
        let now = Instant::now();
        let Begin::Lead(ticket) = flights.begin(CacheKey(1), 1, 0, now) else {
            panic!("first miss leads");
        };
        assert!(matches!(flights.begin(CacheKey(1), 1, 0, now), Begin::Own));
        let Begin::Follow(waiter) = flights.begin(CacheKey(1), 2, 0, now) else {
            panic!("second session follows");
        };
        assert!(matches!(
            flights.begin(CacheKey(2), 2, 0, now),
            Begin::Lead(_)
        ));
        let wait = tokio::spawn(waiter.wait(Duration::from_secs(5)));
        drop(ticket);
        assert!(wait.await.expect("join"), "woken, not timed out");
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_follower_arriving_after_the_end_does_not_wait() {
        let flights = Arc::new(Flights::default());
        let Begin::Lead(ticket) = flights.begin(CacheKey(1), 1, 0, Instant::now()) else {
            panic!("leads");
        };
        let Begin::Follow(waiter) = flights.begin(CacheKey(1), 2, 0, Instant::now()) else {
            panic!("follows");
        };
        drop(ticket);
        assert!(waiter.wait(Duration::from_millis(1)).await);
    }

    #[tokio::test]
    async fn a_stuck_leader_times_out() {
        let flights = Arc::new(Flights::default());
        let _ticket = flights.begin(CacheKey(1), 1, 0, Instant::now());
        let Begin::Follow(waiter) = flights.begin(CacheKey(1), 2, 0, Instant::now()) else {
            panic!("follows");
        };
        assert!(!waiter.wait(Duration::from_millis(20)).await);
    }
}
