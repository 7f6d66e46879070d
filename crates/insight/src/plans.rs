//! Plan insights: what an `EXPLAIN (FORMAT JSON)` of a costly query says
//! about why it is slow, as findings with a concrete fix (PEV2's node
//! warnings, plus the index and `work_mem` advice they lead to).
//!
//! Pure functions over the JSON PostgreSQL prints; the proxy's `explain`
//! task runs the EXPLAIN on a side connection and files the result through
//! [`crate::Insight::add_plan`], which keeps the plan ([`store`]) for the
//! fingerprint's detail.
//!
//! Rules (stable ids; at most one insight per rule and plan, the worst
//! node's) and their thresholds:
//!
//! | rule | fires when | needs ANALYZE |
//! |---|---|---|
//! | `seq_scan` | a Seq Scan with a Filter on a table of ≥ [`LARGE_TABLE_ROWS`] rows (or ≥ [`LARGE_TABLE_PAGES`] pages) returns ≤ [`SELECTIVE_FRACTION`] of them | no |
//! | `rows_removed_by_filter` | a Filter removes > 50 % (info) / > 90 % (warning) of the rows a node read, at least [`MIN_ROWS_REMOVED`] in all (PEV2) | yes |
//! | `misestimate` | max(actual/estimated, estimated/actual) rows > 10× / 100× / 1000× (PEV2), on a node handling ≥ [`MIN_MISESTIMATE_ROWS`] rows | yes |
//! | `sort_spill` | a Sort used an external (on-disk) method | yes |
//! | `hash_spill` | a Hash needed more than one batch, or a HashAggregate spilled (PEV2) | yes |
//! | `nested_loop_large_outer` | a Nested Loop's outer side yields ≥ [`LARGE_OUTER_ROWS`] rows | no |
//! | `heap_fetches` | an Index Only Scan fetched heap tuples (PEV2) | yes |
//!
//! Without ANALYZE, `seq_scan` needs the table's size: from [`TableStats`]
//! (`pg_class.reltuples`/`relpages`, which the proxy looks up), else the
//! scan's cost stands in (see `scans.rs`).

mod filter;
mod operators;
mod rules;
mod scans;
pub mod store;

use std::collections::HashMap;

use pg_query::NodeEnum;
use serde::Serialize;
use serde_json::Map;
/// The JSON value plans are parsed into (`serde_json`'s).
pub use serde_json::Value;

use crate::lints::Severity;

pub use store::{PlanSource, PlanStore, PlanView};

/// A table of at least this many rows is large.
pub const LARGE_TABLE_ROWS: f64 = 100_000.0;
/// A table of at least this many 8 kB pages (80 MB) is large.
pub const LARGE_TABLE_PAGES: f64 = 10_000.0;
/// A filter is selective when it keeps at most this share of the table's
/// rows: below it an index usually beats reading the whole table.
pub const SELECTIVE_FRACTION: f64 = 0.05;
/// `rows_removed_by_filter` ignores nodes that removed fewer rows in all.
pub const MIN_ROWS_REMOVED: f64 = 1_000.0;
/// `misestimate` ignores nodes whose larger side (estimated or actual,
/// times loops) is below this: a 1-vs-20-row error costs nothing.
pub const MIN_MISESTIMATE_ROWS: f64 = 1_000.0;
/// `nested_loop_large_outer` fires from this many outer rows.
pub const LARGE_OUTER_ROWS: f64 = 10_000.0;

/// Every rule id, for documentation and the API.
pub const RULES: &[&str] = &[
    "seq_scan",
    "rows_removed_by_filter",
    "misestimate",
    "sort_spill",
    "hash_spill",
    "nested_loop_large_outer",
    "heap_fetches",
];

/// Whether only an `EXPLAIN ANALYZE` can show `rule` (a plain EXPLAIN's
/// silence about it proves nothing).
pub fn needs_analyze(rule: &str) -> bool {
    !matches!(rule, "seq_scan" | "nested_loop_large_outer")
}

/// One problem found in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanInsight {
    /// Stable id, one of [`RULES`].
    pub rule: &'static str,
    pub severity: Severity,
    /// What the plan does, naming the node, table and numbers.
    pub message: String,
    /// The concrete command or setting.
    pub fix: String,
}

/// Size of one table, from `pg_class`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TableSize {
    /// `reltuples`; negative when the table was never analyzed.
    pub rows: f64,
    /// `relpages`.
    pub pages: f64,
}

/// Table sizes by the name EXPLAIN prints as "Relation Name".
pub type TableStats = HashMap<String, TableSize>;

/// Analyses an EXPLAIN result: the whole `[{"Plan": …}]` output, one
/// `{"Plan": …}` object, or a plan node. `analyzed` says whether it came
/// from `EXPLAIN ANALYZE` (actual rows, spills, heap fetches). Anything
/// that is not a plan yields nothing.
pub fn analyze_plan(plan_json: &Value, analyzed: bool) -> Vec<PlanInsight> {
    analyze_plan_with(plan_json, analyzed, &TableStats::new())
}

/// [`analyze_plan`] with table sizes, so `seq_scan` can judge a plain
/// EXPLAIN by the table's real size.
pub fn analyze_plan_with(
    plan_json: &Value,
    analyzed: bool,
    tables: &TableStats,
) -> Vec<PlanInsight> {
    let Some(root) = root_node(plan_json) else {
        return Vec::new();
    };
    let nodes = flatten(root);
    let ctx = rules::Context { analyzed, tables };
    rules::ALL
        .iter()
        .filter_map(|rule| rule(&nodes, &ctx))
        .collect()
}

/// Parses the text of an EXPLAIN (FORMAT JSON) result column.
pub fn parse_explain(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok()
}

/// Tables read by a Seq Scan in the plan, for a `pg_class` look-up
/// (deduplicated, at most 20).
pub fn seq_scan_relations(plan_json: &Value) -> Vec<String> {
    let Some(root) = root_node(plan_json) else {
        return Vec::new();
    };
    let mut out: Vec<String> = flatten(root)
        .iter()
        .filter(|n| n.is("Seq Scan"))
        .filter_map(|n| n.str("Relation Name").map(str::to_owned))
        .collect();
    out.sort();
    out.dedup();
    out.truncate(20);
    out
}

/// A statement `PREPARE` accepts, with its parameter count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Explainable {
    /// Highest `$n` in the text: how many values `EXECUTE` needs.
    pub params: usize,
}

/// Whether `sql` is exactly one SELECT (not `SELECT INTO`), VALUES,
/// INSERT, UPDATE, DELETE or MERGE: what can be prepared and explained.
/// Anything else, including several statements (which a `PREPARE … AS`
/// would split, running the rest), is refused.
pub fn explainable(sql: &str) -> Option<Explainable> {
    let parsed = std::panic::catch_unwind(|| pg_query::parse(sql, 0))
        .ok()?
        .ok()?;
    let [stmt] = parsed.protobuf.stmts.as_slice() else {
        return None;
    };
    let node = stmt.stmt.as_ref()?.node.as_ref()?;
    let ok = match node {
        NodeEnum::SelectStmt(s) => s.into_clause.is_none(),
        NodeEnum::InsertStmt(_)
        | NodeEnum::UpdateStmt(_)
        | NodeEnum::DeleteStmt(_)
        | NodeEnum::MergeStmt(_) => true,
        _ => false,
    };
    if !ok {
        return None;
    }
    Some(Explainable {
        params: max_param(sql),
    })
}

/// The highest `$n` outside literals, quoted identifiers and comments
/// (lexically: pg_query's node iterator does not reach every list, such
/// as VALUES rows).
fn max_param(sql: &str) -> usize {
    let b = sql.as_bytes();
    let mut max = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => i = pgpilot_sql::lexer::skip_quoted(b, i, b[i]),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = b[i + 2..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(b.len(), |p| i + 4 + p);
            }
            b'$' => {
                let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                let after_word = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
                if digits > 0 && !after_word {
                    let n = sql[i + 1..i + 1 + digits].parse::<usize>().unwrap_or(0);
                    max = max.max(n);
                    i += 1 + digits;
                } else {
                    i = pgpilot_sql::lexer::dollar_quote_end(b, i).unwrap_or(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    max
}

/// The top plan node of an EXPLAIN result.
fn root_node(v: &Value) -> Option<&Map<String, Value>> {
    match v {
        Value::Array(items) => root_node(items.first()?),
        Value::Object(o) => match o.get("Plan") {
            Some(Value::Object(plan)) => Some(plan),
            _ => o.contains_key("Node Type").then_some(o),
        },
        _ => None,
    }
}

/// Deepest plan nesting walked (serde_json itself stops at 128).
const MAX_DEPTH: usize = 128;

/// One plan node and what its ancestors imply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Node<'a> {
    /// The node's JSON object ("Node Type", "Plan Rows", "Plans", …).
    pub(crate) fields: &'a Map<String, Value>,
    /// Processes sharing a parallel-aware node (PostgreSQL's parallel
    /// divisor: workers plus the leader's share); 1 outside a Gather.
    pub(crate) divisor: f64,
}

impl<'a> Node<'a> {
    pub(crate) fn str(&self, key: &str) -> Option<&'a str> {
        self.fields.get(key)?.as_str()
    }

    pub(crate) fn num(&self, key: &str) -> Option<f64> {
        self.fields.get(key)?.as_f64()
    }

    pub(crate) fn is(&self, node_type: &str) -> bool {
        self.str("Node Type") == Some(node_type)
    }

    fn parallel_aware(&self) -> bool {
        self.fields.get("Parallel Aware").and_then(Value::as_bool) == Some(true)
    }

    /// Child nodes, in plan order (outer first).
    pub(crate) fn children(&self) -> impl Iterator<Item = &'a Map<String, Value>> {
        self.fields
            .get("Plans")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
    }

    /// Whether the node ran (ANALYZE output with at least one loop).
    pub(crate) fn executed(&self) -> bool {
        self.num("Actual Loops").is_some_and(|l| l > 0.0)
    }

    /// Rows per loop as planned, for the whole query when parallel.
    pub(crate) fn planned_rows(&self) -> f64 {
        let rows = self.num("Plan Rows").unwrap_or(0.0);
        if self.parallel_aware() {
            rows * self.divisor
        } else {
            rows
        }
    }

    /// Rows actually produced over all loops.
    pub(crate) fn actual_total(&self) -> f64 {
        self.num("Actual Rows").unwrap_or(0.0) * self.num("Actual Loops").unwrap_or(0.0)
    }

    /// Loops that make up one execution of the node: parallel processes
    /// for a parallel-aware node (their rows add up), else one.
    pub(crate) fn loops_per_scan(&self) -> f64 {
        if self.parallel_aware() {
            self.num("Actual Loops").unwrap_or(1.0).max(1.0)
        } else {
            1.0
        }
    }

    /// "Seq Scan on orders", "Index Scan using orders_pkey on orders", "Hash Join".
    pub(crate) fn label(&self) -> String {
        let kind = self.str("Node Type").unwrap_or("node");
        match (self.str("Index Name"), self.str("Relation Name")) {
            (Some(i), Some(r)) => format!("{kind} using {i} on {r}"),
            (None, Some(r)) => format!("{kind} on {r}"),
            _ => kind.to_owned(),
        }
    }
}

/// All nodes of the tree, depth first, with the parallel divisor in effect.
fn flatten(root: &Map<String, Value>) -> Vec<Node<'_>> {
    let mut out = Vec::new();
    let mut stack = vec![(root, 1.0, 0usize)];
    while let Some((fields, divisor, depth)) = stack.pop() {
        let node = Node { fields, divisor };
        let below = match node.num("Workers Planned") {
            Some(w) if node.is("Gather") || node.is("Gather Merge") => parallel_divisor(w),
            _ => divisor,
        };
        if depth < MAX_DEPTH {
            let children: Vec<_> = node.children().collect();
            for child in children.into_iter().rev() {
                stack.push((child, below, depth + 1));
            }
        }
        out.push(node);
    }
    out
}

/// PostgreSQL's `get_parallel_divisor`: the workers plus the leader, whose
/// share shrinks by 30 % per worker (parallel_leader_participation on).
fn parallel_divisor(workers: f64) -> f64 {
    workers + (1.0 - 0.3 * workers).max(0.0)
}

#[cfg(test)]
mod tests;
