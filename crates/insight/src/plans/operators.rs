//! Rules about operators: sorts and hashes that spilled to disk (the
//! `work_mem` advice) and nested loops over a large outer side.

use super::rules::{count, work_mem_for, Context};
use super::{Node, PlanInsight, LARGE_OUTER_ROWS};
use crate::lints::Severity;

pub(super) fn sort_spill(nodes: &[Node<'_>], _ctx: &Context<'_>) -> Option<PlanInsight> {
    let (node, kb) = nodes
        .iter()
        .filter(|n| n.is("Sort"))
        .filter_map(|n| spilled_sort_kb(n).map(|kb| (n, kb)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    let method = node.str("Sort Method").unwrap_or("external sort");
    let key = sort_key(node);
    Some(PlanInsight {
        rule: "sort_spill",
        severity: Severity::Warning,
        message: format!(
            "Sort{key} spilled to disk ({method}, {} kB written per process).",
            count(kb)
        ),
        fix: format!(
            "Give this query more work_mem: SET LOCAL work_mem = '{}' in its transaction \
             (or ALTER ROLE … SET work_mem) rather than globally — every sort of every \
             connection may use that much; or add an index that returns the rows already sorted{key}.",
            work_mem_for(kb * 3.0)
        ),
    })
}

/// Disk space of a sort that spilled (the largest among leader and workers).
fn spilled_sort_kb(n: &Node<'_>) -> Option<f64> {
    let spilled = |o: &serde_json::Map<String, serde_json::Value>| {
        let disk = o.get("Sort Space Type").and_then(|v| v.as_str()) == Some("Disk")
            || o.get("Sort Method")
                .and_then(|v| v.as_str())
                .is_some_and(|m| m.contains("external"));
        disk.then(|| {
            o.get("Sort Space Used")
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0)
        })
    };
    let workers = n
        .fields
        .get("Workers")
        .and_then(|w| w.as_array())
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_object());
    std::iter::once(n.fields)
        .chain(workers)
        .filter_map(spilled)
        .max_by(f64::total_cmp)
}

/// " by amount" from "Sort Key", or nothing.
fn sort_key(n: &Node<'_>) -> String {
    let keys: Vec<&str> = n
        .fields
        .get("Sort Key")
        .and_then(|k| k.as_array())
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str())
        .collect();
    if keys.is_empty() {
        String::new()
    } else {
        format!(" by {}", keys.join(", "))
    }
}

pub(super) fn hash_spill(nodes: &[Node<'_>], _ctx: &Context<'_>) -> Option<PlanInsight> {
    let (node, batches, kb) = nodes
        .iter()
        .filter_map(|n| {
            let peak = n.num("Peak Memory Usage").unwrap_or(0.0);
            if n.is("Hash") {
                let batches = n
                    .num("Hash Batches")
                    .unwrap_or(1.0)
                    .max(n.num("Original Hash Batches").unwrap_or(1.0));
                (batches > 1.0).then_some((n, batches, peak * batches))
            } else {
                let batches = n.num("HashAgg Batches").unwrap_or(0.0);
                let disk = n.num("Disk Usage").unwrap_or(0.0);
                (batches > 1.0 || disk > 0.0).then_some((n, batches, peak + disk))
            }
        })
        .max_by(|a, b| a.2.total_cmp(&b.2))?;
    let what = if node.is("Hash") {
        "Hash table of a hash join"
    } else {
        "Hash aggregate"
    };
    Some(PlanInsight {
        rule: "hash_spill",
        severity: Severity::Warning,
        message: format!(
            "{what} did not fit in memory: {} batches written to disk (about {} kB needed).",
            count(batches),
            count(kb)
        ),
        fix: format!(
            "Give this query more work_mem: SET LOCAL work_mem = '{}' in its transaction \
             (or raise hash_mem_multiplier, which scales hash tables only); not globally — \
             every hash of every connection may use that much.",
            work_mem_for(kb)
        ),
    })
}

pub(super) fn nested_loop_large_outer(
    nodes: &[Node<'_>],
    ctx: &Context<'_>,
) -> Option<PlanInsight> {
    let (node, outer, rows) = nodes
        .iter()
        .filter(|n| n.is("Nested Loop"))
        .filter_map(|n| {
            let outer = n.children().next().map(|fields| Node {
                fields,
                divisor: n.divisor,
            })?;
            let rows = if ctx.analyzed && outer.executed() {
                outer.actual_total()
            } else {
                outer.planned_rows()
            };
            (rows >= LARGE_OUTER_ROWS).then_some((n, outer, rows))
        })
        .max_by(|a, b| a.2.total_cmp(&b.2))?;
    let inner = node
        .children()
        .nth(1)
        .map(|fields| Node {
            fields,
            divisor: node.divisor,
        })
        .map_or_else(|| "its inner side".to_owned(), |n| n.label());
    let severity = if rows >= 100.0 * LARGE_OUTER_ROWS {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let actual = if ctx.analyzed { "" } else { "~" };
    Some(PlanInsight {
        rule: "nested_loop_large_outer",
        severity,
        message: format!(
            "Nested Loop runs {inner} once for each of {actual}{} rows from {}.",
            count(rows),
            outer.label()
        ),
        fix: "With this many outer rows a hash or merge join is usually cheaper: check the \
              outer side's row estimate (ANALYZE its tables), compare with SET enable_nestloop = off \
              in a session, and make sure the join columns have the same type and the inner side \
              an index on its join key."
            .to_owned(),
    })
}
