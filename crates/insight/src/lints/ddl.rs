//! Lint rules on schema changes run against a live database (squawk's rules,
//! applied to DDL as it passes through the proxy).
//!
//! `ddl_without_concurrently`: index builds and constraint validation that
//! block writes for their whole duration although a non-blocking form
//! exists. `ddl_without_lock_timeout`: a statement that needs a heavy lock
//! (ACCESS EXCLUSIVE or SHARE) while no `lock_timeout` is set. Waiting for
//! that lock queues every later query on the table behind it, so a DDL
//! stuck behind one long transaction stops the application.
//!
//! The lock-timeout heuristic: the rule is satisfied when an earlier
//! statement of the same text is `SET [LOCAL] lock_timeout` to a non-zero
//! value, or when the caller says the session has set it
//! ([`super::LintContext`]). A `lock_timeout` set in the role's or
//! database's defaults is not visible and still yields the lint. Objects
//! created earlier in the same text are exempt from both rules (nobody else
//! can be using them yet).

use pg_query::protobuf::{self, AlterTableType, ConstrType, ObjectType, VariableSetKind};
use pg_query::NodeEnum;

use super::{const_int, const_str, relation_name, Lint, Severity};

pub const DDL_WITHOUT_CONCURRENTLY: &str = "ddl_without_concurrently";
pub const DDL_WITHOUT_LOCK_TIMEOUT: &str = "ddl_without_lock_timeout";

/// Lower-case names of the relations and indexes the text creates.
pub(super) fn created_relations(stmts: &[&NodeEnum]) -> Vec<String> {
    stmts
        .iter()
        .filter_map(|s| match s {
            NodeEnum::CreateStmt(c) => c.relation.as_ref().map(|r| r.relname.to_ascii_lowercase()),
            NodeEnum::CreateTableAsStmt(c) => c
                .into
                .as_ref()
                .and_then(|i| i.rel.as_ref())
                .map(|r| r.relname.to_ascii_lowercase()),
            NodeEnum::IndexStmt(i) if !i.idxname.is_empty() => Some(i.idxname.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// `SET [LOCAL] lock_timeout` to a non-zero value.
pub(super) fn sets_lock_timeout(stmt: &NodeEnum) -> bool {
    let NodeEnum::VariableSetStmt(v) = stmt else {
        return false;
    };
    if !v.name.eq_ignore_ascii_case("lock_timeout") || v.kind != VariableSetKind::VarSetValue as i32
    {
        return false;
    }
    let value = v.args.first().and_then(|a| a.node.as_ref());
    let zero = value.is_some_and(|n| {
        const_int(n) == Some(0)
            || const_str(n).is_some_and(|s| s.trim().trim_start_matches('0').is_empty())
    });
    value.is_some() && !zero
}

/// Runs both DDL rules over one top-level statement.
pub(super) fn lint_statement(
    stmt: &NodeEnum,
    created: &[String],
    lock_timeout: bool,
    out: &mut Vec<Lint>,
) {
    if let Some(lint) = without_concurrently(stmt, created) {
        out.push(lint);
    }
    if lock_timeout {
        return;
    }
    if let Some((table, what)) = heavy_lock(stmt, created) {
        out.push(Lint {
            rule: DDL_WITHOUT_LOCK_TIMEOUT,
            severity: Severity::Warning,
            message: format!(
                "{what} on {table} waits for a heavy lock with no lock_timeout: while it waits, \
                 every query on {table} queues behind it."
            ),
            fix: format!(
                "Run SET lock_timeout = '3s' first (same transaction or session) and retry the {what} on timeout."
            ),
        });
    }
}

fn is_created(created: &[String], r: &protobuf::RangeVar) -> bool {
    created.contains(&r.relname.to_ascii_lowercase())
}

fn without_concurrently(stmt: &NodeEnum, created: &[String]) -> Option<Lint> {
    let (message, fix) = match stmt {
        NodeEnum::IndexStmt(i) if !i.concurrent => {
            let rel = i.relation.as_ref().filter(|r| !is_created(created, r))?;
            let table = relation_name(rel);
            (
                format!("CREATE INDEX blocks every write to {table} until the build finishes."),
                format!(
                    "CREATE {}INDEX CONCURRENTLY {}ON {table} (…) outside a transaction block; \
                     if it fails, drop the INVALID index and retry.",
                    if i.unique { "UNIQUE " } else { "" },
                    if i.idxname.is_empty() { String::new() } else { format!("{} ", i.idxname) }
                ),
            )
        }
        NodeEnum::DropStmt(d) if d.remove_type == ObjectType::ObjectIndex as i32 && !d.concurrent => (
            "DROP INDEX takes an ACCESS EXCLUSIVE lock on the index's table: reads and writes wait.".to_owned(),
            "DROP INDEX CONCURRENTLY … outside a transaction block.".to_owned(),
        ),
        NodeEnum::ReindexStmt(r) if !has_option(&r.params, "concurrently") => {
            let name = r.relation.as_ref().map_or_else(|| r.name.clone(), relation_name);
            (
                format!("REINDEX blocks writes to {name} (and reads through the index) until it finishes."),
                format!("REINDEX (CONCURRENTLY) … {name} (PostgreSQL 12 and later)."),
            )
        }
        NodeEnum::AlterTableStmt(a) => {
            let rel = a.relation.as_ref().filter(|r| !is_created(created, r))?;
            return a.cmds.iter().find_map(|c| match c.node.as_ref()? {
                NodeEnum::AlterTableCmd(cmd) => add_constraint(cmd, &relation_name(rel)),
                _ => None,
            });
        }
        _ => return None,
    };
    Some(Lint {
        rule: DDL_WITHOUT_CONCURRENTLY,
        severity: Severity::Warning,
        message,
        fix,
    })
}

/// ADD CONSTRAINT that validates (or builds an index) under a heavy lock.
fn add_constraint(cmd: &protobuf::AlterTableCmd, table: &str) -> Option<Lint> {
    if cmd.subtype != AlterTableType::AtAddConstraint as i32 {
        return None;
    }
    let Some(NodeEnum::Constraint(c)) = cmd.def.as_ref().and_then(|d| d.node.as_ref()) else {
        return None;
    };
    let name = if c.conname.is_empty() {
        "the_constraint"
    } else {
        c.conname.as_str()
    };
    let (message, fix) = if (c.contype == ConstrType::ConstrForeign as i32
        || c.contype == ConstrType::ConstrCheck as i32)
        && !c.skip_validation
    {
        (
            format!("ADD CONSTRAINT validates every row of {table} while holding a lock that blocks writes."),
            format!(
                "Add it NOT VALID, then validate without blocking writes: \
                 ALTER TABLE {table} ADD CONSTRAINT {name} … NOT VALID; ALTER TABLE {table} VALIDATE CONSTRAINT {name};"
            ),
        )
    } else if (c.contype == ConstrType::ConstrUnique as i32
        || c.contype == ConstrType::ConstrPrimary as i32)
        && c.indexname.is_empty()
    {
        let kind = if c.contype == ConstrType::ConstrPrimary as i32 {
            "PRIMARY KEY"
        } else {
            "UNIQUE"
        };
        (
            format!("ADD CONSTRAINT {kind} builds its index while blocking reads and writes of {table}."),
            format!(
                "Build the index first: CREATE UNIQUE INDEX CONCURRENTLY {name}_idx ON {table} (…); \
                 then ALTER TABLE {table} ADD CONSTRAINT {name} {kind} USING INDEX {name}_idx;"
            ),
        )
    } else {
        return None;
    };
    Some(Lint {
        rule: DDL_WITHOUT_CONCURRENTLY,
        severity: Severity::Warning,
        message,
        fix,
    })
}

/// `(table, statement kind)` when the statement needs an ACCESS EXCLUSIVE
/// or SHARE lock on a table that existed before this text.
fn heavy_lock(stmt: &NodeEnum, created: &[String]) -> Option<(String, &'static str)> {
    let named = |r: Option<&protobuf::RangeVar>, what| {
        r.filter(|r| !is_created(created, r))
            .map(|r| (relation_name(r), what))
    };
    match stmt {
        NodeEnum::AlterTableStmt(a) => named(a.relation.as_ref(), "ALTER TABLE"),
        NodeEnum::IndexStmt(i) if !i.concurrent => named(i.relation.as_ref(), "CREATE INDEX"),
        NodeEnum::TruncateStmt(t) => t.relations.iter().find_map(|r| match r.node.as_ref()? {
            NodeEnum::RangeVar(r) => named(Some(r), "TRUNCATE"),
            _ => None,
        }),
        NodeEnum::ReindexStmt(r) if !has_option(&r.params, "concurrently") => {
            named(r.relation.as_ref(), "REINDEX").or(Some((r.name.clone(), "REINDEX")))
        }
        NodeEnum::ClusterStmt(c) => named(c.relation.as_ref(), "CLUSTER"),
        NodeEnum::VacuumStmt(v) if v.is_vacuumcmd && has_option(&v.options, "full") => {
            v.rels.iter().find_map(|r| match r.node.as_ref()? {
                NodeEnum::VacuumRelation(vr) => named(vr.relation.as_ref(), "VACUUM FULL"),
                _ => None,
            })
        }
        NodeEnum::RenameStmt(r) => named(r.relation.as_ref(), "RENAME"),
        NodeEnum::CreateTrigStmt(t) => named(t.relation.as_ref(), "CREATE TRIGGER"),
        NodeEnum::DropStmt(d) => drop_target(d, created),
        _ => None,
    }
}

/// DROP TABLE / MATERIALIZED VIEW / INDEX (not CONCURRENTLY) of an object
/// not created in this text.
fn drop_target(d: &protobuf::DropStmt, created: &[String]) -> Option<(String, &'static str)> {
    let what = if d.remove_type == ObjectType::ObjectTable as i32 {
        "DROP TABLE"
    } else if d.remove_type == ObjectType::ObjectMatview as i32 {
        "DROP MATERIALIZED VIEW"
    } else if d.remove_type == ObjectType::ObjectIndex as i32 && !d.concurrent {
        "DROP INDEX"
    } else {
        return None;
    };
    d.objects.iter().find_map(|o| {
        let NodeEnum::List(l) = o.node.as_ref()? else {
            return None;
        };
        let parts: Vec<&str> = l
            .items
            .iter()
            .filter_map(|i| match i.node.as_ref()? {
                NodeEnum::String(s) => Some(s.sval.as_str()),
                _ => None,
            })
            .collect();
        let last = parts.last()?.to_ascii_lowercase();
        (!created.contains(&last)).then(|| (parts.join("."), what))
    })
}

/// True when a DefElem list has `name` (e.g. `REINDEX (CONCURRENTLY)`).
fn has_option(options: &[protobuf::Node], name: &str) -> bool {
    options.iter().any(|o| matches!(o.node.as_ref(), Some(NodeEnum::DefElem(d)) if d.defname.eq_ignore_ascii_case(name)))
}
