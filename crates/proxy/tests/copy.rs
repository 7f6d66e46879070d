//! COPY through pgpilot: tokio-postgres `copy_in` / `copy_out` (extended
//! protocol, where the server ignores the Sync sent ahead of the data), a
//! COPY that fails mid-stream, and psql's `\copy` (simple protocol) in both
//! directions. Every test also checks that the server went back to the
//! pool afterwards: with `max_size = 1` a second client must get it.

mod common;

use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use common::hand_client::{self as hand, HandClient};
use common::{external, Env};
use futures_util::{SinkExt, StreamExt};
use pgpilot_testkit::{APP_DB, APP_PASSWORD, APP_USER};
use tokio_postgres::Client;

const ROWS: i64 = 100_000;

/// One server, and a short checkout timeout so a server that is never
/// released fails the next client quickly.
const POOL: &str = "max_size = 1\ncheckout_timeout = \"2s\"";

/// The text-format COPY data for rows `0..n`: `id<TAB>name<NL>`.
fn copy_text(n: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n as usize * 24);
    for i in 0..n {
        out.extend_from_slice(format!("{i}\trow-{i}-{}\n", i * 7 % 1000).as_bytes());
    }
    out
}

/// Sends `data` with `COPY … FROM STDIN` in 64 KiB chunks; the row count.
async fn copy_in(c: &Client, sql: &str, data: &[u8]) -> Result<u64, tokio_postgres::Error> {
    let sink = c.copy_in::<_, Bytes>(sql).await?;
    let mut sink = pin!(sink);
    for chunk in data.chunks(64 * 1024) {
        sink.send(Bytes::copy_from_slice(chunk)).await?;
    }
    sink.finish().await
}

/// Everything `COPY … TO STDOUT` sends.
async fn copy_out(c: &Client, sql: &str) -> Vec<u8> {
    let stream = c.copy_out(sql).await.expect("copy out starts");
    let mut stream = pin!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("copy data"));
    }
    out
}

async fn count(c: &Client, table: &str) -> i64 {
    c.query_one(&format!("select count(*) from {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// Another client gets the single server: the previous one was released.
async fn server_was_released(env: &Env) {
    let other = env.client().await;
    let v: i32 = other.query_one("select 7", &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_100k_rows() {
    let env = Env::start(POOL).await;
    let c = env.client().await;
    c.batch_execute("create table items (id int8 not null, name text not null)")
        .await
        .unwrap();
    let data = copy_text(ROWS);
    let n = copy_in(&c, "copy items (id, name) from stdin", &data)
        .await
        .expect("copy in");
    assert_eq!(n, ROWS as u64, "COPY's row count");
    server_was_released(&env).await;

    let row = c
        .query_one("select count(*), sum(id)::int8 from items", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), ROWS);
    assert_eq!(row.get::<_, i64>(1), ROWS * (ROWS - 1) / 2);

    let out = copy_out(
        &c,
        "copy (select id, name from items order by id) to stdout",
    )
    .await;
    assert_eq!(
        out.iter().filter(|&&b| b == b'\n').count(),
        ROWS as usize,
        "rows out"
    );
    assert!(
        out == data,
        "COPY TO returns exactly the bytes COPY FROM took"
    );
    server_was_released(&env).await;

    // Binary format, both ways, through a second table.
    c.batch_execute("create table items2 (like items)")
        .await
        .unwrap();
    let binary = copy_out(&c, "copy items to stdout (format binary)").await;
    let n = copy_in(&c, "copy items2 from stdin (format binary)", &binary)
        .await
        .expect("binary copy in");
    assert_eq!(n, ROWS as u64);
    let same: bool = c
        .query_one(
            "select not exists (select * from items except all select * from items2)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(same, "binary round trip kept every row");
    server_was_released(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_copy_reports_the_error_and_the_session_goes_on() {
    let env = Env::start(POOL).await;
    let c = env.client().await;
    c.batch_execute("create table nums (n int4 not null)")
        .await
        .unwrap();
    let mut data = Vec::new();
    for i in 0..ROWS {
        if i == ROWS / 2 {
            data.extend_from_slice(b"not-a-number\n");
        } else {
            data.extend_from_slice(format!("{i}\n").as_bytes());
        }
    }
    let err = copy_in(&c, "copy nums from stdin", &data)
        .await
        .expect_err("a bad row fails the COPY");
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(db.code().code(), "22P02", "{db:?}");
    assert!(db.message().contains("not-a-number"), "{db:?}");

    assert_eq!(count(&c, "nums").await, 0, "the failed COPY left no rows");
    server_was_released(&env).await;

    // The same session COPYs fine afterwards.
    let n = copy_in(&c, "copy nums from stdin", b"1\n2\n3\n")
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(count(&c, "nums").await, 3);

    // Inside a transaction the failure aborts it; ROLLBACK recovers.
    c.batch_execute("begin").await.unwrap();
    let err = copy_in(&c, "copy nums from stdin", b"4\nfive\n")
        .await
        .expect_err("bad row");
    assert_eq!(err.code().map(|s| s.code()), Some("22P02"));
    let err = c.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(err.code().map(|s| s.code()), Some("25P02"));
    c.batch_execute("rollback").await.unwrap();
    assert_eq!(count(&c, "nums").await, 3);
    server_was_released(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_data_sent_before_the_copy_in_response() {
    // asyncpg sends its COPY data without waiting for CopyInResponse; so
    // may any client. The Syncs before CopyDone are ignored by the server.
    let env = Env::start(POOL).await;
    let mut c = HandClient::connect(env.proxy.addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let r = c.simple("create table nums (n int4)").await;
    assert_eq!(hand::error_codes(&r), Vec::<String>::new(), "{r:?}");

    // Simple protocol, everything in one write.
    let r = c
        .round_trip(|b| {
            pgpilot_wire::frontend::query(b, "copy nums from stdin");
            hand::copy_data(b, b"1\n2\n");
            hand::copy_done(b);
        })
        .await;
    assert_eq!(hand::tags(&r), "GCZ", "{r:?}");

    // Extended protocol: Parse, Bind, Execute, Sync, data, CopyDone, Sync.
    // Only the last Sync is answered.
    let r = c
        .round_trip(|b| {
            hand::parse(b, "", "copy nums from stdin");
            hand::run(b, "");
            hand::copy_data(b, b"3\n");
            hand::copy_done(b);
            hand::sync(b);
        })
        .await;
    assert_eq!(hand::tags(&r), "12GCZ", "{r:?}");
    let r = c.simple("select count(*) from nums").await;
    assert_eq!(hand::first_column(&r), ["3"], "{r:?}");
    server_was_released(&env).await;

    // A bad row, pipelined the same way: the error, then the session goes on.
    let r = c
        .round_trip(|b| {
            pgpilot_wire::frontend::query(b, "copy nums from stdin");
            hand::copy_data(b, b"4\nfive\n");
            hand::copy_done(b);
        })
        .await;
    assert_eq!(hand::error_codes(&r), ["22P02"], "{r:?}");
    let r = c
        .round_trip(|b| {
            hand::parse(b, "", "copy nums from stdin");
            hand::run(b, "");
            hand::copy_data(b, b"six\n");
            hand::copy_done(b);
            hand::sync(b);
        })
        .await;
    assert_eq!(hand::error_codes(&r), ["22P02"], "{r:?}");
    assert_eq!(hand::tags(&r), "12GEZ", "{r:?}");
    // A COPY that never starts (no such table): its data is ignored.
    let r = c
        .round_trip(|b| {
            pgpilot_wire::frontend::query(b, "copy no_such_table from stdin");
            hand::copy_data(b, b"7\n");
            hand::copy_done(b);
        })
        .await;
    assert_eq!(hand::error_codes(&r), ["42P01"], "{r:?}");
    let r = c.simple("select count(*) from nums").await;
    assert_eq!(hand::first_column(&r), ["3"], "{r:?}");
    server_was_released(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_backslash_copy_both_directions() {
    let env = Env::start(POOL).await;
    let c = env.client().await;
    c.batch_execute("create table csv_items (id int8 primary key, name text)")
        .await
        .unwrap();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "copy-test-{}-{}",
        std::process::id(),
        env.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.csv");
    let output = dir.join("out.csv");
    let mut csv = String::new();
    for i in 0..10_000 {
        csv.push_str(&format!("{i},\"name, with comma {i}\"\n"));
    }
    std::fs::write(&input, &csv).unwrap();

    let psql = |cmd: String| {
        let mut p = external::psql(&env.url(), APP_PASSWORD);
        p.args(["-c", &cmd]);
        external::run(p, Duration::from_secs(30))
    };
    let out = psql(format!("\\copy csv_items from '{}' csv", input.display())).await;
    assert!(out.status.success(), "{}", external::describe(&out));
    assert_eq!(count(&c, "csv_items").await, 10_000);
    server_was_released(&env).await;

    let out = psql(format!(
        "\\copy (select * from csv_items order by id) to '{}' csv",
        output.display()
    ))
    .await;
    assert!(out.status.success(), "{}", external::describe(&out));
    assert_eq!(std::fs::read_to_string(&output).unwrap(), csv);
    server_was_released(&env).await;

    // A bad line: psql reports the server's error and exits non-zero.
    std::fs::write(&input, "20000,ok\nnot-a-number,bad\n").unwrap();
    let out = psql(format!("\\copy csv_items from '{}' csv", input.display())).await;
    assert!(!out.status.success(), "{}", external::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid input syntax"),
        "{}",
        external::describe(&out)
    );
    assert_eq!(count(&c, "csv_items").await, 10_000);
    server_was_released(&env).await;

    std::fs::remove_dir_all(&dir).unwrap();
}
