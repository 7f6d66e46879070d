//! Which relations a cached statement may read, per database.
//!
//! Loaded by the monitor from `pg_class` next to function volatility. A
//! name is cacheable only when every relation of that name (in any schema:
//! the statement's name resolves through `search_path`) is an ordinary
//! table, permanent (not temporary, not unlogged), without
//! row-level security, outside the system schemas. Views, materialized
//! views, foreign tables and sequences are refused (pgpool-II's rules); a
//! name not in the catalog (created since the last load) is refused too.
//! With WAL invalidation, a table must also be in the publication.
//! Partitioned tables and their partitions are refused: a write through the
//! parent's name changes a partition read by its own name, and the WAL
//! stream reports partitions, not parents.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

/// Relation name → whether results reading it may be cached.
pub type Relations = HashMap<String, bool>;

/// Per-database relation kinds.
#[derive(Default)]
pub struct RelationCatalog {
    by_db: RwLock<HashMap<String, Arc<Relations>>>,
}

impl RelationCatalog {
    /// Installs the catalog of `database`.
    pub fn set(&self, database: &str, relations: Relations) {
        self.by_db
            .write()
            .insert(database.to_owned(), Arc::new(relations));
    }

    /// Whether results reading `name` (possibly schema-qualified) in
    /// `database` may be cached.
    pub fn is_cacheable(&self, database: &str, name: &str) -> bool {
        let name = name.rsplit('.').next().unwrap_or(name);
        let by_db = self.by_db.read();
        by_db
            .get(database)
            .and_then(|r| r.get(name))
            .copied()
            .unwrap_or(false)
    }
}

/// One row per relation name: whether every relation so named is
/// cacheable. With WAL invalidation (`publication`), a table must also be
/// in the publication: writes to other tables would never reach the cache.
pub fn relations_query(publication: Option<&str>) -> String {
    let published = match publication {
        Some(p) => format!(
            " AND EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables t \
             WHERE t.pubname = {} AND t.schemaname = n.nspname AND t.tablename = c.relname)",
            pgpilot_sql::quote::literal(p)
        ),
        None => String::new(),
    };
    format!(
        "SELECT c.relname, bool_and(c.relkind = 'r' AND NOT c.relispartition \
         AND c.relpersistence = 'p' AND NOT c.relrowsecurity \
         AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
         AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'{published}) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') GROUP BY c.relname"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_cacheable_names_pass() {
        let c = RelationCatalog::default();
        let mut r = Relations::new();
        r.insert("orders".into(), true);
        r.insert("order_view".into(), false);
        c.set("app", r);
        assert!(c.is_cacheable("app", "orders"));
        assert!(c.is_cacheable("app", "public.orders"));
        assert!(!c.is_cacheable("app", "order_view"));
        assert!(!c.is_cacheable("app", "new_table"));
        assert!(!c.is_cacheable("other", "orders"));
    }

    #[test]
    fn the_publication_name_is_quoted() {
        let q = relations_query(Some("it's"));
        assert!(q.contains("pubname = 'it''s'"));
        assert!(!relations_query(None).contains("pg_publication_tables"));
    }
}
