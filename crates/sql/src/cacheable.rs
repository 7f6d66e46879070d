//! What a query-result cache needs to know about one query text, from its
//! parse tree: whether its results may be cached at all, which relations
//! they depend on, and what running it invalidates.
//!
//! Computed once per query shape inside [`crate::classify::classify`] and
//! kept in [`crate::Classification::cache`]. The text alone cannot settle
//! everything: the proxy still checks at run time that every relation read
//! is an ordinary, permanent table without row-level security and that
//! every function in [`crate::Classification::functions`] is immutable
//! (pgpool-II's rules for its query cache).

mod writes;

use std::fmt;

use pg_query::NodeEnum;

use crate::walk::{push_unique, Tree};

/// A relation as the parser gives it: names case-folded unless quoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    /// The schema when the text qualified the name; `None` means "found
    /// through `search_path`".
    pub schema: Option<String>,
    pub name: String,
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Result-cache facts about one query text.
///
/// `writes` and `flush_all` describe what happens when the text runs
/// successfully; they list only what the text names. Rows changed through
/// triggers, rules, foreign-key cascades, functions, or partitions and
/// inheritance children of a named table are for the proxy to add from the
/// catalogs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFacts {
    /// Why results of this text must never be cached (one of the
    /// [`refusal`] constants); `None` when the text alone allows it.
    pub refusal: Option<&'static str>,
    /// Relations read (FROM, JOIN, subqueries, CTE bodies), CTE names
    /// excluded; without duplicates.
    pub reads: Vec<TableRef>,
    /// Tables whose rows (or whose meaning, for DDL) this text may change:
    /// DML targets (also in writing CTEs), TRUNCATE, COPY FROM, SELECT
    /// INTO / CREATE TABLE AS targets, tables named by table DDL.
    pub writes: Vec<TableRef>,
    /// The text can change results of any query in ways table names do not
    /// capture (roles, grants, functions, views, schemas, DO, CALL…): drop
    /// every cached result.
    pub flush_all: bool,
    /// The text changes catalog definitions (CREATE, ALTER, DROP, GRANT,
    /// SELECT INTO…) or may (DO, CALL): what the proxy caches from the
    /// catalogs (relation kinds, row-level security, function volatility)
    /// may be stale after it runs.
    pub ddl: bool,
}

impl CacheFacts {
    /// Facts for a text the parser rejected: never cached, and if the
    /// server accepts it after all, assume it changed anything.
    pub fn unparseable() -> CacheFacts {
        CacheFacts {
            refusal: Some(refusal::UNPARSEABLE),
            reads: Vec::new(),
            writes: Vec::new(),
            flush_all: true,
            ddl: true,
        }
    }

    /// The text alone allows caching its results.
    pub fn cacheable(&self) -> bool {
        self.refusal.is_none()
    }
}

impl Default for CacheFacts {
    /// The safe side: not cacheable, flushes everything.
    fn default() -> CacheFacts {
        CacheFacts {
            refusal: Some(refusal::NOT_ANALYZED),
            ..CacheFacts::unparseable()
        }
    }
}

/// Why a text's results must not be cached; each reason is distinct, for
/// metrics and tests.
pub mod refusal {
    pub const UNPARSEABLE: &str = "unparseable";
    pub const NOT_ANALYZED: &str = "not analyzed";
    pub const NO_STATEMENT: &str = "no statement";
    pub const MULTIPLE_STATEMENTS: &str = "more than one statement";
    pub const NOT_SELECT: &str = "not a SELECT";
    pub const SELECT_INTO: &str = "SELECT INTO";
    pub const WRITING_CTE: &str = "data-modifying CTE";
    pub const ROW_LOCKS: &str = "row locks (FOR UPDATE/SHARE)";
    pub const VALUE_FUNCTION: &str = "SQL value function (CURRENT_DATE, CURRENT_USER…)";
    pub const CURRENT_TIME_LITERAL: &str = "literal naming the current time ('now', 'today'…)";
    pub const TABLESAMPLE: &str = "TABLESAMPLE";
    pub const CATALOG_LOOKUP_CAST: &str = "cast to an OID alias type (regclass…)";
    pub const SYSTEM_CATALOG: &str = "system catalog";
    pub const TEMP_SCHEMA: &str = "temporary schema (pg_temp)";
    pub const CTE_SHADOWS_TABLE: &str = "CTE named like a table it reads";
    pub const UNSUPPORTED_SYNTAX: &str = "syntax the cache analysis does not cover";
}

/// Cache facts for a parsed text: each statement with its tree walk.
pub(crate) fn facts(statements: &[(&NodeEnum, Tree)]) -> CacheFacts {
    let mut facts = CacheFacts {
        refusal: refusal_of(statements),
        reads: Vec::new(),
        writes: Vec::new(),
        flush_all: false,
        ddl: false,
    };
    for (stmt, tree) in statements {
        for read in &tree.reads {
            push_unique(&mut facts.reads, read.clone());
        }
        facts.flush_all |= writes::statement(stmt, tree, &mut facts.writes);
        facts.ddl |= writes::changes_catalog(stmt);
    }
    facts
}

fn refusal_of(statements: &[(&NodeEnum, Tree)]) -> Option<&'static str> {
    match statements {
        [] => Some(refusal::NO_STATEMENT),
        [(NodeEnum::SelectStmt(_), tree)] => refusal_in_select(tree),
        [_] => Some(refusal::NOT_SELECT),
        _ => Some(refusal::MULTIPLE_STATEMENTS),
    }
}

/// pgpool-II's text rules, applied to a whole SELECT (subqueries and CTEs
/// included).
fn refusal_in_select(t: &Tree) -> Option<&'static str> {
    let rules = [
        (t.select_into, refusal::SELECT_INTO),
        (t.writing_cte, refusal::WRITING_CTE),
        (t.row_locks, refusal::ROW_LOCKS),
        (t.value_function, refusal::VALUE_FUNCTION),
        (t.current_time_literal, refusal::CURRENT_TIME_LITERAL),
        (t.tablesample, refusal::TABLESAMPLE),
        (t.catalog_lookup_cast, refusal::CATALOG_LOOKUP_CAST),
        (
            t.reads.iter().any(is_system_catalog),
            refusal::SYSTEM_CATALOG,
        ),
        (t.reads.iter().any(is_temp), refusal::TEMP_SCHEMA),
        (cte_shadows_table(t), refusal::CTE_SHADOWS_TABLE),
        (t.unsupported, refusal::UNSUPPORTED_SYNTAX),
    ];
    rules.into_iter().find(|(hit, _)| *hit).map(|(_, why)| why)
}

/// `pg_catalog`, `information_schema`, `pg_toast…` (schemas starting with
/// `pg_` are reserved to the system), or a bare `pg_…` name, which
/// `search_path` resolves in `pg_catalog` first.
fn is_system_catalog(t: &TableRef) -> bool {
    match &t.schema {
        Some(s) => s == "information_schema" || (s.starts_with("pg_") && !is_temp_schema(s)),
        None => t.name.starts_with("pg_"),
    }
}

fn is_temp(t: &TableRef) -> bool {
    t.schema.as_deref().is_some_and(is_temp_schema)
}

/// `pg_temp`, or a backend's own `pg_temp_N`.
fn is_temp_schema(s: &str) -> bool {
    s == "pg_temp"
        || s.strip_prefix("pg_temp_")
            .is_some_and(|n| n.bytes().all(|c| c.is_ascii_digit()))
}

/// A CTE named like a relation the text also reads as a table: the walk
/// scopes CTE names, but such texts are where tools (pg_query's own table
/// list among them) go wrong, so they are not worth the risk.
fn cte_shadows_table(t: &Tree) -> bool {
    t.reads.iter().any(|r| t.cte_names.contains(&r.name))
}

#[cfg(test)]
mod tests;
