//! Which functions are read-only, for routing reads that call functions.
//!
//! `pg_proc` volatility is loaded per database by the monitor (immutable
//! and stable functions cannot write). Volatile functions go to the primary
//! unless they are known harmless (`random()`, `clock_timestamp()`…) or
//! configured in `routing.read_only_functions`. A function not in the
//! catalog (not loaded yet, or created since) counts as writing.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

/// Volatile built-ins that read nothing and write nothing.
const HARMLESS_VOLATILE: &[&str] = &[
    "random",
    "random_normal",
    "clock_timestamp",
    "timeofday",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "gen_random_uuid",
    "uuid_generate_v4",
    "setseed",
];

/// Function name → most volatile class among its overloads (`i`, `s`, `v`).
pub type Volatility = HashMap<String, u8>;

/// Per-database function volatility.
#[derive(Default)]
pub struct FunctionCatalog {
    by_db: RwLock<HashMap<String, Arc<Volatility>>>,
}

impl FunctionCatalog {
    /// Installs the catalog of `database`.
    pub fn set(&self, database: &str, volatility: Volatility) {
        self.by_db
            .write()
            .insert(database.to_owned(), Arc::new(volatility));
    }

    pub fn has(&self, database: &str) -> bool {
        self.by_db.read().contains_key(database)
    }

    /// Whether calling `name` in `database` cannot write.
    pub fn is_read_only(&self, database: &str, name: &str, configured: &[String]) -> bool {
        if HARMLESS_VOLATILE.contains(&name)
            || configured
                .iter()
                .any(|c| c == name || c.ends_with(&format!(".{name}")))
        {
            return true;
        }
        let by_db = self.by_db.read();
        matches!(
            by_db.get(database).and_then(|v| v.get(name)),
            Some(b'i' | b's')
        )
    }
}

impl FunctionCatalog {
    /// Whether `name` is IMMUTABLE in `database` (every overload): only
    /// such functions may appear in a cached statement. Unknown → false.
    pub fn is_immutable(&self, database: &str, name: &str) -> bool {
        let name = name.rsplit('.').next().unwrap_or(name);
        let by_db = self.by_db.read();
        matches!(by_db.get(database).and_then(|v| v.get(name)), Some(b'i'))
    }
}

/// The query that loads a catalog: one row per name, most volatile class.
pub const CATALOG_QUERY: &str =
    "SELECT lower(proname), max(provolatile::text) FROM pg_catalog.pg_proc GROUP BY 1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volatility_decides() {
        let c = FunctionCatalog::default();
        let mut v = Volatility::new();
        v.insert("lower".into(), b'i');
        v.insert("now".into(), b's');
        v.insert("my_writer".into(), b'v');
        c.set("app", v);
        assert!(c.is_read_only("app", "lower", &[]));
        assert!(c.is_read_only("app", "now", &[]));
        assert!(!c.is_read_only("app", "my_writer", &[]));
        assert!(c.is_read_only("app", "my_writer", &["my_writer".into()]));
        assert!(!c.is_read_only("app", "unknown_fn", &[]));
        assert!(
            !c.is_read_only("other", "lower", &[]),
            "catalog not loaded for that database"
        );
        assert!(c.is_read_only("other", "random", &[]));
        assert!(c.is_immutable("app", "lower") && c.is_immutable("app", "pg_catalog.lower"));
        assert!(!c.is_immutable("app", "now") && !c.is_immutable("app", "random"));
    }
}
