//! Query insight fed by real traffic: latency percentiles match injected
//! `pg_sleep` durations, rows and errors are counted per fingerprint,
//! sqlcommenter endpoints are attributed, an N+1 loop is found with its
//! endpoint and fix, lints fire on planted statements, and a clean workload
//! yields no findings.

mod common;

use std::time::{Duration, Instant};

use common::Env;
use pgpilot_insight::TopBy;

fn fingerprint_of<'a>(
    views: &'a [pgpilot_insight::QueryView],
    needle: &str,
) -> &'a pgpilot_insight::QueryView {
    views
        .iter()
        .find(|v| v.query.contains(needle))
        .unwrap_or_else(|| {
            panic!(
                "no fingerprint for {needle:?} in {:?}",
                views.iter().map(|v| &v.query).collect::<Vec<_>>()
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_rows_errors_and_endpoints_come_from_real_traffic() {
    let env = Env::start("max_size = 2").await;
    let c = env.client().await;
    // 20 sleeps of 10 ms and one of 200 ms: p50 ≈ 10 ms, p99 ≈ 200 ms.
    for _ in 0..20 {
        c.simple_query("SELECT pg_sleep(0.01) /*route='%2Fslow',controller='reports'*/")
            .await
            .unwrap();
    }
    c.simple_query("SELECT pg_sleep(0.2) /*route='%2Fslow',controller='reports'*/")
        .await
        .unwrap();
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let stmt = c.prepare("INSERT INTO t VALUES ($1, 'x')").await.unwrap();
    for i in 0..5 {
        c.execute(&stmt, &[&i]).await.unwrap();
    }
    assert!(c.execute(&stmt, &[&1i32]).await.is_err(), "duplicate key");
    let rows = c
        .query("SELECT id FROM t WHERE id < $1", &[&3i32])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);

    let insight = &env.proxy.rt.insight;
    let top = insight.top(TopBy::Calls, 50, Instant::now());
    let sleep = fingerprint_of(&top, "pg_sleep");
    assert_eq!(sleep.calls, 21, "literals differ only: one fingerprint");
    assert!(
        (9.0..40.0).contains(&sleep.p50_ms),
        "p50 {} ms",
        sleep.p50_ms
    );
    assert!(
        (190.0..400.0).contains(&sleep.p99_ms),
        "p99 {} ms",
        sleep.p99_ms
    );
    assert!(sleep.total_ms >= 400.0, "total {} ms", sleep.total_ms);
    let insert = fingerprint_of(&top, "INSERT INTO t");
    assert_eq!(insert.calls, 6);
    let select = fingerprint_of(&top, "SELECT id FROM t");
    assert_eq!(select.calls, 1);
    let json = serde_json::to_value(&top).unwrap();
    let insert_json = json
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["query"].as_str().unwrap().contains("INSERT INTO t"))
        .unwrap();
    assert_eq!(insert_json["errors"], 1, "{insert_json}");
    assert_eq!(serde_json::to_value(select).unwrap()["rows"], 3);
    // A slow extended-protocol statement: its parameters reach the slow
    // log, redacted by default.
    c.query(
        "SELECT pg_sleep($1::float8), $2::text",
        &[&0.55f64, &"secret-value"],
    )
    .await
    .unwrap();
    let slow = insight.slow_queries(10);
    let entry = slow
        .iter()
        .find(|e| e.query.contains("$2::text"))
        .unwrap_or_else(|| panic!("not in the slow log: {slow:?}"));
    assert_eq!(
        entry.params,
        vec![Some(pgpilot_insight::slowlog::REDACTED.to_owned()); 2],
        "{entry:?}"
    );
    assert!(!format!("{entry:?}").contains("secret-value"));
    let endpoints = insight.endpoints(pgpilot_insight::EndpointOrder::TotalTime, 10);
    assert_eq!(
        endpoints.first().map(|e| e.endpoint.as_str()),
        Some("/slow"),
        "{endpoints:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_plus_one_and_lints_are_found_and_a_clean_workload_is_quiet() {
    let env = Env::start("max_size = 2").await;
    let c = env.client().await;
    c.batch_execute(
        "CREATE TABLE users (id int PRIMARY KEY, name text);
         CREATE TABLE posts (id int PRIMARY KEY, user_id int, title text);
         INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 20) g;
         INSERT INTO posts SELECT g, g % 20 + 1, 't' || g FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    // A clean workload first: parameterized point reads with LIMIT.
    let one = c
        .prepare("SELECT name FROM users WHERE id = $1")
        .await
        .unwrap();
    for i in 1..=3 {
        c.query_one(&one, &[&i]).await.unwrap();
    }
    let trace = "traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'";
    let quiet = env.proxy.rt.insight.findings();
    assert!(
        quiet.is_empty(),
        "clean workload produced findings: {quiet:?}"
    );

    // The N+1: one list query, then one query per row, inside one trace.
    let users = c
        .query(
            &format!("SELECT id FROM users ORDER BY id LIMIT 10 /*route='%2Fusers',{trace}*/"),
            &[],
        )
        .await
        .unwrap();
    let per_user = c
        .prepare(&format!(
            "SELECT title FROM posts WHERE user_id = $1 /*route='%2Fusers',{trace}*/"
        ))
        .await
        .unwrap();
    for u in &users {
        let id: i32 = u.get(0);
        c.query(&per_user, &[&id]).await.unwrap();
    }
    c.simple_query("SELECT 1").await.unwrap(); // ends the run
                                               // Planted lints.
    c.simple_query("SELECT * FROM users ORDER BY random() LIMIT 1")
        .await
        .unwrap();
    c.simple_query("UPDATE posts SET title = title")
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    let findings = loop {
        let f = env.proxy.rt.insight.findings();
        if f.iter().any(|x| x.rule == "n_plus_one") || Instant::now() > deadline {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let n1 = findings
        .iter()
        .find(|f| f.rule == "n_plus_one")
        .unwrap_or_else(|| panic!("no N+1 in {findings:?}"));
    assert_eq!(n1.endpoint.as_deref(), Some("/users"));
    assert!(
        n1.fix.contains("ANY") || n1.fix.to_lowercase().contains("join"),
        "fix: {}",
        n1.fix
    );
    for rule in ["select_star", "order_by_random", "update_without_where"] {
        assert!(
            findings.iter().any(|f| f.rule == rule),
            "no {rule} in {findings:?}"
        );
    }
}

/// A statement's recorded duration is its run on the server: not the time
/// it waited for a pooled connection, nor the client's pause between its
/// Bind and its Execute (one clock reading serves each socket event, so a
/// stale reading would show up here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_exclude_the_pool_wait_and_client_pauses() {
    use common::hand_client::{bind, execute, parse, sync, HandClient};
    let env = Env::start("max_size = 1\ncheckout_timeout = \"5s\"").await;
    let holder = env.client().await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let waiter = env.client().await;
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let q = "SELECT relname FROM pg_class LIMIT 1";
        waiter.simple_query(q).await.unwrap();
        started.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    let waited = waiting.await.unwrap();
    assert!(
        waited >= Duration::from_millis(250),
        "it did wait: {waited:?}"
    );

    let mut c = HandClient::connect(env.proxy.addr, "app", "app-secret", "app").await;
    c.send(|b| {
        parse(b, "", "SELECT oid FROM pg_class LIMIT 1");
        bind(b, "");
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.send(|b| {
        execute(b);
        sync(b);
    })
    .await;
    c.until_ready().await;

    let top = env.proxy.rt.insight.top(TopBy::Calls, 50, Instant::now());
    // (Distinct fingerprints: pg_query's fingerprint ignores aliases.)
    for needle in ["SELECT relname", "SELECT oid"] {
        let q = fingerprint_of(&top, needle);
        assert_eq!(q.calls, 1, "{needle}");
        assert!(q.p99_ms < 150.0, "{needle}: {} ms recorded", q.p99_ms);
    }
}
