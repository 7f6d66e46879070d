//! Read/write routing against a real primary + streaming replica: the
//! classification table (each case asserted by where it ran,
//! `inet_server_port()`), the per-server routing counters, and a lagging
//! replica taken out of rotation.
//!
//! Read-your-writes is in `read_your_writes.rs`; failures (replica or
//! primary down, promotion) in `failover.rs`; adding, draining and removing
//! servers at run time in `runtime_servers.rs`.

mod common;

use std::time::{Duration, Instant};

use common::routing::{last_value, RouteCounts, Server};
use common::{one_value, sqlstate, Env, RoutingSetup};
use pgpilot_testkit::ClusterOptions;

/// Objects the classification cases use, created through the primary as
/// the app user before any case runs.
const CLASSIFICATION_SCHEMA: &str = "
    create table rt_rows (id int primary key, v text);
    insert into rt_rows select g, 'row ' || g from generate_series(1, 100) g;
    create sequence rt_seq;
    create function rt_volatile() returns int language sql volatile as 'select 1';
    create function rt_stable() returns int language sql stable as 'select 1';
    create function rt_listed() returns int language sql volatile as 'select 1';
";

/// One row of the classification table: statements sent as simple Queries,
/// in order, on a fresh connection (no earlier write, no pin).
struct Case {
    what: &'static str,
    sql: &'static [&'static str],
    expect: Server,
    /// SQLSTATE the last statement must fail with (no port to read then:
    /// the routing counters say where it went).
    error: Option<&'static str>,
}

const fn case(what: &'static str, sql: &'static [&'static str], expect: Server) -> Case {
    Case {
        what,
        sql,
        expect,
        error: None,
    }
}

use Server::{Primary, Replica};

const CASES: &[Case] = &[
    case("plain SELECT", &["select inet_server_port()"], Replica),
    case(
        "SELECT from a table",
        &["select v, inet_server_port() from rt_rows where id = 1"],
        Replica,
    ),
    case(
        "WITH … SELECT",
        &["with x as (select inet_server_port() as p) select p from x"],
        Replica,
    ),
    case("SHOW", &["show port"], Replica),
    case(
        "BEGIN READ ONLY + SELECT",
        &["begin read only", "select inet_server_port()", "commit"],
        Replica,
    ),
    case(
        "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY (no standby can)",
        &[
            "begin isolation level serializable read only",
            "select inet_server_port()",
            "commit",
        ],
        Primary,
    ),
    case(
        "SET default_transaction_isolation = 'serializable', SELECT",
        &[
            "set default_transaction_isolation = 'serializable'",
            "select inet_server_port()",
        ],
        Primary,
    ),
    case(
        "SET ROLE (pins the client), then INSERT",
        &[
            "set role app",
            "insert into rt_rows values (1006, 'r') returning inet_server_port()",
        ],
        Primary,
    ),
    case(
        "SET SESSION CHARACTERISTICS (pins the client), then INSERT",
        &[
            "set session characteristics as transaction isolation level repeatable read",
            "insert into rt_rows values (1007, 's') returning inet_server_port()",
        ],
        Primary,
    ),
    case(
        "BEGIN; SET TRANSACTION READ ONLY + SELECT (goes with the BEGIN)",
        &[
            "begin",
            "set transaction read only",
            "select inet_server_port()",
            "commit",
        ],
        Primary,
    ),
    case(
        "INSERT … RETURNING",
        &["insert into rt_rows values (1001, 'i') returning inet_server_port()"],
        Primary,
    ),
    case(
        "UPDATE … RETURNING",
        &["update rt_rows set v = 'u' where id = 2 returning inet_server_port()"],
        Primary,
    ),
    case(
        "DELETE … RETURNING",
        &["delete from rt_rows where id = 3 returning inet_server_port()"],
        Primary,
    ),
    case(
        "MERGE (then SELECT in the same Query)",
        &[
            "merge into rt_rows t using (select 1002 as id) s on t.id = s.id \
           when not matched then insert values (s.id, 'm'); select inet_server_port()",
        ],
        Primary,
    ),
    case(
        "DDL (then SELECT in the same Query)",
        &["create table rt_ddl (a int); select inet_server_port()"],
        Primary,
    ),
    case(
        "SELECT … FOR UPDATE",
        &["select inet_server_port() from rt_rows where id = 4 for update"],
        Primary,
    ),
    case(
        "SELECT … FOR NO KEY UPDATE",
        &["select inet_server_port() from rt_rows where id = 4 for no key update"],
        Primary,
    ),
    case(
        "SELECT … FOR SHARE",
        &["select inet_server_port() from rt_rows where id = 4 for share"],
        Primary,
    ),
    case(
        "SELECT … FOR KEY SHARE",
        &["select inet_server_port() from rt_rows where id = 4 for key share"],
        Primary,
    ),
    case(
        "SELECT … FOR UPDATE in a subquery",
        &["select inet_server_port() from (select * from rt_rows where id = 5 for update) s"],
        Primary,
    ),
    case(
        "SELECT … FOR SHARE in an EXISTS",
        &["select inet_server_port() \
           where exists (select 1 from rt_rows where id = 5 for share)"],
        Primary,
    ),
    case(
        "writing CTE",
        &[
            "with w as (insert into rt_rows values (1003, 'c') returning id) \
           select inet_server_port() from w",
        ],
        Primary,
    ),
    case(
        "SELECT INTO (port stored, read back)",
        &[
            "select inet_server_port() as p into rt_into",
            "select p from rt_into",
        ],
        Primary,
    ),
    case(
        "SELECT nextval(…)",
        &["select nextval('rt_seq'), inet_server_port()"],
        Primary,
    ),
    case(
        "SELECT pg_advisory_lock(…)",
        &["select pg_advisory_lock(42), inet_server_port()"],
        Primary,
    ),
    case(
        "user function VOLATILE",
        &["select rt_volatile(), inet_server_port()"],
        Primary,
    ),
    case(
        "user function STABLE",
        &["select rt_stable(), inet_server_port()"],
        Replica,
    ),
    case(
        "VOLATILE function in routing.read_only_functions",
        &["select rt_listed(), inet_server_port()"],
        Replica,
    ),
    case(
        "explicit BEGIN + SELECT",
        &["begin", "select inet_server_port()", "commit"],
        Primary,
    ),
    case(
        "LISTEN, then SELECT (pinned)",
        &["listen rt_channel", "select inet_server_port()"],
        Primary,
    ),
    case(
        "temp table (port stored, read back)",
        &[
            "create temp table rt_tmp as select inet_server_port() as p",
            "select p from rt_tmp",
        ],
        Primary,
    ),
    Case {
        what: "unparseable text (error from the server it went to)",
        sql: &["selec 1"],
        expect: Primary,
        error: Some("42601"),
    },
    case(
        "/* pgpilot:primary */ SELECT",
        &["/* pgpilot:primary */ select inet_server_port()"],
        Primary,
    ),
    case(
        "/* pgpilot:replica */ SELECT",
        &["/* pgpilot:replica */ select inet_server_port()"],
        Replica,
    ),
    case(
        "/* pgpilot:replica */ SELECT of a VOLATILE function",
        &["/* pgpilot:replica */ select rt_volatile(), inet_server_port()"],
        Replica,
    ),
    case(
        "SET pgpilot.route = 'primary', SELECT",
        &["set pgpilot.route = 'primary'", "select inet_server_port()"],
        Primary,
    ),
    case(
        "SET pgpilot.route = 'primary', SELECT, RESET pgpilot.route, SELECT",
        &[
            "set pgpilot.route = 'primary'",
            "select inet_server_port()",
            "reset pgpilot.route",
            "select inet_server_port()",
        ],
        Replica,
    ),
    case(
        "SET pgpilot.route = 'replica', SELECT of a VOLATILE function",
        &[
            "set pgpilot.route = 'replica'",
            "select rt_volatile(), inet_server_port()",
        ],
        Replica,
    ),
];

/// A cluster with the classification schema, the replica caught up and
/// pgpilot's monitor ready (servers sampled, catalog loaded).
async fn classification_env() -> Env {
    let env = Env::start_routed(RoutingSetup::routing(
        r#"read_only_functions = ["rt_listed"]"#,
    ))
    .await;
    env.direct()
        .await
        .batch_execute(CLASSIFICATION_SCHEMA)
        .await
        .expect("schema");
    tokio::task::block_in_place(|| env.cluster.wait_replica_caught_up()).expect("replica");
    env.wait_routing_ready().await;
    common::routing::wait_for("the user functions in the catalog", || {
        env.proxy
            .rt
            .functions
            .is_read_only(pgpilot_testkit::APP_DB, "rt_stable", &[])
    })
    .await;
    env
}

/// Where a case went by the routing counters (checkouts per server).
fn routed_to(before: (RouteCounts, RouteCounts), env: &Env) -> (u64, u64) {
    let (p, r) = env.counts();
    (p.since(&before.0).total(), r.since(&before.1).total())
}

/// Runs one case on a fresh connection; returns the server its last
/// statement ran on (by port, or by the counters when it failed) and the
/// checkouts per server.
async fn run_case(env: &Env, c: &Case) -> (Server, (u64, u64)) {
    let client = env.client().await;
    let before = env.counts();
    let mut port = None;
    let (last, init) = c.sql.split_last().expect("a case has statements");
    let ok_statements = if c.error.is_some() { init } else { c.sql };
    for sql in ok_statements {
        if let Some(v) = last_value(&client, sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {sql}: {e:?}", c.what))
        {
            port = v.parse::<u16>().ok().or(port);
        }
    }
    if let Some(code) = c.error {
        let e = last_value(&client, last)
            .await
            .expect_err("the statement must fail");
        assert_eq!(sqlstate(&e), code, "{}: {e:?}", c.what);
    } else {
        assert!(port.is_some(), "{}: no statement returned a port", c.what);
    }
    let checkouts = routed_to(before, env);
    let server = match port {
        Some(port) => env.server_at(port),
        None if checkouts == (1, 0) => Primary,
        None if checkouts == (0, 1) => Replica,
        None => panic!("{}: no port and checkouts {checkouts:?}", c.what),
    };
    (server, checkouts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classification_table_runs_each_statement_where_it_belongs() {
    let env = classification_env().await;
    let mut table = vec![format!(
        "| {:<66} | {:<8} | {:<8} | checkouts primary/replica |",
        "statement", "expected", "ran on"
    )];
    let mut wrong = Vec::new();
    for c in CASES {
        let (server, (p, r)) = run_case(&env, c).await;
        table.push(format!(
            "| {:<66} | {:<8} | {:<8} | {p}/{r} |",
            c.what,
            c.expect.as_str(),
            server.as_str()
        ));
        if server != c.expect {
            wrong.push(c.what);
        }
    }
    for (what, server) in extended_protocol_cases(&env).await {
        table.push(format!(
            "| {what:<66} | {:<8} | {:<8} | |",
            if what.contains("INSERT") {
                "primary"
            } else {
                "replica"
            },
            server.as_str()
        ));
    }
    println!("{}", table.join("\n"));
    assert!(wrong.is_empty(), "routed to the wrong server: {wrong:?}");
    startup_route_override_holds_from_the_first_statement(&env).await;
}

/// `pgpilot.route` given as a startup option (`-c pgpilot.route=primary`)
/// applies to the client's very first statement, not only after its first
/// transaction.
async fn startup_route_override_holds_from_the_first_statement(env: &Env) {
    let conn = format!("{} options='-c pgpilot.route=primary'", env.conn_str());
    for _ in 0..3 {
        let client = common::connect(&conn).await;
        let port = one_value(&client, "select inet_server_port()")
            .await
            .and_then(|p| p.parse::<u16>().ok())
            .expect("a port");
        assert_eq!(
            env.server_at(port),
            Primary,
            "first statement of a new client"
        );
    }
}

/// The same decisions through the extended protocol (Parse/Bind/Execute
/// of a prepared statement, as drivers send them).
async fn extended_protocol_cases(env: &Env) -> Vec<(&'static str, Server)> {
    let reader = env.client().await;
    let select = reader
        .prepare("select inet_server_port() from rt_rows where id = $1")
        .await
        .unwrap();
    let port: i32 = reader.query_one(&select, &[&5i32]).await.unwrap().get(0);
    let read = env.server_at(port as u16);
    assert_eq!(read, Replica, "prepared SELECT");

    let writer = env.client().await;
    let insert = writer
        .prepare("insert into rt_rows values ($1, 'x') returning inet_server_port()")
        .await
        .unwrap();
    let port: i32 = writer.query_one(&insert, &[&1004i32]).await.unwrap().get(0);
    let write = env.server_at(port as u16);
    assert_eq!(write, Primary, "prepared INSERT");
    vec![
        ("extended protocol: prepared SELECT", read),
        ("extended protocol: prepared INSERT … RETURNING", write),
    ]
}

/// The replica's apply delay in the counter test.
const APPLY_DELAY: Duration = Duration::from_millis(300);

/// A cluster whose replica applies commits `apply_delay` late, with table
/// `counted`, pgpilot configured with `routing` lines and ready.
async fn counted_env(routing: &str, apply_delay: Duration) -> Env {
    let env = Env::start_routed(RoutingSetup {
        cluster: ClusterOptions {
            replica_apply_delay: Some(apply_delay),
            ..ClusterOptions::default()
        },
        routing: routing.to_owned(),
        ..RoutingSetup::default()
    })
    .await;
    env.direct()
        .await
        .batch_execute("create table counted (id int)")
        .await
        .unwrap();
    tokio::task::block_in_place(|| env.cluster.wait_replica_caught_up()).expect("replica");
    env.wait_routing_ready().await;
    env
}

/// Runs `sql` `times` times on `client`, each on `expect`; returns the
/// change in the (primary, replica) routing counters.
async fn routed(
    env: &Env,
    client: &tokio_postgres::Client,
    sql: &str,
    times: usize,
    expect: Server,
) -> (RouteCounts, RouteCounts) {
    let before = env.counts();
    for _ in 0..times {
        let port = common::routing::port_of(client, sql).await;
        assert_eq!(env.server_at(port), expect, "{sql}");
    }
    let (p, r) = env.counts();
    (p.since(&before.0), r.since(&before.1))
}

fn counts(reads: u64, writes: u64, read_fallbacks: u64, ryw_fallbacks: u64) -> RouteCounts {
    RouteCounts {
        reads,
        writes,
        read_fallbacks,
        ryw_fallbacks,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_counters_follow_reads_writes_and_fallbacks() {
    let env = counted_env("", APPLY_DELAY).await;
    let client = env.client().await;
    let none = RouteCounts::default();
    let read = "select inet_server_port()";

    let d = routed(&env, &client, read, 5, Replica).await;
    assert_eq!(d, (none, counts(5, 0, 0, 0)), "plain reads");
    let write = "insert into counted values (1) returning inet_server_port()";
    let d = routed(&env, &client, write, 3, Primary).await;
    assert_eq!(d, (counts(0, 3, 0, 0), none), "writes");
    let wrote_at = Instant::now();
    let d = routed(&env, &client, read, 1, Primary).await;
    assert_eq!(d, (counts(0, 0, 0, 1), none), "read right after the write");

    let (p, r) = (env.backend(Primary), env.backend(Replica));
    common::routing::wait_for("the replica to replay the write", || {
        p.position_after(wrote_at)
            .is_some_and(|needed| r.position().0 >= needed)
    })
    .await;
    let d = routed(&env, &client, read, 1, Replica).await;
    assert_eq!(
        d,
        (none, counts(1, 0, 0, 0)),
        "read once the replica has the write"
    );

    env.proxy.rt.backends.drain(r.id).expect("drain");
    let d = routed(&env, &client, read, 2, Primary).await;
    assert_eq!(
        d,
        (counts(0, 0, 2, 0), none),
        "reads with the replica drained"
    );

    let mut no_fallback = RoutingSetup::routing(r#"fallback = "error""#);
    no_fallback.cluster.replica_apply_delay = Some(APPLY_DELAY);
    env.proxy
        .rt
        .reload(env.routed_settings(&[env.replica_port()], &no_fallback));
    let e = last_value(&client, read)
        .await
        .expect_err("no server for the read");
    println!("read with the replica drained and fallback = \"error\": {e:?}");
    assert_eq!(sqlstate(&e), "57P03");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_is_taken_out_until_it_catches_up() {
    let env = counted_env(r#"max_lag = "100ms""#, Duration::from_millis(500)).await;
    let reader = env.client().await;
    let read = "select inet_server_port()";
    assert_eq!(routed(&env, &reader, read, 1, Replica).await.1.reads, 1);

    let writer = env.client().await;
    let r = env.backend(Replica);
    let started = Instant::now();
    while r.lag().1 <= 100 {
        writer
            .batch_execute("insert into counted values (2)")
            .await
            .unwrap();
        assert!(
            started.elapsed() < common::routing::MONITOR_WAIT,
            "the replica's lag never exceeded max_lag"
        );
    }
    println!("replica lag under writes: {:?} (bytes, ms)", r.lag());
    let d = routed(&env, &reader, read, 3, Primary).await;
    assert_eq!(d.0.read_fallbacks, 3, "a lagging replica serves no reads");

    let caught_up =
        common::routing::wait_for("the replica to catch up", || r.lag() == (0, 0)).await;
    println!("caught up {caught_up:?} after the writes stopped");
    let d = routed(&env, &reader, read, 1, Replica).await;
    assert_eq!(d.1.reads, 1, "back in rotation once caught up");
}
