//! Exact invalidation by version: what a cached result depends on, and
//! whether any of it changed since the query that produced it was sent.
//!
//! A proxy-wide logical clock ticks at every invalidation. Each table,
//! tag and database has a handle holding the clock value of its last
//! invalidation. A fill notes the clock *before* its query is sent; the
//! result stays valid while every handle it depends on is at or below that
//! value. So a result read before a write but stored after the write's
//! invalidation is never served — the race a delete-on-write cache has —
//! and a hit costs a few atomic loads, no lock and no index of keys.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::sync::Arc;

use parking_lot::RwLock;

/// The clock value of one dependency's last invalidation.
type Handle = Arc<AtomicU64>;

/// What one cached result depends on.
#[derive(Debug, Default)]
pub struct Deps {
    handles: Box<[Handle]>,
}

impl Deps {
    /// Whether nothing the result depends on was invalidated after `epoch`
    /// (the clock value read before its query was sent).
    pub fn valid_at(&self, epoch: u64) -> bool {
        self.handles.iter().all(|h| h.load(Acquire) <= epoch)
    }
}

/// Where an invalidation came from (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A write pgpilot routed itself.
    Proxy,
    /// The primary's WAL stream.
    Wal,
    /// The admin API.
    Api,
    /// Another pgpilot instance, through Redis.
    Peer,
}

/// A table's identity for invalidation: database and unqualified relation
/// name. Schemas are ignored on purpose: a query's unqualified name
/// resolves through `search_path`, so matching by name alone can only
/// invalidate too much, never too little.
pub fn table_name(qualified: &str) -> &str {
    qualified.rsplit('.').next().unwrap_or(qualified)
}

/// Handles by name, created on first use and pruned when no result needs them.
#[derive(Default)]
struct HandleMap<K> {
    map: RwLock<HashMap<K, Handle>>,
    /// Highest value held by a pruned handle: a recreated one starts there,
    /// so a fill that began before the pruned invalidation is still refused.
    pruned_max: AtomicU64,
}

impl<K: std::hash::Hash + Eq + Clone> HandleMap<K> {
    fn get(&self, key: &K) -> Handle {
        if let Some(h) = self.map.read().get(key) {
            return h.clone();
        }
        // `pruned_max` is read under the write lock `prune` also holds: a
        // handle pruned between an unlocked read and this insert would
        // otherwise be recreated below its last invalidation.
        let mut map = self.map.write();
        map.entry(key.clone())
            .or_insert_with(|| Arc::new(AtomicU64::new(self.pruned_max.load(Acquire))))
            .clone()
    }

    fn bump(&self, key: &K, epoch: u64) {
        self.get(key).fetch_max(epoch, AcqRel);
    }

    /// Drops handles only this map holds.
    fn prune(&self) {
        let mut map = self.map.write();
        map.retain(|_, h| {
            if Arc::strong_count(h) > 1 {
                return true;
            }
            self.pruned_max.fetch_max(h.load(Acquire), AcqRel);
            false
        });
    }

    fn len(&self) -> usize {
        self.map.read().len()
    }
}

/// The clock and every dependency handle.
#[derive(Default)]
pub struct Invalidations {
    clock: AtomicU64,
    everything: Handle,
    databases: HandleMap<Box<str>>,
    tables: HandleMap<(Box<str>, Box<str>)>,
    /// Per table name, in every database (an admin request naming no
    /// database): a dependency of every result reading that name.
    everywhere: HandleMap<Box<str>>,
    tags: HandleMap<Box<str>>,
}

impl Invalidations {
    /// The clock now: read before a fill's query is sent.
    pub fn epoch(&self) -> u64 {
        self.clock.load(Acquire)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, AcqRel) + 1
    }

    /// The handles a result of `database` reading `tables` with `tags` depends on.
    pub fn deps<'a>(
        &self,
        database: &str,
        tables: impl IntoIterator<Item = &'a str>,
        tags: impl IntoIterator<Item = &'a str>,
    ) -> Deps {
        let mut handles = vec![
            self.everything.clone(),
            self.databases.get(&database.into()),
        ];
        for t in tables {
            let name = table_name(t);
            handles.push(self.tables.get(&(database.into(), name.into())));
            handles.push(self.everywhere.get(&name.into()));
        }
        for t in tags {
            handles.push(self.tags.get(&t.into()));
        }
        Deps {
            handles: handles.into_boxed_slice(),
        }
    }

    /// Results reading any of `tables` in `database` are stale from now on.
    pub fn tables<'a>(&self, database: &str, tables: impl IntoIterator<Item = &'a str>) {
        let epoch = self.tick();
        for t in tables {
            self.tables
                .bump(&(database.into(), table_name(t).into()), epoch);
        }
    }

    /// Results carrying any of `tags` are stale from now on.
    pub fn tags<'a>(&self, tags: impl IntoIterator<Item = &'a str>) {
        let epoch = self.tick();
        for t in tags {
            self.tags.bump(&t.into(), epoch);
        }
    }

    /// Every result of `database` is stale from now on.
    pub fn database(&self, database: &str) {
        let epoch = self.tick();
        self.databases.bump(&database.into(), epoch);
    }

    /// Every result is stale from now on.
    pub fn everything(&self) {
        let epoch = self.tick();
        self.everything.fetch_max(epoch, AcqRel);
    }

    /// Results reading `table` in any database are stale (an admin request
    /// that names no database).
    pub fn table_everywhere(&self, table: &str) {
        let epoch = self.tick();
        self.everywhere.bump(&table_name(table).into(), epoch);
    }

    /// Forgets handles no cached result refers to any more.
    pub fn prune(&self) {
        self.databases.prune();
        self.tables.prune();
        self.everywhere.prune();
        self.tags.prune();
    }

    /// Handles held (tables, tags), for metrics.
    pub fn tracked(&self) -> (usize, usize) {
        (self.tables.len(), self.tags.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_after_the_fill_began_invalidates_it() {
        let inv = Invalidations::default();
        let start = inv.epoch();
        let deps = inv.deps("app", ["public.t"], []);
        assert!(deps.valid_at(start));
        inv.tables("app", ["t"]);
        assert!(!deps.valid_at(start), "schema is ignored: t == public.t");
        // A fill that began after the write is valid.
        assert!(deps.valid_at(inv.epoch()));
    }

    #[test]
    fn other_tables_databases_and_tags_are_independent() {
        let inv = Invalidations::default();
        let start = inv.epoch();
        let deps = inv.deps("app", ["t"], ["user:1"]);
        inv.tables("app", ["u"]);
        inv.tables("other", ["t"]);
        inv.tags(["user:2"]);
        assert!(deps.valid_at(start));
        inv.tags(["user:1"]);
        assert!(!deps.valid_at(start));
    }

    #[test]
    fn database_and_global_flushes_cover_everything() {
        let inv = Invalidations::default();
        let start = inv.epoch();
        let a = inv.deps("app", ["t"], []);
        let b = inv.deps("other", ["t"], []);
        inv.database("app");
        assert!(!a.valid_at(start) && b.valid_at(start));
        inv.everything();
        assert!(!b.valid_at(start));
    }

    #[test]
    fn a_table_everywhere_hits_every_database() {
        let inv = Invalidations::default();
        let start = inv.epoch();
        let a = inv.deps("app", ["t"], []);
        let b = inv.deps("other", ["s.t"], []);
        let c = inv.deps("other", ["u"], []);
        inv.table_everywhere("t");
        assert!(!a.valid_at(start) && !b.valid_at(start) && c.valid_at(start));
    }

    #[test]
    fn a_table_everywhere_also_covers_fills_not_yet_stored() {
        let inv = Invalidations::default();
        let start = inv.epoch();
        // No handle exists for `t` yet when the admin invalidates it.
        inv.table_everywhere("t");
        let late = inv.deps("app", ["t"], []);
        assert!(
            !late.valid_at(start),
            "a fill that began before must not be stored"
        );
    }

    #[test]
    fn pruning_never_revalidates_a_stale_fill() {
        let inv = Invalidations::default();
        let start = inv.epoch();
        let deps = inv.deps("app", ["t"], ["x"]);
        drop(deps);
        inv.tables("app", ["t"]);
        inv.tags(["x"]);
        inv.prune();
        assert_eq!(inv.tracked(), (0, 0));
        // The fill that began before the write registers its deps only now.
        let late = inv.deps("app", ["t"], ["x"]);
        assert!(!late.valid_at(start));
        assert!(late.valid_at(inv.epoch()));
    }
}
