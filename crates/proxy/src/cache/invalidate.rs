//! What a session's writes invalidate, and when.
//!
//! Each statement routed as a write adds the tables its parse tree says it
//! writes (DML targets, TRUNCATE, COPY FROM, DDL) to the transaction's
//! list; statements whose effects names cannot capture widen it to the
//! database (a volatile user function, unparseable text) or to everything
//! (roles, grants, functions, views: `CacheFacts::flush_all`). The list is
//! applied when the transaction ends, before the client sees its
//! ReadyForQuery — in autocommit at once, inside a transaction at
//! COMMIT — so the client's next read cannot hit an entry its own write
//! made stale. A rolled-back transaction is invalidated too: harmless, and
//! it covers a COMMIT whose outcome was lost with its server.

use pgpilot_cache::{Invalidation, Source};
use pgpilot_sql::{Analysis, Classification};

use super::Flush;
use crate::session::Session;

/// Side-effecting built-ins that change no rows of tables a cached
/// statement can read (sequences, settings, notifications, large objects in
/// a system catalog): calling them does not widen invalidation. `dblink_exec`
/// can write anything.
fn writes_no_tables(name: &str) -> bool {
    name != "dblink_exec" && pgpilot_sql::classify::SIDE_EFFECT_FUNCTIONS.contains(&name)
}

impl Session {
    /// Notes the write statement `analysis`; what it invalidates is worked
    /// out at the end of the transaction, and only once the cache has ever
    /// been on (before that no entry exists: the write path pays one
    /// reference count per write statement).
    pub(crate) fn note_cache_writes(&mut self, analysis: &Analysis) {
        let facts = &analysis.class.cache;
        if facts.flush_all || facts.ddl {
            self.rt
                .catalog_stale
                .store(true, std::sync::atomic::Ordering::Release);
        }
        self.cache.written.push(analysis.class.clone());
    }

    /// A volatile function not known to leave tables alone may write any.
    fn calls_opaque_writer(&self, class: &Classification) -> bool {
        let settings = self.rt.settings.load();
        let configured = &settings.routing.read_only_functions;
        class.functions.iter().any(|f| {
            let name = f.rsplit('.').next().unwrap_or(f);
            !writes_no_tables(name)
                && !name.starts_with("pg_advisory")
                && !name.starts_with("pg_try_advisory")
                && !self
                    .rt
                    .functions
                    .is_read_only(&self.database, name, configured)
        })
    }

    /// What the noted write statements invalidate.
    fn written_invalidation(&self) -> Option<Invalidation> {
        let mut flush = Flush::None;
        let mut tables: Vec<String> = Vec::new();
        for class in &self.cache.written {
            let facts = &class.cache;
            for t in &facts.writes {
                if !tables.contains(&t.name) {
                    tables.push(t.name.clone());
                }
            }
            let widen = if facts.flush_all {
                Flush::All
            } else if class.reason == "unparseable" || self.calls_opaque_writer(class) {
                Flush::Database
            } else {
                Flush::None
            };
            flush = flush.max(widen);
        }
        match flush {
            Flush::All => Some(Invalidation::All),
            Flush::Database => Some(Invalidation::Database(self.database.clone())),
            Flush::None if tables.is_empty() => None,
            Flush::None => Some(Invalidation::Tables {
                database: self.database.clone(),
                tables,
            }),
        }
    }

    /// The transaction ended: applies and forgets what it wrote.
    pub(crate) fn invalidate_written(&mut self) {
        if self.cache.written.is_empty() {
            return;
        }
        let what = if self
            .rt
            .cache_ever_active
            .load(std::sync::atomic::Ordering::Acquire)
        {
            self.written_invalidation()
        } else {
            None
        };
        self.cache.written.clear();
        if let Some(what) = what {
            self.rt.cache.invalidate(Source::Proxy, &what);
            self.rt.peers.publish(&what);
        }
    }
}
