//! A bounded map from query text to its [`Analysis`](crate::Analysis).
//!
//! Hashing a query costs tens of nanoseconds; parsing it tens of
//! microseconds. When full, an arbitrary half is dropped: simple, O(1)
//! amortized, and good enough for a cache whose misses are only slower.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::Analysis;

/// Query text → analysis, at most `capacity` entries.
pub struct AnalysisCache {
    map: Mutex<HashMap<Box<str>, Arc<Analysis>>>,
    capacity: usize,
}

impl AnalysisCache {
    pub fn new(capacity: usize) -> AnalysisCache {
        AnalysisCache {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, sql: &str) -> Option<Arc<Analysis>> {
        self.map.lock().get(sql).cloned()
    }

    pub fn insert(&self, sql: &str, analysis: Arc<Analysis>) {
        let mut map = self.map.lock();
        if map.len() >= self.capacity {
            let drop_n = map.len() / 2 + 1;
            let victims: Vec<Box<str>> = map.keys().take(drop_n).cloned().collect();
            for k in victims {
                map.remove(&k);
            }
        }
        map.insert(sql.into(), analysis);
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
        let c = AnalysisCache::new(10);
        for i in 0..100 {
            c.insert(&format!("q{i}"), Arc::new(Analysis::default()));
            assert!(c.len() <= 10);
        }
        assert!(c.get("q99").is_some());
    }
}
