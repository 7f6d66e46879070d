//! Interning of endpoint names, so each query's endpoint is a shared
//! `Arc<str>` and the statistics keep no per-query copy.
//!
//! The session turns [`crate::sqlcomment::Tags::endpoint`] into an
//! `Arc<str>` through [`crate::Insight::endpoint`] before building its
//! [`crate::stats::QueryEvent`].

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::RwLock;

/// A bounded set of shared strings.
pub struct Interner {
    set: RwLock<HashSet<Arc<str>>>,
    /// Strings kept; past it, new strings are handed out without being kept.
    capacity: usize,
}

impl Interner {
    pub fn new(capacity: usize) -> Interner {
        Interner {
            set: RwLock::new(HashSet::new()),
            capacity,
        }
    }

    /// The shared copy of `s` (one read lock when known).
    pub fn intern(&self, s: &str) -> Arc<str> {
        if let Some(found) = self.set.read().get(s) {
            return found.clone();
        }
        let mut set = self.set.write();
        if let Some(found) = set.get(s) {
            return found.clone();
        }
        let arc: Arc<str> = Arc::from(s);
        if set.len() < self.capacity {
            set.insert(arc.clone());
        }
        arc
    }

    pub fn len(&self) -> usize {
        self.set.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_string_same_arc_and_bounded() {
        let i = Interner::new(2);
        let a = i.intern("/users");
        assert!(Arc::ptr_eq(&a, &i.intern("/users")));
        i.intern("/b");
        let c1 = i.intern("/c");
        let c2 = i.intern("/c");
        assert_eq!(c1, c2);
        assert!(!Arc::ptr_eq(&c1, &c2), "over capacity: not kept");
        assert_eq!(i.len(), 2);
    }
}
