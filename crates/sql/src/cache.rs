//! A bounded map for analysis results (parse cache).
//!
//! Hashing a query costs tens of nanoseconds; parsing it tens of
//! microseconds. When full, an arbitrary half is dropped: simple, O(1)
//! amortized, and good enough for a cache whose misses are only slower.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use parking_lot::Mutex;

/// Key → value, at most `capacity` entries.
pub struct AnalysisCache<K, V> {
    map: Mutex<HashMap<K, V>>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> AnalysisCache<K, V> {
    pub fn new(capacity: usize) -> AnalysisCache<K, V> {
        AnalysisCache {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.lock().get(key).cloned()
    }

    pub fn insert(&self, key: K, value: V) {
        let mut map = self.map.lock();
        if map.len() >= self.capacity {
            let victims: Vec<K> = map.keys().take(map.len() / 2 + 1).cloned().collect();
            for k in victims {
                map.remove(&k);
            }
        }
        map.insert(key, value);
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_bounded() {
        let c: AnalysisCache<String, u32> = AnalysisCache::new(10);
        for i in 0..100 {
            c.insert(format!("q{i}"), i);
            assert!(c.len() <= 10);
        }
        assert_eq!(c.get("q99"), Some(99));
    }
}
