//! The query-insight routes end to end over HTTP/1.1: events recorded
//! straight into a runtime's `Insight` (as the session does), then every
//! route's JSON checked by field name, the contract fields of
//! `/api/queries` and `/api/findings` included, plus 400s and 404s.
//!
//! No PostgreSQL is needed: the routes read only the insight state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgpilot_insight::{
    sqlcomment, Insight, Location, NPlusOneEvent, NPlusOneTracker, QueryEvent, Sent,
};
use pgpilot_proxy::Runtime;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// A runtime whose history store lives in `dir` (nothing connects to the
/// upstream: only the admin routes run).
fn runtime(dir: &std::path::Path) -> Arc<Runtime> {
    let toml = format!(
        r#"
[upstream]
primary = "127.0.0.1:1"

[[users]]
name = "app"
auth = "trust"

[insight]
store_path = "{}"
"#,
        dir.join("history.sqlite").display()
    );
    let settings = pgpilot_config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}"));
    Runtime::new(settings)
}

/// Records one completed query the way the session does; returns its event.
fn record(i: &Insight, key: u128, sql: &str, ms: u64, rows: u64, now: Instant) -> QueryEvent {
    let tags = sqlcomment::parse(sql);
    let ev = QueryEvent {
        shape: i.shape(key, sql, now),
        duration: Duration::from_millis(ms),
        rows,
        error: None,
        location: Location::Primary,
        endpoint: i.endpoint(&tags),
    };
    let trace = tags.trace_id();
    let sent = Sent {
        sql,
        params: &[],
        trace_id: trace.as_deref(),
    };
    i.record(&ev, &sent, now);
    ev
}

/// Feeds one query to the N+1 tracker too.
fn observe(tracker: &mut NPlusOneTracker, ev: &QueryEvent, sql: &str, at: Instant) {
    let found = tracker.observe(&NPlusOneEvent {
        fingerprint: ev.shape.fingerprint,
        rows: ev.rows,
        duration: ev.duration,
        trace_id: sqlcomment::parse(sql).trace_id_u128(),
        in_transaction: false,
        endpoint: ev.endpoint.as_ref(),
        at,
    });
    assert!(found.is_none(), "the N+1 is reported when the trace ends");
}

/// A `SELECT *` from `/users` three times, one 800 ms query (slow), and an
/// N+1 from `posts#index`: a post list, then five comment look-ups.
fn workload(i: &Insight, t0: Instant) {
    for id in 1..=3 {
        let sql = format!("SELECT * FROM users WHERE id = {id} /*route='%2Fusers'*/");
        record(i, 1, &sql, 2, 1, t0);
    }
    record(i, 2, "SELECT name FROM users WHERE id = 7", 800, 1, t0);
    let tag = format!("/*controller='posts',action='index',traceparent='{TRACE}'*/");
    let mut tracker = i.n_plus_one_tracker();
    let mut at = t0;
    let source = format!("SELECT id, title FROM posts LIMIT 5 {tag}");
    let ev = record(i, 10, &source, 1, 5, at);
    observe(&mut tracker, &ev, &source, at);
    for id in 1..=5 {
        at += Duration::from_millis(2);
        let sql = format!("SELECT body FROM comments WHERE post_id = {id} {tag}");
        let ev = record(i, 11, &sql, 1, 1, at);
        observe(&mut tracker, &ev, &sql, at);
    }
    let found = tracker
        .finish()
        .expect("five look-ups after the list are an N+1");
    i.report_n_plus_one(&found, at);
}

/// Status and parsed JSON body of `GET path`.
async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("end of headers");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

/// `GET path` that must answer 200; its JSON.
async fn ok(addr: SocketAddr, path: &str) -> Value {
    let (status, json) = get(addr, path).await;
    assert_eq!(status, 200, "{path}: {json}");
    json
}

/// Asserts a 400 or 404 whose `error` mentions `needle`.
async fn refused(addr: SocketAddr, path: &str, status: u16, needle: &str) {
    let (got, json) = get(addr, path).await;
    assert_eq!(got, status, "{path}: {json}");
    let error = json["error"].as_str().unwrap_or_default();
    assert!(error.contains(needle), "{path}: {json}");
}

fn has_keys(v: &Value, keys: &[&str]) {
    for key in keys {
        assert!(v.get(key).is_some(), "no {key:?} in {v}");
    }
}

#[tokio::test]
async fn insight_routes_serve_recorded_queries() {
    let dir = std::env::temp_dir().join(format!("pgpilot-admin-insight-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let rt = runtime(&dir);
    let t0 = Instant::now();
    workload(&rt.insight, t0);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(pgpilot_admin::serve(rt.clone(), listener));

    let star = check_queries(addr).await;
    check_detail(addr, &star).await;
    check_findings(addr, &star).await;
    check_endpoints(addr).await;
    check_slow(addr).await;
    check_history(addr, &rt, &star, t0).await;

    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `/api/queries`: the contract fields, both orders, bad parameters.
/// Returns the fingerprint of the `SELECT *` query.
async fn check_queries(addr: SocketAddr) -> String {
    let top = ok(addr, "/api/queries").await;
    let rows = top.as_array().expect("an array");
    assert_eq!(rows.len(), 4, "{top}");
    for row in rows {
        has_keys(row, &["fingerprint", "query", "calls", "total_ms"]);
        has_keys(row, &["p50_ms", "p95_ms", "p99_ms", "mean_ms", "errors"]);
        let fp = row["fingerprint"].as_str().expect("fingerprint string");
        assert_eq!(fp.len(), 16, "{row}");
        assert!(row["p99_ms"].is_f64() && row["total_ms"].is_f64(), "{row}");
    }
    // Default order: total time, the 800 ms query first, literals normalized.
    assert_eq!(rows[0]["query"], "SELECT name FROM users WHERE id = $1");
    assert_eq!(rows[0]["calls"], 1);
    assert!(rows[0]["p50_ms"].as_f64() > Some(790.0), "{}", rows[0]);
    let by_calls = ok(addr, "/api/queries?order=calls&limit=1").await;
    assert_eq!(by_calls.as_array().map(Vec::len), Some(1));
    assert_eq!(by_calls[0]["calls"], 5);
    assert!(by_calls[0]["query"]
        .as_str()
        .is_some_and(|q| q.starts_with("SELECT body FROM comments WHERE post_id = $1")));
    let p99 = ok(addr, "/api/queries?order=p99").await;
    assert_eq!(p99[0]["fingerprint"], rows[0]["fingerprint"]);
    refused(addr, "/api/queries?order=fastest", 400, "order must be").await;
    refused(addr, "/api/queries?limit=0", 400, "limit must be").await;
    refused(addr, "/api/queries?sort=p99", 400, "unknown parameter").await;
    rows.iter()
        .find(|r| r["calls"] == 3)
        .and_then(|r| r["fingerprint"].as_str())
        .expect("the SELECT * query")
        .to_owned()
}

/// `/api/queries/{fp}`: statistics, histogram, windows, endpoints, findings.
async fn check_detail(addr: SocketAddr, star: &str) {
    let d = ok(addr, &format!("/api/queries/{star}")).await;
    assert_eq!(d["fingerprint"], star);
    assert_eq!(d["calls"], 3);
    has_keys(&d, &["histogram", "minutes", "hours", "error_codes"]);
    let buckets = d["histogram"].as_array().expect("histogram array");
    let counted: u64 = buckets.iter().filter_map(|b| b["count"].as_u64()).sum();
    assert_eq!(counted, 3, "{}", d["histogram"]);
    assert!(buckets.iter().all(|b| b["le_ms"].is_f64()));
    assert_eq!(d["minutes"][0]["calls"], 3, "{}", d["minutes"]);
    assert_eq!(d["endpoints"][0]["endpoint"], "/users");
    assert_eq!(d["findings"][0]["rule"], "select_star");
    assert_eq!(d["n_plus_one"], Value::Array(Vec::new()));
    refused(addr, "/api/queries/0000000000000001", 404, "not tracked").await;
    refused(addr, "/api/queries/not-hex", 400, "not a fingerprint").await;
    refused(
        addr,
        &format!("/api/queries/{star}?x=1"),
        400,
        "no parameters",
    )
    .await;
}

/// `/api/findings`: the contract fields, a lint and the N+1.
async fn check_findings(addr: SocketAddr, star: &str) {
    let findings = ok(addr, "/api/findings").await;
    let all = findings.as_array().expect("an array");
    for f in all {
        has_keys(
            f,
            &["kind", "rule", "fingerprint", "endpoint", "message", "fix"],
        );
    }
    let lint = all
        .iter()
        .find(|f| f["rule"] == "select_star")
        .unwrap_or_else(|| panic!("select_star in {findings}"));
    assert_eq!(lint["kind"], "lint");
    assert_eq!(lint["fingerprint"], star);
    assert_eq!(lint["endpoint"], Value::Null);
    let n1 = all
        .iter()
        .find(|f| f["kind"] == "n_plus_one")
        .unwrap_or_else(|| panic!("an N+1 in {findings}"));
    assert_eq!(n1["rule"], "n_plus_one");
    assert_eq!(n1["endpoint"], "posts#index");
    assert!(
        n1["fix"]
            .as_str()
            .is_some_and(|f| f.contains("post_id = ANY($1)")),
        "{n1}"
    );
    assert!(
        n1["message"]
            .as_str()
            .is_some_and(|m| m.contains("5 executions")),
        "{n1}"
    );
    refused(addr, "/api/findings?kind=lint", 400, "no parameters").await;
}

/// `/api/endpoints`: both endpoints, by time and by calls.
async fn check_endpoints(addr: SocketAddr) {
    let by_calls = ok(addr, "/api/endpoints?order=calls").await;
    let rows = by_calls.as_array().expect("an array");
    assert_eq!(rows.len(), 2, "{by_calls}");
    has_keys(
        &rows[0],
        &[
            "endpoint", "calls", "total_ms", "mean_ms", "p99_ms", "queries",
        ],
    );
    assert_eq!(
        (&rows[0]["endpoint"], &rows[0]["calls"]),
        (&Value::from("posts#index"), &Value::from(6))
    );
    assert_eq!(
        (&rows[1]["endpoint"], &rows[1]["calls"]),
        (&Value::from("/users"), &Value::from(3))
    );
    let by_mean = ok(addr, "/api/endpoints?order=mean&limit=1").await;
    assert_eq!(by_mean.as_array().map(Vec::len), Some(1));
    assert_eq!(by_mean[0]["endpoint"], "/users");
    refused(addr, "/api/endpoints?order=errors", 400, "order must be").await;
}

/// `/api/slow`: the 800 ms query, its literal redacted.
async fn check_slow(addr: SocketAddr) {
    let slow = ok(addr, "/api/slow?limit=10").await;
    assert_eq!(slow.as_array().map(Vec::len), Some(1), "{slow}");
    let entry = &slow[0];
    has_keys(entry, &["at", "fingerprint", "query", "params", "rows"]);
    assert_eq!(entry["duration_ms"], 800.0);
    assert_eq!(entry["location"], "primary");
    let query = entry["query"].as_str().unwrap_or_default();
    assert!(query.starts_with("SELECT name FROM users") && !query.contains('7'));
    refused(addr, "/api/slow?limit=many", 400, "limit must be").await;
}

/// `/api/queries/{fp}/history`: empty before a flush, the closed minute
/// window after one, filtered by `since`.
async fn check_history(addr: SocketAddr, rt: &Runtime, star: &str, t0: Instant) {
    let path = format!("/api/queries/{star}/history");
    assert_eq!(ok(addr, &path).await, Value::Array(Vec::new()));
    let insight = rt.insight.clone();
    let report = tokio::task::spawn_blocking(move || insight.flush(t0 + Duration::from_secs(120)))
        .await
        .expect("flush task")
        .expect("flush");
    assert!(report.windows_written >= 1, "{report:?}");
    let history = ok(addr, &format!("{path}?since=0")).await;
    let minute = history
        .as_array()
        .and_then(|h| h.iter().find(|p| p["granularity"] == "minute"))
        .unwrap_or_else(|| panic!("a minute window in {history}"));
    assert_eq!(minute["calls"], 3);
    has_keys(minute, &["start", "start_unix", "total_ms", "p99_ms"]);
    let tomorrow = SystemTime::now() + Duration::from_secs(86_400);
    let secs = tomorrow
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let later = ok(addr, &format!("{path}?since={secs}")).await;
    assert_eq!(later, Value::Array(Vec::new()));
    refused(
        addr,
        &format!("{path}?since=yesterday"),
        400,
        "whole seconds",
    )
    .await;
}
