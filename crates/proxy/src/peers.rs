//! Several pgpilot instances in front of one database keep their result
//! caches coherent through Redis: every invalidation an instance applies
//! (its own writes, the admin API) is published on one channel and applied
//! by the others.
//!
//! Never stale, even when Redis is not reachable: without the WAL stream,
//! an instance that is not subscribed cannot hear the others' writes, so
//! its cache answers nothing until it is subscribed again (see
//! `cache::policy`); a (re)subscription flushes its cache, since messages
//! may have been missed; and invalidations it could not publish while
//! disconnected become one flush of everything, published when it is back.
//!
//! With `cache.redis_results`, the same link carries the shared result
//! level (`cache::shared`): each published invalidation also increments
//! the Redis version counters of what it names.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use pgpilot_cache::{Invalidation, Source};
use tokio::sync::mpsc;

use crate::runtime::Runtime;

/// The Redis channel all instances publish to and subscribe to.
pub const CHANNEL: &str = "pgpilot:cache:invalidate";
/// Pause before reconnecting to Redis.
const RETRY: Duration = Duration::from_secs(1);
/// Bound on connecting to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One published invalidation.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Message {
    /// The publishing instance (its own messages come back and are skipped).
    from: u64,
    what: Invalidation,
}

/// This instance's side of the link.
pub struct PeerLink {
    /// Random per process.
    pub instance: u64,
    outbox: Mutex<Option<mpsc::UnboundedSender<Invalidation>>>,
    healthy: AtomicBool,
    /// Invalidations published and received.
    pub published: AtomicU64,
    pub received: AtomicU64,
    /// Invalidations queued and not yet in Redis (the shared result level
    /// is not read meanwhile).
    pending: AtomicU64,
    /// A connection for the shared result level, while subscribed.
    conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// Shared-level lookups answered / not answered.
    pub shared_hits: AtomicU64,
    pub shared_misses: AtomicU64,
    /// Results written to the shared level.
    pub shared_stores: AtomicU64,
}

impl PeerLink {
    pub fn new() -> PeerLink {
        PeerLink {
            instance: rand::random(),
            outbox: Mutex::new(None),
            healthy: AtomicBool::new(false),
            published: AtomicU64::new(0),
            received: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            conn: Mutex::new(None),
            shared_hits: AtomicU64::new(0),
            shared_misses: AtomicU64::new(0),
            shared_stores: AtomicU64::new(0),
        }
    }

    /// A connection for the shared result level, when it may be read now:
    /// subscribed, and none of this instance's invalidations still on
    /// their way to Redis.
    pub fn shared_conn(&self) -> Option<redis::aio::MultiplexedConnection> {
        if !self.is_healthy() || self.pending.load(Acquire) > 0 {
            return None;
        }
        self.conn.lock().clone()
    }

    /// A connection for storing a fill (the stamp protects it).
    pub fn store_conn(&self) -> Option<redis::aio::MultiplexedConnection> {
        self.conn.lock().clone()
    }

    /// Subscribed: other instances' invalidations are arriving.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Acquire)
    }

    /// Queues `what` for the other instances (nothing without Redis).
    pub fn publish(&self, what: &Invalidation) {
        if let Some(tx) = self.outbox.lock().as_ref() {
            self.pending.fetch_add(1, AcqRel);
            let _ = tx.send(what.clone());
        }
    }
}

impl Default for PeerLink {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps the Redis link up for the proxy's life (returns at once without
/// `cache.redis_url`).
pub async fn peers_forever(rt: Arc<Runtime>) {
    let Some(url) = rt.settings.load().cache.redis_url.clone() else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    *rt.peers.outbox.lock() = Some(tx);
    let mut missed = false;
    loop {
        if let Err(e) = connected(&rt, &url, &mut rx, &mut missed).await {
            tracing::warn!(error = %e, "Redis link down; the cache answers nothing until it is back");
        }
        rt.peers.healthy.store(false, Release);
        *rt.peers.conn.lock() = None;
        tokio::time::sleep(RETRY).await;
    }
}

/// One subscription's life: relays both ways until Redis fails.
async fn connected(
    rt: &Runtime,
    url: &str,
    rx: &mut mpsc::UnboundedReceiver<Invalidation>,
    missed: &mut bool,
) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let (mut publisher, mut pubsub) = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let publisher = client.get_multiplexed_async_connection().await?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(CHANNEL).await?;
        Ok::<_, redis::RedisError>((publisher, pubsub))
    })
    .await
    .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
    // Whatever was queued while down may never have reached the others.
    while rx.try_recv().is_ok() {
        *missed = true;
        rt.peers.pending.fetch_sub(1, AcqRel);
    }
    if std::mem::take(missed) {
        send(rt, &mut publisher, &Invalidation::All).await?;
    }
    *rt.peers.conn.lock() = Some(publisher.clone());
    // Others' messages may have been missed while not subscribed.
    rt.cache.invalidate(Source::Peer, &Invalidation::All);
    rt.peers.healthy.store(true, Release);
    tracing::info!(url, "subscribed to cache invalidations in Redis");
    let mut messages = pubsub.on_message();
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else {
                    return Err(std::io::Error::from(std::io::ErrorKind::ConnectionAborted).into());
                };
                receive(rt, msg.get_payload_bytes());
            }
            out = rx.recv() => {
                let Some(what) = out else { return Ok(()) };
                let sent = send(rt, &mut publisher, &what).await;
                rt.peers.pending.fetch_sub(1, AcqRel);
                if let Err(e) = sent {
                    *missed = true;
                    return Err(e);
                }
            }
        }
    }
}

async fn send(
    rt: &Runtime,
    publisher: &mut redis::aio::MultiplexedConnection,
    what: &Invalidation,
) -> redis::RedisResult<()> {
    let msg = Message {
        from: rt.peers.instance,
        what: what.clone(),
    };
    let payload = serde_json::to_vec(&msg).unwrap_or_default();
    // Version counters first (the shared result level checks them), then
    // the message, in one round trip.
    let mut pipe = redis::pipe();
    for key in crate::cache::shared::invalidation_keys(what) {
        pipe.cmd("INCR").arg(key).ignore();
    }
    pipe.cmd("PUBLISH").arg(CHANNEL).arg(payload).ignore();
    pipe.query_async::<()>(publisher).await?;
    rt.peers.published.fetch_add(1, Relaxed);
    Ok(())
}

/// Applies another instance's invalidation. A message that does not
/// decode (another pgpilot version?) flushes everything: what it meant
/// to invalidate is unknown.
fn receive(rt: &Runtime, payload: &[u8]) {
    match serde_json::from_slice::<Message>(payload) {
        Ok(m) if m.from == rt.peers.instance => {}
        Ok(m) => {
            rt.cache.invalidate(Source::Peer, &m.what);
            rt.peers.received.fetch_add(1, Relaxed);
        }
        Err(e) => {
            tracing::warn!(error = %e, "undecodable cache invalidation from Redis; flushing the cache");
            rt.cache.invalidate(Source::Peer, &Invalidation::All);
        }
    }
}
