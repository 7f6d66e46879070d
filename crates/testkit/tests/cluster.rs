//! The test kit against real PostgreSQL servers: clusters start, replicate,
//! authenticate the kit's roles, survive stop/start, promote, and vanish on
//! drop.

use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use pgpilot_testkit::{
    pgbench_path, Cluster, ClusterOptions, Error, APP_DB, APP_PASSWORD, APP_USER, MD5_PASSWORD,
    MD5_USER, PLAIN_PASSWORD, PLAIN_USER,
};

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn accepts_connections(port: u16) -> bool {
    TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1)).is_ok()
}

#[test]
fn primary_answers_queries_and_is_not_in_recovery() {
    let cluster = Cluster::primary_only();
    let primary = &cluster.primary;
    assert_eq!(primary.host, "127.0.0.1");
    assert!(
        (20000..32000).contains(&primary.port),
        "port {}",
        primary.port
    );
    assert!(cluster.replica.is_none());
    assert_eq!(cluster.psql(primary, "postgres", "select 1").unwrap(), "1");
    assert_eq!(
        cluster
            .psql(primary, "postgres", "select pg_is_in_recovery()")
            .unwrap(),
        "f"
    );
    let rows = cluster.psql(primary, "postgres", "create table t(a int, b text); insert into t values (1, 'x'), (2, 'y'); select * from t order by a").unwrap();
    assert_eq!(rows, "1|x\n2|y");
    assert!(
        primary
            .log()
            .contains("database system is ready to accept connections"),
        "{}",
        primary.log()
    );
}

#[test]
fn psql_errors_carry_the_server_message() {
    let cluster = Cluster::primary_only();
    let err = cluster
        .psql(&cluster.primary, "postgres", "select * from no_such_table")
        .unwrap_err();
    assert!(matches!(err, Error::Psql { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("relation \"no_such_table\" does not exist"),
        "{err}"
    );
}

#[test]
fn roles_authenticate_with_their_passwords() {
    let cluster = Cluster::primary_only();
    let p = &cluster.primary;
    for (user, password) in [
        (APP_USER, APP_PASSWORD),
        (MD5_USER, MD5_PASSWORD),
        (PLAIN_USER, PLAIN_PASSWORD),
    ] {
        let who = cluster
            .psql_as(p, user, Some(password), "postgres", "select current_user")
            .unwrap();
        assert_eq!(who, user);
        let wrong = cluster
            .psql_as(p, user, Some("wrong"), "postgres", "select 1")
            .unwrap_err();
        assert!(
            wrong.to_string().contains("password authentication failed"),
            "{wrong}"
        );
        // PG15 no longer lets PUBLIC create in `public`; the kit grants it.
        let table = format!("create table {user}_t(a int); drop table {user}_t");
        cluster
            .psql_as(p, user, Some(password), "postgres", &table)
            .unwrap();
    }
    let hashes = cluster
        .psql(p, "postgres", "select rolname, left(rolpassword, 14) from pg_authid where rolname in ('app', 'md5user') order by 1")
        .unwrap();
    // md5user's hash is md5(password || user), as the md5 method expects.
    assert_eq!(hashes, "app|SCRAM-SHA-256$\nmd5user|md5f523c908ca9");
    let owner = cluster
        .psql(
            p,
            "postgres",
            &format!("select pg_get_userbyid(datdba) from pg_database where datname = '{APP_DB}'"),
        )
        .unwrap();
    assert_eq!(owner, APP_USER);
    cluster
        .psql_as(
            p,
            APP_USER,
            Some(APP_PASSWORD),
            APP_DB,
            "create table t(a int)",
        )
        .unwrap();
    let url = p.url(APP_USER, Some(APP_PASSWORD), APP_DB);
    assert_eq!(
        url,
        format!("postgres://app:app-secret@127.0.0.1:{}/app", p.port)
    );
}

#[test]
fn extra_conf_reaches_the_server() {
    let opts = ClusterOptions {
        extra_conf: vec![
            "work_mem = '7MB'".into(),
            "application_name = 'kit-test'".into(),
        ],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cluster
            .psql(&cluster.primary, "postgres", "show work_mem")
            .unwrap(),
        "7MB"
    );
    assert_eq!(
        cluster
            .psql(&cluster.primary, "postgres", "show wal_level")
            .unwrap(),
        "logical"
    );
}

#[test]
fn drop_stops_the_server_and_removes_its_files() {
    let cluster = Cluster::primary_only();
    let port = cluster.primary.port;
    let data_dir = cluster.primary.data_dir.clone();
    let work_dir = data_dir.parent().unwrap().to_owned();
    assert!(data_dir.join("PG_VERSION").is_file());
    assert!(accepts_connections(port));
    drop(cluster);
    assert!(!work_dir.exists(), "{} still exists", work_dir.display());
    assert!(
        !accepts_connections(port),
        "port {port} still accepts connections"
    );
}

#[test]
fn drop_runs_when_a_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let cluster = Cluster::primary_only();
        tx.send((cluster.primary.port, cluster.primary.data_dir.clone()))
            .unwrap();
        panic!("simulated test failure");
    })
    .join();
    assert!(result.is_err());
    let (port, data_dir) = rx.recv().unwrap();
    assert!(!data_dir.exists());
    assert!(!accepts_connections(port));
}

#[test]
fn stopped_instance_refuses_connections_and_restarts_on_its_port() {
    let cluster = Cluster::primary_only();
    let p = &cluster.primary;
    cluster
        .psql(
            p,
            "postgres",
            "create table kept(a int); insert into kept values (42)",
        )
        .unwrap();
    cluster.stop_instance(p).unwrap();
    assert!(!accepts_connections(p.port));
    assert!(cluster.psql(p, "postgres", "select 1").is_err());
    cluster.start_instance(p).unwrap();
    assert_eq!(
        cluster.psql(p, "postgres", "select a from kept").unwrap(),
        "42"
    );
}

#[test]
fn replica_streams_changes_from_the_primary() {
    let cluster = Cluster::with_replica();
    let replica = cluster.expect_replica();
    assert_ne!(replica.port, cluster.primary.port);
    assert_eq!(
        cluster
            .psql(replica, "postgres", "select pg_is_in_recovery()")
            .unwrap(),
        "t"
    );
    let senders = cluster.psql(
        &cluster.primary,
        "postgres",
        "select count(*) from pg_stat_replication where state = 'streaming'",
    );
    assert_eq!(senders.unwrap(), "1");

    cluster
        .psql(
            &cluster.primary,
            "postgres",
            "create table shipped(a int); insert into shipped values (7)",
        )
        .unwrap();
    cluster.wait_replica_caught_up().unwrap();
    assert_eq!(
        cluster
            .psql(replica, "postgres", "select a from shipped")
            .unwrap(),
        "7"
    );

    let write = cluster
        .psql(replica, "postgres", "insert into shipped values (8)")
        .unwrap_err();
    assert!(
        write.to_string().contains("read-only transaction"),
        "{write}"
    );
    // The roles come with the replica too.
    let who = cluster.psql_as(
        replica,
        APP_USER,
        Some(APP_PASSWORD),
        APP_DB,
        "select current_user",
    );
    assert_eq!(who.unwrap(), APP_USER);
}

#[test]
fn promoted_replica_accepts_writes() {
    let cluster = Cluster::with_replica();
    let replica = cluster.expect_replica();
    cluster.stop_instance(&cluster.primary).unwrap();
    cluster.promote(replica).unwrap();
    assert_eq!(
        cluster
            .psql(replica, "postgres", "select pg_is_in_recovery()")
            .unwrap(),
        "f"
    );
    cluster
        .psql(replica, "postgres", "create table after_failover(a int)")
        .unwrap();
}

#[test]
fn apply_delay_holds_back_replay() {
    let delay = Duration::from_secs(2);
    let opts = ClusterOptions {
        replica: true,
        replica_apply_delay: Some(delay),
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(opts).unwrap_or_else(|e| panic!("{e}"));
    let replica = cluster.expect_replica();
    cluster
        .psql(&cluster.primary, "postgres", "create table late(a int)")
        .unwrap();
    let committed = Instant::now();
    let seen = cluster
        .psql(
            replica,
            "postgres",
            "select count(*) from pg_class where relname = 'late'",
        )
        .unwrap();
    if committed.elapsed() < delay {
        assert_eq!(seen, "0", "the replica applied the commit before its delay");
    }
    cluster.wait_replica_caught_up().unwrap();
    assert!(committed.elapsed() >= delay - Duration::from_millis(100));
    assert_eq!(
        cluster
            .psql(replica, "postgres", "select count(*) from late")
            .unwrap(),
        "0"
    );
}

#[test]
fn pgbench_is_next_to_the_server() {
    let path = pgbench_path().unwrap_or_else(|e| panic!("{e}"));
    assert!(path.ends_with("pgbench") && path.is_file());
}

#[test]
fn a_server_that_cannot_start_fails_fast_with_its_log() {
    let opts = ClusterOptions {
        extra_conf: vec!["no_such_setting = 1".into()],
        ..ClusterOptions::default()
    };
    let began = Instant::now();
    let err = Cluster::start(opts).expect_err("an unknown setting must stop the server");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "took {:?}",
        began.elapsed()
    );
    assert!(
        matches!(err, Error::ServerStart { attempts: 1, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("unrecognized configuration parameter \"no_such_setting\""),
        "{message}"
    );
}
