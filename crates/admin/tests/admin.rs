//! End to end: a real PostgreSQL primary from the test kit, the proxy in
//! front of it, a few queries through the proxy with tokio-postgres, then
//! the admin API over raw HTTP/1.1 — health, metrics, pools, 404 — and
//! readiness turning to 503 once the primary is stopped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pgpilot_proxy::RunningProxy;
use pgpilot_testkit::{Cluster, APP_DB, APP_PASSWORD, APP_USER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::NoTls;

/// Queries run through the proxy, each its own transaction.
const QUERIES: u64 = 5;

/// A parsed HTTP response.
struct Reply {
    status: u16,
    headers: String,
    body: String,
}

/// Sends `GET path` with `Connection: close` and reads the whole response.
async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, None).await
}

/// Sends `method path` (with a JSON body when given) and reads the response.
async fn request(addr: SocketAddr, method: &str, path: &str, json: Option<&str>) -> Reply {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to admin API");
    let body = json.unwrap_or("");
    let content = if json.is_some() {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{content}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header/body separator");
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = headers.to_ascii_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// Decodes a chunked body (hyper may choose chunking for streamed bodies).
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        s = &rest[size + 2..];
    }
}

/// The value of the sample line that starts with `series` (name and labels).
fn sample(metrics: &str, series: &str) -> f64 {
    let line = metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"));
    line[series.len() + 1..]
        .parse()
        .expect("numeric sample value")
}

async fn start_proxy(cluster: &Cluster) -> RunningProxy {
    let toml = format!(
        r#"
listen = "127.0.0.1:0"

[upstream]
primary = "127.0.0.1:{port}"

[[users]]
name = "{APP_USER}"
auth = "scram-sha-256"
password = "{APP_PASSWORD}"
"#,
        port = cluster.primary.port
    );
    let settings =
        pgpilot_config::from_toml_str(&toml).unwrap_or_else(|e| panic!("test settings: {e}"));
    RunningProxy::start(settings).await.expect("proxy starts")
}

async fn run_queries(proxy: &RunningProxy) -> tokio_postgres::Client {
    let conn_str = format!(
        "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}",
        proxy.addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&conn_str, NoTls)
        .await
        .expect("login through the proxy");
    tokio::spawn(connection);
    for i in 0..QUERIES {
        let rows = client
            .simple_query(&format!("SELECT {i}"))
            .await
            .expect("query through the proxy");
        assert!(!rows.is_empty());
    }
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_reports_a_live_proxy_and_a_dead_primary() {
    let cluster = Cluster::primary_only();
    let proxy = start_proxy(&cluster).await;
    let _client = run_queries(&proxy).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let admin = listener.local_addr().expect("admin addr");
    let server = tokio::spawn(pgpilot_admin::serve(proxy.rt.clone(), listener));

    let live = get(admin, "/health/live").await;
    assert_eq!(
        (live.status, live.body.as_str()),
        (200, r#"{"status":"ok"}"#)
    );

    let ready = get(admin, "/health/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(ready.body.contains(r#""status":"ready""#), "{}", ready.body);
    let primary = format!("127.0.0.1:{}", cluster.primary.port);
    assert!(ready.body.contains(&primary), "{}", ready.body);

    let metrics = get(admin, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        metrics.headers
    );
    let labels = format!(
        r#"{{database="{APP_DB}",user="{APP_USER}",server="127.0.0.1:{}"}}"#,
        cluster.primary.port
    );
    let xacts = sample(
        &metrics.body,
        &format!("pgpilot_pool_transactions_total{labels}"),
    );
    assert!(
        xacts >= QUERIES as f64,
        "{xacts} transactions counted for {QUERIES} queries"
    );
    assert!(sample(&metrics.body, &format!("pgpilot_pool_sv_idle{labels}")) >= 1.0);
    assert!(sample(&metrics.body, "pgpilot_clients") >= 1.0);

    let pools = get(admin, "/api/pools").await;
    assert_eq!(pools.status, 200);
    let pools: serde_json::Value = serde_json::from_str(&pools.body).expect("pools JSON");
    assert_eq!(pools[0]["database"], APP_DB);
    assert_eq!(pools[0]["user"], APP_USER);
    assert!(pools[0]["xact_count"].as_u64() >= Some(QUERIES));

    let missing = get(admin, "/no/such/route").await;
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, r#"{"error":"not found"}"#)
    );

    cluster
        .stop_instance(&cluster.primary)
        .expect("stop primary");
    let stopped = Instant::now();
    let unavailable = loop {
        let reply = get(admin, "/health/ready").await;
        if reply.status == 503 {
            break reply;
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(
            stopped.elapsed() < Duration::from_millis(2500),
            "still ready 2.5 s after the primary stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        unavailable.body.contains(r#""status":"unavailable""#),
        "{}",
        unavailable.body
    );
    assert!(
        unavailable.body.contains(r#""error":"#),
        "{}",
        unavailable.body
    );

    let live = get(admin, "/health/live").await;
    assert_eq!(live.status, 200, "liveness does not depend on the primary");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_can_be_listed_added_drained_and_removed() {
    let cluster = Cluster::primary_only();
    let proxy = start_proxy(&cluster).await;
    let _client = run_queries(&proxy).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let admin = listener.local_addr().expect("admin addr");
    tokio::spawn(pgpilot_admin::serve(proxy.rt.clone(), listener));

    let list = get(admin, "/api/backends").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let primary = format!("127.0.0.1:{}", cluster.primary.port);
    assert!(
        list.body
            .contains(&format!(r#""addr":"{primary}","role":"primary""#)),
        "{}",
        list.body
    );

    // A replica nobody listens on: it is added, then found unhealthy by the monitor.
    let added = request(
        admin,
        "POST",
        "/api/backends",
        Some(r#"{"addr":"127.0.0.1:1","role":"replica"}"#),
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.body);
    let id: u32 = added
        .body
        .split(r#""id":"#)
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .expect("id");
    let dup = request(
        admin,
        "POST",
        "/api/backends",
        Some(r#"{"addr":"127.0.0.1:1"}"#),
    )
    .await;
    assert_eq!(dup.status, 409);
    let bad = request(
        admin,
        "POST",
        "/api/backends",
        Some(r#"{"addr":"127.0.0.1:1","role":"leader"}"#),
    )
    .await;
    assert_eq!(bad.status, 400);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body = get(admin, "/api/backends").await.body;
        if body.contains(r#""addr":"127.0.0.1:1","role":"replica","healthy":false"#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "monitor never marked the dead replica unhealthy: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Reads still work: routing skips the unhealthy replica.
    let conn_str = format!(
        "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}",
        proxy.addr.port()
    );
    let (c, conn) = tokio_postgres::connect(&conn_str, NoTls)
        .await
        .expect("login");
    tokio::spawn(conn);
    c.simple_query("SELECT 1")
        .await
        .expect("read served by the primary");

    let drained = request(admin, "POST", &format!("/api/backends/{id}/drain"), None).await;
    assert_eq!(drained.status, 200);
    assert!(
        drained.body.contains(r#""draining":true"#),
        "{}",
        drained.body
    );
    let metrics = get(admin, "/metrics").await.body;
    assert!(
        metrics.contains(r#"pgpilot_server_draining{server="127.0.0.1:1",role="replica"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            r#"pgpilot_server_up{{server="{primary}",role="primary"}} 1"#
        )),
        "{metrics}"
    );

    let removed = request(admin, "DELETE", &format!("/api/backends/{id}"), None).await;
    assert_eq!(removed.status, 200);
    assert!(!get(admin, "/api/backends")
        .await
        .body
        .contains("127.0.0.1:1\""));
    assert_eq!(
        request(admin, "DELETE", &format!("/api/backends/{id}"), None)
            .await
            .status,
        404
    );
    // On-demand EXPLAIN of a recorded fingerprint runs on the primary.
    let queries = get(admin, "/api/queries?order=calls").await.body;
    let fp = queries
        .split(r#""fingerprint":""#)
        .nth(1)
        .and_then(|s| s.get(..16))
        .expect("a recorded fingerprint")
        .to_owned();
    let explained = request(admin, "POST", &format!("/api/queries/{fp}/explain"), None).await;
    assert_eq!(explained.status, 200, "{}", explained.body);
    assert!(explained.body.starts_with('['), "{}", explained.body);
    let unknown = request(admin, "POST", "/api/queries/00000000000000ff/explain", None).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
}
