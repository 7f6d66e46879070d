//! CancelRequest routing.
//!
//! Each client gets a proxy-made (pid, key) in its BackendKeyData. While the
//! client holds a server connection its slot names that server's real key;
//! a CancelRequest for the client is forwarded to exactly that server and
//! dropped otherwise, so a cancel can never hit another client's query.

use std::collections::HashMap;
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
#[derive(Debug)]
pub struct CancelSlot {
    key: i32,
    target: Mutex<Option<CancelTarget>>,
}

impl CancelSlot {
    pub fn set(&self, target: Option<CancelTarget>) {
        *self.target.lock() = target;
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
            let slot = Arc::new(CancelSlot {
                key,
                target: Mutex::new(None),
            });
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
        let target = slot.target.lock().clone();
        target
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
        assert_eq!(reg.target(pid, key), None, "idle client: nothing to cancel");
        let t = CancelTarget {
            addr: "127.0.0.1:1".into(),
            pid: 7,
            key: 9,
        };
        slot.set(Some(t.clone()));
        assert_eq!(reg.target(pid, key), Some(t));
        assert_eq!(reg.target(pid, key.wrapping_add(1)), None);
        reg.unregister(pid);
        assert_eq!(reg.target(pid, key), None);
    }
}
