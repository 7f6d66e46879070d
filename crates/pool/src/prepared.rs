//! Which pgpilot-named prepared statements a server connection holds.
//!
//! The proxy names every client statement `PGPILOT_<id>` on servers, where
//! `id` identifies (query text, parameter types) proxy-wide. Each server
//! connection keeps at most `capacity` of them, evicting the least recently
//! used (PgBouncer's `max_prepared_statements`).

use std::collections::HashMap;

/// Least-recently-used set of statement ids prepared on one server.
#[derive(Debug, Default)]
pub struct PreparedLru {
    /// Statement id → tick of its last use.
    entries: HashMap<u64, u64>,
    /// Monotonic use counter.
    tick: u64,
}

impl PreparedLru {
    /// True when `id` is prepared there; marks it used.
    pub fn touch(&mut self, id: u64) -> bool {
        self.tick += 1;
        match self.entries.get_mut(&id) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    /// Records `id` as prepared. When that makes more than `capacity`
    /// entries, returns the least recently used id, which the caller must
    /// Close on the server.
    pub fn insert(&mut self, id: u64, capacity: usize) -> Option<u64> {
        self.tick += 1;
        self.entries.insert(id, self.tick);
        if self.entries.len() <= capacity.max(1) {
            return None;
        }
        let (&victim, _) = self
            .entries
            .iter()
            .filter(|(&k, _)| k != id)
            .min_by_key(|(_, &t)| t)?;
        self.entries.remove(&victim);
        Some(victim)
    }

    /// Forgets `id` (its Parse failed or it was closed).
    pub fn remove(&mut self, id: u64) {
        self.entries.remove(&id);
    }

    /// Forgets everything (after `DISCARD ALL` / `DEALLOCATE ALL`).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut lru = PreparedLru::default();
        assert_eq!(lru.insert(1, 2), None);
        assert_eq!(lru.insert(2, 2), None);
        assert!(lru.touch(1));
        assert_eq!(lru.insert(3, 2), Some(2));
        assert!(lru.touch(1) && lru.touch(3) && !lru.touch(2));
        assert_eq!(lru.len(), 2);
    }

    #[test]
    fn remove_and_clear() {
        let mut lru = PreparedLru::default();
        lru.insert(1, 10);
        lru.insert(2, 10);
        lru.remove(1);
        assert!(!lru.touch(1));
        lru.clear();
        assert!(lru.is_empty());
    }
}
