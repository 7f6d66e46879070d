//! Lint rules on queries (SELECT, UPDATE, DELETE and the expressions in
//! them). Each rule is one function over one node kind; [`lint_statement`]
//! walks the statement with pg_query's node iterator and dispatches.

use pg_query::protobuf::{self, AExprKind, BoolExprType, SubLinkType};
use pg_query::{NodeEnum, NodeRef};

use super::{
    column_name, const_int, const_str, function_name, inner, relation_name, Lint, Severity,
};

pub const SELECT_STAR: &str = "select_star";
pub const LARGE_IN_LIST: &str = "large_in_list";
pub const ORDER_WITHOUT_LIMIT: &str = "order_without_limit";
pub const LEADING_WILDCARD_LIKE: &str = "leading_wildcard_like";
pub const ORDER_BY_RANDOM: &str = "order_by_random";
pub const LARGE_OFFSET: &str = "large_offset";
pub const NOT_IN_SUBQUERY: &str = "not_in_subquery";
pub const UPDATE_WITHOUT_WHERE: &str = "update_without_where";
pub const DELETE_WITHOUT_WHERE: &str = "delete_without_where";
pub const FUNCTION_ON_COLUMN_IN_WHERE: &str = "function_on_column_in_where";

/// `IN` lists (and array literals) longer than this are flagged.
pub const MAX_IN_LIST: usize = 100;
/// Literal `OFFSET`s at least this large are flagged.
pub const MIN_LARGE_OFFSET: i64 = 1000;

/// Runs every query rule over one top-level statement.
pub(super) fn lint_statement(stmt: &NodeEnum, out: &mut Vec<Lint>) {
    if let NodeEnum::SelectStmt(s) = stmt {
        order_without_limit(s, out);
    }
    let nodes = stmt.nodes();
    let exists_subselects: Vec<*const protobuf::SelectStmt> = nodes
        .iter()
        .filter_map(|(n, ..)| match n {
            NodeRef::SubLink(l) if l.sub_link_type == SubLinkType::ExistsSublink as i32 => {
                match inner(&l.subselect) {
                    Some(NodeEnum::SelectStmt(s)) => Some(&**s as *const protobuf::SelectStmt),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    let scope = Scope::of(&nodes);
    for (node, _depth, _context, in_where) in &nodes {
        match node {
            NodeRef::SelectStmt(s) => {
                if !exists_subselects.contains(&(*s as *const protobuf::SelectStmt)) {
                    select_star(s, out);
                }
                large_offset(s, out);
            }
            NodeRef::AExpr(e) => {
                large_in_list(e, out);
                leading_wildcard_like(e, &scope, out);
                if *in_where {
                    function_on_column(e, &scope, out);
                }
            }
            NodeRef::SortBy(s) => order_by_random(s, out),
            NodeRef::BoolExpr(b) => not_in_subquery(b, out),
            NodeRef::UpdateStmt(u) if u.where_clause.is_none() => out.push(update_without_where(u)),
            NodeRef::DeleteStmt(d) if d.where_clause.is_none() => out.push(delete_without_where(d)),
            _ => {}
        }
    }
}

/// The relations a statement reads, to name the table of a column in a fix.
struct Scope {
    /// (alias or name as referenced, relation as written).
    relations: Vec<(String, String)>,
}

impl Scope {
    fn of(nodes: &[(NodeRef<'_>, i32, pg_query::Context, bool)]) -> Scope {
        let relations = nodes
            .iter()
            .filter_map(|(n, ..)| match n {
                NodeRef::RangeVar(r) => {
                    let name = r
                        .alias
                        .as_ref()
                        .map_or_else(|| r.relname.clone(), |a| a.aliasname.clone());
                    Some((name, relation_name(r)))
                }
                _ => None,
            })
            .collect();
        Scope { relations }
    }

    /// The relation of `col` (`t.col` by its qualifier, a bare column when
    /// the statement reads one relation), else a placeholder.
    fn table_of(&self, col: &str) -> String {
        let found = match col.rsplit_once('.') {
            Some((qualifier, _)) => self.relations.iter().find(|(name, _)| name == qualifier),
            None => {
                let first = self.relations.first();
                first.filter(|f| self.relations.iter().all(|r| r.1 == f.1))
            }
        };
        found.map_or_else(|| "<table>".to_owned(), |(_, rel)| rel.clone())
    }
}

/// Tables named directly in a SELECT's FROM list, for messages.
fn from_tables(s: &protobuf::SelectStmt) -> String {
    let names: Vec<String> = s
        .from_clause
        .iter()
        .filter_map(|n| match n.node.as_ref()? {
            NodeEnum::RangeVar(r) => Some(relation_name(r)),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        "the table".to_owned()
    } else {
        names.join(", ")
    }
}

fn select_star(s: &protobuf::SelectStmt, out: &mut Vec<Lint>) {
    let star = s.target_list.iter().any(|t| match t.node.as_ref() {
        Some(NodeEnum::ResTarget(r)) => match inner(&r.val) {
            Some(NodeEnum::ColumnRef(c)) => c
                .fields
                .iter()
                .any(|f| matches!(f.node, Some(NodeEnum::AStar(_)))),
            _ => false,
        },
        _ => false,
    });
    if star {
        let tables = from_tables(s);
        out.push(Lint {
            rule: SELECT_STAR,
            severity: Severity::Info,
            message: format!("SELECT * reads every column of {tables}, including ones the caller ignores."),
            fix: format!(
                "Name the columns the application uses (SELECT id, name FROM {tables} …): less I/O and network, \
                 index-only scans become possible, and added columns do not change the result."
            ),
        });
    }
}

/// Only the statement's own SELECT: an ORDER BY in a subquery is a different matter.
fn order_without_limit(s: &protobuf::SelectStmt, out: &mut Vec<Lint>) {
    if s.sort_clause.is_empty() || s.limit_count.is_some() || s.from_clause.is_empty() {
        return;
    }
    let tables = from_tables(s);
    out.push(Lint {
        rule: ORDER_WITHOUT_LIMIT,
        severity: Severity::Info,
        message: format!("ORDER BY without LIMIT sorts every matching row of {tables} and returns them all."),
        fix: "Add a LIMIT and page with a keyset (WHERE (sort_col, id) > ($1, $2) ORDER BY sort_col, id LIMIT 50), \
              or drop the ORDER BY if the caller does not need the order."
            .to_owned(),
    });
}

fn large_offset(s: &protobuf::SelectStmt, out: &mut Vec<Lint>) {
    let Some(offset) = inner(&s.limit_offset).and_then(const_int) else {
        return;
    };
    if offset >= MIN_LARGE_OFFSET {
        out.push(Lint {
            rule: LARGE_OFFSET,
            severity: Severity::Warning,
            message: format!(
                "OFFSET {offset} makes the server produce and discard {offset} rows on every call."
            ),
            fix: "Use keyset pagination: remember the last row's sort key and ask for \
                  WHERE (sort_col, id) > ($1, $2) ORDER BY sort_col, id LIMIT n."
                .to_owned(),
        });
    }
}

fn large_in_list(e: &protobuf::AExpr, out: &mut Vec<Lint>) {
    let items = match inner(&e.rexpr) {
        Some(NodeEnum::List(l)) if e.kind == AExprKind::AexprIn as i32 => l.items.len(),
        Some(NodeEnum::AArrayExpr(a)) if e.kind == AExprKind::AexprOpAny as i32 => a.elements.len(),
        _ => return,
    };
    if items <= MAX_IN_LIST {
        return;
    }
    let col = match inner(&e.lexpr) {
        Some(NodeEnum::ColumnRef(c)) => column_name(c),
        _ => "col".to_owned(),
    };
    out.push(Lint {
        rule: LARGE_IN_LIST,
        severity: Severity::Warning,
        message: format!(
            "A list of {items} values: every length is a new statement to parse and plan, and the text grows with it."
        ),
        fix: format!(
            "Send one array parameter: WHERE {col} = ANY($1) with the values as an array; \
             for thousands of values join a VALUES list or unnest($1) instead."
        ),
    });
}

fn leading_wildcard_like(e: &protobuf::AExpr, scope: &Scope, out: &mut Vec<Lint>) {
    if e.kind != AExprKind::AexprLike as i32 && e.kind != AExprKind::AexprIlike as i32 {
        return;
    }
    let Some(pattern) = inner(&e.rexpr).and_then(leftmost_constant) else {
        return;
    };
    if !(pattern.starts_with('%') || pattern.starts_with('_')) {
        return;
    }
    let col = match inner(&e.lexpr) {
        Some(NodeEnum::ColumnRef(c)) => column_name(c),
        _ => "col".to_owned(),
    };
    let table = scope.table_of(&col);
    let bare = col.rsplit_once('.').map_or(col.as_str(), |(_, c)| c);
    out.push(Lint {
        rule: LEADING_WILDCARD_LIKE,
        severity: Severity::Warning,
        message: format!("The pattern '{pattern}' starts with a wildcard: no btree index can serve it, every row is scanned."),
        fix: format!(
            "Index trigrams: CREATE EXTENSION IF NOT EXISTS pg_trgm; \
             CREATE INDEX CONCURRENTLY ON {table} USING gin ({bare} gin_trgm_ops); or use full-text search."
        ),
    });
}

/// The constant a pattern starts with (`'%' || $1` starts with `%`).
fn leftmost_constant(n: &NodeEnum) -> Option<&str> {
    match n {
        NodeEnum::AExpr(e) => inner(&e.lexpr).and_then(leftmost_constant),
        other => const_str(other),
    }
}

fn order_by_random(s: &protobuf::SortBy, out: &mut Vec<Lint>) {
    let Some(NodeEnum::FuncCall(f)) = inner(&s.node) else {
        return;
    };
    if function_name(f) == "random" {
        out.push(Lint {
            rule: ORDER_BY_RANDOM,
            severity: Severity::Warning,
            message: "ORDER BY random() reads and sorts every row to pick a few.".to_owned(),
            fix: "Sample instead: FROM t TABLESAMPLE SYSTEM (1) LIMIT n (or tsm_system_rows), \
                  or pick random ids between min(id) and max(id) and fetch those."
                .to_owned(),
        });
    }
}

fn not_in_subquery(b: &protobuf::BoolExpr, out: &mut Vec<Lint>) {
    if b.boolop != BoolExprType::NotExpr as i32 {
        return;
    }
    let sublink = b.args.first().and_then(|a| match a.node.as_ref()? {
        NodeEnum::SubLink(l) if l.sub_link_type == SubLinkType::AnySublink as i32 => Some(l),
        _ => None,
    });
    if sublink.is_some() {
        out.push(Lint {
            rule: NOT_IN_SUBQUERY,
            severity: Severity::Warning,
            message: "NOT IN (subquery) returns no row at all when the subquery yields a NULL, \
                      and the planner cannot turn it into an anti-join."
                .to_owned(),
            fix: "Rewrite as WHERE NOT EXISTS (SELECT 1 FROM inner_table i WHERE i.col = outer_table.col).".to_owned(),
        });
    }
}

fn update_without_where(u: &protobuf::UpdateStmt) -> Lint {
    let table = u
        .relation
        .as_ref()
        .map_or_else(|| "the table".to_owned(), relation_name);
    Lint {
        rule: UPDATE_WITHOUT_WHERE,
        severity: Severity::Critical,
        message: format!("UPDATE of {table} without WHERE changes every row in one transaction."),
        fix: format!(
            "Add the intended WHERE clause; to change every row on purpose, do it in batches \
             (UPDATE {table} SET … WHERE id BETWEEN $1 AND $2) to bound lock time and WAL bursts."
        ),
    }
}

fn delete_without_where(d: &protobuf::DeleteStmt) -> Lint {
    let table = d
        .relation
        .as_ref()
        .map_or_else(|| "the table".to_owned(), relation_name);
    Lint {
        rule: DELETE_WITHOUT_WHERE,
        severity: Severity::Critical,
        message: format!("DELETE from {table} without WHERE removes every row."),
        fix: format!("Add the intended WHERE clause; to empty the table use TRUNCATE {table}, or delete in batches."),
    }
}

/// `f(col) = …`, `col::type = …`: the column's plain index cannot be used.
fn function_on_column(e: &protobuf::AExpr, scope: &Scope, out: &mut Vec<Lint>) {
    const COMPARISONS: [AExprKind; 6] = [
        AExprKind::AexprOp,
        AExprKind::AexprIn,
        AExprKind::AexprLike,
        AExprKind::AexprIlike,
        AExprKind::AexprOpAny,
        AExprKind::AexprBetween,
    ];
    if !COMPARISONS.iter().any(|k| *k as i32 == e.kind) {
        return;
    }
    let Some(expr) = [&e.lexpr, &e.rexpr]
        .into_iter()
        .find_map(|side| wrapped_column(inner(side)?))
    else {
        return;
    };
    out.push(Lint {
        rule: FUNCTION_ON_COLUMN_IN_WHERE,
        severity: Severity::Warning,
        message: format!("{} in WHERE hides the column from its index: every row is computed and compared.", expr.text),
        fix: format!(
            "Create an expression index: CREATE INDEX CONCURRENTLY ON {} (({})); or compare the bare column \
             (e.g. a range on {} instead of {}).",
            scope.table_of(&expr.qualified),
            expr.text,
            expr.column,
            expr.text
        ),
    });
}

/// A column wrapped in a function call or a cast.
struct Wrapped {
    /// `lower(email)`, `created_at::date`.
    text: String,
    /// The column without its qualifier.
    column: String,
    /// The column as written (`u.email`).
    qualified: String,
}

fn wrapped_column(n: &NodeEnum) -> Option<Wrapped> {
    let (column, text) = match n {
        NodeEnum::FuncCall(f) => {
            let columns: Vec<String> = f
                .args
                .iter()
                .filter_map(|a| match a.node.as_ref()? {
                    NodeEnum::ColumnRef(c) => Some(column_name(c)),
                    _ => None,
                })
                .collect();
            let first = columns.first()?.clone();
            let args: Vec<String> = f.args.iter().map(|a| arg_text(a.node.as_ref())).collect();
            (first, format!("{}({})", function_name(f), args.join(", ")))
        }
        NodeEnum::TypeCast(t) => {
            let Some(NodeEnum::ColumnRef(c)) = inner(&t.arg) else {
                return None;
            };
            let ty = t
                .type_name
                .as_ref()
                .and_then(|tn| tn.names.last())
                .and_then(|n| match n.node.as_ref()? {
                    NodeEnum::String(s) => Some(s.sval.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let col = column_name(c);
            (col.clone(), format!("{col}::{ty}"))
        }
        _ => return None,
    };
    let bare = column
        .rsplit_once('.')
        .map_or(column.as_str(), |(_, c)| c)
        .to_owned();
    Some(Wrapped {
        text,
        column: bare,
        qualified: column,
    })
}

/// Short text of a function argument for messages.
fn arg_text(n: Option<&NodeEnum>) -> String {
    match n {
        Some(NodeEnum::ColumnRef(c)) => column_name(c),
        Some(NodeEnum::ParamRef(p)) => format!("${}", p.number),
        Some(other) => const_str(other)
            .map(|s| format!("'{s}'"))
            .or_else(|| const_int(other).map(|i| i.to_string()))
            .unwrap_or_else(|| "…".to_owned()),
        None => "…".to_owned(),
    }
}
