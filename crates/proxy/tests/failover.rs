//! Servers failing under load behind pgpilot: the replica stopped and
//! restarted, the primary stopped and restarted, and the replica promoted
//! after the primary is gone (`routing.auto_role`). Each test keeps clients
//! running throughout and accounts for everything they saw: every error
//! with its SQLSTATE and when it came, every acknowledged write. Also: reads
//! retried on the primary when the replica refuses connections, and a
//! client idle in a transaction whose server goes away.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::routing::{read_sql, request, wait_for, Load, Seen, Server};
use common::{Env, RoutingSetup};
use pgpilot_pool::BreakerState;
use tokio::task::block_in_place;

/// Monitor settings that make failures visible within a second.
const FAST_MONITOR: &str = r#"
health_check_interval = "200ms"
health_check_timeout = "500ms"
ban_time = "1s"
"#;

/// How long the load runs before, during and after each outage.
const PHASE: Duration = Duration::from_millis(1500);

/// A unique id per client and request.
fn id(client: u32, n: u64) -> u64 {
    u64::from(client) * 1_000_000 + n
}

fn write_sql(client: u32, n: u64) -> String {
    format!(
        "insert into acked values ({}) returning inet_server_port()",
        id(client, n)
    )
}

/// Errors by (SQLSTATE, message), with how many and when the first and
/// last came.
fn error_summary(seen: &[Seen]) -> BTreeMap<(String, String), (usize, Duration, Duration)> {
    let mut errors: BTreeMap<(String, String), (usize, Duration, Duration)> = BTreeMap::new();
    for s in seen {
        if let Err(e) = &s.outcome {
            let entry = errors
                .entry((e.code.clone(), e.message.clone()))
                .or_insert((0, s.at, s.at));
            entry.0 += 1;
            entry.2 = s.at;
        }
    }
    errors
}

fn print_errors(title: &str, seen: &[Seen]) {
    println!("{title}: {} requests", seen.len());
    for ((code, message), (n, first, last)) in error_summary(seen) {
        println!("  {n} × {code} \"{message}\" (at {first:.2?} – {last:.2?})");
    }
}

/// When the first success of a request sent at or after `t` and answered
/// by `server` arrived. (A request sent earlier than another may be routed
/// later: only errors sent after this instant are certainly routed after
/// the success was.)
fn first_ok_on(env: &Env, seen: &[Seen], server: Server, t: Duration) -> Option<Duration> {
    seen.iter()
        .filter(|s| s.at >= t && matches!(s.outcome, Ok(p) if env.server_at(p) == server))
        .map(|s| s.at + s.took)
        .min()
}

/// Waits (bounded) until pgpilot's breaker for `server` is open; returns
/// when it saw it open, on the load's clock.
async fn breaker_opened(env: &Env, load: &Load, server: Server) -> Duration {
    let b = env.backend(server);
    wait_for("the breaker to open", || {
        matches!(b.breaker_state(Instant::now()), BreakerState::Open { .. })
    })
    .await;
    load.now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_stopped_under_load_costs_at_most_the_reads_in_flight_and_comes_back() {
    const CLIENTS: u32 = 6;
    let env = Env::start_routed(RoutingSetup::routing(FAST_MONITOR)).await;
    env.wait_routing_ready().await;
    let replica = env.cluster.expect_replica().clone();
    let load = Load::start(&env, CLIENTS, read_sql).await;

    tokio::time::sleep(PHASE).await;
    let stop_at = load.now();
    block_in_place(|| env.cluster.stop_instance(&replica)).expect("stop the replica");
    let stopped_at = load.now();
    let opened_at = breaker_opened(&env, &load, Server::Replica).await;
    tokio::time::sleep(PHASE).await;

    let restart_at = load.now();
    block_in_place(|| env.cluster.start_instance(&replica)).expect("restart the replica");
    let restarted_at = load.now();
    let r = env.backend(Server::Replica);
    wait_for("the replica back in rotation", || {
        r.breaker_state(Instant::now()) == BreakerState::Closed
    })
    .await;
    tokio::time::sleep(PHASE).await;
    let seen: Vec<Seen> = load.finish().await.into_iter().flatten().collect();

    print_errors("replica stopped under autocommit reads", &seen);
    let back = first_ok_on(&env, &seen, Server::Replica, restart_at);
    println!(
        "  stop {stop_at:.2?} → stopped {stopped_at:.2?}, breaker open by {opened_at:.2?}; \
         restart {restart_at:.2?} → up {restarted_at:.2?}, first read on the replica again {back:.2?}"
    );
    let errors: Vec<&Seen> = seen.iter().filter(|s| s.outcome.is_err()).collect();
    assert!(
        errors.len() <= CLIENTS as usize,
        "more errors ({}) than reads that can be in flight ({CLIENTS})",
        errors.len()
    );
    for s in &errors {
        let Err(e) = &s.outcome else { unreachable!() };
        assert!(
            e.code == "08006" && e.message.contains("the transaction was not completed"),
            "unclear error: {e:?}"
        );
        assert!(
            s.at + s.took >= stop_at && s.at <= stopped_at,
            "an error for a read sent at {:.2?}, outside the stop ({stop_at:.2?} – {stopped_at:.2?})",
            s.at
        );
    }
    let during = seen
        .iter()
        .filter(|s| s.at > stopped_at && s.at + s.took < restart_at);
    assert!(
        during
            .clone()
            .all(|s| matches!(s.outcome, Ok(p) if env.server_at(p) == Server::Primary)),
        "while the replica was down every read must be served by the primary"
    );
    assert!(
        during.count() > 10,
        "the load kept running during the outage"
    );
    let back = back.expect("reads return to the replica after its restart");
    assert!(
        back - restarted_at < Duration::from_secs(3),
        "back after {back:.2?}"
    );
}

/// A client idle inside a transaction whose server goes away hears about it
/// at its next statement (its transaction is gone), and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lost_while_client_idles_in_a_transaction_fails_its_next_statement() {
    let env = Env::start_routed(RoutingSetup::routing(FAST_MONITOR)).await;
    env.wait_routing_ready().await;
    let client = env.client().await;
    client.batch_execute("begin read only").await.unwrap();
    let port = request(&client, "select inet_server_port()").await;
    assert_eq!(port.map(|p| env.server_at(p)), Ok(Server::Replica));
    let replica = env.cluster.expect_replica().clone();
    block_in_place(|| env.cluster.stop_instance(&replica)).expect("stop the replica");

    let next = tokio::time::timeout(Duration::from_secs(5), request(&client, "select 1")).await;
    let next = next.expect("the next statement is answered, not left hanging");
    let e = next.expect_err("the transaction is gone");
    println!(
        "next statement in the lost transaction: {} {}",
        e.code, e.message
    );
    assert_eq!(e.code, "08006");
    let after = tokio::time::timeout(
        Duration::from_secs(5),
        request(&client, "select inet_server_port()"),
    )
    .await
    .expect("answered");
    assert_eq!(after.map(|p| env.server_at(p)), Ok(Server::Primary));
}

/// Ids of the writes the server acknowledged, from a write load's results.
fn acknowledged(per_client: &[Vec<Seen>]) -> Vec<u64> {
    let mut ids = Vec::new();
    for (c, seen) in per_client.iter().enumerate() {
        for (n, s) in seen.iter().enumerate() {
            if s.outcome.is_ok() {
                ids.push(id(c as u32, n as u64));
            }
        }
    }
    ids
}

/// Every acknowledged id that `client` (straight to a server) cannot find.
async fn missing(client: &tokio_postgres::Client, acked: &[u64]) -> Vec<u64> {
    let rows = client.query("select id from acked", &[]).await.unwrap();
    let present: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    acked
        .iter()
        .copied()
        .filter(|id| !present.contains(&(*id as i64)))
        .collect()
}

/// Asserts every failed request failed within a second with a SQLSTATE
/// that says the server is unavailable: pgpilot's connection failure
/// (08006, 08001), or the server's own refusal of a login while it shuts
/// down (57P03).
fn assert_fast_clear_failures(seen: &[Seen]) {
    for s in seen {
        if let Err(e) = &s.outcome {
            let pgpilot = e.code.starts_with("08") && e.message.starts_with("pgpilot: ");
            assert!(
                pgpilot || (e.code == "57P03" && !e.message.is_empty()),
                "unclear error: {e:?}"
            );
            assert!(
                s.took < Duration::from_secs(1),
                "a failed write took {:?}",
                s.took
            );
        }
    }
}

async fn acked_table(env: &Env) {
    env.direct()
        .await
        .batch_execute("create table acked (id bigint primary key)")
        .await
        .unwrap();
    block_in_place(|| env.cluster.wait_replica_caught_up()).expect("replica");
    env.wait_routing_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_stopped_under_load_fails_writes_fast_and_recovers_losing_no_acknowledged_write() {
    // The documented monitor defaults: recovery must not need tuning.
    let env = Env::start_routed(RoutingSetup::default()).await;
    acked_table(&env).await;
    let writes = Load::start(&env, 4, write_sql).await;
    let reads = Load::start(&env, 2, read_sql).await;

    tokio::time::sleep(PHASE).await;
    let stop_at = writes.now();
    block_in_place(|| env.cluster.stop_instance(&env.cluster.primary)).expect("stop the primary");
    let stopped_at = writes.now();
    let opened_at = breaker_opened(&env, &writes, Server::Primary).await;
    let newcomer = env.client().await;
    let newcomer_read = request(&newcomer, "select inet_server_port()").await;
    assert_eq!(
        newcomer_read.map(|p| env.server_at(p)),
        Ok(Server::Replica),
        "a client logging in while the primary is down can read"
    );
    tokio::time::sleep(PHASE).await;

    let restart_at = writes.now();
    block_in_place(|| env.cluster.start_instance(&env.cluster.primary)).expect("restart");
    let restarted_at = writes.now();
    let p = env.backend(Server::Primary);
    wait_for("the primary back in rotation", || {
        p.breaker_state(Instant::now()) == BreakerState::Closed
    })
    .await;
    tokio::time::sleep(PHASE).await;
    let per_client = writes.finish().await;
    let read_seen: Vec<Seen> = reads.finish().await.into_iter().flatten().collect();
    let write_seen: Vec<Seen> = per_client.iter().flatten().cloned().collect();

    print_errors("primary stopped under inserts", &write_seen);
    print_errors("  meanwhile, autocommit reads", &read_seen);
    let back = first_ok_on(&env, &write_seen, Server::Primary, restart_at);
    let slowest = write_seen
        .iter()
        .filter(|s| s.outcome.is_err())
        .map(|s| s.took)
        .max();
    let acked = acknowledged(&per_client);
    let lost = missing(&env.direct().await, &acked).await;
    println!(
        "  stop {stop_at:.2?} → stopped {stopped_at:.2?}, breaker open by {opened_at:.2?}; \
         restart {restart_at:.2?} → up {restarted_at:.2?}, first write acknowledged again \
         {back:.2?}; slowest failed write {slowest:.2?}; {} writes acknowledged, {} lost",
        acked.len(),
        lost.len()
    );
    assert_fast_clear_failures(&write_seen);
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(
        read_seen.iter().all(|s| s.outcome.is_ok()),
        "reads (on the replica) are not affected by the primary's outage"
    );
    let back = back.expect("writes succeed again after the restart");
    let outside: Vec<&Seen> = write_seen
        .iter()
        .filter(|s| s.outcome.is_err() && (s.at + s.took < stop_at || s.at >= back))
        .collect();
    assert!(
        outside.is_empty(),
        "write errors outside the outage: {outside:?}"
    );
    assert!(
        back - restarted_at < Duration::from_secs(3),
        "recovered after {:?}",
        back - restarted_at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoted_replica_takes_the_writes_with_auto_role() {
    let routing = format!("{FAST_MONITOR}\nauto_role = true");
    let env = Env::start_routed(RoutingSetup::routing(&routing)).await;
    acked_table(&env).await;
    let replica = env.cluster.expect_replica().clone();
    let writes = Load::start(&env, 4, write_sql).await;

    tokio::time::sleep(PHASE).await;
    let stop_at = writes.now();
    block_in_place(|| env.cluster.stop_instance(&env.cluster.primary)).expect("stop the primary");
    let stopped_at = writes.now();
    block_in_place(|| env.cluster.promote(&replica)).expect("promote");
    let promoted_at = writes.now();
    let r = env.backend(Server::Replica);
    wait_for("pgpilot to see the promotion", || {
        r.role() == pgpilot_proxy::backends::Role::Primary
    })
    .await;
    let noticed_at = writes.now();
    tokio::time::sleep(PHASE).await;
    let per_client = writes.finish().await;
    let seen: Vec<Seen> = per_client.iter().flatten().cloned().collect();

    print_errors("primary stopped, replica promoted, under inserts", &seen);
    let first = first_ok_on(&env, &seen, Server::Replica, stop_at);
    let acked = acknowledged(&per_client);
    let lost = missing(&env.replica_direct().await, &acked).await;
    println!(
        "  stop {stop_at:.2?} → stopped {stopped_at:.2?}; promoted {promoted_at:.2?}, \
         pgpilot noticed by {noticed_at:.2?}, first write on the promoted server {first:.2?}; \
         {} writes acknowledged, {} missing on the promoted server",
        acked.len(),
        lost.len()
    );
    assert_fast_clear_failures(&seen);
    assert!(
        seen.iter()
            .all(|s| s.outcome.is_ok() || (s.at + s.took >= stop_at && s.at <= noticed_at)),
        "write errors after pgpilot noticed the promotion"
    );
    let first = first.expect("writes reach the promoted server");
    assert!(
        first - promoted_at < Duration::from_secs(3),
        "first write {:?} after the promotion",
        first - promoted_at
    );
    // A fast shutdown sends all WAL to the standby before the primary exits.
    assert!(lost.is_empty(), "acknowledged writes missing: {lost:?}");
}

/// With the breaker kept closed (so every read still picks the replica),
/// each read to a stopped replica fails to connect there and is retried on
/// the primary before anything was sent: the client sees no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_retried_on_the_primary_when_the_replica_refuses_connections() {
    let env = Env::start_routed(RoutingSetup::routing(
        "breaker_failures = 1000\nhealth_check_interval = \"1s\"",
    ))
    .await;
    env.wait_routing_ready().await;
    let client = env.client().await;
    let first = request(&client, "select inet_server_port()").await;
    assert_eq!(first.map(|p| env.server_at(p)), Ok(Server::Replica));
    let replica = env.cluster.expect_replica().clone();
    block_in_place(|| env.cluster.stop_instance(&replica)).expect("stop the replica");

    let r = env.backend(Server::Replica);
    let failures_before = r
        .counters
        .probe_failures
        .load(std::sync::atomic::Ordering::Relaxed);
    for i in 0..50 {
        let read = request(&client, "select inet_server_port()").await;
        assert_eq!(
            read.map(|p| env.server_at(p)),
            Ok(Server::Primary),
            "read {i} after the replica stopped"
        );
    }
    let failures = r
        .counters
        .probe_failures
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "50 reads after the replica stopped: all served by the primary, \
         {} failed attempts on the replica counted",
        failures - failures_before
    );
    assert!(
        failures - failures_before >= 50,
        "each read tried the replica first (breaker kept closed)"
    );
    assert_eq!(r.breaker_state(Instant::now()), BreakerState::Closed);
}
