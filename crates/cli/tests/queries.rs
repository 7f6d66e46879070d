//! `pgpilot queries` against a stand-in admin API: a std `TcpListener`
//! thread serving canned JSON (one answer chunked, as hyper may send it),
//! the real binary run against it, and its tables checked line by line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;

const QUERIES: &str = r#"[
 {"fingerprint":"a1b2c3d4e5f60718","query":"SELECT name FROM users WHERE id = $1","calls":1,
  "errors":0,"rows":1,"total_ms":800.0,"mean_ms":800.0,"p50_ms":801.0,"p95_ms":801.0,"p99_ms":801.0},
 {"fingerprint":"00000000000000ff","query":"SELECT body\n  FROM comments WHERE post_id = $1 AND created_at > $2 AND deleted_at IS NULL ORDER BY created_at DESC","calls":5,
  "errors":0,"rows":5,"total_ms":5.25,"mean_ms":1.05,"p50_ms":1.0,"p95_ms":1.5,"p99_ms":1.5}
]"#;

const FINDINGS: &str = r#"[
 {"kind":"n_plus_one","rule":"n_plus_one","fingerprint":"00000000000000ff","endpoint":"posts#index",
  "severity":"warning","message":"N+1: 5 executions","fix":"WHERE post_id = ANY($1)","count":1},
 {"kind":"lint","rule":"select_star","fingerprint":"a1b2c3d4e5f60718","endpoint":null,
  "severity":"info","message":"SELECT * reads every column","fix":"Name the columns","count":1}
]"#;

const ENDPOINTS: &str = r#"[
 {"endpoint":"posts#index","calls":6,"errors":0,"total_ms":6.5,"mean_ms":1.08,"max_ms":2.0,
  "p50_ms":1.0,"p95_ms":1.5,"p99_ms":2.0,"queries":[]}
]"#;

const SLOW: &str = r#"[
 {"at":"2024-01-01T00:00:00Z","fingerprint":"a1b2c3d4e5f60718","query":"SELECT name FROM users WHERE id = $1",
  "params":[],"duration_ms":800.0,"rows":1,"error":null,"endpoint":null,"trace_id":null,"location":"primary"}
]"#;

/// Serves `count` requests; sends each request's target on the channel.
fn serve(
    count: usize,
    reply: fn(&str) -> (u16, String, bool),
) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { return };
            let target = read_target(&mut stream);
            let (status, body, chunked) = reply(&target);
            let _ = tx.send(target);
            let _ = stream.write_all(&response(status, &body, chunked));
        }
    });
    (addr, rx)
}

/// Reads the request head; returns the request target.
fn read_target(stream: &mut std::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    head.split(' ').nth(1).unwrap_or_default().to_owned()
}

fn response(status: u16, body: &str, chunked: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n");
    if chunked {
        out.push_str("transfer-encoding: chunked\r\n\r\n");
        let (a, b) = body.split_at(body.len() / 2);
        for part in [a, b] {
            out.push_str(&format!("{:x}\r\n{part}\r\n", part.len()));
        }
        out.push_str("0\r\n\r\n");
    } else {
        out.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    }
    out.into_bytes()
}

fn canned(target: &str) -> (u16, String, bool) {
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/api/queries" => (200, QUERIES.to_owned(), false),
        "/api/findings" => (200, FINDINGS.to_owned(), true),
        "/api/endpoints" => (200, ENDPOINTS.to_owned(), false),
        "/api/slow" => (200, SLOW.to_owned(), true),
        _ => (404, r#"{"error":"not found"}"#.to_owned(), false),
    }
}

fn pgpilot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgpilot"))
        .args(args)
        .env("COLUMNS", "100")
        .env_remove("PGPILOT_ADMIN")
        .output()
        .expect("run pgpilot")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "pgpilot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

#[test]
fn prints_queries_findings_endpoints_and_slow_log_as_tables() {
    let (addr, requests) = serve(4, canned);
    let admin = addr.to_string();
    let out = pgpilot(&[
        "queries",
        "--admin",
        &admin,
        "--order",
        "p99",
        "--limit",
        "5",
        "--findings",
        "--endpoints",
        "--slow",
    ]);
    let text = stdout(&out);
    let targets: Vec<String> = requests.try_iter().collect();
    assert_eq!(
        targets,
        [
            "/api/queries?order=p99&limit=5",
            "/api/findings",
            "/api/endpoints?order=p99&limit=5",
            "/api/slow?limit=5",
        ]
    );
    let lines: Vec<&str> = text.lines().collect();
    let expected_top = [
        "Top queries by p99",
        "FINGERPRINT       CALLS  TOTAL MS  MEAN MS   P50   P95   P99  QUERY",
        "a1b2c3d4e5f60718      1       800      800   801   801   801  SELECT name FROM users WHERE id = $1",
    ];
    assert_eq!(lines[..3], expected_top, "\n{text}");
    // Newlines collapse and the long text is cut to 100 columns.
    let long = lines[3];
    assert!(
        long.starts_with("00000000000000ff      5      5.25     1.05  1.00  1.50  1.50  SELECT body FROM comments"),
        "{long}"
    );
    assert_eq!(long.chars().count(), 100, "{long}");
    assert!(long.ends_with('…'), "{long}");
    for line in &lines {
        assert!(line.chars().count() <= 100, "too wide: {line}");
    }
    let findings = section(&text, "Findings");
    assert_eq!(
        findings[1..],
        [
            "KIND        RULE         FINGERPRINT       ENDPOINT     MESSAGE",
            "n_plus_one  n_plus_one   00000000000000ff  posts#index  N+1: 5 executions",
            "  fix: WHERE post_id = ANY($1)",
            "lint        select_star  a1b2c3d4e5f60718  -            SELECT * reads every column",
            "  fix: Name the columns",
        ]
    );
    let endpoints = section(&text, "Endpoints by p99");
    assert_eq!(
        endpoints[1..],
        [
            "CALLS  TOTAL MS  MEAN MS   P95   P99  ERRORS  ENDPOINT",
            "    6      6.50     1.08  1.50  2.00       0  posts#index",
        ]
    );
    let slow = section(&text, "Slow queries, newest first");
    assert_eq!(
        slow[2],
        "2024-01-01T00:00:00Z  800     1  a1b2c3d4e5f60718  -         SELECT name FROM users WHERE id = $1"
    );
}

/// The lines from `title` to the next blank line.
fn section<'a>(text: &'a str, title: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != title)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(!lines.is_empty(), "no section {title:?} in:\n{text}");
    lines
}

#[test]
fn only_the_queries_table_by_default() {
    let (addr, requests) = serve(1, canned);
    let text = stdout(&pgpilot(&[
        "queries",
        "--admin",
        &format!("http://{addr}/"),
    ]));
    assert_eq!(
        requests.try_iter().collect::<Vec<_>>(),
        ["/api/queries?order=total_time&limit=20"]
    );
    assert!(
        text.starts_with("Top queries by total time\nFINGERPRINT"),
        "{text}"
    );
    assert!(!text.contains("Findings"), "{text}");
}

#[test]
fn api_errors_and_unreachable_admin_fail_with_the_reason() {
    let (addr, _requests) = serve(1, |_| {
        (
            400,
            r#"{"error":"limit must be an integer from 1 to 10000"}"#.into(),
            true,
        )
    });
    let out = pgpilot(&["queries", "--admin", &addr.to_string()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HTTP 400: limit must be an integer from 1 to 10000"),
        "{stderr}"
    );

    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let out = pgpilot(&["queries", "--admin", &closed.to_string()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot query the admin API"), "{stderr}");

    let out = pgpilot(&["queries", "--order", "fastest"]);
    assert!(!out.status.success(), "clap refuses an unknown order");
}
