//! Servers added, drained and removed while pgpilot runs (the calls the
//! admin API makes, and config reload), under a steady read load: running
//! transactions finish where they started, new reads avoid a drained or
//! removed replica and come back to an added one, and no client sees an
//! error.
//!
//! The test kit makes one replica per cluster, so the "second replica" is
//! the same server added again under a new id after its removal.

mod common;

use std::time::Instant;

use common::routing::{read_sql, request, wait_for, Load, Seen, Server};
use common::{Env, RoutingSetup};
use pgpilot_proxy::backends::Role;
use tokio_postgres::Client;

/// Clients reading in the background throughout each test.
const LOAD_CLIENTS: u32 = 3;

/// Gives the background load time to run across a change.
async fn let_load_run() {
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

/// Where `client`'s next autocommit read runs; panics on an error.
async fn read_on(env: &Env, client: &Client) -> Server {
    let port = request(client, "select inet_server_port()").await;
    env.server_at(port.unwrap_or_else(|e| panic!("read failed: {e:?}")))
}

/// A client inside a read-only transaction on the replica.
async fn holder_on_replica(env: &Env) -> Client {
    let client = env.client().await;
    client.batch_execute("begin read only").await.unwrap();
    assert_eq!(read_on(env, &client).await, Server::Replica);
    client
}

/// The holder's transaction goes on where it started and commits; its
/// next transaction runs on `next`.
async fn finish_holder(env: &Env, holder: &Client, next: Server) {
    assert_eq!(
        read_on(env, holder).await,
        Server::Replica,
        "the running transaction stays on its server"
    );
    holder.batch_execute("commit").await.expect("commit");
    assert_eq!(read_on(env, holder).await, next);
}

/// Waits (bounded) until a fresh client's read is served by the replica;
/// returns how long that took.
async fn reads_return_to_replica(env: &Env) -> std::time::Duration {
    let started = Instant::now();
    let client = env.client().await;
    loop {
        if read_on(env, &client).await == Server::Replica {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < common::routing::MONITOR_WAIT,
            "reads did not return to the replica"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Asserts the background load saw no error; prints where it was served.
fn assert_no_client_saw_an_error(env: &Env, seen: &[Seen]) {
    let on = |server| {
        seen.iter()
            .filter(|s| matches!(s.outcome, Ok(p) if env.server_at(p) == server))
            .count()
    };
    println!(
        "background reads: {} ({} on the replica, {} on the primary)",
        seen.len(),
        on(Server::Replica),
        on(Server::Primary)
    );
    let errors: Vec<_> = seen.iter().filter(|s| s.outcome.is_err()).collect();
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    assert!(on(Server::Replica) > 0 && on(Server::Primary) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_remove_and_add_the_replica_at_run_time_without_dropping_clients() {
    let env = Env::start_routed(RoutingSetup::default()).await;
    env.wait_routing_ready().await;
    let backends = &env.proxy.rt.backends;
    let load = Load::start(&env, LOAD_CLIENTS, read_sql).await;
    let other = env.client().await;

    // Drain while a transaction runs there.
    let holder = holder_on_replica(&env).await;
    let id = env.backend(Server::Replica).id;
    backends.drain(id).expect("drain");
    let_load_run().await;
    assert_eq!(read_on(&env, &other).await, Server::Primary, "drained");
    finish_holder(&env, &holder, Server::Primary).await;

    // Remove it, then add it back: a new server id.
    let removed = backends.remove(id).expect("remove");
    let_load_run().await;
    assert!(removed.is_removed() && env.find_backend(env.replica_port()).is_none());
    assert_eq!(read_on(&env, &other).await, Server::Primary, "removed");
    let settings = env.proxy.rt.settings.load_full();
    let addr = format!("127.0.0.1:{}", env.replica_port());
    let added = backends.add(&settings, addr, Role::Replica);
    let_load_run().await;
    assert_ne!(added.id, id);
    let back_after = reads_return_to_replica(&env).await;

    // Remove it while a transaction runs there.
    let holder = holder_on_replica(&env).await;
    backends.remove(added.id).expect("remove again");
    let_load_run().await;
    assert_eq!(read_on(&env, &other).await, Server::Primary);
    finish_holder(&env, &holder, Server::Primary).await;

    let seen: Vec<Seen> = load.finish().await.into_iter().flatten().collect();
    println!("added replica served reads after {back_after:?}");
    assert_no_client_saw_an_error(&env, &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_removes_and_adds_the_replica_without_dropping_clients() {
    let setup = RoutingSetup::default();
    let env = Env::start_routed(setup.clone()).await;
    env.wait_routing_ready().await;
    let rt = &env.proxy.rt;
    let load = Load::start(&env, LOAD_CLIENTS, read_sql).await;
    let other = env.client().await;

    let holder = holder_on_replica(&env).await;
    rt.reload(env.routed_settings(&[], &setup));
    let_load_run().await;
    assert!(env.find_backend(env.replica_port()).is_none());
    assert_eq!(read_on(&env, &other).await, Server::Primary);
    finish_holder(&env, &holder, Server::Primary).await;

    rt.reload(env.routed_settings(&[env.replica_port()], &setup));
    let_load_run().await;
    let back_after = reads_return_to_replica(&env).await;
    wait_for("the background load back on the replica", || {
        env.find_backend(env.replica_port()).is_some_and(|b| {
            b.counters
                .reads_routed
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        })
    })
    .await;

    let seen: Vec<Seen> = load.finish().await.into_iter().flatten().collect();
    println!("replica added by reload served reads after {back_after:?}");
    assert_no_client_saw_an_error(&env, &seen);
}
