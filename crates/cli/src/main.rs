//! The `pgpilot` binary: command line → settings → run.
//!
//! `pgpilot proxy` runs the proxy (quick start flags or a TOML config);
//! `pgpilot demo` runs it in front of a throwaway local PostgreSQL with a
//! short workload; `pgpilot queries` prints a running proxy's query insight.
//! Errors print their whole cause chain.

mod cluster_cmd;
mod demo;
mod proxy_cmd;
mod queries_cmd;

use clap::{Parser, Subcommand};

/// pgpilot: a PostgreSQL performance proxy.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Runtime worker threads (default: half the cores, at least 1). 1 runs
    /// everything on a single-threaded runtime, as PgBouncer does: no
    /// cross-thread wake-ups, which is fastest when pgpilot shares few cores
    /// with PostgreSQL.
    #[arg(long, global = true, env = "PGPILOT_WORKERS")]
    workers: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Proxy(proxy_cmd::ProxyArgs),
    /// Start a throwaway PostgreSQL primary + replica, pgpilot in front, and a short workload.
    Demo(demo::DemoArgs),
    /// Print a running pgpilot's top queries (and findings, endpoints, slow log) from its admin API.
    Queries(queries_cmd::QueriesArgs),
    /// Check a configuration file and print the settings it yields.
    CheckConfig {
        /// The TOML file.
        path: std::path::PathBuf,
    },
    /// Start a throwaway PostgreSQL cluster for scripts (bench/); print its ports as JSON and hold it until SIGTERM, SIGINT or stdin EOF.
    #[command(hide = true)]
    Cluster(cluster_cmd::ClusterArgs),
}

fn main() -> std::process::ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let workers = cli.workers;
    let result = match cli.command {
        Command::Proxy(args) => run_async(workers, proxy_cmd::run(args)),
        Command::Demo(args) => run_async(workers, demo::run(args)),
        Command::Queries(args) => queries_cmd::run(args),
        Command::CheckConfig { path } => check_config(&path),
        Command::Cluster(args) => cluster_cmd::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgpilot: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Half the cores, at least one: pgpilot usually shares its machine with
/// PostgreSQL or the application, and on 2 cores one thread measured
/// 1.02–1.20× the throughput of two (BENCHMARKS.md, "Worker threads"),
/// since a single-threaded runtime has no cross-thread wake-ups.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

fn run_async(
    workers: Option<usize>,
    fut: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let rt = match workers.unwrap_or_else(default_workers) {
        0 => anyhow::bail!("--workers must be at least 1"),
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    rt.block_on(fut)
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let settings = pgpilot_config::load(path)?;
    println!("{settings:#?}");
    Ok(())
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PGPILOT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}
