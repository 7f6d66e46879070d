//! CancelRequest through pgpilot: a client's cancel reaches the server
//! running its query, and only that one. A cancel for a client that holds
//! no server (idle between transactions), or with a wrong key, must never
//! reach the server another client is using now.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::hand_client::{self as hand, HandClient};
use common::Env;
use pgpilot_testkit::{APP_DB, APP_PASSWORD, APP_USER};
use tokio_postgres::NoTls;

/// Waits until a query matching `pattern` is running on the server
/// (seen from a direct connection), so a cancel cannot arrive before it.
async fn wait_until_running(env: &Env, pattern: &str) {
    let direct = env.direct().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = direct
            .query_one(
                "select count(*) from pg_stat_activity where state = 'active' and query like $1",
                &[&pattern],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{pattern} never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_query_and_the_session_goes_on() {
    let env = Env::start("max_size = 2").await;
    let c = env.client().await;
    let token = c.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move {
        let r = c.simple_query("select pg_sleep(30)").await;
        (c, r)
    });
    wait_until_running(&env, "select pg_sleep(30)%").await;
    token.cancel_query(NoTls).await.expect("cancel sent");
    let (c, result) = tokio::time::timeout(Duration::from_secs(2), sleeper)
        .await
        .expect("the cancelled query returns within 2 s")
        .unwrap();
    let err = result.expect_err("cancelled");
    assert_eq!(err.code().map(|s| s.code()), Some("57014"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(env.proxy.rt.counters.cancels_forwarded.load(Relaxed), 1);

    let v: i32 = c.query_one("select 5", &[]).await.unwrap().get(0);
    assert_eq!(v, 5, "the session works after the cancel");

    // A cancel inside a transaction aborts it; ROLLBACK brings it back.
    c.batch_execute("begin").await.unwrap();
    let token = c.cancel_token();
    let sleeper = tokio::spawn(async move {
        let r = c.query("select pg_sleep(30), 'in-tx'", &[]).await;
        (c, r)
    });
    wait_until_running(&env, "select pg_sleep(30), 'in-tx'%").await;
    token.cancel_query(NoTls).await.expect("cancel sent");
    let (c, result) = tokio::time::timeout(Duration::from_secs(2), sleeper)
        .await
        .expect("returns within 2 s")
        .unwrap();
    assert_eq!(result.unwrap_err().code().map(|s| s.code()), Some("57014"));
    let err = c.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(err.code().map(|s| s.code()), Some("25P02"));
    c.batch_execute("rollback").await.unwrap();
    let v: i32 = c.query_one("select 6", &[]).await.unwrap().get(0);
    assert_eq!(v, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_for_an_idle_client_does_not_hit_the_next_user_of_its_server() {
    // One server: B runs on the very connection A used a moment ago.
    let env = Env::start("max_size = 1").await;
    let a = env.client().await;
    let v: i32 = a.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 1);
    let b = env.client().await;
    let sleeper = tokio::spawn(async move {
        b.query_one("select pg_sleep(2), 'b-done'::text", &[])
            .await
            .map(|r| r.get::<_, String>(1))
    });
    wait_until_running(&env, "select pg_sleep(2), 'b-done'%").await;
    a.cancel_token()
        .cancel_query(NoTls)
        .await
        .expect("cancel sent");
    let got = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("B finishes")
        .unwrap()
        .expect("B's query was not cancelled");
    assert_eq!(got, "b-done");
    assert_eq!(
        env.proxy.rt.counters.cancels_forwarded.load(Relaxed),
        0,
        "nothing to cancel for an idle client"
    );
    let v: i32 = a.query_one("select 2", &[]).await.unwrap().get(0);
    assert_eq!(v, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_a_wrong_key_does_nothing() {
    let env = Env::start("max_size = 2").await;
    let addr = env.proxy.addr;
    let mut c = HandClient::connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    c.send(|b| pgpilot_wire::frontend::query(b, "select pg_sleep(1), 'finished'"))
        .await;
    wait_until_running(&env, "select pg_sleep(1), 'finished'%").await;
    hand::send_cancel(addr, c.pid, c.key.wrapping_add(1)).await;
    hand::send_cancel(addr, c.pid.wrapping_add(1), c.key).await;
    let r = c.until_ready().await;
    assert_eq!(hand::error_codes(&r), Vec::<String>::new(), "{r:?}");
    assert_eq!(hand::tags(&r), "TDCZ", "{r:?}");
    assert_eq!(env.proxy.rt.counters.cancels_forwarded.load(Relaxed), 0);

    // The same request with the right key does cancel: the test above
    // could tell the difference.
    c.send(|b| pgpilot_wire::frontend::query(b, "select pg_sleep(30), 'cancelled'"))
        .await;
    wait_until_running(&env, "select pg_sleep(30), 'cancelled'%").await;
    hand::send_cancel(addr, c.pid, c.key).await;
    let r = c.until_ready().await;
    assert_eq!(hand::error_codes(&r), ["57014"], "{r:?}");
    assert_eq!(env.proxy.rt.counters.cancels_forwarded.load(Relaxed), 1);
}
