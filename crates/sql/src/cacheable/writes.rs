//! What running one statement invalidates: tables it names as changed, or
//! everything.
//!
//! Anything not known to be harmless flushes everything: a statement kind
//! PostgreSQL adds tomorrow must not leave stale results behind.

use pg_query::protobuf::{self, ObjectType};
use pg_query::NodeEnum;

use super::TableRef;
use crate::classify::explain_runs;
use crate::walk::{push_unique, table_ref, Tree};

/// Adds the tables `stmt` changes to `writes`; returns true when it may
/// change results in ways table names do not capture (flush everything).
/// `tree` is the walk of `stmt`'s queries (DML targets, SELECT INTO).
pub(super) fn statement(stmt: &NodeEnum, tree: &Tree, writes: &mut Vec<TableRef>) -> bool {
    use NodeEnum as N;
    let mut out = Writes {
        writes,
        flush: false,
    };
    match stmt {
        N::SelectStmt(_)
        | N::InsertStmt(_)
        | N::UpdateStmt(_)
        | N::DeleteStmt(_)
        | N::MergeStmt(_)
        | N::DeclareCursorStmt(_) => out.walked(tree),
        // EXPLAIN runs its statement only with ANALYZE.
        N::ExplainStmt(e) => {
            return explain_runs(e).is_some_and(|inner| statement(inner, tree, out.writes))
        }
        N::CopyStmt(c) => {
            if c.is_from {
                out.table(c.relation.as_ref());
            }
            out.walked(tree);
        }
        N::CreateTableAsStmt(c) => create_table_as(c, tree, &mut out),
        N::TruncateStmt(t) => out.range_vars(&t.relations),
        N::CreateStmt(c) => out.table(c.relation.as_ref()),
        N::CreateForeignTableStmt(c) => {
            out.table(c.base_stmt.as_ref().and_then(|s| s.relation.as_ref()))
        }
        N::CreateSeqStmt(s) => out.table(s.sequence.as_ref()),
        N::AlterSeqStmt(s) => out.table(s.sequence.as_ref()),
        N::IndexStmt(i) => out.table(i.relation.as_ref()),
        N::CreateTrigStmt(t) => out.table(t.relation.as_ref()),
        N::CreatePolicyStmt(p) => out.table(p.table.as_ref()),
        N::AlterPolicyStmt(p) => out.table(p.table.as_ref()),
        N::RuleStmt(r) => out.table(r.relation.as_ref()),
        N::ClusterStmt(c) => match &c.relation {
            Some(r) => out.table(Some(r)),
            None => out.flush = true,
        },
        N::AlterTableStmt(a) => alter_table(a, &mut out),
        N::DropStmt(d) => drop(d, &mut out),
        N::RenameStmt(r) => rename(r, &mut out),
        N::AlterObjectSchemaStmt(a) => set_schema(a, &mut out),
        // Catalog changes that leave every query's rows as they were.
        N::ReindexStmt(_) | N::CommentStmt(_) | N::CreateStatsStmt(_) | N::AlterStatsStmt(_) => {}
        s if changes_nothing(s) => {}
        // Roles, grants, functions, views, types, schemas, databases,
        // extensions, DO, CALL, EXECUTE of an unknown statement…
        _ => out.flush = true,
    }
    out.flush
}

/// False only for statements known to leave catalog definitions alone.
pub(super) fn changes_catalog(stmt: &NodeEnum) -> bool {
    use NodeEnum as N;
    match stmt {
        N::SelectStmt(s) => s.into_clause.is_some(),
        N::ExplainStmt(e) => explain_runs(e).is_some_and(changes_catalog),
        // Row changes, and running a prepared statement (its PREPARE was
        // judged when it was sent).
        N::InsertStmt(_)
        | N::UpdateStmt(_)
        | N::DeleteStmt(_)
        | N::MergeStmt(_)
        | N::CopyStmt(_)
        | N::TruncateStmt(_)
        | N::DeclareCursorStmt(_)
        | N::ExecuteStmt(_) => false,
        s => !changes_nothing(s),
    }
}

/// Statements that change neither rows nor definitions: transaction
/// control, session state, cursors, notifications, locks and maintenance.
fn changes_nothing(stmt: &NodeEnum) -> bool {
    use NodeEnum as N;
    matches!(
        stmt,
        N::TransactionStmt(_)
            | N::VariableSetStmt(_)
            | N::VariableShowStmt(_)
            | N::DiscardStmt(_)
            | N::PrepareStmt(_)
            | N::DeallocateStmt(_)
            | N::ListenStmt(_)
            | N::UnlistenStmt(_)
            | N::NotifyStmt(_)
            | N::FetchStmt(_)
            | N::ClosePortalStmt(_)
            | N::ConstraintsSetStmt(_)
            | N::LockStmt(_)
            | N::VacuumStmt(_)
            | N::CheckPointStmt(_)
    )
}

/// The tables one statement changes, or `flush`.
struct Writes<'w> {
    writes: &'w mut Vec<TableRef>,
    flush: bool,
}

impl Writes<'_> {
    fn table(&mut self, r: Option<&protobuf::RangeVar>) {
        match r {
            Some(r) => push_unique(self.writes, table_ref(r)),
            None => self.flush = true,
        }
    }

    fn range_vars(&mut self, nodes: &[protobuf::Node]) {
        for n in nodes {
            match &n.node {
                Some(NodeEnum::RangeVar(r)) => self.table(Some(r)),
                _ => self.flush = true,
            }
        }
    }

    /// A `schema.name` list (`DROP TABLE s.t`); anything else flushes.
    fn names(&mut self, names: &[protobuf::Node]) {
        let mut parts = names.iter().rev().map(|n| match &n.node {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        });
        match (parts.next().flatten(), parts.next()) {
            (Some(name), None) => push_unique(self.writes, TableRef { schema: None, name }),
            (Some(name), Some(Some(schema))) => push_unique(
                self.writes,
                TableRef {
                    schema: Some(schema),
                    name,
                },
            ),
            _ => self.flush = true,
        }
    }

    /// The targets the tree walk found.
    fn walked(&mut self, tree: &Tree) {
        for w in &tree.writes {
            push_unique(self.writes, w.clone());
        }
    }
}

fn create_table_as(c: &protobuf::CreateTableAsStmt, tree: &Tree, out: &mut Writes) {
    if ObjectType::try_from(c.objtype) == Ok(ObjectType::ObjectMatview) {
        out.flush = true;
        return;
    }
    out.table(c.into.as_ref().and_then(|i| i.rel.as_ref()));
    out.walked(tree);
}

/// Relations whose rows DDL on them changes; views, types, indexes and
/// the rest flush.
fn is_table_like(t: i32) -> bool {
    matches!(
        ObjectType::try_from(t),
        Ok(ObjectType::ObjectTable | ObjectType::ObjectForeignTable | ObjectType::ObjectSequence)
    )
}

/// ALTER TABLE t …, and the tables it attaches, detaches, inherits from.
fn alter_table(a: &protobuf::AlterTableStmt, out: &mut Writes) {
    if !is_table_like(a.objtype) {
        out.flush = true;
        return;
    }
    out.table(a.relation.as_ref());
    for cmd in &a.cmds {
        let Some(NodeEnum::AlterTableCmd(cmd)) = &cmd.node else {
            out.flush = true;
            continue;
        };
        match cmd.def.as_deref().and_then(|d| d.node.as_ref()) {
            Some(NodeEnum::RangeVar(r)) => out.table(Some(r)),
            Some(NodeEnum::PartitionCmd(p)) => out.table(p.name.as_ref()),
            _ => {}
        }
    }
}

/// DROP TABLE/SEQUENCE/FOREIGN TABLE names the tables; DROP TRIGGER/RULE/
/// POLICY … ON t names t before the object. DROP INDEX does not name its
/// table, so it flushes like every other DROP.
fn drop(d: &protobuf::DropStmt, out: &mut Writes) {
    let on_table = matches!(
        ObjectType::try_from(d.remove_type),
        Ok(ObjectType::ObjectTrigger | ObjectType::ObjectRule | ObjectType::ObjectPolicy)
    );
    if !is_table_like(d.remove_type) && !on_table {
        out.flush = true;
        return;
    }
    for object in &d.objects {
        match &object.node {
            Some(NodeEnum::List(l)) if on_table => match l.items.split_last() {
                Some((_, table)) => out.names(table),
                None => out.flush = true,
            },
            Some(NodeEnum::List(l)) => out.names(&l.items),
            _ => out.flush = true,
        }
    }
}

/// Renaming a table changes what both names mean; renaming a column,
/// constraint, trigger, rule or policy of a table changes that table.
fn rename(r: &protobuf::RenameStmt, out: &mut Writes) {
    use ObjectType as O;
    let Some(rel) = r.relation.as_ref() else {
        out.flush = true;
        return;
    };
    match O::try_from(r.rename_type) {
        Ok(O::ObjectTable | O::ObjectSequence | O::ObjectForeignTable) => {
            out.table(Some(rel));
            let renamed = TableRef {
                schema: table_ref(rel).schema,
                name: r.newname.clone(),
            };
            push_unique(out.writes, renamed);
        }
        Ok(O::ObjectTrigger | O::ObjectRule | O::ObjectPolicy) => out.table(Some(rel)),
        Ok(O::ObjectColumn | O::ObjectTabconstraint) if is_table_like(r.relation_type) => {
            out.table(Some(rel))
        }
        _ => out.flush = true,
    }
}

/// ALTER TABLE t SET SCHEMA s: `t` and `s.t` change meaning.
fn set_schema(a: &protobuf::AlterObjectSchemaStmt, out: &mut Writes) {
    match &a.relation {
        Some(rel) if is_table_like(a.object_type) => {
            out.table(Some(rel));
            let moved = TableRef {
                schema: Some(a.newschema.clone()),
                name: rel.relname.clone(),
            };
            push_unique(out.writes, moved);
        }
        _ => out.flush = true,
    }
}
