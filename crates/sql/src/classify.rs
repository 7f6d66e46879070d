//! Read/write classification of a parsed query string, for routing.
//!
//! PostgreSQL semantics decide, not keywords: a SELECT is a read only when
//! it takes no row locks, writes nothing (`SELECT INTO`, data-modifying
//! CTEs) and calls only functions that are known to be read-only; the
//! proxy's router settles the function question with `pg_proc` volatility at
//! run time, so this module only lists the functions it saw. The same
//! parse yields the result-cache facts ([`crate::cacheable`]).

use pg_query::protobuf::{self, TransactionStmtKind};
use pg_query::{NodeEnum, NodeRef};

use crate::cacheable::{self, CacheFacts};
use crate::walk::{self, function_name};

/// Where a query may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// Reads only: a replica may serve it (subject to function volatility).
    Replica,
    /// Writes, locks, side effects, or cannot be understood.
    #[default]
    Primary,
    /// Session or transaction bookkeeping (SET, COMMIT, DEALLOCATE…): runs
    /// wherever the session currently is.
    Anywhere,
}

/// Transaction control carried by the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxnControl {
    #[default]
    None,
    /// BEGIN / START TRANSACTION; `read_only` when `READ ONLY` was given.
    Begin { read_only: bool },
    /// COMMIT, ROLLBACK, END, PREPARE TRANSACTION….
    End,
}

/// What routing needs to know about one query string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Classification {
    pub target: Target,
    pub txn: TxnControl,
    /// Names (lower-case, unqualified) of functions called, for the
    /// volatility check.
    pub functions: Vec<String>,
    /// Tables referenced (as written, schema-qualified when it was).
    pub tables: Vec<String>,
    /// Why the query needs the primary, for metrics and debugging.
    pub reason: &'static str,
    /// What a result cache needs to know about this text.
    pub cache: CacheFacts,
}

/// Functions that change state wherever they appear.
pub const SIDE_EFFECT_FUNCTIONS: &[&str] = &[
    "nextval",
    "setval",
    "currval",
    "lastval",
    "set_config",
    "pg_notify",
    "txid_current",
    "pg_current_xact_id",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_switch_wal",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_create_restore_point",
    "pg_logical_emit_message",
    "lo_create",
    "lo_creat",
    "lo_import",
    "lo_unlink",
    "lo_from_bytea",
    "lo_put",
    "dblink_exec",
];

/// Classifies a parse result.
pub fn classify(parsed: &pg_query::ParseResult) -> Classification {
    let mut c = Classification {
        target: Target::Anywhere,
        ..Classification::default()
    };
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
            continue;
        };
        let (target, reason) = statement_target(node, &mut c.txn);
        merge(&mut c, target, reason);
    }
    for (node, _, _, _) in parsed.protobuf.nodes() {
        match node {
            NodeRef::FuncCall(f) => note_function(&mut c, f),
            // Row locks anywhere (a subquery, EXISTS), not only at the top.
            NodeRef::SelectStmt(s) if !s.locking_clause.is_empty() => {
                merge(&mut c, Target::Primary, "row locks (FOR UPDATE/SHARE)");
            }
            _ => {}
        }
    }
    c.tables = parsed.tables();
    let statements: Vec<(&NodeEnum, walk::Tree)> = parsed
        .protobuf
        .stmts
        .iter()
        .filter_map(|raw| raw.stmt.as_ref().and_then(|s| s.node.as_ref()))
        .map(|node| (node, walk::statement(node)))
        .collect();
    // The complete walk finds calls and locks `nodes()` skips (VALUES
    // lists, LIMIT, FILTER, array constructors…).
    for (_, tree) in &statements {
        tree.functions.iter().for_each(|f| note_name(&mut c, f));
        if tree.row_locks {
            merge(&mut c, Target::Primary, "row locks (FOR UPDATE/SHARE)");
        }
    }
    c.cache = cacheable::facts(&statements);
    c
}

/// Lists a called function; a side-effecting one needs the primary.
fn note_function(c: &mut Classification, f: &protobuf::FuncCall) {
    if let Some(name) = function_name(f) {
        note_name(c, &name);
    }
}

fn note_name(c: &mut Classification, name: &str) {
    if SIDE_EFFECT_FUNCTIONS.contains(&name)
        || name.starts_with("pg_advisory")
        || name.starts_with("pg_try_advisory")
    {
        merge(c, Target::Primary, "side-effecting function");
    }
    if !c.functions.iter().any(|f| f == name) {
        c.functions.push(name.to_owned());
    }
}

/// The stricter of two targets wins: Primary > Replica > Anywhere.
fn merge(c: &mut Classification, target: Target, reason: &'static str) {
    match (c.target, target) {
        (Target::Primary, _) => {}
        (_, Target::Primary) => {
            c.target = Target::Primary;
            c.reason = reason;
        }
        (_, Target::Replica) => c.target = Target::Replica,
        (_, Target::Anywhere) => {}
    }
}

fn statement_target(node: &NodeEnum, txn: &mut TxnControl) -> (Target, &'static str) {
    match node {
        NodeEnum::SelectStmt(s) => select_target(s),
        NodeEnum::VariableShowStmt(_) => (Target::Replica, ""),
        NodeEnum::ExplainStmt(e) => explain_target(e, txn),
        NodeEnum::TransactionStmt(t) => {
            *txn = transaction_control(t);
            match txn {
                TxnControl::Begin { read_only: true } => (Target::Replica, ""),
                TxnControl::Begin { read_only: false } => {
                    (Target::Primary, "read-write transaction")
                }
                _ => (Target::Anywhere, ""),
            }
        }
        NodeEnum::VariableSetStmt(_) | NodeEnum::DeallocateStmt(_) | NodeEnum::DiscardStmt(_) => {
            (Target::Anywhere, "")
        }
        NodeEnum::CopyStmt(c) if !c.is_from && !c.is_program => copy_to_target(c),
        NodeEnum::ListenStmt(_) | NodeEnum::UnlistenStmt(_) => (Target::Primary, "LISTEN"),
        _ => (Target::Primary, "writes or DDL"),
    }
}

fn select_target(s: &protobuf::SelectStmt) -> (Target, &'static str) {
    if !s.locking_clause.is_empty() {
        return (Target::Primary, "row locks (FOR UPDATE/SHARE)");
    }
    if s.into_clause.is_some() {
        return (Target::Primary, "SELECT INTO");
    }
    if let Some(with) = &s.with_clause {
        for cte in &with.ctes {
            if writing_cte(cte) {
                return (Target::Primary, "data-modifying CTE");
            }
        }
    }
    for arm in [s.larg.as_deref(), s.rarg.as_deref()].into_iter().flatten() {
        let (t, r) = select_target(arm);
        if t == Target::Primary {
            return (t, r);
        }
    }
    (Target::Replica, "")
}

fn writing_cte(cte: &pg_query::Node) -> bool {
    let Some(NodeEnum::CommonTableExpr(c)) = cte.node.as_ref() else {
        return false;
    };
    match c.ctequery.as_ref().and_then(|q| q.node.as_ref()) {
        Some(NodeEnum::SelectStmt(s)) => select_target(s).0 == Target::Primary,
        _ => true,
    }
}

/// The statement an EXPLAIN runs: only EXPLAIN ANALYZE runs it (an
/// `analyze` option of any value counts: the value is a literal, outside
/// the shape key). Plain EXPLAIN only plans.
pub(crate) fn explain_runs(e: &protobuf::ExplainStmt) -> Option<&NodeEnum> {
    let analyzes = e
        .options
        .iter()
        .any(|o| matches!(o.node.as_ref(), Some(NodeEnum::DefElem(d)) if d.defname == "analyze"));
    e.query
        .as_ref()
        .and_then(|q| q.node.as_ref())
        .filter(|_| analyzes)
}

fn explain_target(e: &protobuf::ExplainStmt, txn: &mut TxnControl) -> (Target, &'static str) {
    match explain_runs(e) {
        Some(inner) => statement_target(inner, txn),
        None => (Target::Replica, ""),
    }
}

fn copy_to_target(c: &protobuf::CopyStmt) -> (Target, &'static str) {
    match c.query.as_ref().and_then(|q| q.node.as_ref()) {
        Some(NodeEnum::SelectStmt(s)) => select_target(s),
        Some(_) => (Target::Primary, "COPY of a data-modifying query"),
        None => (Target::Replica, ""),
    }
}

fn transaction_control(t: &protobuf::TransactionStmt) -> TxnControl {
    match TransactionStmtKind::try_from(t.kind) {
        Ok(TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtStart) => {
            // A standby refuses SERIALIZABLE ("cannot use serializable mode
            // in a hot standby"): such a transaction is the primary's.
            TxnControl::Begin {
                read_only: t.options.iter().any(is_read_only_option)
                    && !t.options.iter().any(is_serializable_option),
            }
        }
        Ok(
            TransactionStmtKind::TransStmtSavepoint
            | TransactionStmtKind::TransStmtRelease
            | TransactionStmtKind::TransStmtRollbackTo,
        ) => TxnControl::None,
        _ => TxnControl::End,
    }
}

/// `transaction_read_only = true` in BEGIN's option list.
fn is_read_only_option(o: &pg_query::Node) -> bool {
    let Some(NodeEnum::DefElem(d)) = o.node.as_ref() else {
        return false;
    };
    if d.defname != "transaction_read_only" {
        return false;
    }
    match d.arg.as_ref().and_then(|a| a.node.as_ref()) {
        Some(NodeEnum::AConst(c)) => {
            matches!(&c.val, Some(protobuf::a_const::Val::Ival(i)) if i.ival != 0)
        }
        _ => false,
    }
}

/// `transaction_isolation = 'serializable'` in BEGIN's option list.
fn is_serializable_option(o: &pg_query::Node) -> bool {
    let Some(NodeEnum::DefElem(d)) = o.node.as_ref() else {
        return false;
    };
    if d.defname != "transaction_isolation" {
        return false;
    }
    match d.arg.as_ref().and_then(|a| a.node.as_ref()) {
        Some(NodeEnum::AConst(c)) => matches!(
            &c.val,
            Some(protobuf::a_const::Val::Sval(s)) if s.sval.eq_ignore_ascii_case("serializable")
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(sql: &str) -> Classification {
        classify(&pg_query::parse(sql, 0).unwrap())
    }

    #[test]
    fn reads() {
        for sql in [
            "SELECT * FROM t WHERE id = 1",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "SHOW search_path",
            "SELECT 1 UNION SELECT 2",
            "EXPLAIN SELECT * FROM t",
            "COPY t TO STDOUT",
            "BEGIN READ ONLY",
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        ] {
            assert_eq!(c(sql).target, Target::Replica, "{sql}");
        }
    }

    #[test]
    fn writes() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            "CREATE TABLE t2 (a int)",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t FOR NO KEY UPDATE",
            "SELECT * FROM t FOR SHARE",
            "SELECT * FROM (SELECT * FROM t FOR UPDATE) s",
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM t FOR KEY SHARE)",
            "SELECT (SELECT a FROM t LIMIT 1 FOR NO KEY UPDATE)",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "SELECT * INTO t3 FROM t",
            "SELECT nextval('s')",
            "SELECT pg_advisory_lock(1)",
            "SELECT setval('s', 1)",
            "BEGIN",
            "BEGIN READ WRITE",
            "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY",
            "START TRANSACTION READ ONLY ISOLATION LEVEL SERIALIZABLE DEFERRABLE",
            "EXPLAIN ANALYZE DELETE FROM t",
            "COPY t FROM STDIN",
            "LISTEN c",
            "SELECT 1; INSERT INTO t VALUES (1)",
        ] {
            assert_eq!(c(sql).target, Target::Primary, "{sql}");
        }
    }

    #[test]
    fn bookkeeping_runs_anywhere() {
        assert_eq!(c("SET search_path TO a").target, Target::Anywhere);
        assert_eq!(c("COMMIT").target, Target::Anywhere);
        assert_eq!(c("COMMIT").txn, TxnControl::End);
        assert_eq!(
            c("BEGIN READ ONLY").txn,
            TxnControl::Begin { read_only: true }
        );
    }

    #[test]
    fn functions_and_tables_are_listed() {
        let k = c("SELECT my_func(a), lower(b) FROM public.users u JOIN orders o ON o.uid = u.id");
        assert!(
            k.functions.contains(&"my_func".to_owned())
                && k.functions.contains(&"lower".to_owned())
        );
        assert!(
            k.tables.contains(&"public.users".to_owned())
                && k.tables.contains(&"orders".to_owned())
        );
    }

    #[test]
    fn side_effects_hidden_from_nodes_walk_still_need_the_primary() {
        assert_eq!(
            c("SELECT * FROM (VALUES (nextval('s'))) v").target,
            Target::Primary
        );
        assert_eq!(
            c("SELECT * FROM (VALUES ((SELECT 1 FROM t FOR UPDATE))) v").target,
            Target::Primary
        );
    }
}
