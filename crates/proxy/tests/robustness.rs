//! pgpilot under hostile or unlucky conditions: sockets that never log in,
//! garbage, a 2 GB length field, SSL/GSS/cancel/v2 startup packets, the
//! client connection limit, checkout timeouts, server backends killed while
//! idle in the pool, and a reload that grows a pool under waiting clients.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::wire_client::{error_fields, first_column, first_error, RawConn};
use common::{one_value, sqlstate, Env, Setup};
use pgpilot_testkit::{APP_DB, APP_PASSWORD, APP_USER};
use pgpilot_wire::startup;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// `startup_timeout` in the common test settings.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(2);

async fn raw_login(env: &Env) -> RawConn {
    RawConn::login_scram(env.proxy.addr, APP_USER, APP_PASSWORD, APP_DB).await
}

/// The client still gets served: a fresh login and a query.
async fn still_serves(env: &Env) {
    let c = env.client().await;
    assert_eq!(one_value(&c, "select 1").await, Some("1".into()));
}

/// This process's resident set size (the proxy runs inside it), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kb * 1024
}

/// Reads until end of stream; `Ok(bytes read)` or the error that ended it.
async fn read_to_end(mut s: TcpStream) -> std::io::Result<usize> {
    let mut sink = Vec::new();
    s.read_to_end(&mut sink).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_do_not_block_logins_and_are_closed_after_the_startup_timeout() {
    let env = Env::start("max_size = 2").await;
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(env.proxy.addr).await.unwrap());
    }

    let started = Instant::now();
    still_serves(&env).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a login took {:?} next to 200 silent sockets",
        started.elapsed()
    );
    let mut probe = [0u8; 1];
    assert!(
        matches!(silent[0].try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "silent sockets are not closed before the startup timeout"
    );

    let closes: Vec<_> = silent
        .into_iter()
        .map(|s| tokio::spawn(tokio::time::timeout(Duration::from_secs(6), read_to_end(s))))
        .collect();
    for close in closes {
        let read = close.await.unwrap().expect("closed within 6s");
        assert!(
            matches!(read, Ok(0)),
            "silent socket: expected a plain EOF, got {read:?}"
        );
    }
    let waited = opened.elapsed();
    assert!(
        waited >= STARTUP_TIMEOUT - Duration::from_millis(100),
        "closed after {waited:?}, before the startup timeout"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while env.proxy.rt.counters.clients.load(Relaxed) != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        env.proxy.rt.counters.clients.load(Relaxed),
        0,
        "every closed socket is uncounted"
    );
}

/// Deterministic pseudo-random bytes (xorshift), first byte >= 0x80 so the
/// length field is negative and the packet is invalid from its first bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    out[0] |= 0x80;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_an_error_and_the_socket_closed() {
    let env = Env::start("max_size = 2").await;
    let mut payloads: Vec<(String, Vec<u8>)> = vec![
        (
            "HTTP request".into(),
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        ("length 4".into(), vec![0, 0, 0, 4, 0, 3, 0, 0]),
        ("all ones".into(), vec![0xff; 64]),
    ];
    for seed in 1..=5 {
        payloads.push((format!("noise {seed}"), noise(seed, 100 * seed as usize)));
    }
    for (what, bytes) in &payloads {
        let mut conn = RawConn::connect(env.proxy.addr).await;
        conn.send(bytes).await;
        let frames = conn.until_closed(Duration::from_secs(3)).await;
        assert_eq!(frames.len(), 1, "{what}: one ErrorResponse, got {frames:?}");
        let e = error_fields(&frames[0]);
        assert_eq!(
            (e.severity.as_str(), e.code.as_str()),
            ("FATAL", "08P01"),
            "{what}"
        );
    }

    // After login: an unknown message type, and a length below 4.
    for (what, bytes) in [
        ("unknown type", &b"z\0\0\0\x08abcd"[..]),
        ("length 3", &b"Q\0\0\0\x03"[..]),
    ] {
        let mut conn = raw_login(&env).await;
        conn.send(bytes).await;
        let frames = conn.until_closed(Duration::from_secs(3)).await;
        let e = first_error(&frames).unwrap_or_else(|| panic!("{what}: no ErrorResponse"));
        assert_eq!(e.code, "08P01", "{what}");
    }
    assert!(env.proxy.rt.counters.protocol_errors.load(Relaxed) >= 2);
    still_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gigabyte_length_is_refused_without_buffering() {
    let env = Env::start("max_size = 2").await;
    let bystander = env.client().await;
    bystander.batch_execute("begin").await.unwrap();
    let before = rss_bytes();

    let huge = b"Q\x7f\xff\xff\xff";
    let mut conn = raw_login(&env).await;
    conn.send(huge).await;
    let frames = conn.until_closed(Duration::from_secs(3)).await;
    let e = first_error(&frames).expect("an ErrorResponse before the close");
    assert_eq!((e.severity.as_str(), e.code.as_str()), ("FATAL", "08P01"));

    // The same header followed by 150 MB of "message": pgpilot must close
    // the connection instead of collecting it.
    let mut conn = raw_login(&env).await;
    conn.send(huge).await;
    let chunk = vec![b'x'; 1 << 20];
    let mut sent_mb = 0;
    while sent_mb < 150 && conn.try_send(&chunk).await.is_ok() {
        sent_mb += 1;
    }
    assert!(sent_mb < 150, "pgpilot kept reading a 2 GB message");
    conn.until_closed(Duration::from_secs(3)).await;

    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 100 << 20,
        "resident memory grew by {} MB",
        grown >> 20
    );
    // The bystander's open transaction is untouched.
    assert_eq!(one_value(&bystander, "select 1").await, Some("1".into()));
    bystander.batch_execute("commit").await.unwrap();
    still_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gss_requests_get_n_then_the_login_proceeds() {
    let env = Env::start("max_size = 2").await;
    for (what, request) in [
        ("SSLRequest", startup::SSL_REQUEST_CODE),
        ("GSSENCRequest", startup::GSSENC_REQUEST_CODE),
    ] {
        let mut conn = RawConn::connect(env.proxy.addr).await;
        let mut packet = 8i32.to_be_bytes().to_vec();
        packet.extend_from_slice(&request.to_be_bytes());
        conn.send(&packet).await;
        assert_eq!(conn.read_byte().await, Some(b'N'), "{what}");
        conn.send_startup(&[("user", APP_USER), ("database", APP_DB)])
            .await;
        conn.scram(APP_PASSWORD).await;
        conn.until_ready().await;
        let frames = conn.query("select 'after ' || 'ssl'").await;
        assert_eq!(
            first_column(&frames),
            vec![Some("after ssl".into())],
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_for_an_unknown_pid_just_closes() {
    let env = Env::start("max_size = 2").await;
    let mut conn = RawConn::connect(env.proxy.addr).await;
    let mut packet = BytesMut::new();
    startup::cancel_request(&mut packet, 4242, 77);
    conn.send(&packet).await;
    let frames = conn.until_closed(Duration::from_secs(3)).await;
    assert!(frames.is_empty(), "no answer to a cancel: {frames:?}");
    assert_eq!(env.proxy.rt.counters.cancels_forwarded.load(Relaxed), 0);
    still_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_2_is_refused_with_an_error() {
    let env = Env::start("max_size = 2").await;
    let mut conn = RawConn::connect(env.proxy.addr).await;
    // A v2 startup packet: length, version 2.0, then fixed-size fields.
    let mut packet = 296i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&(2i32 << 16).to_be_bytes());
    packet.resize(296, 0);
    conn.send(&packet).await;
    let frames = conn.until_closed(Duration::from_secs(3)).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    let e = error_fields(&frames[0]);
    assert_eq!(e.code, "0A000");
    assert!(e.message.contains("protocol 2.0"), "{}", e.message);
    still_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_connections_refuses_the_fourth_client() {
    let env = Env::start_setup(Setup {
        top: "max_client_connections = 3".into(),
        pool: "max_size = 2".into(),
        ..Setup::default()
    })
    .await;
    let clients = vec![env.client().await, env.client().await, env.client().await];
    let err = common::try_connect(&env.conn_str()).await.err();
    let err = err.expect("the fourth client is refused");
    assert_eq!(sqlstate(&err), "53300", "{err:?}");
    assert_eq!(env.proxy.rt.counters.refused_connections.load(Relaxed), 1);
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(
            one_value(c, &format!("select {i}")).await,
            Some(i.to_string())
        );
    }
    // A freed place can be taken again.
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match common::try_connect(&env.conn_str()).await {
            Ok(c) => {
                assert_eq!(one_value(&c, "select 1").await, Some("1".into()));
                break;
            }
            Err(e) if Instant::now() < deadline => assert_eq!(sqlstate(&e), "53300"),
            Err(e) => panic!("places were not freed: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_timeout_is_53300_and_the_client_can_retry() {
    let env = Env::start("max_size = 1\ncheckout_timeout = \"200ms\"").await;
    let holder = env.client().await;
    let waiter = env.client().await;
    holder.batch_execute("begin; select 1").await.unwrap();

    let started = Instant::now();
    let err = waiter.batch_execute("select 1").await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(sqlstate(&err), "53300", "{err:?}");
    let message = err
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(
        message.contains("timed out") && message.contains("server connection"),
        "unclear message: {message}"
    );
    assert!(
        waited >= Duration::from_millis(180) && waited < Duration::from_secs(2),
        "waited {waited:?}"
    );
    // Extended protocol too.
    let err = waiter
        .query_one("select $1::int", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "53300", "{err:?}");

    holder.batch_execute("commit").await.unwrap();
    assert_eq!(one_value(&waiter, "select 2").await, Some("2".into()));
    let row = waiter.query_one("select $1::int", &[&3i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
}

/// Waiters are timed out by one sweeper per pool: each must still get its
/// own full `checkout_timeout`, counted from when it started waiting, and
/// a waiter arriving while the sweeper sleeps must not be expired early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_waiter_gets_its_own_checkout_timeout() {
    let env = Env::start("max_size = 1\ncheckout_timeout = \"400ms\"").await;
    let holder = env.client().await;
    holder.batch_execute("begin; select 1").await.unwrap();
    let first = env.client().await;
    let second = env.client().await;

    let wait = |c: tokio_postgres::Client| async move {
        let started = Instant::now();
        let err = c.batch_execute("select 1").await.unwrap_err();
        (sqlstate(&err).to_owned(), started.elapsed(), c)
    };
    // Bounded: a sweeper that stopped re-arming would leave them waiting.
    let bound = Duration::from_secs(10);
    let a = tokio::spawn(tokio::time::timeout(bound, wait(first)));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let b = tokio::spawn(tokio::time::timeout(bound, wait(second)));
    let (code_a, waited_a, _first) = a.await.unwrap().expect("first waiter timed out");
    let (code_b, waited_b, second) = b.await.unwrap().expect("second waiter timed out");
    for (code, waited) in [(&code_a, waited_a), (&code_b, waited_b)] {
        assert_eq!(code, "53300");
        assert!(
            waited >= Duration::from_millis(380) && waited < Duration::from_secs(2),
            "waited {waited:?} (first {waited_a:?}, second {waited_b:?})"
        );
    }
    holder.batch_execute("commit").await.unwrap();
    assert_eq!(one_value(&second, "select 2").await, Some("2".into()));
    let snap = env.proxy.rt.backends.snapshots();
    assert_eq!(
        snap.iter().map(|p| p.checkout_timeouts).sum::<u64>(),
        2,
        "{snap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_idle_server_connection_is_replaced() {
    let env = Env::start("max_size = 1").await;
    let c = env.client().await;
    let first = one_value(&c, "select pg_backend_pid()").await.unwrap();
    env.psql(
        "select pg_terminate_backend(pid) from pg_stat_activity \
         where usename = 'app' and pid <> pg_backend_pid()",
    );
    // Wait until the backend is really gone (termination is asynchronous).
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.psql(&format!(
        "select count(*) from pg_stat_activity where pid = {first}"
    )) != "0"
    {
        assert!(Instant::now() < deadline, "backend {first} did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = one_value(&c, "select pg_backend_pid()").await.unwrap();
    assert_ne!(first, second, "a new server connection");
    let other = env.client().await;
    assert_eq!(one_value(&other, "select 1").await, Some("1".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_larger_pool_serves_waiting_clients() {
    let env = Env::start("max_size = 1\ncheckout_timeout = \"5s\"").await;
    let holder = env.client().await;
    let idle = env.client().await;
    let waiter = env.client().await;
    holder.batch_execute("begin; select 1").await.unwrap();

    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let value = one_value(&waiter, "select 'served'").await;
        (value, started.elapsed(), waiter)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the waiter must be waiting");

    let reloaded = Instant::now();
    env.proxy
        .rt
        .reload(env.settings_for(&Setup::pool("max_size = 2\ncheckout_timeout = \"5s\"")));
    let (value, _, waiter) = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("the waiter is served soon after the reload")
        .unwrap();
    assert_eq!(value.as_deref(), Some("served"));
    assert!(reloaded.elapsed() < Duration::from_secs(2));

    // Nobody was dropped: the transaction is still open, every client works.
    assert_eq!(
        one_value(&holder, "select txid_current_if_assigned() is null").await,
        Some("t".into())
    );
    holder.batch_execute("commit").await.unwrap();
    assert_eq!(one_value(&idle, "select 1").await, Some("1".into()));
    assert_eq!(one_value(&waiter, "select 2").await, Some("2".into()));
    let pools = env.proxy.rt.backends.snapshots();
    assert_eq!(pools[0].max_size, 2);
}
