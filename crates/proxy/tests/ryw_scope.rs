//! Read-your-writes wider than one connection: with `routing.ryw_scope =
//! "trace"` a write made on one connection is seen by reads on *another*
//! connection of the same sqlcommenter trace; with `"token"` by connections
//! that set the same `pgpilot.ryw_token`. A replica with an apply delay
//! makes any miss visible, and connections of other traces/tokens still
//! read from the replica (the scope does not widen to everyone).

mod common;

use std::time::Duration;

use common::{Env, RoutingSetup};
use pgpilot_testkit::ClusterOptions;

const CYCLES: i32 = 60;

fn setup(scope: &str) -> RoutingSetup {
    RoutingSetup {
        cluster: ClusterOptions {
            replica_apply_delay: Some(Duration::from_millis(300)),
            ..ClusterOptions::default()
        },
        routing: format!("ryw_scope = \"{scope}\""),
        ..RoutingSetup::default()
    }
}

/// Writes on `writer`, reads on `reader` (tagged by `tag(i)`); returns
/// (stale reads, reads on the replica) and the reads of an unrelated
/// connection that landed on the replica.
async fn cycles(
    env: &Env,
    writer: &tokio_postgres::Client,
    reader: &tokio_postgres::Client,
    other: &tokio_postgres::Client,
    tag: impl Fn(i32) -> String,
) -> (u32, u32, u32) {
    let replica = i32::from(env.replica_port());
    let (mut stale, mut on_replica, mut other_on_replica) = (0, 0, 0);
    for i in 0..CYCLES {
        writer
            .simple_query(&format!("INSERT INTO scoped VALUES ({i}) {}", tag(i)))
            .await
            .unwrap();
        let row = reader
            .query_one(
                &format!(
                    "SELECT inet_server_port(), count(*) FROM scoped WHERE id = {i} {}",
                    tag(i)
                ),
                &[],
            )
            .await
            .unwrap();
        let (port, n): (i32, i64) = (row.get(0), row.get(1));
        stale += u32::from(n != 1);
        on_replica += u32::from(port == replica);
        let row = other
            .query_one(
                &format!("SELECT inet_server_port() {}", tag(i + 10_000)),
                &[],
            )
            .await
            .unwrap();
        other_on_replica += u32::from(row.get::<_, i32>(0) == replica);
    }
    (stale, on_replica, other_on_replica)
}

async fn prepare(env: &Env) {
    let c = env.client().await;
    c.batch_execute("CREATE TABLE scoped (id int)")
        .await
        .unwrap();
    tokio::task::block_in_place(|| env.cluster.wait_replica_caught_up()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_seen_across_connections_of_one_trace() {
    let env = Env::start_routed(setup("trace")).await;
    prepare(&env).await;
    let (writer, reader, other) = (env.client().await, env.client().await, env.client().await);
    // Each cycle is its own trace: the reader shares it with the writer.
    let tag = |i: i32| format!("/*traceparent='00-{:032x}-b7ad6b7169203331-01'*/", i + 1);
    let (stale, on_replica, other_on_replica) = cycles(&env, &writer, &reader, &other, tag).await;
    println!("trace scope: {CYCLES} cycles, stale {stale}, reader on replica {on_replica}, unrelated trace on replica {other_on_replica}");
    assert_eq!(stale, 0, "a read in the writer's trace missed its write");
    assert!(
        other_on_replica >= CYCLES as u32 / 2,
        "other traces should still use the replica: {other_on_replica}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_seen_across_connections_sharing_a_token() {
    let env = Env::start_routed(setup("token")).await;
    prepare(&env).await;
    let (writer, reader, other) = (env.client().await, env.client().await, env.client().await);
    writer
        .batch_execute("SET pgpilot.ryw_token = 'user-42'")
        .await
        .unwrap();
    reader
        .batch_execute("SET pgpilot.ryw_token = 'user-42'")
        .await
        .unwrap();
    other
        .batch_execute("SET pgpilot.ryw_token = 'user-7'")
        .await
        .unwrap();
    let (stale, on_replica, other_on_replica) =
        cycles(&env, &writer, &reader, &other, |_| String::new()).await;
    println!("token scope: {CYCLES} cycles, stale {stale}, reader on replica {on_replica}, other token on replica {other_on_replica}");
    assert_eq!(stale, 0, "a read under the writer's token missed its write");
    assert!(
        other_on_replica >= CYCLES as u32 / 2,
        "other tokens should still use the replica: {other_on_replica}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_scope_does_not_cover_other_connections() {
    // The control: with the default scope, the reader is another
    // connection and may read from the lagging replica (and miss).
    let env = Env::start_routed(setup("connection")).await;
    prepare(&env).await;
    let (writer, reader, other) = (env.client().await, env.client().await, env.client().await);
    let (stale, _, _) = cycles(&env, &writer, &reader, &other, |_| String::new()).await;
    println!("connection scope: {CYCLES} cycles, stale reads on another connection {stale}");
    assert!(
        stale > 0,
        "with a 300 ms apply delay some cross-connection reads must miss"
    );
}
