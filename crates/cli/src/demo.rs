//! `pgpilot demo`: a throwaway PostgreSQL primary + streaming replica (the
//! test kit), pgpilot in front, a short mixed workload with a progress bar,
//! then the connection string and admin URL; serves until Ctrl-C and
//! removes everything it started.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use pgpilot_testkit::{Cluster, APP_DB, APP_PASSWORD, APP_USER};
use tokio_postgres::{Client, NoTls};

/// Flags of `pgpilot demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Address pgpilot listens on.
    #[arg(long, default_value = "127.0.0.1:6432")]
    pub listen: SocketAddr,
    /// Admin HTTP address.
    #[arg(long, default_value = "127.0.0.1:9930")]
    pub admin_listen: SocketAddr,
    /// Transactions in the warm-up workload.
    #[arg(long, default_value_t = 5000)]
    pub transactions: u64,
    /// Concurrent workload clients (more than the pool's 5 connections, on purpose).
    #[arg(long, default_value_t = 20)]
    pub clients: u64,
    /// Exit after the workload instead of serving until Ctrl-C.
    #[arg(long)]
    pub no_wait: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    println!("Starting a throwaway PostgreSQL 15 primary + streaming replica…");
    let cluster = tokio::task::spawn_blocking(Cluster::start_demo)
        .await?
        .context("starting PostgreSQL (run scripts/install-deps.sh if it is missing)")?;
    let settings = pgpilot_config::from_toml_str(&demo_toml(&args, &cluster))?;
    let running = crate::proxy_cmd::start(settings).await?;
    let url = format!(
        "postgres://{APP_USER}:{APP_PASSWORD}@{}/{APP_DB}",
        running.proxy.addr
    );
    println!(
        "pgpilot listening on {} (pool: 5 server connections)",
        running.proxy.addr
    );
    let client = connect(&url).await?;
    setup_schema(&client).await?;
    let elapsed = workload(&url, &args).await?;
    print_summary(&running, &url, elapsed, args.transactions);
    if args.no_wait {
        return Ok(());
    }
    println!("\nServing until Ctrl-C…");
    crate::proxy_cmd::wait_for_shutdown(&running.proxy.rt, None).await?;
    drop(running);
    drop(cluster);
    println!("Stopped PostgreSQL and removed its data directories.");
    Ok(())
}

trait DemoCluster {
    fn start_demo() -> pgpilot_testkit::Result<Cluster>;
}

impl DemoCluster for Cluster {
    fn start_demo() -> pgpilot_testkit::Result<Cluster> {
        Cluster::start(pgpilot_testkit::ClusterOptions {
            replica: true,
            ..Default::default()
        })
    }
}

fn demo_toml(args: &DemoArgs, cluster: &Cluster) -> String {
    let replicas = cluster
        .replica
        .iter()
        .map(|r| format!("\"127.0.0.1:{}\"", r.port))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
listen = "{listen}"
admin_listen = "{admin}"
[pool]
max_size = 5
min_size = 2
[upstream]
primary = "127.0.0.1:{primary}"
replicas = [{replicas}]
[[users]]
name = "{APP_USER}"
password = "{APP_PASSWORD}"
[cache]
enabled = true
"#,
        listen = args.listen,
        admin = args.admin_listen,
        primary = cluster.primary.port,
    )
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn setup_schema(c: &Client) -> anyhow::Result<()> {
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS users (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL);
         CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, user_id bigint NOT NULL, total numeric NOT NULL, created_at timestamptz DEFAULT now());
         INSERT INTO users SELECT g, 'user ' || g, 'user' || g || '@example.com' FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING;",
    )
    .await?;
    Ok(())
}

/// Runs the mixed workload from `args.clients` clients; returns its duration.
async fn workload(url: &str, args: &DemoArgs) -> anyhow::Result<Duration> {
    let bar = ProgressBar::new(args.transactions);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} workload [{bar:40}] {pos}/{len} transactions ({per_sec})",
        )?
        .progress_chars("=> "),
    );
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (url, next, bar, total) =
            (url.to_owned(), next.clone(), bar.clone(), args.transactions);
        tasks.push(tokio::spawn(async move {
            client_loop(&url, &next, &bar, total).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    bar.finish();
    Ok(start.elapsed())
}

/// One workload client: a prepared point read, an order insert in a
/// transaction, or a small aggregate, by turns.
async fn client_loop(
    url: &str,
    next: &AtomicU64,
    bar: &ProgressBar,
    total: u64,
) -> anyhow::Result<()> {
    let mut c = connect(url).await?;
    let by_id = c
        .prepare("SELECT name, email FROM users WHERE id = $1")
        .await?;
    loop {
        let n = next.fetch_add(1, Relaxed);
        if n >= total {
            return Ok(());
        }
        let user = (n * 7919 % 1000 + 1) as i64;
        match n % 4 {
            0 | 1 => {
                c.query_one(&by_id, &[&user]).await?;
            }
            2 => {
                let tx = c.transaction().await?;
                tx.execute(
                    "INSERT INTO orders (user_id, total) VALUES ($1, $2::int)",
                    &[&user, &((n % 100) as i32)],
                )
                .await?;
                tx.commit().await?;
            }
            _ => {
                c.query("SELECT user_id, count(*), sum(total) FROM orders WHERE user_id = $1 GROUP BY user_id", &[&user]).await?;
            }
        }
        bar.inc(1);
    }
}

fn print_summary(
    running: &crate::proxy_cmd::Running,
    url: &str,
    elapsed: Duration,
    transactions: u64,
) {
    let rate = transactions as f64 / elapsed.as_secs_f64().max(1e-9);
    println!("\n{transactions} transactions in {:.2} s ({rate:.0}/s) from more clients than server connections.", elapsed.as_secs_f64());
    for p in running.proxy.rt.backends.snapshots() {
        println!(
            "pool {}/{} on {}: {} transactions, {} queries, server connections active {} idle {}, total client wait {:.1} ms",
            p.database,
            p.user,
            p.server,
            p.xact_count,
            p.query_count,
            p.sv_active,
            p.sv_idle,
            p.wait_time_us as f64 / 1000.0
        );
    }
    let c = running.proxy.rt.cache.stats();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    println!(
        "result cache: {} hits, {} misses ({:.0} % hit ratio), {} results stored, {} invalidations by writes through pgpilot",
        get(&c.hits),
        get(&c.misses),
        c.hit_ratio() * 100.0,
        get(&c.fills),
        get(&c.invalidations_proxy)
    );
    println!("\nConnect:   psql '{url}'");
    if let Some(admin) = running.admin {
        println!("Metrics:   http://{admin}/metrics");
        println!("Health:    http://{admin}/health/ready");
        println!("Cache:     http://{admin}/api/cache");
    }
}
