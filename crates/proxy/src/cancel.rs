//! CancelRequest routing.
//!
//! Each client gets a proxy-made (pid, key) in its BackendKeyData. While the
//! client holds a server connection its slot names that server's real key;
//! a CancelRequest for the client is forwarded to exactly that server and
//! dropped otherwise, so a cancel can never hit another client's query.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::Arc;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The server backend a client is currently using.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTarget {
    pub addr: std::sync::Arc<str>,
    pub pid: i32,
    pub key: i32,
}

/// One client's cancel slot: its secret and its current server, if any.
///
/// Written on every checkout and release, read only for a CancelRequest,
/// so the write side is two plain atomic stores: the server backend's
/// (pid, key) packed in one word, and the server's address under a lock
/// only when the client lands on another server (see [`CancelHandle`]).
#[derive(Debug)]
pub struct CancelSlot {
    key: i32,
    /// The server backend's pid and key, packed; 0 while no server is held.
    backend: AtomicU64,
    /// The address of the server `backend` is on.
    addr: Mutex<Option<Arc<str>>>,
}

impl CancelSlot {
    fn new(key: i32) -> CancelSlot {
        CancelSlot {
            key,
            backend: AtomicU64::new(0),
            addr: Mutex::new(None),
        }
    }

    /// The server backend to cancel, if the client holds one. A read that
    /// races with the client moving to another server yields `None` or the
    /// new server's backend, never one server's address with another's key.
    fn target(&self) -> Option<CancelTarget> {
        // Read under the address lock: the writer clears `backend` before
        // it takes the lock to change `addr` and sets the new word after,
        // so a word seen here belongs to the address seen here.
        let addr = self.addr.lock();
        let packed = self.backend.load(Acquire);
        if packed == 0 {
            return None;
        }
        let addr = addr.clone()?;
        Some(CancelTarget {
            addr,
            pid: (packed >> 32) as u32 as i32,
            key: packed as u32 as i32,
        })
    }
}

/// The session's side of its [`CancelSlot`]: remembers the address it
/// last wrote, so a checkout on the same server stores one word.
#[derive(Debug)]
pub struct CancelHandle {
    slot: Arc<CancelSlot>,
    addr: Option<Arc<str>>,
}

impl CancelHandle {
    pub fn new(slot: Arc<CancelSlot>) -> CancelHandle {
        CancelHandle { slot, addr: None }
    }

    /// The client now runs on backend `pid` (secret `key`) of server `addr`.
    pub fn point_at(&mut self, addr: &Arc<str>, pid: i32, key: i32) {
        // Compared by content: each pooled connection has its own copy.
        if self.addr.as_deref() != Some(&**addr) {
            self.slot.backend.store(0, Release);
            *self.slot.addr.lock() = Some(addr.clone());
            self.addr = Some(addr.clone());
        }
        let packed = (u64::from(pid as u32) << 32) | u64::from(key as u32);
        self.slot.backend.store(packed, Release);
    }

    /// The client holds no server: a cancel for it is dropped.
    pub fn clear(&mut self) {
        self.slot.backend.store(0, Release);
    }
}

/// Proxy pid → slot, for every logged-in client.
#[derive(Default)]
pub struct CancelRegistry {
    slots: Mutex<HashMap<i32, Arc<CancelSlot>>>,
}

impl CancelRegistry {
    /// Issues a fresh (pid, key) and its slot.
    pub fn register(&self) -> (i32, i32, Arc<CancelSlot>) {
        let mut slots = self.slots.lock();
        loop {
            let pid = rand::random::<i32>() & 0x7fff_ffff;
            if pid == 0 || slots.contains_key(&pid) {
                continue;
            }
            let key = rand::random::<i32>();
            let slot = Arc::new(CancelSlot::new(key));
            slots.insert(pid, slot.clone());
            return (pid, key, slot);
        }
    }

    pub fn unregister(&self, pid: i32) {
        self.slots.lock().remove(&pid);
    }

    /// The server to cancel for a request naming (pid, key), if the key
    /// matches and that client is running something.
    pub fn target(&self, pid: i32, key: i32) -> Option<CancelTarget> {
        let slot = self.slots.lock().get(&pid).cloned()?;
        if slot.key != key {
            return None;
        }
        slot.target()
    }
}

/// Sends a CancelRequest for `target` on a new connection (protocol §55.2.7).
pub async fn forward(target: &CancelTarget) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(&*target.addr).await?;
    let mut buf = BytesMut::with_capacity(16);
    pgpilot_wire::startup::cancel_request(&mut buf, target.pid, target.key);
    stream.write_all(&buf).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_key_or_idle_client_cancels_nothing() {
        let reg = CancelRegistry::default();
        let (pid, key, slot) = reg.register();
        let mut handle = CancelHandle::new(slot);
        assert_eq!(reg.target(pid, key), None, "idle client: nothing to cancel");
        let addr: Arc<str> = "127.0.0.1:1".into();
        handle.point_at(&addr, 7, -9);
        let t = CancelTarget {
            addr: addr.clone(),
            pid: 7,
            key: -9,
        };
        assert_eq!(reg.target(pid, key), Some(t));
        assert_eq!(reg.target(pid, key.wrapping_add(1)), None);
        handle.clear();
        assert_eq!(reg.target(pid, key), None, "released: nothing to cancel");
        reg.unregister(pid);
        assert_eq!(reg.target(pid, key), None);
    }

    #[test]
    fn moving_to_another_server_moves_the_cancel() {
        let reg = CancelRegistry::default();
        let (pid, key, slot) = reg.register();
        let mut handle = CancelHandle::new(slot);
        let (a, b): (Arc<str>, Arc<str>) = ("10.0.0.1:5432".into(), "10.0.0.2:5432".into());
        handle.point_at(&a, i32::MAX, i32::MIN);
        let on_a = reg.target(pid, key).unwrap();
        assert_eq!(
            (&*on_a.addr, on_a.pid, on_a.key),
            ("10.0.0.1:5432", i32::MAX, i32::MIN)
        );
        handle.clear();
        handle.point_at(&b, 42, 0);
        let on_b = reg.target(pid, key).unwrap();
        assert_eq!((&*on_b.addr, on_b.pid, on_b.key), ("10.0.0.2:5432", 42, 0));
        handle.point_at(&a, 43, 1);
        assert_eq!(&*reg.target(pid, key).unwrap().addr, "10.0.0.1:5432");
    }
}
