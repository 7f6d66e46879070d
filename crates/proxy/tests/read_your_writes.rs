//! Read-your-writes through pgpilot against a real primary + streaming
//! replica: 10,000 insert-then-read cycles under replication lag
//! (`recovery_min_apply_delay`) with read-only clients alongside, and
//! asynchronous commits (acknowledged before their WAL is written). Every
//! client must see its own write every time, while reads that need not
//! wait still go to the replica.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Env, RoutingSetup};
use pgpilot_testkit::ClusterOptions;

/// The replica applies each commit this long after it happened.
const APPLY_DELAY: Duration = Duration::from_millis(300);
/// Clients that write a row and read it back, and cycles each.
const WRITERS: i32 = 20;
const CYCLES: i32 = 500;
/// Read-only clients (reading other clients' rows), and reads each.
const READERS: i32 = 10;
const READS: i32 = 1_000;
/// Every this many cycles a writer waits [`RYW_PAUSE`] (longer than the
/// apply delay) before reading its row back: the replica may serve it then.
const PAUSE_EVERY: i32 = 50;
const RYW_PAUSE: Duration = Duration::from_millis(400);

/// What the read-your-writes clients saw.
#[derive(Debug, Default)]
struct Tally {
    /// Writers' read-backs served by the replica / the primary.
    own_on_replica: AtomicU64,
    own_on_primary: AtomicU64,
    /// Read-backs after a pause, and those of them served by the replica.
    paused: AtomicU64,
    paused_on_replica: AtomicU64,
    /// Read-backs that did not find the row just written.
    stale: AtomicU64,
    /// Read-only clients' reads served by the replica / the primary.
    other_on_replica: AtomicU64,
    other_on_primary: AtomicU64,
    /// Direct looks at the replica right after a write, and how many of
    /// them did not find the row yet (proof that the lag is real).
    lag_probes: AtomicU64,
    lag_probes_missing: AtomicU64,
}

fn bump(on_replica: bool, replica: &AtomicU64, primary: &AtomicU64) {
    if on_replica { replica } else { primary }.fetch_add(1, Relaxed);
}

/// Inserts (client, seq) and reads it back through pgpilot, `CYCLES` times.
/// With `direct`, also looks for each 25th row on the replica itself
/// right after the insert.
async fn ryw_writer(
    env: Arc<Env>,
    client_id: i32,
    tally: Arc<Tally>,
    direct: Option<tokio_postgres::Client>,
) {
    let client = env.client().await;
    let replica = i32::from(env.replica_port());
    let insert = client
        .prepare("insert into ryw values ($1, $2)")
        .await
        .unwrap();
    let read = client
        .prepare("select inet_server_port(), count(*) from ryw where client = $1 and seq = $2")
        .await
        .unwrap();
    let look = "select count(*) from ryw where client = $1 and seq = $2";
    let direct = match direct {
        Some(d) => Some((d.prepare(look).await.unwrap(), d)),
        None => None,
    };
    for seq in 0..CYCLES {
        client.execute(&insert, &[&client_id, &seq]).await.unwrap();
        if let (Some((look, d)), 0) = (&direct, seq % 25) {
            let row = d.query_one(look, &[&client_id, &seq]).await;
            let n: i64 = row.unwrap().get(0);
            tally.lag_probes.fetch_add(1, Relaxed);
            tally
                .lag_probes_missing
                .fetch_add(u64::from(n == 0), Relaxed);
        }
        let paused = seq % PAUSE_EVERY == PAUSE_EVERY - 1;
        if paused {
            tokio::time::sleep(RYW_PAUSE).await;
        }
        let row = client.query_one(&read, &[&client_id, &seq]).await.unwrap();
        let (port, n): (i32, i64) = (row.get(0), row.get(1));
        tally.stale.fetch_add(u64::from(n != 1), Relaxed);
        bump(
            port == replica,
            &tally.own_on_replica,
            &tally.own_on_primary,
        );
        if paused {
            tally.paused.fetch_add(1, Relaxed);
            tally
                .paused_on_replica
                .fetch_add(u64::from(port == replica), Relaxed);
        }
    }
}

/// Reads other clients' rows through pgpilot, never writing.
async fn ryw_reader(env: Arc<Env>, reader: i32, tally: Arc<Tally>) {
    let client = env.client().await;
    let replica = i32::from(env.replica_port());
    let read = client
        .prepare("select inet_server_port(), count(*) from ryw where client = $1")
        .await
        .unwrap();
    for i in 0..READS {
        let row = client
            .query_one(&read, &[&((reader + i) % WRITERS)])
            .await
            .unwrap();
        let port: i32 = row.get(0);
        bump(
            port == replica,
            &tally.other_on_replica,
            &tally.other_on_primary,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_holds_for_10000_cycles_under_replication_lag() {
    let env = Env::start_routed(RoutingSetup {
        cluster: ClusterOptions {
            replica_apply_delay: Some(APPLY_DELAY),
            ..ClusterOptions::default()
        },
        ..RoutingSetup::default()
    })
    .await;
    env.direct()
        .await
        .batch_execute("create table ryw (client int, seq int, primary key (client, seq))")
        .await
        .unwrap();
    tokio::task::block_in_place(|| env.cluster.wait_replica_caught_up()).expect("replica");
    env.wait_routing_ready().await;
    let env = Arc::new(env);
    let tally = Arc::new(Tally::default());
    let before = env.counts();
    let started = Instant::now();

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let direct = if w == 0 {
            Some(env.replica_direct().await)
        } else {
            None
        };
        tasks.push(tokio::spawn(ryw_writer(
            env.clone(),
            w,
            tally.clone(),
            direct,
        )));
    }
    for r in 0..READERS {
        tasks.push(tokio::spawn(ryw_reader(env.clone(), r, tally.clone())));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let elapsed = started.elapsed();
    let (p, r) = env.counts();
    let (p, r) = (p.since(&before.0), r.since(&before.1));

    let t = &*tally;
    let get = |a: &AtomicU64| a.load(Relaxed);
    let own = get(&t.own_on_replica) + get(&t.own_on_primary);
    let other = get(&t.other_on_replica) + get(&t.other_on_primary);
    let on_replica = get(&t.own_on_replica) + get(&t.other_on_replica);
    let share = on_replica as f64 / (own + other) as f64;
    println!(
        "read-your-writes, apply delay {APPLY_DELAY:?}, {elapsed:.1?}:\n\
         - {own} insert-then-read cycles ({WRITERS} clients × {CYCLES}): stale reads {}, \
           read back on the replica {}, on the primary {}\n\
         - of which {} read back after a {RYW_PAUSE:?} pause: {} on the replica\n\
         - {other} reads by {READERS} read-only clients: {} on the replica, {} on the primary\n\
         - all reads on the replica: {on_replica} of {} ({:.1}%)\n\
         - replica looked at directly right after a write: row missing {} of {} times\n\
         - counters: replica reads_routed {}, primary ryw_fallbacks {}, \
           read_fallbacks {}, writes_routed {}",
        get(&t.stale),
        get(&t.own_on_replica),
        get(&t.own_on_primary),
        get(&t.paused),
        get(&t.paused_on_replica),
        get(&t.other_on_replica),
        get(&t.other_on_primary),
        own + other,
        share * 100.0,
        get(&t.lag_probes_missing),
        get(&t.lag_probes),
        r.reads,
        p.ryw_fallbacks,
        p.read_fallbacks,
        p.writes,
    );
    assert_eq!(own, (WRITERS * CYCLES) as u64);
    assert_eq!(get(&t.stale), 0, "a client did not see its own write");
    assert!(
        get(&t.lag_probes_missing) * 2 > get(&t.lag_probes),
        "the replica was not lagging: the test proves nothing"
    );
    assert!(
        share >= 0.4,
        "only {:.1}% of reads on the replica",
        share * 100.0
    );
    assert!(
        get(&t.other_on_primary) * 100 <= other,
        "read-only clients should read from the replica"
    );
    assert!(
        get(&t.paused_on_replica) * 2 >= get(&t.paused),
        "reads long after the write should mostly be served by the replica"
    );
    assert!(p.ryw_fallbacks > 0 && r.reads >= on_replica);
}

/// Inserts (client, seq) with `synchronous_commit = off` and reads it
/// back through pgpilot `cycles` times; returns (stale reads, reads
/// served by the replica).
async fn async_commit_writer(env: Arc<Env>, client_id: i32, cycles: i32) -> (u64, u64) {
    let client = env.client().await;
    client
        .batch_execute("set synchronous_commit = off")
        .await
        .unwrap();
    let replica = i32::from(env.replica_port());
    let (mut stale, mut on_replica) = (0, 0);
    for seq in 0..cycles {
        client
            .execute("insert into ryw values ($1, $2)", &[&client_id, &seq])
            .await
            .unwrap();
        // Mostly long enough for a primary sample and its replay on the
        // replica (no apply delay here) but shorter than `wal_writer_delay`,
        // so the commit is often not written yet when the read comes; every
        // 10th read comes well after it.
        let pause = if seq % 10 == 9 { 250 } else { 30 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let row = client
            .query_one(
                "select inet_server_port(), count(*) from ryw where client = $1 and seq = $2",
                &[&client_id, &seq],
            )
            .await
            .unwrap();
        let (port, n): (i32, i64) = (row.get(0), row.get(1));
        stale += u64::from(n != 1);
        on_replica += u64::from(port == replica);
    }
    (stale, on_replica)
}

/// An asynchronous commit is acknowledged before its WAL is written: the
/// position pgpilot waits for must still include it. (Waiting for the
/// primary's write position, `pg_current_wal_lsn()`, gave 220 stale reads
/// out of 660 served by the replica here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_holds_with_asynchronous_commit() {
    let env = Env::start_routed(RoutingSetup {
        cluster: ClusterOptions {
            extra_conf: vec!["wal_writer_delay = '50ms'".into()],
            ..ClusterOptions::default()
        },
        ..RoutingSetup::default()
    })
    .await;
    env.direct()
        .await
        .batch_execute("create table ryw (client int, seq int, primary key (client, seq))")
        .await
        .unwrap();
    tokio::task::block_in_place(|| env.cluster.wait_replica_caught_up()).expect("replica");
    env.wait_routing_ready().await;
    let env = Arc::new(env);
    let tasks: Vec<_> = (0..10)
        .map(|w| tokio::spawn(async_commit_writer(env.clone(), w, 100)))
        .collect();
    let (mut stale, mut on_replica) = (0, 0);
    for t in tasks {
        let (s, r) = t.await.expect("client task");
        stale += s;
        on_replica += r;
    }
    println!(
        "asynchronous commit: 1000 cycles, stale reads {stale}, read back on the replica {on_replica}"
    );
    assert_eq!(stale, 0, "a client did not see its own write");
    assert!(
        on_replica >= 50,
        "reads 250 ms after the write should mostly be served by the replica"
    );
}
