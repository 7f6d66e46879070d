//! The result cache against a real PostgreSQL: which statements are cached
//! (pgpool-II's rules), hits replayed byte for byte in both protocols,
//! invalidation by writes through pgpilot and by the WAL stream for writes
//! that bypass it, read-your-writes through the cache, a concurrent
//! monotonic-reads checker, stampede protection and the memory budget.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::routing::wait_for;
use common::{one_value, Env, Setup};
use pgpilot_cache::{Invalidation, Source};

/// `[cache]` on for every eligible read, plus `extra` lines of that table.
fn cache_setup(extra: &str) -> Setup {
    Setup {
        top: format!("[cache]\nenabled = true\n{extra}\n"),
        pool: "max_size = 10".to_owned(),
        ..Setup::default()
    }
}

const SCHEMA: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text, v int);
INSERT INTO items SELECT g, 'item ' || g, g FROM generate_series(1, 100) g;
CREATE TABLE counters (id int PRIMARY KEY, v bigint NOT NULL);
INSERT INTO counters SELECT g, 0 FROM generate_series(1, 20) g;
CREATE VIEW items_view AS SELECT * FROM items;
CREATE UNLOGGED TABLE scratch (id int);
INSERT INTO scratch VALUES (1);
CREATE TABLE secured (id int);
INSERT INTO secured VALUES (1);
ALTER TABLE secured ENABLE ROW LEVEL SECURITY;
CREATE POLICY everyone ON secured USING (true);
GRANT ALL ON ALL TABLES IN SCHEMA public TO app;
";

/// Waits until the monitor's relation catalog knows `table`.
async fn wait_cacheable(env: &Env, table: &str) {
    let rt = &env.proxy.rt;
    wait_for(&format!("{table} to become cacheable"), || {
        rt.catalog_stale
            .store(true, std::sync::atomic::Ordering::Release);
        rt.relations.is_cacheable("app", table)
    })
    .await;
}

/// Starts a cluster with [`SCHEMA`] and the proxy, and waits until the
/// monitor has loaded the catalogs (relation kinds, function volatility).
async fn start(extra: &str) -> Env {
    let env = Env::start_setup(cache_setup(extra)).await;
    env.psql(SCHEMA);
    // A first client creates the pool the monitor loads catalogs for.
    let client = env.client().await;
    wait_cacheable(&env, "items").await;
    drop(client);
    env
}

fn hits(env: &Env) -> u64 {
    env.proxy.rt.cache.stats().hits.load(Relaxed)
}

/// Runs `sql` twice through the proxy (simple protocol) and reports whether
/// the second run was answered from the cache (then both answers agree).
async fn cached_simple(env: &Env, sql: &str) -> bool {
    let client = env.client().await;
    let first = client.simple_query(sql).await.map(|r| format!("{r:?}"));
    let before = hits(env);
    let second = client.simple_query(sql).await.map(|r| format!("{r:?}"));
    let hit = hits(env) > before;
    if hit {
        assert_eq!(
            first.as_ref().map_err(|e| e.to_string()),
            second.as_ref().map_err(|e| e.to_string()),
            "{sql}: a hit replays the same answer"
        );
    }
    hit
}

#[tokio::test]
async fn eligibility_follows_pgpool_rules() {
    let env = start("max_result_size = \"4KiB\"").await;
    let cases: &[(&str, bool)] = &[
        ("SELECT name, v FROM items WHERE id = 1", true),
        ("SELECT lower(name) FROM items WHERE id = 2", true),
        ("SELECT count(*) FROM items", true),
        ("SELECT 1 + 1", true),
        ("SELECT * FROM items_view WHERE id = 1", false),
        ("SELECT * FROM scratch", false),
        ("SELECT * FROM secured", false),
        ("SELECT * FROM pg_class WHERE relname = 'items'", false),
        ("SELECT now()", false),
        ("SELECT random()", false),
        ("SELECT current_user", false),
        ("SELECT CURRENT_DATE", false),
        ("SELECT v FROM items WHERE id = 3 FOR UPDATE", false),
        ("SELECT v FROM items WHERE id = 3 FOR SHARE", false),
        (
            "SELECT * FROM items TABLESAMPLE SYSTEM (50) WHERE id = 1",
            false,
        ),
        ("SELECT repeat('x', 10000)", false),
        (
            "/* pgpilot:nocache */ SELECT v FROM items WHERE id = 4",
            false,
        ),
        (
            "WITH x AS (UPDATE counters SET v = v WHERE id = 20 RETURNING v) SELECT v FROM x",
            false,
        ),
    ];
    let mut wrong = Vec::new();
    for (sql, want) in cases {
        if cached_simple(&env, sql).await != *want {
            wrong.push(format!("{sql}: expected cached = {want}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test]
async fn session_state_keeps_reads_off_the_cache() {
    let env = start("").await;
    let sql = "SELECT v FROM items WHERE id = 5";
    assert!(cached_simple(&env, sql).await, "baseline: cacheable");
    let c = env.client().await;
    // Inside a transaction block.
    c.batch_execute("BEGIN").await.expect("begin");
    let before = hits(&env);
    c.simple_query(sql).await.expect("read in txn");
    assert_eq!(hits(&env), before, "no hit inside BEGIN");
    c.batch_execute("COMMIT").await.expect("commit");
    // After SET ROLE (the client is pinned).
    c.batch_execute("SET ROLE app").await.expect("set role");
    c.simple_query(sql).await.expect("read after set role");
    assert_eq!(hits(&env), before, "no hit after SET ROLE");
    // A temp table named like a cached table shadows it (pg_temp comes
    // first in the search path): the session must read its own rows,
    // never the cached ones.
    let t = env.client().await;
    t.batch_execute("CREATE TEMP TABLE items (id int, v int); INSERT INTO items VALUES (5, -1)")
        .await
        .expect("temp");
    for _ in 0..2 {
        let row = t.query_one(sql, &[]).await.expect("read the temp table");
        assert_eq!(row.get::<_, i32>(0), -1, "the temp table's row");
    }
    assert_eq!(hits(&env), before, "no hit for a session with a temp table");
}

#[tokio::test]
async fn keys_ignore_comments_but_not_literals_or_settings() {
    let env = start("").await;
    let c = env.client().await;
    c.simple_query("SELECT name FROM items WHERE id = 7")
        .await
        .expect("fill");
    let before = hits(&env);
    c.simple_query("/* controller='users',action='show' */ SELECT  name\nFROM items WHERE id = 7")
        .await
        .expect("commented");
    assert_eq!(
        hits(&env),
        before + 1,
        "comments and white space share the entry"
    );
    c.simple_query("SELECT name FROM items WHERE id = 8")
        .await
        .expect("other literal");
    assert_eq!(
        hits(&env),
        before + 1,
        "a different literal is a different entry"
    );
    c.batch_execute("SET TimeZone = 'Asia/Tokyo'")
        .await
        .expect("set");
    c.simple_query("SELECT name FROM items WHERE id = 7")
        .await
        .expect("other setting");
    assert_eq!(hits(&env), before + 1, "settings are part of the key");
}

#[tokio::test]
async fn extended_protocol_hits_replay_the_same_rows() {
    let env = start("").await;
    let c = env.client().await;
    let stmt = c
        .prepare("SELECT id, name, v FROM items WHERE id = $1")
        .await
        .expect("prepare");
    let first = c.query(&stmt, &[&9i32]).await.expect("first");
    let before = hits(&env);
    let second = c.query(&stmt, &[&9i32]).await.expect("second");
    assert_eq!(hits(&env), before + 1, "named statement: hit");
    let row = |r: &tokio_postgres::Row| {
        (
            r.get::<_, i32>(0),
            r.get::<_, String>(1),
            r.get::<_, i32>(2),
        )
    };
    assert_eq!(
        first.iter().map(row).collect::<Vec<_>>(),
        second.iter().map(row).collect::<Vec<_>>()
    );
    assert_eq!(row(&second[0]), (9, "item 9".to_owned(), 9));
    // Other parameters: a different entry with its own rows.
    let other = c.query(&stmt, &[&10i32]).await.expect("other");
    assert_eq!(row(&other[0]), (10, "item 10".to_owned(), 10));
    assert_eq!(hits(&env), before + 1);
    // Binary results of an int8 column through a cached entry decode right.
    let s = c
        .prepare("SELECT v FROM counters WHERE id = $1")
        .await
        .expect("prepare");
    let a: i64 = c.query_one(&s, &[&1i32]).await.expect("a").get(0);
    let b: i64 = c.query_one(&s, &[&1i32]).await.expect("b").get(0);
    assert_eq!(a, b);
}

/// Unnamed statements, as pgbench -M extended and libpq's PQexecParams send
/// them: Parse, Bind, Describe, Execute, Sync every time.
#[tokio::test]
async fn unnamed_statements_through_pgbench() {
    let env = start("").await;
    // pgbench blocks: off the runtime thread the proxy runs on.
    let (pgbench, url) = (env.cluster.bin_dir().join("pgbench"), env.url());
    let out =
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(pgbench)
                .args(["-n", "-M", "extended", "-t", "200", "-c", "2", "-f", "-"])
                .arg(url)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write;
                    child.stdin.take().expect("stdin").write_all(
                        b"\\set id random(1, 5)\nSELECT v FROM items WHERE id = :id;\n",
                    )?;
                    child.wait_with_output()
                })
        })
        .await
        .expect("task")
        .expect("pgbench runs");
    assert!(out.status.success(), "pgbench failed");
    assert!(
        hits(&env) > 300,
        "most of 400 reads of 5 keys hit, got {}",
        hits(&env)
    );
}

/// Each writer has its own table (invalidation is per table: with one
/// shared table every writer would invalidate everyone's entries and the
/// second reads could not hit).
#[tokio::test]
async fn a_write_through_pgpilot_is_seen_by_the_next_read_10000_times() {
    let env = start("").await;
    for id in 1..=10 {
        env.psql(&format!("CREATE TABLE own_{id} (v bigint); INSERT INTO own_{id} VALUES (0); GRANT ALL ON own_{id} TO app;"));
    }
    wait_cacheable(&env, "own_10").await;
    let env = Arc::new(env);
    let stale = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for id in 1..=10i32 {
        let (env, stale) = (env.clone(), stale.clone());
        tasks.push(tokio::spawn(async move {
            let c = env.client().await;
            let read = format!("SELECT v FROM own_{id}");
            for n in 1..=1000i64 {
                c.simple_query(&format!("UPDATE own_{id} SET v = {n}"))
                    .await
                    .expect("update");
                for _ in 0..2 {
                    let v: i64 = one_value(&c, &read)
                        .await
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(-1);
                    if v != n {
                        stale.fetch_add(1, Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    assert_eq!(stale.load(Relaxed), 0, "a read missed its own write");
    assert!(hits(&env) >= 9_900, "second reads hit: {}", hits(&env));
}

#[tokio::test]
async fn explicit_transactions_invalidate_at_commit_and_rollback_keeps_nothing_stale() {
    let env = start("").await;
    let c = env.client().await;
    let read = "SELECT v FROM items WHERE id = 11";
    assert_eq!(one_value(&c, read).await.as_deref(), Some("11"));
    c.batch_execute("BEGIN; UPDATE items SET v = 111 WHERE id = 11; COMMIT")
        .await
        .expect("txn");
    assert_eq!(one_value(&c, read).await.as_deref(), Some("111"));
    assert_eq!(one_value(&c, read).await.as_deref(), Some("111"));
    c.batch_execute("BEGIN; UPDATE items SET v = 0 WHERE id = 11; ROLLBACK")
        .await
        .expect("rollback");
    assert_eq!(one_value(&c, read).await.as_deref(), Some("111"));
    // DDL on a table drops its entries (the client owns this one).
    c.batch_execute(
        "CREATE TABLE mine (id int PRIMARY KEY, v int); INSERT INTO mine VALUES (1, 1)",
    )
    .await
    .expect("create");
    wait_cacheable(&env, "mine").await;
    let star = "SELECT * FROM mine WHERE id = 1";
    c.simple_query(star).await.expect("fill");
    c.batch_execute("ALTER TABLE mine ADD COLUMN extra int DEFAULT 5")
        .await
        .expect("ddl");
    let rows = c.simple_query(star).await.expect("star");
    assert!(
        format!("{rows:?}").contains("extra"),
        "new column visible: {rows:?}"
    );
}

#[tokio::test]
async fn tags_and_the_admin_invalidation() {
    let env = start("").await;
    let c = env.client().await;
    let sql = "/* pgpilot:cache ttl=60s tags=item:12 */ SELECT v FROM items WHERE id = 12";
    c.simple_query(sql).await.expect("fill");
    let before = hits(&env);
    c.simple_query(sql).await.expect("hit");
    assert_eq!(hits(&env), before + 1);
    let listed = env
        .proxy
        .rt
        .cache
        .entries(pgpilot_cache::EntryOrder::Hottest, 10, Instant::now());
    let e = listed
        .iter()
        .find(|e| e.sql.contains("id = 12"))
        .expect("listed");
    assert_eq!(e.tags, vec!["item:12".to_owned()]);
    assert_eq!(e.ttl, Duration::from_secs(60));
    env.proxy
        .rt
        .cache
        .invalidate(Source::Api, &Invalidation::Tags(vec!["item:12".into()]));
    c.simple_query(sql).await.expect("miss");
    assert_eq!(hits(&env), before + 1, "invalidated by tag");
}

/// 100 identical concurrent misses of a slow read: one query runs.
#[tokio::test]
async fn a_stampede_of_identical_misses_runs_the_query_once() {
    let env = Arc::new(start("coalesce_wait = \"20s\"").await);
    env.psql("CREATE TABLE slow AS SELECT g AS id FROM generate_series(1, 3000) g; GRANT SELECT ON slow TO app; ANALYZE slow;");
    wait_cacheable(&env, "slow").await;
    let sql = "SELECT count(*) FROM slow a, slow b WHERE a.id < b.id";
    let fills_before = env.proxy.rt.cache.stats().fills.load(Relaxed);
    let scans = || async {
        let d = env.direct().await;
        d.simple_query("SELECT pg_stat_force_next_flush()")
            .await
            .expect("flush");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let v = one_value(
            &d,
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'slow'",
        )
        .await;
        v.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    let scans_before = scans().await;
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let env = env.clone();
        tasks.push(tokio::spawn(async move {
            let c = env.client().await;
            one_value(&c, sql).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("reader").as_deref(), Some("4498500"));
    }
    let stats = env.proxy.rt.cache.stats();
    assert_eq!(stats.fills.load(Relaxed) - fills_before, 1, "one fill");
    let ran = scans().await - scans_before;
    assert!(
        ran <= 2,
        "the join scans `slow` twice per run; {ran} scans means more than one run"
    );
    assert!(
        stats.coalesced.load(Relaxed) >= 90,
        "followers answered from the fill"
    );
}

#[tokio::test]
async fn memory_stays_under_the_budget() {
    let env = start("max_memory = \"1MiB\"\nmax_result_size = \"8KiB\"").await;
    let c = env.client().await;
    for i in 0..1500 {
        c.simple_query(&format!("SELECT repeat('x', 2000), {i}"))
            .await
            .expect("read");
    }
    let cache = &env.proxy.rt.cache;
    cache.maintain();
    assert!(
        cache.weighted_size() <= 1 << 20,
        "{} bytes",
        cache.weighted_size()
    );
    assert!(
        cache.stats().evictions.load(Relaxed) > 0,
        "something was evicted"
    );
    assert!(
        cache.entry_count() > 100,
        "the budget is used, not left empty"
    );
}

/// Readers never see a counter go backwards, and a writer's read right
/// after its own increment sees at least that value.
#[tokio::test]
async fn concurrent_checker_sees_no_value_go_backwards() {
    let env = Arc::new(start("").await);
    let checked = Arc::new(AtomicU64::new(0));
    let violations = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (env, violations, checked) = (env.clone(), violations.clone(), checked.clone());
        tasks.push(tokio::spawn(async move {
            let c = env.client().await;
            for i in 0..1000 {
                let id = 1 + (w * 1000 + i) % 5;
                let mine: i64 = one_value(
                    &c,
                    &format!("UPDATE counters SET v = v + 1 WHERE id = {id} RETURNING v"),
                )
                .await
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1);
                let seen: i64 = one_value(&c, &format!("SELECT v FROM counters WHERE id = {id}"))
                    .await
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(-1);
                checked.fetch_add(1, Relaxed);
                if seen < mine {
                    violations.fetch_add(1, Relaxed);
                }
            }
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..8 {
        let (env, violations, checked, stop) = (
            env.clone(),
            violations.clone(),
            checked.clone(),
            stop.clone(),
        );
        readers.push(tokio::spawn(async move {
            let c = env.client().await;
            let mut max = [0i64; 5];
            while !stop.load(Relaxed) {
                for (i, seen_max) in max.iter_mut().enumerate() {
                    let id = i + 1;
                    let v: i64 = one_value(&c, &format!("SELECT v FROM counters WHERE id = {id}"))
                        .await
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(-1);
                    checked.fetch_add(1, Relaxed);
                    if v < *seen_max {
                        violations.fetch_add(1, Relaxed);
                    }
                    *seen_max = (*seen_max).max(v);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    stop.store(true, Relaxed);
    for r in readers {
        r.await.expect("reader");
    }
    eprintln!(
        "checker: {} reads checked, {} violations, {} hits",
        checked.load(Relaxed),
        violations.load(Relaxed),
        hits(&env)
    );
    assert_eq!(violations.load(Relaxed), 0);
    assert!(checked.load(Relaxed) > 10_000);
    assert!(hits(&env) > 1_000, "the readers were served by the cache");
}

/// Writes made straight on the primary, bypassing pgpilot, reach the cache
/// through the WAL stream; a session's own writes are never missed either.
#[tokio::test]
async fn direct_writes_invalidate_through_the_wal_stream() {
    let env = Setup {
        top: "[cache]\nenabled = true\n[cache.wal]\nenabled = true\ncreate_publication = false\n"
            .to_owned(),
        pool: "max_size = 10".to_owned(),
        ..Setup::default()
    };
    let env = Env::start_setup(env).await;
    env.psql(SCHEMA);
    env.psql("ALTER ROLE app REPLICATION; CREATE PUBLICATION pgpilot_cache FOR ALL TABLES;");
    let c = env.client().await;
    let rt = &env.proxy.rt;
    wait_for("the catalog and the WAL stream", || {
        rt.catalog_stale
            .store(true, std::sync::atomic::Ordering::Release);
        rt.relations.is_cacheable("app", "items")
            && rt.wal.db("app").is_some_and(|w| w.is_connected())
    })
    .await;
    let direct = env.direct().await;
    let read = "SELECT v FROM items WHERE id = 13";
    let mut worst = Duration::ZERO;
    for n in 1..=200i64 {
        assert!(one_value(&c, read).await.is_some());
        direct
            .simple_query(&format!("UPDATE items SET v = {n} WHERE id = 13"))
            .await
            .expect("direct write");
        let written = Instant::now();
        loop {
            let v = one_value(&c, read).await;
            if v.as_deref() == Some(n.to_string().as_str()) {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(2),
                "write {n} never invalidated"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        worst = worst.max(written.elapsed());
    }
    eprintln!("slowest WAL invalidation seen by a reader: {worst:?}");
    let wal = env.proxy.rt.cache.stats().invalidations_wal.load(Relaxed);
    assert!(wal >= 200, "WAL invalidations: {wal}");
    // A trigger writes a table the statement does not name: the session's
    // own read waits for the WAL watermark instead of hitting a stale entry.
    env.psql(
        "CREATE TABLE audit (id int PRIMARY KEY, n bigint); INSERT INTO audit VALUES (1, 0); GRANT ALL ON audit TO app;
         CREATE FUNCTION bump_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN UPDATE audit SET n = n + 1; RETURN NEW; END $$;
         CREATE TRIGGER t_audit AFTER UPDATE ON counters FOR EACH ROW EXECUTE FUNCTION bump_audit();",
    );
    wait_cacheable(&env, "audit").await;
    let mut stale = 0;
    for n in 1..=300i64 {
        c.simple_query("UPDATE counters SET v = v + 1 WHERE id = 1")
            .await
            .expect("update");
        let seen: i64 = one_value(&c, "SELECT n FROM audit")
            .await
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1);
        if seen != n {
            stale += 1;
        }
    }
    assert_eq!(
        stale, 0,
        "a trigger-written row was read stale after the session's own write"
    );
}

/// A read pipelined behind `BEGIN READ ONLY` (not yet answered when the
/// read arrives) must not be answered from the cache with an idle
/// ReadyForQuery: it runs inside the transaction.
#[tokio::test]
async fn a_read_pipelined_behind_begin_is_not_answered_from_the_cache() {
    let env = start("").await;
    let c = env.client().await;
    let sql = "SELECT v FROM items WHERE id = 21";
    c.simple_query(sql).await.expect("fill");
    c.simple_query(sql).await.expect("hit");
    let before = hits(&env);
    // tokio-postgres pipelines requests polled together: both Query
    // messages are sent before either is answered.
    let tx = env.client().await;
    let begin = tx.simple_query("BEGIN READ ONLY");
    let read = tx.simple_query(sql);
    let (b, r) = tokio::join!(begin, read);
    b.expect("begin");
    r.expect("read");
    assert_eq!(
        hits(&env),
        before,
        "no hit for a read pipelined behind BEGIN"
    );
    tx.batch_execute("COMMIT").await.expect("commit");
}

/// A `SET` sent in an extended batch that is still open (Flush, no Sync
/// yet) has already run: a read later in that batch must not be answered
/// from the cache under the old settings' key.
#[tokio::test]
async fn a_read_after_a_set_in_an_open_batch_runs_on_the_server() {
    use bytes::BufMut;
    use common::hand_client::{bind, execute, parse, HandClient};
    let env = start("").await;
    env.psql(
        "CREATE SCHEMA t2; CREATE TABLE t2.items (id int PRIMARY KEY, name text);
         INSERT INTO t2.items VALUES (1, 'other 1'); GRANT USAGE ON SCHEMA t2 TO app;
         GRANT SELECT ON t2.items TO app;",
    );
    env.proxy
        .rt
        .catalog_stale
        .store(true, std::sync::atomic::Ordering::Release);
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_cacheable(&env, "items").await;
    let read = "SELECT name FROM items WHERE id = 1";
    let mut c = HandClient::connect(env.proxy.addr, "app", "app-secret", "app").await;
    let extended_read = |b: &mut bytes::BytesMut| {
        parse(b, "", read);
        bind(b, "");
        execute(b);
        pgpilot_wire::frontend::sync(b);
    };
    // Filled and hit in the same protocol as the read below.
    c.round_trip(extended_read).await;
    let before = hits(&env);
    c.round_trip(extended_read).await;
    assert_eq!(hits(&env), before + 1, "baseline: the extended read hits");
    let flush = |b: &mut bytes::BytesMut| {
        b.put_u8(b'H');
        b.put_i32(4);
    };
    c.send(|b| {
        parse(b, "", "SET search_path TO t2, public");
        bind(b, "");
        execute(b);
        flush(b);
    })
    .await;
    for _ in 0..3 {
        c.recv().await; // ParseComplete, BindComplete, CommandComplete
    }
    let answer = c.round_trip(extended_read).await;
    let rows: Vec<String> = answer
        .iter()
        .filter(|m| m.tag == b'D')
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(rows.len(), 1, "{answer:?}");
    assert!(
        rows[0].contains("other 1"),
        "read ran under the new search_path: {rows:?}"
    );
}

/// A hit answers the unnamed Parse without any server seeing it; a later
/// Bind of the unnamed statement without a Parse of its own must still run
/// (pgpilot gives the server the Parse it owes first).
#[tokio::test]
async fn the_unnamed_statement_a_hit_parsed_can_be_bound_again() {
    use common::hand_client::{bind, execute, parse, HandClient};
    let env = start("").await;
    let read = "SELECT name FROM items WHERE id = 3";
    let mut c = HandClient::connect(env.proxy.addr, "app", "app-secret", "app").await;
    let full = |b: &mut bytes::BytesMut| {
        parse(b, "", read);
        bind(b, "");
        execute(b);
        pgpilot_wire::frontend::sync(b);
    };
    c.round_trip(full).await;
    // The server's unnamed statement becomes something else (not cacheable).
    c.round_trip(|b| {
        parse(b, "", "SELECT now()");
        bind(b, "");
        execute(b);
        pgpilot_wire::frontend::sync(b);
    })
    .await;
    let before = hits(&env);
    c.round_trip(full).await;
    assert_eq!(
        hits(&env),
        before + 1,
        "this batch was a hit: no server saw its Parse"
    );
    // A write in between makes the next read miss and go to a server.
    env.proxy
        .rt
        .cache
        .invalidate(Source::Api, &Invalidation::All);
    let answer = c
        .round_trip(|b| {
            bind(b, "");
            execute(b);
            pgpilot_wire::frontend::sync(b);
        })
        .await;
    let tags: String = answer.iter().map(|m| m.tag as char).collect();
    assert_eq!(
        tags, "2DCZ",
        "BindComplete, the row, CommandComplete, ReadyForQuery: {answer:?}"
    );
    assert!(String::from_utf8_lossy(&answer[1].body).contains("item 3"));
}

/// A simple query in another client_encoding (not UTF-8, so not analyzed)
/// runs on the server: it used to be looked up in the cache under the
/// previous query's analysis, and a cached SELECT's rows answered an UPDATE
/// that never ran.
#[tokio::test]
async fn a_query_not_in_utf8_runs_instead_of_the_previous_ones_hit() {
    use bytes::BufMut;
    use common::hand_client::{tags, HandClient};
    let env = start("").await;
    let mut c = HandClient::connect(env.proxy.addr, "app", "app-secret", "app").await;
    c.simple("SET client_encoding = 'LATIN1'").await;
    let read = "SELECT name FROM items WHERE id = 7";
    c.simple(read).await;
    let before = hits(&env);
    c.simple(read).await;
    assert_eq!(hits(&env), before + 1, "baseline: the read is cached");
    // LATIN1 'é' is the byte 0xE9, which is not UTF-8.
    let update = b"UPDATE items SET name = '\xe9t\xe9' WHERE id = 7";
    let answer = c
        .round_trip(|b| {
            b.put_u8(b'Q');
            b.put_i32(4 + update.len() as i32 + 1);
            b.put_slice(update);
            b.put_u8(0);
        })
        .await;
    assert_eq!(tags(&answer), "CZ", "UPDATE's CommandComplete: {answer:?}");
    assert_eq!(
        env.psql("SELECT name FROM items WHERE id = 7"),
        "été",
        "the update ran"
    );
    assert_eq!(hits(&env), before + 1, "no hit for the update");
}
