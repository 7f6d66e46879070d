//! Protocol-level prepared statements through pgpilot in transaction mode:
//! one statement reused by many clients across many transactions and
//! servers, statements shared between clients, the client's own statement
//! namespace (Close then re-Parse, duplicate names, unknown names) and the
//! per-server LRU bound `max_prepared_statements`.

mod common;

use std::sync::atomic::Ordering::Relaxed;

use common::hand_client::{self as hand, HandClient};
use common::Env;
use pgpilot_testkit::{APP_DB, APP_PASSWORD, APP_USER};

/// Clients and transactions per client in the reuse test.
const CLIENTS: i64 = 50;
const TRANSACTIONS: i64 = 1_000;
/// Server connections in the reuse test.
const SERVERS: u64 = 5;

/// The single text every client prepares in the reuse test.
const REUSED: &str = "select $1::int8 * 1000000 + $2::int8";

/// Number of pgpilot statements on the server the next transaction runs
/// on, counted with a simple query (which prepares nothing itself).
async fn server_statements(c: &tokio_postgres::Client, like: &str) -> i64 {
    let like = like.replace('\'', "''");
    let sql = format!("select count(*) from pg_prepared_statements where statement like '{like}'");
    common::one_value(c, &sql)
        .await
        .expect("count is not null")
        .parse()
        .expect("count is a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_statement_reused_by_50_clients_across_1000_transactions() {
    let env = Env::start(&format!("max_size = {SERVERS}")).await;
    let mut tasks = Vec::new();
    for client_no in 0..CLIENTS {
        let conn_str = env.conn_str();
        tasks.push(tokio::spawn(async move {
            let mut c = common::connect(&conn_str).await;
            let stmt = c.prepare(REUSED).await.expect("prepare");
            for i in 0..TRANSACTIONS {
                let expected = client_no * 1_000_000 + i;
                let got: i64 = if i % 4 == 0 {
                    // An explicit BEGIN / query / COMMIT.
                    let tx = c.transaction().await.expect("begin");
                    let v = tx.query_one(&stmt, &[&client_no, &i]).await.expect("query");
                    tx.commit().await.expect("commit");
                    v.get(0)
                } else {
                    // An autocommit query: its own transaction, any server.
                    c.query_one(&stmt, &[&client_no, &i])
                        .await
                        .expect("query")
                        .get(0)
                };
                assert_eq!(got, expected, "client {client_no}, transaction {i}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }

    let rt = &env.proxy.rt;
    assert_eq!(
        rt.statements.len(),
        1,
        "every client's Parse of the same text maps to one proxy statement"
    );
    let reparses = rt.counters.prepared_reparses.load(Relaxed);
    assert!(
        reparses <= SERVERS,
        "a server is given the statement at most once: {reparses} hidden Parses for {SERVERS} servers"
    );
    let snap = &rt.backends.snapshots()[0];
    assert!(
        snap.xact_count >= (CLIENTS * TRANSACTIONS) as u64,
        "every query ran as its own pooled transaction: {snap:?}"
    );
    assert_eq!(snap.checkout_timeouts, 0, "{snap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_text_prepared_by_two_clients_is_one_server_statement() {
    // One server, so every query below runs on it.
    let env = Env::start("max_size = 1").await;
    let a = env.client().await;
    let b = env.client().await;
    let text = "select 'shared-statement'::text || $1::text";
    let sa = a.prepare(text).await.unwrap();
    let before = env.proxy.rt.statements.len();
    let sb = b.prepare(text).await.unwrap();
    assert_eq!(
        env.proxy.rt.statements.len(),
        before,
        "the second client's Parse reuses the first one's statement"
    );
    for i in 0..5 {
        let ra: String = a.query_one(&sa, &[&format!("a{i}")]).await.unwrap().get(0);
        let rb: String = b.query_one(&sb, &[&format!("b{i}")]).await.unwrap().get(0);
        assert_eq!(ra, format!("shared-statementa{i}"));
        assert_eq!(rb, format!("shared-statementb{i}"));
    }
    assert_eq!(
        server_statements(&a, "select 'shared-statement'%").await,
        1,
        "the server holds one copy of the statement for both clients"
    );
    assert_eq!(env.proxy.rt.counters.prepared_reparses.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_then_reprepare_same_name_with_other_text() {
    let env = Env::start("max_size = 2").await;
    let mut c = HandClient::connect(env.proxy.addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let r = c
        .round_trip(|b| {
            hand::parse(b, "s1", "select 'first'");
            hand::run(b, "s1");
        })
        .await;
    assert_eq!(hand::tags(&r), "12DCZ", "{r:?}");
    assert_eq!(hand::first_column(&r), ["first"]);

    let r = c
        .round_trip(|b| {
            hand::close(b, "s1");
            hand::sync(b);
        })
        .await;
    assert_eq!(hand::tags(&r), "3Z", "{r:?}");

    // The name is free again; Bind must now reach the new text.
    let r = c
        .round_trip(|b| {
            hand::parse(b, "s1", "select 'second'");
            hand::run(b, "s1");
        })
        .await;
    assert_eq!(hand::tags(&r), "12DCZ", "{r:?}");
    assert_eq!(hand::first_column(&r), ["second"]);

    // A later transaction (possibly on another server) still sees the new text.
    let r = c.round_trip(|b| hand::run(b, "s1")).await;
    assert_eq!(hand::first_column(&r), ["second"], "{r:?}");

    // Closing a name that does not exist is not an error (as in PostgreSQL).
    let r = c
        .round_trip(|b| {
            hand::close(b, "never-prepared");
            hand::sync(b);
        })
        .await;
    assert_eq!(hand::tags(&r), "3Z", "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_statement_name_is_42p05_and_session_continues() {
    let env = Env::start("max_size = 2").await;
    let mut c = HandClient::connect(env.proxy.addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let r = c
        .round_trip(|b| {
            hand::parse(b, "dup", "select 'original'");
            hand::sync(b);
        })
        .await;
    assert_eq!(hand::tags(&r), "1Z", "{r:?}");

    // Same name again, then a Bind/Execute the error must skip up to Sync.
    let r = c
        .round_trip(|b| {
            hand::parse(b, "dup", "select 'replacement'");
            hand::run(b, "dup");
        })
        .await;
    assert_eq!(hand::error_codes(&r), ["42P05"], "{r:?}");
    assert_eq!(
        hand::tags(&r),
        "EZ",
        "Bind/Execute after the error are skipped: {r:?}"
    );
    assert_eq!(hand::status(&r), 'I');

    // Also inside a pipeline whose first half the server is still answering.
    let r = c
        .round_trip(|b| {
            hand::parse(b, "other", "select 'other'");
            hand::parse(b, "dup", "select 'replacement'");
            hand::run(b, "dup");
        })
        .await;
    assert_eq!(hand::tags(&r), "1EZ", "{r:?}");
    assert_eq!(hand::error_codes(&r), ["42P05"]);

    // The original statement is untouched and the session works.
    let r = c.round_trip(|b| hand::run(b, "dup")).await;
    assert_eq!(hand::first_column(&r), ["original"], "{r:?}");
    let r = c.round_trip(|b| hand::run(b, "other")).await;
    assert_eq!(hand::first_column(&r), ["other"], "{r:?}");
    let r = c.simple("select 40 + 2").await;
    assert_eq!(hand::first_column(&r), ["42"], "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_statement_name_is_26000_and_session_continues() {
    let env = Env::start("max_size = 2").await;
    let mut c = HandClient::connect(env.proxy.addr, APP_USER, APP_PASSWORD, APP_DB).await;

    let r = c.round_trip(|b| hand::run(b, "nope")).await;
    assert_eq!(hand::error_codes(&r), ["26000"], "Bind: {r:?}");
    assert_eq!(hand::tags(&r), "EZ", "{r:?}");

    let r = c
        .round_trip(|b| {
            hand::describe(b, "nope");
            hand::sync(b);
        })
        .await;
    assert_eq!(hand::error_codes(&r), ["26000"], "Describe: {r:?}");

    // Inside a transaction, while the client holds a server.
    let r = c.simple("begin").await;
    assert_eq!(hand::status(&r), 'T');
    let r = c
        .round_trip(|b| {
            hand::parse(b, "known", "select 'known'");
            hand::run(b, "known");
        })
        .await;
    assert_eq!(hand::first_column(&r), ["known"], "{r:?}");
    let r = c.round_trip(|b| hand::run(b, "nope")).await;
    assert_eq!(hand::error_codes(&r), ["26000"], "{r:?}");
    assert_eq!(hand::tags(&r), "EZ", "{r:?}");
    let r = c.simple("rollback").await;
    assert_eq!(hand::status(&r), 'I', "{r:?}");

    let r = c.round_trip(|b| hand::run(b, "known")).await;
    assert_eq!(hand::first_column(&r), ["known"], "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_statements_than_max_prepared_are_evicted_lru() {
    const LIMIT: i64 = 3;
    let env = Env::start(&format!("max_size = 1\nmax_prepared_statements = {LIMIT}")).await;
    let c = env.client().await;
    let mut stmts = Vec::new();
    for k in 0..10i64 {
        let text = format!("select 'lru-{k}:' || $1::int8");
        stmts.push(c.prepare(&text).await.unwrap());
    }
    for round in 0..5i64 {
        for (k, stmt) in stmts.iter().enumerate() {
            let got: String = c.query_one(stmt, &[&round]).await.unwrap().get(0);
            assert_eq!(got, format!("lru-{k}:{round}"));
        }
        let held = server_statements(&c, "select 'lru-%").await;
        assert!(
            (1..=LIMIT).contains(&held),
            "round {round}: the server holds {held} statements, limit {LIMIT}"
        );
    }
    let reparses = env.proxy.rt.counters.prepared_reparses.load(Relaxed);
    assert!(
        reparses >= 40,
        "cycling 10 statements through 3 slots re-prepares evicted ones: {reparses}"
    );
    // Every pgpilot statement on the server, not only these: still bounded.
    assert!(server_statements(&c, "%").await <= LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_parse_leaves_the_name_free() {
    let env = Env::start("max_size = 1").await;
    let mut c = HandClient::connect(env.proxy.addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let r = c
        .round_trip(|b| {
            hand::parse(b, "s", "selec 'typo'");
            hand::sync(b);
        })
        .await;
    assert_eq!(hand::error_codes(&r), ["42601"], "{r:?}");

    // PostgreSQL never created "s": the name may be used, and a Bind to it
    // before that fails.
    let r = c.round_trip(|b| hand::run(b, "s")).await;
    assert_eq!(hand::error_codes(&r), ["26000"], "{r:?}");
    let r = c
        .round_trip(|b| {
            hand::parse(b, "s", "select 'fixed'");
            hand::run(b, "s");
        })
        .await;
    assert_eq!(hand::first_column(&r), ["fixed"], "{r:?}");

    // A Parse the server skipped after an earlier error in the same batch.
    let r = c
        .round_trip(|b| {
            hand::parse(b, "bad", "selec 'typo'");
            hand::parse(b, "skipped", "select 'skipped'");
            hand::sync(b);
        })
        .await;
    assert_eq!(hand::tags(&r), "EZ", "{r:?}");
    let r = c.round_trip(|b| hand::run(b, "skipped")).await;
    assert_eq!(hand::error_codes(&r), ["26000"], "{r:?}");
    let r = c
        .round_trip(|b| {
            hand::parse(b, "skipped", "select 'now parsed'");
            hand::run(b, "skipped");
        })
        .await;
    assert_eq!(hand::first_column(&r), ["now parsed"], "{r:?}");

    // The same when pgpilot answers the Parse itself because the (only)
    // server already has the text: the server would have skipped it.
    let r = c
        .round_trip(|b| {
            hand::parse(b, "warm", "select 'cached'");
            hand::sync(b);
        })
        .await;
    assert_eq!(hand::tags(&r), "1Z", "{r:?}");
    let r = c
        .round_trip(|b| {
            hand::parse(b, "bad", "selec 'typo'");
            hand::parse(b, "cached", "select 'cached'");
            hand::sync(b);
        })
        .await;
    assert_eq!(hand::tags(&r), "EZ", "{r:?}");
    let r = c.round_trip(|b| hand::run(b, "cached")).await;
    assert_eq!(hand::error_codes(&r), ["26000"], "{r:?}");
    let r = c
        .round_trip(|b| {
            hand::parse(b, "cached", "select 'cached'");
            hand::run(b, "cached");
        })
        .await;
    assert_eq!(hand::first_column(&r), ["cached"], "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_open_portals_of_the_transaction() {
    let env = Env::start("max_size = 1\nmax_prepared_statements = 2").await;
    let mut c = env.client().await;
    let cursor_stmt = c
        .prepare("select g from generate_series(1, 10) g")
        .await
        .unwrap();
    let others: Vec<_> = {
        let mut v = Vec::new();
        for k in 0..3 {
            v.push(c.prepare(&format!("select {k}")).await.unwrap());
        }
        v
    };
    let tx = c.transaction().await.unwrap();
    let portal = tx.bind(&cursor_stmt, &[]).await.unwrap();
    let first = tx.query_portal(&portal, 3).await.unwrap();
    assert_eq!(first.len(), 3);
    // Other statements in the same transaction push the cursor's statement
    // out of the server's LRU; its open portal must survive.
    for (k, stmt) in others.iter().enumerate() {
        let v: i32 = tx.query_one(stmt, &[]).await.unwrap().get(0);
        assert_eq!(v, k as i32);
    }
    let cursor_statements = common::one_value(
        tx.client(),
        "select count(*) from pg_prepared_statements where statement like 'select g from%'",
    )
    .await;
    assert_eq!(
        cursor_statements.as_deref(),
        Some("0"),
        "the cursor's statement was closed on the server"
    );
    let rest = tx.query_portal(&portal, 100).await.unwrap();
    let rest: Vec<i32> = rest.iter().map(|r| r.get(0)).collect();
    assert_eq!(rest, (4..=10).collect::<Vec<_>>());
    tx.commit().await.unwrap();
}
