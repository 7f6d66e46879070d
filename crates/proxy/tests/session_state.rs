//! Session state through pgpilot with real drivers: `SET`s replayed per
//! client and never leaked to another client sharing the server connection,
//! startup parameters, `SET LOCAL`, rolled-back `SET`s, `RESET`, pinning
//! (LISTEN/NOTIFY, temp tables) and session mode's reset on hand-over.

mod common;

use std::time::{Duration, Instant};

use common::{one_value, sqlstate, Env, Setup};
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// The settings these tests move around, as one client sees them, and the
/// server backend that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    search_path: String,
    timezone: String,
    application_name: String,
    /// `myapp.user_id`; empty when never set (or reset) on that backend.
    user_id: String,
}

const SEEN_SQL: &str = "select current_setting('search_path'), current_setting('TimeZone'), \
     current_setting('application_name'), coalesce(current_setting('myapp.user_id', true), ''), \
     pg_backend_pid()";

/// Reads [`Seen`] with the extended protocol, and the backend pid.
async fn seen(c: &Client) -> (Seen, i32) {
    let row = c.query_one(SEEN_SQL, &[]).await.expect("settings query");
    let s = Seen {
        search_path: row.get(0),
        timezone: row.get(1),
        application_name: row.get(2),
        user_id: row.get(3),
    };
    (s, row.get(4))
}

async fn show(c: &Client, name: &str) -> String {
    one_value(c, &format!("show {name}"))
        .await
        .expect("SHOW is never NULL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_is_isolated_between_clients_sharing_one_server() {
    let env = Env::start("max_size = 1").await;
    let a = env.client().await;
    let b = env.client().await;
    let (defaults, pid) = seen(&b).await;
    assert_ne!(defaults.timezone, "America/New_York");

    a.batch_execute(
        "SET search_path TO a_schema, public; SET TimeZone = 'America/New_York'; \
         SET application_name = 'client-a'",
    )
    .await
    .unwrap();
    a.execute("SET myapp.user_id = '42'", &[]).await.unwrap();
    let mine = Seen {
        search_path: "a_schema, public".into(),
        timezone: "America/New_York".into(),
        application_name: "client-a".into(),
        user_id: "42".into(),
    };
    for i in 0..20 {
        let (a_seen, a_pid) = seen(&a).await;
        assert_eq!(a_seen, mine, "A lost its settings in round {i}");
        assert_eq!(a_pid, pid, "one server connection only");
        let (b_seen, b_pid) = seen(&b).await;
        assert_eq!(b_seen, defaults, "A's settings leaked to B in round {i}");
        assert_eq!(b_pid, pid);
        // Explicit transactions and simple queries in between.
        a.batch_execute("begin; select 1; commit").await.unwrap();
        assert_eq!(show(&b, "search_path").await, defaults.search_path);
        assert_eq!(show(&a, "TimeZone").await, "America/New_York");
    }
    // B's own SET is just as private.
    b.batch_execute("SET application_name = 'client-b'")
        .await
        .unwrap();
    assert_eq!(show(&a, "application_name").await, "client-a");
    assert_eq!(show(&b, "application_name").await, "client-b");
    assert_eq!(show(&a, "application_name").await, "client-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_hold_on_a_shared_server() {
    let env = Env::start("max_size = 1").await;
    env.psql("create schema startup_schema authorization app");
    let extra = "application_name=startup-app options='-c search_path=startup_schema,public'";
    let a = common::connect(&format!("{} {extra}", env.conn_str())).await;
    let b = env.client().await;
    // What PostgreSQL itself makes of the same startup packet.
    let direct = common::connect(&format!(
        "host=127.0.0.1 port={} user={} password={} dbname={} {extra}",
        env.cluster.primary.port,
        pgpilot_testkit::APP_USER,
        pgpilot_testkit::APP_PASSWORD,
        pgpilot_testkit::APP_DB
    ))
    .await;
    let schemas = "select current_schemas(false)::text";
    let expected_schemas = one_value(&direct, schemas).await;
    assert_eq!(expected_schemas.as_deref(), Some("{startup_schema,public}"));
    let expected_path = show(&direct, "search_path").await;
    for _ in 0..5 {
        assert_eq!(show(&a, "application_name").await, "startup-app");
        assert_eq!(show(&a, "search_path").await, expected_path);
        assert_eq!(one_value(&a, schemas).await, expected_schemas);
        assert_eq!(show(&b, "application_name").await, "");
        assert_eq!(show(&b, "search_path").await, "\"$user\", public");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_local_and_rolled_back_set_do_not_persist() {
    let env = Env::start("max_size = 1").await;
    let a = env.client().await;
    let b = env.client().await;
    let default_path = show(&b, "search_path").await;

    a.batch_execute("begin; SET LOCAL search_path TO local_only")
        .await
        .unwrap();
    assert_eq!(show(&a, "search_path").await, "local_only");
    a.batch_execute("commit").await.unwrap();
    assert_eq!(show(&a, "search_path").await, default_path);

    a.batch_execute("begin; SET search_path TO rolled_back; rollback")
        .await
        .unwrap();
    assert_eq!(show(&a, "search_path").await, default_path);

    // A SET before a failing statement in the same transaction.
    a.batch_execute("begin; SET search_path TO failed_txn")
        .await
        .unwrap();
    a.batch_execute("select 1/0").await.unwrap_err();
    a.batch_execute("rollback").await.unwrap();
    assert_eq!(show(&a, "search_path").await, default_path);

    // An implicit transaction (one simple query) that fails as a whole.
    a.batch_execute("SET search_path TO implicit_failed; select 1/0")
        .await
        .unwrap_err();
    assert_eq!(show(&a, "search_path").await, default_path);
    assert_eq!(show(&b, "search_path").await, default_path);

    // A committed one does persist.
    a.batch_execute("begin; SET search_path TO committed; commit")
        .await
        .unwrap();
    assert_eq!(show(&b, "search_path").await, default_path);
    assert_eq!(show(&a, "search_path").await, "committed");
}

/// PostgreSQL keeps a `SET` made before a savepoint that is rolled back to;
/// whatever pgpilot concludes for the client, the server connection must
/// not carry that setting to another client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_before_a_rolled_back_savepoint_does_not_leak() {
    let env = Env::start("max_size = 1").await;
    let a = env.client().await;
    let b = env.client().await;
    let default_path = show(&b, "search_path").await;

    a.batch_execute(
        "begin; SET search_path TO before_savepoint; savepoint s; select 1; \
         rollback to savepoint s; commit",
    )
    .await
    .unwrap();
    assert_eq!(show(&b, "search_path").await, default_path);

    a.batch_execute("begin; SET search_path TO before_error; savepoint s")
        .await
        .unwrap();
    a.batch_execute("select 1/0").await.unwrap_err();
    a.batch_execute("rollback to savepoint s; commit")
        .await
        .unwrap();
    assert_eq!(show(&b, "search_path").await, default_path);
}

/// Pipelined queries: the SET in the second one runs even though the first
/// one fails, as PostgreSQL runs them as separate transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_pipelined_after_a_failing_query_is_kept_and_not_leaked() {
    let env = Env::start("max_size = 1").await;
    let a = env.client().await;
    let b = env.client().await;
    let default_path = show(&b, "search_path").await;
    let (failing, set) = tokio::join!(
        a.batch_execute("select 1/0"),
        a.batch_execute("SET search_path TO pipelined")
    );
    assert_eq!(sqlstate(&failing.unwrap_err()), "22012");
    set.unwrap();
    assert_eq!(show(&b, "search_path").await, default_path);
    assert_eq!(show(&a, "search_path").await, "pipelined");

    // The other order: the SET is answered before the failure.
    let (set, failing) = tokio::join!(
        a.batch_execute("SET search_path TO pipelined_first"),
        a.batch_execute("select 1/0")
    );
    set.unwrap();
    assert_eq!(sqlstate(&failing.unwrap_err()), "22012");
    assert_eq!(show(&b, "search_path").await, default_path);
    assert_eq!(show(&a, "search_path").await, "pipelined_first");
}

/// Drivers prepare a statement in one round trip and run it in the next: a
/// `SET` that fails when it runs must count as failed, or pgpilot replays a
/// statement that cannot succeed at every checkout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_extended_protocol_set_is_not_replayed() {
    let env = Env::start("max_size = 1").await;
    let a = env.client().await;
    let b = env.client().await;
    a.execute("SET application_name = 'extended-a'", &[])
        .await
        .unwrap();
    let err = a
        .execute("SET TimeZone = 'Nowhere/Bogus'", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "22023");
    let pid = one_value(&b, "select pg_backend_pid()").await;
    for _ in 0..5 {
        let (a_seen, a_pid) = seen(&a).await;
        assert_eq!(a_seen.application_name, "extended-a");
        assert_ne!(a_seen.timezone, "Nowhere/Bogus");
        assert_eq!(Some(a_pid.to_string()), pid, "the server is not replaced");
        assert_eq!(show(&b, "application_name").await, "");
        assert_eq!(one_value(&b, "select pg_backend_pid()").await, pid);
    }
    // A prepared SET runs (and counts) each time it is executed.
    let set = a.prepare("SET search_path TO prepared_path").await.unwrap();
    assert_eq!(show(&b, "search_path").await, "\"$user\", public");
    a.execute(&set, &[]).await.unwrap();
    assert_eq!(show(&b, "search_path").await, "\"$user\", public");
    assert_eq!(show(&a, "search_path").await, "prepared_path");
    a.batch_execute("RESET search_path").await.unwrap();
    a.execute(&set, &[]).await.unwrap();
    assert_eq!(show(&a, "search_path").await, "prepared_path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_reset_all_return_to_startup_values() {
    let env = Env::start("max_size = 1").await;
    let extra = "application_name=startup-app options='-c search_path=startup_schema'";
    let a = common::connect(&format!("{} {extra}", env.conn_str())).await;
    let b = env.client().await;

    a.batch_execute("SET application_name = 'changed'; SET search_path TO changed")
        .await
        .unwrap();
    a.batch_execute("SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    assert_eq!(show(&a, "application_name").await, "changed");
    a.batch_execute("RESET application_name").await.unwrap();
    assert_eq!(show(&b, "application_name").await, "");
    assert_eq!(show(&a, "application_name").await, "startup-app");
    assert_eq!(show(&a, "search_path").await, "changed");
    a.batch_execute("SET search_path TO DEFAULT").await.unwrap();
    assert_eq!(show(&a, "search_path").await, "startup_schema");

    a.batch_execute("SET application_name = 'changed-again'; SET search_path TO again")
        .await
        .unwrap();
    let default_tz = show(&b, "TimeZone").await;
    a.batch_execute("RESET ALL").await.unwrap();
    assert_eq!(show(&b, "application_name").await, "");
    assert_eq!(show(&a, "application_name").await, "startup-app");
    assert_eq!(show(&a, "search_path").await, "startup_schema");
    assert_eq!(show(&a, "TimeZone").await, default_tz);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_pins_and_receives_notifications() {
    let env = Env::start("max_size = 2").await;
    let (listener, mut conn) = tokio_postgres::connect(&env.conn_str(), NoTls)
        .await
        .unwrap();
    let (tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    listener.batch_execute("LISTEN pgpilot_chan").await.unwrap();
    // Unrelated transactions of the listener keep its server.
    listener.batch_execute("select 1").await.unwrap();

    let notifier = env.client().await;
    notifier
        .batch_execute("NOTIFY pgpilot_chan, 'hello'")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), notes.recv())
        .await
        .expect("notification within 5s")
        .expect("listener connection alive");
    assert_eq!(got, ("pgpilot_chan".to_owned(), "hello".to_owned()));

    // A notification that arrives while the listener is idle, from a
    // transaction on the direct connection.
    env.direct()
        .await
        .batch_execute("select pg_notify('pgpilot_chan', 'direct')")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), notes.recv())
        .await
        .expect("second notification within 5s")
        .expect("listener connection alive");
    assert_eq!(got.1, "direct");
    assert_eq!(
        one_value(&notifier, "select count(*) from pg_listening_channels()").await,
        Some("0".into()),
        "the notifier's server does not listen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_table_pins_its_client() {
    let env = Env::start("max_size = 2").await;
    let a = env.client().await;
    let b = env.client().await;
    a.batch_execute("create temp table tmp_a (x int); insert into tmp_a values (1)")
        .await
        .unwrap();
    let a_pid = one_value(&a, "select pg_backend_pid()").await;
    // B holds a transaction: were A not pinned, B would now sit on A's
    // former server and A would land on the other one.
    b.batch_execute("begin").await.unwrap();
    assert_ne!(one_value(&b, "select pg_backend_pid()").await, a_pid);
    for i in 2..10 {
        a.execute("insert into tmp_a values ($1)", &[&i])
            .await
            .unwrap();
        assert_eq!(one_value(&a, "select pg_backend_pid()").await, a_pid);
    }
    assert_eq!(
        one_value(&a, "select count(*) from tmp_a").await,
        Some("9".into())
    );
    let err = b.batch_execute("select * from tmp_a").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42P01", "B must not see A's temp table");
    b.batch_execute("rollback").await.unwrap();
    let err = b.batch_execute("select * from tmp_a").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_server_is_not_lent_while_its_client_is_connected() {
    let env = Env::start("max_size = 1\ncheckout_timeout = \"300ms\"").await;
    let a = env.client().await;
    let b = env.client().await;
    a.batch_execute("LISTEN pinned_chan").await.unwrap();

    let started = Instant::now();
    let err = b.batch_execute("select 1").await.unwrap_err();
    assert_eq!(sqlstate(&err), "53300", "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // The pinned client itself is unaffected.
    assert_eq!(one_value(&a, "select 1").await, Some("1".into()));

    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match b
            .simple_query("select count(*) from pg_listening_channels()")
            .await
        {
            Ok(rows) => {
                let count = rows.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                });
                assert_eq!(count.as_deref(), Some("0"), "A's LISTEN was reset");
                break;
            }
            Err(e) if Instant::now() < deadline => assert_eq!(sqlstate(&e), "53300"),
            Err(e) => panic!("server never came back after the pinned client left: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_discards_state_before_the_next_client() {
    let env = Env::start("max_size = 1\nmode = \"session\"").await;
    let a = env.client().await;
    a.batch_execute(
        "SET search_path TO session_a; SET myapp.user_id = '7'; \
         create temp table tmp_s (x int); PREPARE p AS select 1",
    )
    .await
    .unwrap();
    let a_pid = one_value(&a, "select pg_backend_pid()").await;
    drop(a);

    // Session mode holds the server from login: B logs in once A has left.
    let b = env.client().await;
    assert_eq!(one_value(&b, "select pg_backend_pid()").await, a_pid);
    assert_eq!(show(&b, "search_path").await, "\"$user\", public");
    assert_eq!(
        one_value(
            &b,
            "select coalesce(current_setting('myapp.user_id', true), '')"
        )
        .await,
        Some(String::new())
    );
    assert_eq!(
        one_value(&b, "select to_regclass('pg_temp.tmp_s') is null").await,
        Some("t".into())
    );
    assert_eq!(
        one_value(&b, "select count(*) from pg_prepared_statements").await,
        Some("0".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_applies_startup_parameters() {
    let env = Env::start_setup(Setup::pool("max_size = 1\nmode = \"session\"")).await;
    let extra = "application_name=session-app options='-c search_path=session_schema'";
    let a = common::connect(&format!("{} {extra}", env.conn_str())).await;
    assert_eq!(show(&a, "application_name").await, "session-app");
    assert_eq!(show(&a, "search_path").await, "session_schema");
    drop(a);
    let b = env.client().await;
    assert_eq!(show(&b, "application_name").await, "");
    assert_eq!(show(&b, "search_path").await, "\"$user\", public");
}
