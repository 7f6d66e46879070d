//! Plan insights end to end: queries through pgpilot on a real PostgreSQL,
//! the explain task EXPLAINs them on a side connection, and the findings
//! name the fingerprint and the fix.

use std::time::{Duration, Instant};

use pgpilot_insight::{FindingKind, FindingView, Shape};
use pgpilot_proxy::explain::{self, ExplainSettings};
use pgpilot_proxy::RunningProxy;
use pgpilot_testkit::{Cluster, ClusterOptions, APP_DB, APP_PASSWORD, APP_USER};
use tokio_postgres::{Client, NoTls};

/// How long a finding may take to appear (explain interval 1 s).
const WAIT: Duration = Duration::from_secs(30);

struct Env {
    proxy: RunningProxy,
    cluster: Cluster,
}

impl Env {
    async fn start(insight: &str) -> Env {
        let cluster = tokio::task::spawn_blocking(|| Cluster::start(ClusterOptions::default()))
            .await
            .expect("cluster start task")
            .unwrap_or_else(|e| panic!("could not start PostgreSQL: {e}"));
        let toml = format!(
            r#"
listen = "127.0.0.1:0"
admin_listen = "off"
[upstream]
primary = "127.0.0.1:{}"
[[users]]
name = "{APP_USER}"
password = "{APP_PASSWORD}"
[insight]
explain_interval = "1s"
{insight}
"#,
            cluster.primary.port
        );
        let settings = pgpilot_config::from_toml_str(&toml)
            .unwrap_or_else(|e| panic!("bad test settings: {e}"));
        let proxy = RunningProxy::start(settings).await.expect("proxy starts");
        Env { proxy, cluster }
    }

    async fn connect(&self, port: u16) -> Client {
        let conn_str = format!(
            "host=127.0.0.1 port={port} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}"
        );
        let (client, conn) = tokio_postgres::connect(&conn_str, NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect {conn_str}: {e}"));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// Through pgpilot.
    async fn client(&self) -> Client {
        self.connect(self.proxy.addr.port()).await
    }

    /// Straight to the primary.
    async fn direct(&self) -> Client {
        self.connect(self.cluster.primary.port).await
    }

    /// Runs `sql` through pgpilot and waits until the session has recorded
    /// it in insight. Returns its fingerprint.
    async fn run_recorded(&self, sql: &str) -> u64 {
        let client = self.client().await;
        client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let rt = &self.proxy.rt;
        let fingerprint = Shape::of(rt.analyzer.analyze(sql).key, sql).fingerprint;
        let deadline = Instant::now() + Duration::from_secs(5);
        while rt.insight.query_text(fingerprint).is_none() {
            assert!(
                Instant::now() < deadline,
                "the session never recorded {sql:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        fingerprint
    }

    /// Waits for a plan finding `rule` about `fingerprint`.
    async fn plan_finding(&self, rule: &str, fingerprint: u64) -> FindingView {
        let hex = format!("{fingerprint:016x}");
        let deadline = Instant::now() + WAIT;
        loop {
            let found =
                self.proxy.rt.insight.findings().into_iter().find(|f| {
                    f.kind == FindingKind::Plan && f.rule == rule && f.fingerprint == hex
                });
            if let Some(f) = found {
                return f;
            }
            if Instant::now() > deadline {
                panic!(
                    "no {rule} finding for {hex} within {WAIT:?}; findings: {:#?}",
                    self.proxy.rt.insight.findings()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_scan_on_a_large_table_is_found_with_an_index_fix() {
    let env = Env::start("").await;
    env.direct()
        .await
        .batch_execute(
            "CREATE TABLE orders AS SELECT i AS id, i % 50000 AS customer_id \
             FROM generate_series(1, 1000000) i; ANALYZE orders;",
        )
        .await
        .expect("table");
    let fp = env
        .run_recorded("SELECT id FROM orders WHERE customer_id = 42")
        .await;

    let f = env.plan_finding("seq_scan", fp).await;
    assert!(f.message.contains("orders"), "{}", f.message);
    assert!(
        f.message.contains("1,000,000 rows"),
        "pg_class size: {}",
        f.message
    );
    assert!(
        f.fix
            .starts_with("CREATE INDEX CONCURRENTLY ON orders (customer_id);"),
        "{}",
        f.fix
    );
    let plan = env.proxy.rt.insight.plan(fp).expect("plan kept");
    assert!(plan.source.generic && !plan.source.analyzed, "{plan:?}");
    assert_eq!(plan.plan[0]["Plan"]["Node Type"], "Gather");
    let detail = env
        .proxy
        .rt
        .insight
        .detail(fp, Instant::now())
        .expect("detail");
    assert!(detail.plan.is_some() && detail.findings.iter().any(|f| f.rule == "seq_scan"));

    // After the index, an on-demand explain withdraws the finding.
    env.direct()
        .await
        .batch_execute("CREATE INDEX ON orders (customer_id)")
        .await
        .expect("index");
    let settings = ExplainSettings::from_settings(&env.proxy.rt.settings.load());
    let found = explain::explain_fingerprint(&env.proxy.rt, fp, &settings)
        .await
        .expect("explain");
    assert!(found.is_empty(), "{found:?}");
    assert!(!env
        .proxy
        .rt
        .insight
        .findings()
        .iter()
        .any(|f| f.rule == "seq_scan"));
}

/// 200,000 narrow rows and a `work_mem` too small to sort them in memory.
async fn readings(env: &Env) {
    env.direct()
        .await
        .batch_execute(
            "CREATE TABLE readings AS SELECT i AS id, (i * 7919) % 100003 AS value \
             FROM generate_series(1, 200000) i; ANALYZE readings;",
        )
        .await
        .expect("table");
    env.cluster
        .psql(
            &env.cluster.primary,
            APP_DB,
            &format!("ALTER ROLE {APP_USER} SET work_mem = '64kB'"),
        )
        .expect("work_mem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_spill_is_found_with_explain_analyze() {
    let env = Env::start("explain_analyze = true").await;
    readings(&env).await;
    let fp = env
        .run_recorded("SELECT id, value FROM readings ORDER BY value")
        .await;

    let f = env.plan_finding("sort_spill", fp).await;
    assert!(f.message.contains("by value"), "{}", f.message);
    assert!(f.fix.contains("work_mem = '"), "{}", f.fix);
    let plan = env.proxy.rt.insight.plan(fp).expect("plan kept");
    assert!(plan.source.analyzed, "read-only, no parameters: analyzed");
    assert_eq!(plan.plan[0]["Plan"]["Sort Space Type"], "Disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_analyze_uses_the_slow_logs_values() {
    let env =
        Env::start("explain_analyze = true\nredact_params = false\nslow_threshold = \"0ms\"").await;
    readings(&env).await;
    let fp = env
        .run_recorded("SELECT id, value FROM readings WHERE id <= 150000 ORDER BY value")
        .await;

    env.plan_finding("sort_spill", fp).await;
    let plan = env.proxy.rt.insight.plan(fp).expect("plan kept");
    assert!(plan.source.analyzed && !plan.source.generic, "{plan:?}");
    let json = plan.plan.to_string();
    assert!(
        json.contains("(id <= 150000)"),
        "the captured value: {json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_explained_without_running_them() {
    let env = Env::start("explain_analyze = true").await;
    env.direct()
        .await
        .batch_execute("CREATE TABLE t AS SELECT i AS id FROM generate_series(1, 1000) i")
        .await
        .expect("table");
    let fp = env.run_recorded("INSERT INTO t VALUES (0)").await;
    let settings = ExplainSettings::from_settings(&env.proxy.rt.settings.load());
    assert!(settings.analyze);
    explain::explain_fingerprint(&env.proxy.rt, fp, &settings)
        .await
        .expect("explain");
    let plan = env.proxy.rt.insight.plan(fp).expect("plan kept");
    assert!(!plan.source.analyzed, "a write is never analyzed");
    assert_eq!(plan.plan[0]["Plan"]["Node Type"], "ModifyTable");
    let rows = env
        .direct()
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count");
    assert_eq!(rows.get::<_, i64>(0), 1001, "only the client's INSERT ran");
    // Nothing is left behind on the side connection's server.
    let left = env
        .direct()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'EXPLAIN%' AND state <> 'idle'",
            &[],
        )
        .await
        .expect("activity");
    assert_eq!(left.get::<_, i64>(0), 0);
}
