//! Two pgpilot instances in front of one PostgreSQL, sharing a real Redis:
//! a write through either invalidates the other's cache, and while Redis
//! is down neither serves a possibly stale hit.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::routing::wait_for;
use common::{one_value, Env, Setup};
use pgpilot_proxy::{RunningProxy, Runtime};
use pgpilot_testkit::RedisServer;

fn setup(redis: &RedisServer) -> Setup {
    Setup {
        top: format!("[cache]\nenabled = true\nredis_url = \"{}\"\n", redis.url()),
        pool: "max_size = 5".to_owned(),
        ..Setup::default()
    }
}

fn ready(rt: &Runtime) -> bool {
    rt.catalog_stale
        .store(true, std::sync::atomic::Ordering::Release);
    rt.peers.is_healthy() && rt.relations.is_cacheable("app", "counters")
}

fn hits(rt: &Runtime) -> u64 {
    rt.cache.stats().hits.load(Relaxed)
}

/// Two instances sharing `redis` (plus `extra` `[cache]` lines) in front of
/// one cluster holding `counters` with `rows` rows, both subscribed and
/// with catalogs loaded.
struct Pair {
    env: Env,
    b: RunningProxy,
    ca: tokio_postgres::Client,
    cb: tokio_postgres::Client,
}

async fn start_pair(redis: &RedisServer, extra: &str, rows: i32) -> Pair {
    let mut setup = setup(redis);
    setup.top.push_str(extra);
    let env = Env::start_setup(setup.clone()).await;
    env.psql(&format!("CREATE TABLE counters (id int PRIMARY KEY, v bigint); INSERT INTO counters SELECT g, 0 FROM generate_series(1, {rows}) g; GRANT ALL ON counters TO app;"));
    let b = RunningProxy::start(env.settings_for(&setup))
        .await
        .expect("second proxy");
    let b_conn = format!(
        "host=127.0.0.1 port={} user=app password=app-secret dbname=app",
        b.addr.port()
    );
    let ca = env.client().await;
    let cb = common::connect(&b_conn).await;
    let (a_rt, b_rt) = (env.proxy.rt.clone(), b.rt.clone());
    wait_for("both instances subscribed with catalogs", || {
        ready(&a_rt) && ready(&b_rt)
    })
    .await;
    Pair { env, b, ca, cb }
}

#[tokio::test]
async fn two_instances_sharing_redis_stay_coherent() {
    let mut redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("task")
        .unwrap_or_else(|e| panic!("{e}"));
    let Pair { env, b, ca, cb } = start_pair(&redis, "", 1).await;
    let (a_rt, b_rt) = (env.proxy.rt.clone(), b.rt.clone());

    let read = "SELECT v FROM counters WHERE id = 1";
    let mut slowest = Duration::ZERO;
    for n in 1..=300i64 {
        let (writer, reader) = if n % 2 == 1 { (&ca, &cb) } else { (&cb, &ca) };
        // The reader caches the current value...
        one_value(reader, read).await;
        one_value(reader, read).await;
        writer
            .simple_query(&format!("UPDATE counters SET v = {n} WHERE id = 1"))
            .await
            .expect("write");
        // ...and must see the write once the other instance's message arrives.
        let written = Instant::now();
        let mut last_seen = -1i64;
        loop {
            let v: i64 = one_value(reader, read)
                .await
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1);
            assert!(v >= last_seen, "went backwards: {last_seen} then {v}");
            last_seen = v;
            if v == n {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(2),
                "write {n} never reached the other instance"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        slowest = slowest.max(written.elapsed());
    }
    eprintln!("slowest cross-instance invalidation: {slowest:?}");
    assert!(
        hits(&a_rt) > 100 && hits(&b_rt) > 100,
        "both caches served hits"
    );
    assert!(a_rt.peers.received.load(Relaxed) >= 150 && b_rt.peers.received.load(Relaxed) >= 150);

    // Redis goes away: no hits anywhere (a peer's write could not be heard).
    redis.stop();
    wait_for("both links down", || {
        !a_rt.peers.is_healthy() && !b_rt.peers.is_healthy()
    })
    .await;
    let (ha, hb) = (hits(&a_rt), hits(&b_rt));
    for n in 1000..1020i64 {
        ca.simple_query(&format!("UPDATE counters SET v = {n} WHERE id = 1"))
            .await
            .expect("write");
        assert_eq!(
            one_value(&cb, read).await,
            Some(n.to_string()),
            "fresh while Redis is down"
        );
        assert_eq!(one_value(&cb, read).await, Some(n.to_string()));
    }
    assert_eq!(
        (hits(&a_rt), hits(&b_rt)),
        (ha, hb),
        "no hits while Redis is down"
    );

    // Back: both resubscribe (flushing what they had) and hit again.
    redis.restart().unwrap_or_else(|e| panic!("{e}"));
    wait_for("both links back", || {
        a_rt.peers.is_healthy() && b_rt.peers.is_healthy()
    })
    .await;
    one_value(&cb, read).await;
    assert_eq!(one_value(&cb, read).await, Some("1019".to_owned()));
    assert!(hits(&b_rt) > hb, "hits resume");
}

/// With `redis_results`, a result one instance filled answers the other's
/// first read without PostgreSQL; after a write through one instance the
/// other reads the new value within the pub/sub delay (bounded here at
/// 2 s; until then it may still read the previous value, never a made-up
/// one), and the writer reads its own write at once.
#[tokio::test]
async fn results_shared_through_redis_follow_writes() {
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("task")
        .unwrap_or_else(|e| panic!("{e}"));
    let Pair { env, b, ca, cb } = start_pair(&redis, "redis_results = true\n", 50).await;
    let b_rt = b.rt.clone();

    // A fills 50 entries; B's first reads of them come from Redis.
    for id in 1..=50 {
        one_value(&ca, &format!("SELECT v FROM counters WHERE id = {id}")).await;
    }
    let xacts =
        |rt: &Runtime| -> u64 { rt.backends.snapshots().iter().map(|p| p.xact_count).sum() };
    let b_xacts = xacts(&b_rt);
    // The stores are asynchronous: wait until all 50 are in Redis.
    let a_rt = env.proxy.rt.clone();
    wait_for("A's 50 results in Redis", || {
        a_rt.peers.shared_stores.load(Relaxed) >= 50
    })
    .await;
    for id in 1..=50 {
        assert_eq!(
            one_value(&cb, &format!("SELECT v FROM counters WHERE id = {id}"))
                .await
                .as_deref(),
            Some("0")
        );
    }
    let shared = b_rt.peers.shared_hits.load(Relaxed);
    assert!(shared >= 45, "B answered from the shared level: {shared}");
    assert_eq!(xacts(&b_rt), b_xacts, "B ran no transaction of its own");

    // Writes through A, reads through B until B sees each one.
    for n in 1..=200i64 {
        let id = 1 + n % 50;
        let read = format!("SELECT v FROM counters WHERE id = {id}");
        ca.simple_query(&format!("UPDATE counters SET v = {n} WHERE id = {id}"))
            .await
            .expect("write");
        let written = Instant::now();
        loop {
            let v: i64 = one_value(&cb, &read)
                .await
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1);
            if v == n {
                break;
            }
            assert!(v < n, "impossible value {v}");
            assert!(
                written.elapsed() < Duration::from_secs(2),
                "write {n} never reached B"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // And A, the writer, sees its own write at once.
        let mine: i64 = one_value(&ca, &read)
            .await
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1);
        assert_eq!(mine, n, "A read its own write stale");
    }
}
