//! pgbench through pgpilot: `pgbench -i` (DDL, client-side COPY, VACUUM),
//! then 50 clients on 10 server connections with each query protocol
//! (simple, extended, prepared) running TPC-B, and select-only with
//! prepared statements. Every run must finish with no failed or aborted
//! transaction, and TPC-B's balances must add up afterwards (no
//! transaction was half applied or applied twice).

mod common;

use std::time::Duration;

use common::{external, Env};
use pgpilot_testkit::{APP_DB, APP_PASSWORD, APP_USER};

const CLIENTS: &str = "50";
const SECONDS: &str = "5";

/// What a run reported.
#[derive(Debug)]
struct Summary {
    processed: u64,
    failed: u64,
}

/// The figure after `label` on one of pgbench's summary lines.
fn figure(stdout: &str, label: &str) -> Option<u64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Runs pgbench against the proxy with `args`; panics with its output when
/// it fails.
async fn pgbench(env: &Env, args: &[&str]) -> String {
    let bin = pgpilot_testkit::pgbench_path().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = external::command(bin, APP_PASSWORD);
    let port = env.port().to_string();
    cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", APP_USER])
        .args(args)
        .arg(APP_DB);
    let out = external::run(cmd, Duration::from_secs(60)).await;
    assert!(
        out.status.success(),
        "pgbench {args:?}: {}",
        external::describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A proxy with 10 servers and a database initialised through it.
async fn initialised() -> Env {
    let env = Env::start("max_size = 10").await;
    pgbench(&env, &["-i", "-s", "1", "-q"]).await;
    let c = env.client().await;
    let n: i64 = c
        .query_one("select count(*) from pgbench_accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 100_000, "pgbench -i -s 1 loads 100,000 accounts");
    env
}

/// Runs `extra` for 5 s with 50 clients and 50 threads (pgbench 15 prepares
/// with a blocking call, so each client needs its own thread).
async fn run(env: &Env, extra: &[&str]) -> Summary {
    let mut args = vec!["-c", CLIENTS, "-j", CLIENTS, "-T", SECONDS];
    args.extend_from_slice(extra);
    let stdout = pgbench(env, &args).await;
    println!("pgbench {args:?}:\n{stdout}");
    let summary = Summary {
        processed: figure(&stdout, "number of transactions actually processed: ")
            .unwrap_or_else(|| panic!("no processed count in:\n{stdout}")),
        failed: figure(&stdout, "number of failed transactions: ")
            .unwrap_or_else(|| panic!("no failed count in:\n{stdout}")),
    };
    assert_eq!(summary.failed, 0, "{stdout}");
    assert!(summary.processed > 0, "{stdout}");
    summary
}

/// TPC-B's invariant: every transaction adds the same delta to one
/// account, teller and branch and logs it once in history.
async fn balances_add_up(env: &Env, summary: &Summary) {
    let c = env.client().await;
    let row = c
        .query_one(
            "select (select sum(abalance) from pgbench_accounts)::int8,
                    (select sum(tbalance) from pgbench_tellers)::int8,
                    (select sum(bbalance) from pgbench_branches)::int8,
                    (select coalesce(sum(delta), 0) from pgbench_history)::int8,
                    (select count(*) from pgbench_history)::int8",
            &[],
        )
        .await
        .unwrap();
    let sums: Vec<i64> = (0..4).map(|i| row.get(i)).collect();
    assert!(
        sums.iter().all(|s| *s == sums[0]),
        "account, teller, branch and history sums differ: {sums:?}"
    );
    let history: i64 = row.get(4);
    assert_eq!(
        history as u64, summary.processed,
        "one history row per processed transaction"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcb_simple_protocol() {
    let env = initialised().await;
    let summary = run(&env, &["-M", "simple"]).await;
    balances_add_up(&env, &summary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcb_extended_protocol() {
    let env = initialised().await;
    let summary = run(&env, &["-M", "extended"]).await;
    balances_add_up(&env, &summary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcb_prepared_statements() {
    let env = initialised().await;
    let summary = run(&env, &["-M", "prepared"]).await;
    balances_add_up(&env, &summary).await;
    // 50 clients prepare the same 7 statements under the same names: the
    // proxy knows each text once.
    let statements = env.proxy.rt.statements.len();
    assert!(
        statements <= 10,
        "{statements} distinct statements for one script"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_only_prepared_statements() {
    let env = initialised().await;
    let summary = run(&env, &["-M", "prepared", "-S"]).await;
    let statements = env.proxy.rt.statements.len();
    assert!(statements <= 2, "{statements} statements for select-only");
    let snap = &env.proxy.rt.backends.snapshots()[0];
    assert!(
        snap.xact_count >= summary.processed,
        "each pgbench transaction was a pooled transaction: {snap:?} vs {summary:?}"
    );
}
