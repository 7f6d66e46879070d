//! The cache's invalidation feed (`pgpilot_proxy::walstream`) against a
//! real PostgreSQL: commits name exactly the tables they wrote, in commit
//! order; rolled-back work is never reported; the watermark catches up with
//! the server's WAL position while the database is idle; the temporary
//! slot disappears with the connection; setup failures (missing
//! publication, missing privileges) come back as errors, not hangs.

mod common;

use std::time::{Duration, Instant};

use pgpilot_pool::login::LoginParams;
use pgpilot_pool::probe::parse_lsn;
use pgpilot_proxy::walstream::{stream_once, WalEvent, WalStreamError, WalStreamParams};
use pgpilot_testkit::{Cluster, APP_DB, APP_PASSWORD, APP_USER, MD5_PASSWORD, MD5_USER};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::{block_in_place, JoinHandle};
use tokio_postgres::Client;

/// Longest wait for any single event; a broken stream fails, not hangs.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How soon an idle stream's watermark must reach the server's position.
const IDLE_WATERMARK_WITHIN: Duration = Duration::from_secs(2);

const PUBLICATION: &str = "pgpilot_cache";
const SLOT_PREFIX: &str = "pgpilot_test";

async fn start_cluster() -> Cluster {
    tokio::task::spawn_blocking(Cluster::primary_only)
        .await
        .expect("cluster start task")
}

fn psql(cluster: &Cluster, sql: &str) -> String {
    block_in_place(|| cluster.psql(&cluster.primary, APP_DB, sql))
        .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
}

fn params(cluster: &Cluster, user: &str, password: Option<&str>) -> WalStreamParams {
    WalStreamParams {
        login: LoginParams {
            addr: format!("127.0.0.1:{}", cluster.primary.port),
            user: user.to_owned(),
            password: password.map(str::to_owned),
            database: APP_DB.to_owned(),
        },
        publication: PUBLICATION.to_owned(),
        create_publication: false,
        slot_prefix: SLOT_PREFIX.to_owned(),
        status_interval: Duration::from_millis(10),
        connect_timeout: Duration::from_secs(10),
    }
}

async fn app_client(cluster: &Cluster) -> Client {
    common::connect(&format!(
        "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}",
        cluster.primary.port
    ))
    .await
}

async fn current_lsn(c: &Client) -> u64 {
    let text = common::one_value(c, "select pg_current_wal_lsn()::text")
        .await
        .expect("an LSN");
    parse_lsn(&text).unwrap_or_else(|| panic!("unparsable LSN {text}"))
}

/// The server's WAL insert position: past every record written so far,
/// flushed or not.
async fn insert_lsn(c: &Client) -> u64 {
    let text = common::one_value(c, "select pg_current_wal_insert_lsn()::text")
        .await
        .expect("an LSN");
    parse_lsn(&text).unwrap_or_else(|| panic!("unparsable LSN {text}"))
}

/// A running stream: its task and the events it has sent.
struct Running {
    task: JoinHandle<Result<(), WalStreamError>>,
    events: UnboundedReceiver<WalEvent>,
}

impl Running {
    fn spawn(params: WalStreamParams) -> Running {
        let (tx, events) = unbounded_channel();
        let task = tokio::spawn(async move {
            let mut on_event = move |e| {
                let _ = tx.send(e);
            };
            stream_once(&params, &mut on_event).await
        });
        Running { task, events }
    }

    /// The next event; panics with the stream's result if it ended, or
    /// after [`EVENT_TIMEOUT`].
    async fn next(&mut self) -> WalEvent {
        match tokio::time::timeout(EVENT_TIMEOUT, self.events.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                let result = (&mut self.task).await;
                panic!("stream ended: {result:?}")
            }
            Err(_) => panic!("no event within {EVENT_TIMEOUT:?}"),
        }
    }

    async fn started(&mut self) -> u64 {
        match self.next().await {
            WalEvent::Started { lsn } => lsn,
            other => panic!("expected Started first, got {other:?}"),
        }
    }

    /// The next Commit, skipping watermarks.
    async fn commit(&mut self) -> (u64, Vec<(String, String)>) {
        loop {
            if let WalEvent::Commit { end_lsn, tables } = self.next().await {
                return (end_lsn, tables);
            }
        }
    }

    /// Waits for a watermark at or past `lsn`; how long it took. Fails on
    /// any Commit (none is expected while waiting).
    async fn watermark_reaches(&mut self, lsn: u64) -> Duration {
        let started = Instant::now();
        loop {
            match self.next().await {
                WalEvent::Watermark(w) if w >= lsn => return started.elapsed(),
                WalEvent::Watermark(_) => {}
                other => panic!("expected only watermarks, got {other:?}"),
            }
        }
    }
}

fn tables(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| ("public".to_owned(), (*n).to_owned()))
        .collect()
}

/// Runs `sql` and returns the Commit it produced, checking that its end
/// LSN lies between the server's WAL position before and after.
async fn write(c: &Client, stream: &mut Running, sql: &str) -> (u64, Vec<(String, String)>) {
    let before = current_lsn(c).await;
    c.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let after = current_lsn(c).await;
    let (end_lsn, tables) = stream.commit().await;
    assert!(
        before < end_lsn && end_lsn <= after,
        "{sql}: commit end {end_lsn:X} outside ({before:X}, {after:X}]"
    );
    (end_lsn, tables)
}

fn slot_count(cluster: &Cluster, filter: &str) -> usize {
    let sql = format!(
        "select count(*) from pg_replication_slots where slot_name like '{SLOT_PREFIX}\\_%' {filter}"
    );
    psql(cluster, &sql).trim().parse().expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_name_written_tables_and_the_watermark_catches_up() {
    let cluster = start_cluster().await;
    psql(
        &cluster,
        &format!(
            "alter role {APP_USER} replication; create publication {PUBLICATION} for all tables"
        ),
    );
    let c = app_client(&cluster).await;
    c.batch_execute(
        "create table a (id int primary key, v text);
         create table b (id int primary key, v text);",
    )
    .await
    .unwrap();
    let mut stream = Running::spawn(params(&cluster, APP_USER, Some(APP_PASSWORD)));
    let start = stream.started().await;

    let steps: &[(&str, &[&str])] = &[
        ("insert into a values (1, 'x')", &["a"]),
        ("insert into b values (1, 'x'), (2, 'y')", &["b"]),
        ("update a set v = 'z' where id = 1", &["a"]),
        ("delete from b where id = 2", &["b"]),
        (
            "begin; insert into a values (2, 'x'); update b set v = 'w'; commit",
            &["a", "b"],
        ),
        // Rolled back: nothing. The next Commit must be the truncate's.
        (
            "begin; insert into a values (3, 'x'); rollback; truncate b",
            &["b"],
        ),
        ("truncate a, b", &["a", "b"]),
        // 300 kB row: larger than the buffered-message threshold, so the
        // stream reads its relation OID and skips the rest.
        ("insert into b select 9, repeat('x', 300000)", &["b"]),
        // One simple query with two statements is one transaction.
        (
            "insert into a values (4, 'x'); insert into b values (5, 'x')",
            &["a", "b"],
        ),
    ];
    let mut last = start;
    for (sql, expected) in steps {
        let (end_lsn, written) = write(&c, &mut stream, sql).await;
        assert_eq!(written, tables(expected), "{sql}");
        assert!(end_lsn > last, "{sql}: end LSNs must increase");
        last = end_lsn;
    }
    // Idle: the watermark reaches the position read after the last write.
    let target = current_lsn(&c).await;
    let took = stream.watermark_reaches(target).await;
    assert!(took <= IDLE_WATERMARK_WITHIN, "watermark took {took:?}");
    println!("watermark passed pg_current_wal_lsn() after {took:?}");
    // WAL that no transaction wrote (a non-transactional logical message)
    // moves the watermark too, through the walsender's keepalives. The
    // record is flushed (and so decoded) only by the WAL writer, so the
    // target is the insert position, which already includes it.
    psql(
        &cluster,
        "select pg_logical_emit_message(false, 'test', 'x')",
    );
    let target = insert_lsn(&c).await;
    let took = stream.watermark_reaches(target).await;
    assert!(took <= IDLE_WATERMARK_WITHIN, "watermark took {took:?}");
    println!("watermark passed a non-transactional WAL record after {took:?}");
    // An asynchronous commit is acknowledged before its WAL is flushed; it
    // reaches the stream, and the watermark passes it, all the same.
    c.batch_execute("set synchronous_commit = off; insert into a values (10, 'x')")
        .await
        .unwrap();
    let target = insert_lsn(&c).await;
    let waited = Instant::now();
    let (end_lsn, written) = stream.commit().await;
    assert_eq!(written, tables(&["a"]));
    assert!(end_lsn <= target);
    stream.watermark_reaches(target).await;
    let took = waited.elapsed();
    assert!(
        took <= IDLE_WATERMARK_WITHIN,
        "asynchronous commit took {took:?}"
    );
    println!("asynchronous commit reported after {took:?}");

    // Status updates report the watermark as flushed, so the slot does
    // not hold WAL back.
    let deadline = Instant::now() + IDLE_WATERMARK_WITHIN;
    loop {
        let flushed = psql(
            &cluster,
            &format!("select confirmed_flush_lsn from pg_replication_slots where slot_name like '{SLOT_PREFIX}\\_%'"),
        );
        if parse_lsn(&flushed).is_some_and(|lsn| lsn >= target) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "confirmed_flush_lsn {flushed} still behind {target:X}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(slot_count(&cluster, "and temporary and active"), 1);
    stream.task.abort();
    let _ = stream.task.await;
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while slot_count(&cluster, "") > 0 {
        assert!(Instant::now() < deadline, "temporary slot still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a stream that must fail during setup; its error.
async fn setup_error(params: WalStreamParams) -> WalStreamError {
    let mut stream = Running::spawn(params);
    let result = tokio::time::timeout(EVENT_TIMEOUT, &mut stream.task)
        .await
        .expect("setup must fail, not hang")
        .expect("stream task");
    let events: Vec<_> = std::iter::from_fn(|| stream.events.try_recv().ok()).collect();
    assert!(
        events.is_empty(),
        "no events before a failed setup: {events:?}"
    );
    result.expect_err("setup must fail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_failures_are_errors_and_a_superuser_creates_the_publication() {
    let cluster = start_cluster().await;
    psql(&cluster, &format!("alter role {APP_USER} replication"));

    let err = setup_error(params(&cluster, APP_USER, Some(APP_PASSWORD))).await;
    assert!(
        matches!(&err, WalStreamError::PublicationMissing { publication, .. } if publication == PUBLICATION),
        "{err:?}"
    );

    let mut p = params(&cluster, APP_USER, Some(APP_PASSWORD));
    p.create_publication = true;
    let err = setup_error(p).await;
    assert!(
        matches!(&err, WalStreamError::Server { step: "CREATE PUBLICATION", code, .. } if code == "42501"),
        "{err:?}"
    );

    // No REPLICATION attribute: the server refuses the walsender login.
    let err = setup_error(params(&cluster, MD5_USER, Some(MD5_PASSWORD))).await;
    assert!(
        matches!(&err, WalStreamError::Server { step: "login", code, .. } if code == "42501"),
        "{err:?}"
    );

    let mut p = params(&cluster, "postgres", None);
    p.slot_prefix = "x-y".to_owned();
    assert!(matches!(
        setup_error(p).await,
        WalStreamError::InvalidSlotPrefix { .. }
    ));

    // A superuser creates the publication; an awkward name survives the
    // quoting in CREATE PUBLICATION and in publication_names.
    let mut p = params(&cluster, "postgres", None);
    p.create_publication = true;
    p.publication = "Cache, \"pub\" 'x'".to_owned();
    let mut stream = Running::spawn(p);
    stream.started().await;
    let listed = psql(&cluster, "select pubname, puballtables from pg_publication");
    assert_eq!(listed, "Cache, \"pub\" 'x'|t");
    let c = app_client(&cluster).await;
    c.batch_execute("create table t (id int); insert into t values (1)")
        .await
        .unwrap();
    assert_eq!(stream.commit().await.1, tables(&["t"]));

    // A clean (fast) shutdown ends the stream, and cleanly: the walsender
    // sends what it has, waits until the flush position it was told
    // reaches what it sent, then ends with CommandComplete.
    block_in_place(|| cluster.stop_instance(&cluster.primary)).expect("fast shutdown");
    let result = tokio::time::timeout(EVENT_TIMEOUT, &mut stream.task)
        .await
        .expect("the stream ends when the server shuts down")
        .expect("stream task");
    assert!(result.is_ok(), "stream result at shutdown: {result:?}");
}
