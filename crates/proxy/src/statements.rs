//! Protocol-level prepared statements across pooled servers.
//!
//! A client's named statement is known proxy-wide by the (query text,
//! parameter types) it was parsed with and named `PGPILOT_<id>` on servers.
//! Any server connection the client lands on can then be given the
//! statement on demand (a hidden Parse), and statements are shared between
//! clients that prepare the same text — as PgBouncer ≥ 1.21 and PgDog do.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use parking_lot::Mutex;

/// A statement as the servers know it.
#[derive(Debug)]
pub struct Statement {
    /// Proxy-wide id; the server-side name is `PGPILOT_<id>`.
    pub id: u64,
    /// SQL text as the client sent it (in its client_encoding).
    pub query: Arc<[u8]>,
    /// `query` as text, when it is UTF-8 (insight and the result cache
    /// look only at those).
    pub sql: Option<Arc<str>>,
    /// Parameter count and OIDs, as in the client's Parse.
    pub param_types: Box<[u8]>,
    /// Server-side name, NUL-free, precomputed for the hot path.
    pub server_name: Box<[u8]>,
    /// The analyzer's verdict on `query`, computed at the first Bind so
    /// later executions skip the lexer.
    pub analysis: std::sync::OnceLock<pgpilot_sql::Analysis>,
    /// Its literal-preserving normalized hash (the result cache's key
    /// part), computed on first use.
    pub exact: std::sync::OnceLock<u128>,
}

/// (query, param types) → statement, shared by all sessions.
#[derive(Default)]
pub struct StatementRegistry {
    inner: Mutex<RegistryInner>,
}

/// (query text, parameter types).
type StatementKey = (Box<[u8]>, Box<[u8]>);

#[derive(Default)]
struct RegistryInner {
    by_text: HashMap<StatementKey, Arc<Statement>>,
    next_id: u64,
}

impl StatementRegistry {
    /// The statement for this text and these parameter types, created on first use.
    pub fn intern(&self, query: &[u8], param_types: &[u8]) -> Arc<Statement> {
        let mut inner = self.inner.lock();
        let key = (Box::<[u8]>::from(query), Box::<[u8]>::from(param_types));
        if let Some(s) = inner.by_text.get(&key) {
            return s.clone();
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let stmt = Arc::new(Statement {
            id,
            query: Arc::from(query),
            sql: std::str::from_utf8(query).ok().map(Arc::from),
            param_types: key.1.clone(),
            server_name: format!("PGPILOT_{id}").into_bytes().into_boxed_slice(),
            analysis: std::sync::OnceLock::new(),
            exact: std::sync::OnceLock::new(),
        });
        inner.by_text.insert(key, stmt.clone());
        stmt
    }

    /// Number of distinct statements seen.
    pub fn len(&self) -> usize {
        self.inner.lock().by_text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The statements one client has prepared, by the names it chose.
#[derive(Default)]
pub struct ClientStatements {
    by_name: HashMap<Box<[u8]>, Arc<Statement>>,
}

impl ClientStatements {
    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.by_name.get(name)
    }

    /// Records `name`; false when the client already has a statement by that name.
    pub fn insert(&mut self, name: &[u8], stmt: Arc<Statement>) -> bool {
        if self.by_name.contains_key(name) {
            return false;
        }
        self.by_name.insert(name.into(), stmt);
        true
    }

    pub fn remove(&mut self, name: &[u8]) {
        self.by_name.remove(name);
    }

    /// Removes `name` if it still names statement `id` (its Parse failed).
    pub fn remove_if(&mut self, name: &[u8], id: u64) {
        if self.by_name.get(name).is_some_and(|s| s.id == id) {
            self.by_name.remove(name);
        }
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
    }
}

/// Writes a Parse that creates `stmt` under its server-side name.
pub fn encode_parse(out: &mut BytesMut, stmt: &Statement) {
    pgpilot_wire::frontend::parse(out, &stmt.server_name, &stmt.query, &stmt.param_types);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_statement_across_clients() {
        let reg = StatementRegistry::default();
        let a = reg.intern(b"select $1", &[0, 1, 0, 0, 0, 23]);
        let b = reg.intern(b"select $1", &[0, 1, 0, 0, 0, 23]);
        let c = reg.intern(b"select $1", &[0, 0]);
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(&*a.server_name, format!("PGPILOT_{}", a.id).as_bytes());
    }

    #[test]
    fn client_names_are_unique_until_closed() {
        let reg = StatementRegistry::default();
        let mut mine = ClientStatements::default();
        assert!(mine.insert(b"s1", reg.intern(b"select 1", &[])));
        assert!(!mine.insert(b"s1", reg.intern(b"select 2", &[])));
        mine.remove(b"s1");
        assert!(mine.insert(b"s1", reg.intern(b"select 2", &[])));
    }
}
