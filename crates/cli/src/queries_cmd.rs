//! `pgpilot queries`: query insight from a running pgpilot's admin API,
//! printed as tables — the top queries, and on request the findings (with
//! their fixes), the endpoints and the slow log.
//!
//! Reads `/api/queries`, `/api/findings`, `/api/endpoints` and `/api/slow`
//! with a one-shot HTTP/1.1 GET ([`http`]) and renders them with [`table`].

mod http;
mod table;

use anyhow::{bail, Context};
use serde_json::Value;

use table::{cut, ms, Align, Table};

/// Line width when `COLUMNS` does not say.
const DEFAULT_WIDTH: usize = 100;

/// Flags of `pgpilot queries`.
#[derive(clap::Args, Debug)]
pub struct QueriesArgs {
    /// Admin API of the running pgpilot (host:port).
    #[arg(long, default_value = "127.0.0.1:9930", env = "PGPILOT_ADMIN")]
    pub admin: String,
    /// Ranking of the queries (and of the endpoints with --endpoints).
    #[arg(long, default_value = "total_time", value_parser = ["total_time", "p99", "calls", "mean"])]
    pub order: String,
    /// Rows per table.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=10000))]
    pub limit: u16,
    /// Also list findings: lints, N+1 patterns and plan insights, each with its fix.
    #[arg(long)]
    pub findings: bool,
    /// Also list the application's endpoints (from sqlcommenter comments) by database time.
    #[arg(long)]
    pub endpoints: bool,
    /// Also list the slow query log, newest first.
    #[arg(long)]
    pub slow: bool,
}

/// Fetches and prints the top queries, then each section asked for.
///
/// # Errors
/// When the admin API cannot be reached or answers with an error.
pub fn run(args: QueriesArgs) -> anyhow::Result<()> {
    let admin = admin_addr(&args.admin);
    let width = terminal_width();
    let mut out = queries(admin, &args, width)?;
    if args.findings {
        out.push('\n');
        out.push_str(&findings(admin, usize::from(args.limit), width)?);
    }
    if args.endpoints {
        out.push('\n');
        out.push_str(&endpoints(admin, &args, width)?);
    }
    if args.slow {
        out.push('\n');
        out.push_str(&slow(admin, args.limit, width)?);
    }
    print!("{out}");
    Ok(())
}

/// `host:port` from `--admin`, which may also be written as a URL.
fn admin_addr(text: &str) -> &str {
    let text = text.strip_prefix("http://").unwrap_or(text);
    text.trim_end_matches('/')
}

/// `COLUMNS` when the shell exports it, else [`DEFAULT_WIDTH`].
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|&w: &usize| w >= 40)
        .unwrap_or(DEFAULT_WIDTH)
}

/// `GET path` as a JSON array; an error status becomes an error carrying
/// the API's `"error"` message.
fn fetch(admin: &str, path: &str) -> anyhow::Result<Vec<Value>> {
    let response = http::get(admin, path).with_context(|| {
        format!(
            "cannot query the admin API at {admin} (is pgpilot running with admin_listen there?)"
        )
    })?;
    let body: Option<Value> = serde_json::from_slice(&response.body).ok();
    if response.status != 200 {
        let message = body
            .as_ref()
            .and_then(|b| b.get("error"))
            .and_then(Value::as_str)
            .unwrap_or("no error message");
        bail!("GET {path}: HTTP {}: {message}", response.status);
    }
    match body {
        Some(Value::Array(rows)) => Ok(rows),
        Some(_) => bail!("GET {path}: expected a JSON array"),
        None => bail!("GET {path}: the answer is not JSON"),
    }
}

fn queries(admin: &str, args: &QueriesArgs, width: usize) -> anyhow::Result<String> {
    let path = format!("/api/queries?order={}&limit={}", args.order, args.limit);
    let rows = fetch(admin, &path)?;
    let mut t = Table::new(&[
        ("FINGERPRINT", Align::Left),
        ("CALLS", Align::Right),
        ("TOTAL MS", Align::Right),
        ("MEAN MS", Align::Right),
        ("P50", Align::Right),
        ("P95", Align::Right),
        ("P99", Align::Right),
        ("QUERY", Align::Left),
    ]);
    for r in &rows {
        t.row(
            vec![
                text(r, "fingerprint"),
                count(r, "calls"),
                millis(r, "total_ms"),
                millis(r, "mean_ms"),
                millis(r, "p50_ms"),
                millis(r, "p95_ms"),
                millis(r, "p99_ms"),
                text(r, "query"),
            ],
            None,
        );
    }
    let title = format!("Top queries by {}", args.order.replace('_', " "));
    Ok(section(&title, &t, width))
}

fn findings(admin: &str, limit: usize, width: usize) -> anyhow::Result<String> {
    let rows = fetch(admin, "/api/findings")?;
    let mut t = Table::new(&[
        ("KIND", Align::Left),
        ("RULE", Align::Left),
        ("FINGERPRINT", Align::Left),
        ("ENDPOINT", Align::Left),
        ("MESSAGE", Align::Left),
    ]);
    for r in rows.iter().take(limit) {
        let fix = format!("fix: {}", text(r, "fix"));
        t.row(
            vec![
                text(r, "kind"),
                text(r, "rule"),
                text(r, "fingerprint"),
                text(r, "endpoint"),
                text(r, "message"),
            ],
            Some(fix),
        );
    }
    let mut title = String::from("Findings");
    if rows.len() > limit {
        title.push_str(&format!(" ({limit} of {}; raise --limit)", rows.len()));
    }
    Ok(section(&title, &t, width))
}

fn endpoints(admin: &str, args: &QueriesArgs, width: usize) -> anyhow::Result<String> {
    let path = format!("/api/endpoints?order={}&limit={}", args.order, args.limit);
    let rows = fetch(admin, &path)?;
    let mut t = Table::new(&[
        ("CALLS", Align::Right),
        ("TOTAL MS", Align::Right),
        ("MEAN MS", Align::Right),
        ("P95", Align::Right),
        ("P99", Align::Right),
        ("ERRORS", Align::Right),
        ("ENDPOINT", Align::Left),
    ]);
    for r in &rows {
        t.row(
            vec![
                count(r, "calls"),
                millis(r, "total_ms"),
                millis(r, "mean_ms"),
                millis(r, "p95_ms"),
                millis(r, "p99_ms"),
                count(r, "errors"),
                text(r, "endpoint"),
            ],
            None,
        );
    }
    let title = format!("Endpoints by {}", args.order.replace('_', " "));
    Ok(section(&title, &t, width))
}

fn slow(admin: &str, limit: u16, width: usize) -> anyhow::Result<String> {
    let rows = fetch(admin, &format!("/api/slow?limit={limit}"))?;
    let mut t = Table::new(&[
        ("AT", Align::Left),
        ("MS", Align::Right),
        ("ROWS", Align::Right),
        ("FINGERPRINT", Align::Left),
        ("ENDPOINT", Align::Left),
        ("QUERY", Align::Left),
    ]);
    for r in &rows {
        t.row(
            vec![
                text(r, "at"),
                millis(r, "duration_ms"),
                count(r, "rows"),
                text(r, "fingerprint"),
                text(r, "endpoint"),
                text(r, "query"),
            ],
            None,
        );
    }
    Ok(section("Slow queries, newest first", &t, width))
}

/// A title line, then the table or `(none)`.
fn section(title: &str, table: &Table, width: usize) -> String {
    let mut out = format!("{}\n", cut(title, width));
    if table.is_empty() {
        out.push_str("(none)\n");
    } else {
        out.push_str(&table.render(width));
    }
    out
}

/// A string field; `-` when null or absent.
fn text(row: &Value, key: &str) -> String {
    match &row[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn count(row: &Value, key: &str) -> String {
    row[key]
        .as_u64()
        .map_or_else(|| "-".to_owned(), |n| n.to_string())
}

fn millis(row: &Value, key: &str) -> String {
    row[key].as_f64().map_or_else(|| "-".to_owned(), ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_address_may_be_a_url() {
        assert_eq!(admin_addr("http://127.0.0.1:9930/"), "127.0.0.1:9930");
        assert_eq!(admin_addr("db:9930"), "db:9930");
    }

    #[test]
    fn missing_fields_print_as_dashes() {
        let row = serde_json::json!({ "endpoint": null, "calls": 3, "total_ms": 1.5 });
        assert_eq!(text(&row, "endpoint"), "-");
        assert_eq!(text(&row, "absent"), "-");
        assert_eq!(count(&row, "calls"), "3");
        assert_eq!(millis(&row, "total_ms"), "1.50");
        assert_eq!(millis(&row, "p99_ms"), "-");
    }
}
