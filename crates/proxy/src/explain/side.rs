//! The side connection of the explain task: log in, run each attempt in a
//! read-only transaction (`PREPARE`, `SET LOCAL plan_cache_mode`,
//! `EXPLAIN … EXECUTE`, then `ROLLBACK` and `DEALLOCATE`), and look up the
//! sizes of the tables a plain EXPLAIN scans.

use std::time::Duration;

use pgpilot_insight::plans;
use pgpilot_insight::{PlanSource, TableSize, TableStats};
use pgpilot_pool::login::{self, LoginParams};
use pgpilot_pool::probe;
use pgpilot_pool::ServerConn;
use pgpilot_sql::quote;

use super::{ExplainError, LOGIN_TIMEOUT};

/// The prepared statement's name on the side connection.
const STATEMENT: &str = "pgpilot_explain";

/// One way to explain a statement.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Attempt {
    /// The one statement to prepare (checked by `plans::explainable`).
    pub(super) sql: String,
    /// Values for `EXECUTE`, in order (`None` = NULL).
    pub(super) args: Vec<Option<String>>,
    /// ANALYZE or not, generic or custom plan.
    pub(super) source: PlanSource,
}

/// Logs in and runs the attempts in order until one yields a plan; also
/// sizes the scanned tables of a plain EXPLAIN.
pub(super) async fn explain_on(
    params: &LoginParams,
    attempts: &[Attempt],
    timeout: Duration,
) -> Result<(plans::Value, PlanSource, TableStats), ExplainError> {
    let mut conn = login::connect(params, LOGIN_TIMEOUT)
        .await
        .map_err(ExplainError::Login)?;
    let mut last = ExplainError::NoPlan;
    for attempt in attempts {
        match run_attempt(&mut conn, attempt, timeout).await {
            Ok(plan) => {
                let tables = if attempt.source.analyzed {
                    TableStats::new()
                } else {
                    table_sizes(&mut conn, &plans::seq_scan_relations(&plan)).await
                };
                return Ok((plan, attempt.source, tables));
            }
            Err(e @ ExplainError::Query(pgpilot_pool::Error::Server { .. })) => {
                tracing::debug!(error = %e, analyzed = attempt.source.analyzed, "EXPLAIN attempt failed");
                last = e;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Runs one attempt in a read-only transaction; returns the plan JSON.
/// The transaction is always rolled back and the statement deallocated
/// (a prepared statement outlives a rollback).
async fn run_attempt(
    conn: &mut ServerConn,
    attempt: &Attempt,
    timeout: Duration,
) -> Result<plans::Value, ExplainError> {
    let result = explain_in_transaction(conn, attempt, timeout).await;
    if !matches!(
        result,
        Err(ExplainError::Query(pgpilot_pool::Error::Io { .. }))
    ) {
        let _ = probe::query(conn, "ROLLBACK").await;
        let _ = probe::query(conn, &format!("DEALLOCATE {STATEMENT}")).await;
    }
    result
}

async fn explain_in_transaction(
    conn: &mut ServerConn,
    attempt: &Attempt,
    timeout: Duration,
) -> Result<plans::Value, ExplainError> {
    let plan_cache_mode = if attempt.source.generic {
        "force_generic_plan"
    } else {
        "force_custom_plan"
    };
    let options = if attempt.source.analyzed {
        "ANALYZE, BUFFERS, FORMAT JSON"
    } else {
        "FORMAT JSON"
    };
    let steps = [
        "BEGIN TRANSACTION READ ONLY".to_owned(),
        // The text was checked to be one statement by a parser that
        // assumes standard strings; make the server read it the same way.
        "SET LOCAL standard_conforming_strings = on".to_owned(),
        format!(
            "SET LOCAL statement_timeout = {}",
            timeout.as_millis().max(1)
        ),
        format!("SET LOCAL plan_cache_mode = {plan_cache_mode}"),
        format!("PREPARE {STATEMENT} AS {}", attempt.sql),
    ];
    for step in &steps {
        probe::query(conn, step)
            .await
            .map_err(ExplainError::Query)?;
    }
    let explain = format!(
        "EXPLAIN ({options}) EXECUTE {STATEMENT}{}",
        execute_args(&attempt.args)
    );
    let rows = probe::query(conn, &explain)
        .await
        .map_err(ExplainError::Query)?;
    let text: String = rows
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect::<Vec<_>>()
        .join("\n");
    plans::parse_explain(&text).ok_or(ExplainError::NoPlan)
}

/// `pg_class` sizes of `relations` as the side connection's search path
/// sees them; empty when the look-up fails (the rule falls back to cost).
async fn table_sizes(conn: &mut ServerConn, relations: &[String]) -> TableStats {
    if relations.is_empty() {
        return TableStats::new();
    }
    let names: Vec<String> = relations.iter().map(|r| quote::literal(r)).collect();
    let sql = format!(
        "SELECT c.relname, c.reltuples, c.relpages FROM pg_catalog.pg_class c \
         WHERE c.relname IN ({}) AND pg_catalog.pg_table_is_visible(c.oid)",
        names.join(", ")
    );
    let Ok(rows) = probe::query(conn, &sql).await else {
        return TableStats::new();
    };
    rows.into_iter()
        .filter_map(|row| {
            let mut it = row.into_iter();
            let name = it.next()??;
            let rows = it.next()??.parse().ok()?;
            let pages = it.next()??.parse().ok()?;
            Some((name, TableSize { rows, pages }))
        })
        .collect()
}

/// `(NULL, '42')` for `EXECUTE`; nothing without arguments.
fn execute_args(args: &[Option<String>]) -> String {
    if args.is_empty() {
        return String::new();
    }
    let values: Vec<String> = args
        .iter()
        .map(|a| {
            a.as_deref()
                .map_or_else(|| "NULL".to_owned(), quote::literal)
        })
        .collect();
    format!("({})", values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_arguments() {
        assert_eq!(execute_args(&[]), "");
        assert_eq!(
            execute_args(&[None, Some("42".into()), None]),
            "(NULL, '42', NULL)"
        );
    }
}
