//! Rules about reading rows: sequential scans an index would avoid, rows
//! read only to be filtered away, row estimates far from the truth, and
//! index-only scans that still visit the table.

use super::filter;
use super::rules::{count, percent, Context};
use super::{
    Node, PlanInsight, LARGE_TABLE_PAGES, LARGE_TABLE_ROWS, MIN_MISESTIMATE_ROWS, MIN_ROWS_REMOVED,
    SELECTIVE_FRACTION,
};
use crate::lints::Severity;
use pgpilot_sql::quote::ident as quote_ident;

/// Without table statistics, a plain EXPLAIN's Seq Scan is judged by its
/// cost. At default cost settings a seq scan costs 1 per page plus about
/// 0.0125 per row, so this cost means ≥ 10,000 pages or ≥ ~800,000 rows.
const LARGE_SCAN_COST: f64 = 10_000.0;
/// … and it is selective when it returns at most one row per this many
/// cost units: ≤ 1 % of the rows even when each page holds a single row.
const COST_PER_SELECTED_ROW: f64 = 100.0;

/// What one Seq Scan reads and keeps.
struct Scan {
    /// Rows in the table; `None` when only the cost was known.
    table_rows: Option<f64>,
    /// Rows the filter keeps, per scan of the table.
    kept: f64,
}

pub(super) fn seq_scan(nodes: &[Node<'_>], ctx: &Context<'_>) -> Option<PlanInsight> {
    let (node, scan) = nodes
        .iter()
        .filter(|n| n.is("Seq Scan") && n.str("Filter").is_some())
        .filter_map(|n| selective_scan(n, ctx).map(|s| (n, s)))
        .max_by(|a, b| {
            let size = |s: &Scan| s.table_rows.unwrap_or(0.0);
            size(&a.1).total_cmp(&size(&b.1))
        })?;
    let relation = node.str("Relation Name").unwrap_or("the table");
    let condition = node.str("Filter").unwrap_or_default();
    let read = match scan.table_rows {
        Some(rows) => format!(
            "reads all ~{} rows to keep ~{} ({})",
            count(rows),
            count(scan.kept),
            percent(scan.kept / rows.max(1.0))
        ),
        None => format!(
            "reads the whole table (cost {:.0}) to keep ~{} rows",
            node.num("Total Cost").unwrap_or(0.0),
            count(scan.kept)
        ),
    };
    let critical = scan
        .table_rows
        .is_some_and(|r| r >= 10.0 * LARGE_TABLE_ROWS)
        && scan
            .table_rows
            .is_some_and(|r| scan.kept / r.max(1.0) <= 0.01);
    Some(PlanInsight {
        rule: "seq_scan",
        severity: if critical {
            Severity::Critical
        } else {
            Severity::Warning
        },
        message: format!("Sequential scan on {relation} {read} with filter `{condition}`."),
        fix: index_fix(relation, condition, node.str("Alias")),
    })
}

/// The scan's size and yield when it is large and its filter selective.
fn selective_scan(n: &Node<'_>, ctx: &Context<'_>) -> Option<Scan> {
    let relation = n.str("Relation Name").unwrap_or_default();
    let (rows, pages, kept) = if ctx.analyzed && n.executed() {
        let kept = n.num("Actual Rows").unwrap_or(0.0);
        let read = kept + n.num("Rows Removed by Filter").unwrap_or(0.0);
        let loops = n.loops_per_scan();
        (read * loops, 0.0, kept * loops)
    } else if let Some(t) = ctx.tables.get(relation).filter(|t| t.rows >= 0.0) {
        (t.rows, t.pages, n.planned_rows())
    } else {
        let cost = n.num("Total Cost").unwrap_or(0.0);
        let kept = n.planned_rows();
        let selective = cost >= LARGE_SCAN_COST && kept <= cost / COST_PER_SELECTED_ROW;
        return selective.then_some(Scan {
            table_rows: None,
            kept,
        });
    };
    let large = rows >= LARGE_TABLE_ROWS || pages >= LARGE_TABLE_PAGES;
    (large && kept <= rows * SELECTIVE_FRACTION).then_some(Scan {
        table_rows: Some(rows),
        kept,
    })
}

/// `CREATE INDEX` on the columns the filter compares, or advice naming
/// the filter when no plain column is compared.
fn index_fix(relation: &str, condition: &str, alias: Option<&str>) -> String {
    let columns = filter::indexable_columns(condition, alias);
    if columns.is_empty() {
        return format!(
            "Index what the filter `{condition}` computes (an expression index on {relation}), \
             or rewrite the condition so it compares a plain column."
        );
    }
    format!(
        "CREATE INDEX CONCURRENTLY ON {} ({}); -- equality columns first; test it first with HypoPG",
        quote_ident(relation),
        columns.join(", ")
    )
}

pub(super) fn rows_removed_by_filter(nodes: &[Node<'_>], ctx: &Context<'_>) -> Option<PlanInsight> {
    if !ctx.analyzed {
        return None;
    }
    let (node, key, removed, share) = nodes
        .iter()
        .filter(|n| n.executed())
        .flat_map(|n| {
            ["Rows Removed by Filter", "Rows Removed by Join Filter"]
                .into_iter()
                .filter_map(move |key| {
                    let removed = n.num(key)?;
                    let kept = n.num("Actual Rows").unwrap_or(0.0);
                    let share = removed / (removed + kept).max(1.0);
                    let total = removed * n.num("Actual Loops").unwrap_or(1.0);
                    (share > 0.5 && total >= MIN_ROWS_REMOVED).then_some((n, key, total, share))
                })
        })
        .max_by(|a, b| a.2.total_cmp(&b.2))?;
    let condition = if key == "Rows Removed by Join Filter" {
        node.str("Join Filter")
    } else {
        node.str("Filter")
    }
    .unwrap_or_default();
    let relation = node.str("Relation Name");
    let fix = match relation {
        Some(r) if filter::indexable_columns(condition, node.str("Alias")).is_empty() => {
            format!("Make the condition `{condition}` indexable on {r}, or move it into an index condition.")
        }
        Some(r) => index_fix(r, condition, node.str("Alias")),
        None => format!(
            "Turn `{condition}` into a join or index condition so the rows are never produced."
        ),
    };
    Some(PlanInsight {
        rule: "rows_removed_by_filter",
        severity: if share > 0.9 {
            Severity::Warning
        } else {
            Severity::Info
        },
        message: format!(
            "{} discards {} of the rows it reads ({} rows) with `{condition}`.",
            node.label(),
            percent(share),
            count(removed)
        ),
        fix,
    })
}

pub(super) fn misestimate(nodes: &[Node<'_>], ctx: &Context<'_>) -> Option<PlanInsight> {
    if !ctx.analyzed {
        return None;
    }
    let (node, factor) = nodes
        .iter()
        .filter(|n| n.executed())
        .filter_map(|n| {
            let planned = n.num("Plan Rows")?;
            let actual = n.num("Actual Rows")?;
            let loops = n.num("Actual Loops").unwrap_or(1.0);
            if planned.max(actual) * loops < MIN_MISESTIMATE_ROWS {
                return None;
            }
            let factor =
                (actual.max(1.0) / planned.max(1.0)).max(planned.max(1.0) / actual.max(1.0));
            (factor > 10.0).then_some((n, factor))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    let planned = node.num("Plan Rows").unwrap_or(0.0);
    let actual = node.num("Actual Rows").unwrap_or(0.0);
    let direction = if actual > planned { "under" } else { "over" };
    let severity = match factor {
        f if f > 1000.0 => Severity::Critical,
        f if f > 100.0 => Severity::Warning,
        _ => Severity::Info,
    };
    Some(PlanInsight {
        rule: "misestimate",
        severity,
        message: format!(
            "{} {direction}-estimated its rows {factor:.0}×: planned {}, got {} (per loop), \
             so the plan above it was chosen for the wrong size.",
            node.label(),
            count(planned),
            count(actual)
        ),
        fix: statistics_fix(node),
    })
}

/// Fresh statistics; extended statistics when several columns of one
/// table are filtered together (they are assumed independent otherwise).
fn statistics_fix(node: &Node<'_>) -> String {
    let Some(relation) = node.str("Relation Name") else {
        return "ANALYZE the tables below this node; if estimates stay wrong, raise the \
                statistics target of the join columns (ALTER TABLE … ALTER COLUMN … SET STATISTICS 1000)."
            .to_owned();
    };
    let table = quote_ident(relation);
    let condition = node
        .str("Filter")
        .or(node.str("Index Cond"))
        .unwrap_or_default();
    let columns = filter::indexable_columns(condition, node.str("Alias"));
    match columns.as_slice() {
        [] => format!("ANALYZE {table};"),
        [one] => format!(
            "ANALYZE {table}; if it stays wrong: ALTER TABLE {table} ALTER COLUMN {one} SET STATISTICS 1000; ANALYZE {table};"
        ),
        several => format!(
            "ANALYZE {table}; the filtered columns are likely correlated: \
             CREATE STATISTICS ON {} FROM {table}; ANALYZE {table};",
            several.join(", ")
        ),
    }
}

pub(super) fn heap_fetches(nodes: &[Node<'_>], ctx: &Context<'_>) -> Option<PlanInsight> {
    if !ctx.analyzed {
        return None;
    }
    let (node, fetches) = nodes
        .iter()
        .filter(|n| n.is("Index Only Scan") && n.executed())
        .filter_map(|n| n.num("Heap Fetches").filter(|f| *f > 0.0).map(|f| (n, f)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    let rows = node.actual_total();
    let relation = node
        .str("Relation Name")
        .map_or_else(|| "the table".to_owned(), quote_ident);
    Some(PlanInsight {
        rule: "heap_fetches",
        severity: if fetches >= 0.1 * rows.max(1.0) {
            Severity::Warning
        } else {
            Severity::Info
        },
        message: format!(
            "{} went to the table {} times for {} rows: the visibility map is out of date, \
             so the index-only scan is not index-only.",
            node.label(),
            count(fetches),
            count(rows)
        ),
        fix: format!(
            "VACUUM (ANALYZE) {relation}; and let autovacuum visit it sooner: ALTER TABLE {relation} \
             SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02);"
        ),
    })
}
