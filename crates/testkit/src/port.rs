//! Picking TCP ports for test servers, and the small amount of randomness the
//! kit needs for ports and directory names (std-only: `RandomState` is seeded
//! from the OS for every process).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Ports are drawn from here: below the machine's ephemeral range (32768+),
/// where outgoing connections would otherwise collide with test servers.
const PORT_RANGE: std::ops::Range<u16> = 20000..32000;

/// A port in 20000..32000 that is bindable on 127.0.0.1 right now.
///
/// Another process may take it before the caller binds it, so callers that
/// start servers must retry with a fresh port when the bind fails (the
/// cluster start does). Panics only if every try over the whole range fails,
/// which means the machine is out of ports.
pub fn free_port() -> u16 {
    let width = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    for _ in 0..1000 {
        // `random_u64() % width` is below `width` (12000), so it fits a u16.
        let offset = u16::try_from(random_u64() % width).unwrap_or(0);
        let port = PORT_RANGE.start + offset;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no bindable port on 127.0.0.1 in {PORT_RANGE:?} after 1000 tries");
}

/// A random number, different on every call and in every process.
pub(crate) fn random_u64() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_in_range_and_bindable() {
        let port = free_port();
        assert!(PORT_RANGE.contains(&port), "{port}");
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port should be bindable");
    }

    #[test]
    fn random_numbers_differ() {
        assert_ne!(random_u64(), random_u64());
    }
}
