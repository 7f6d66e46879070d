//! `pgpilot cluster`: a throwaway PostgreSQL cluster from the test kit for
//! scripts (the benchmark in `bench/`), so they need not duplicate the kit.
//!
//! It starts the cluster, prints one JSON line with its ports and data dir,
//! and holds it until SIGTERM, SIGINT or EOF on stdin; then it stops the
//! servers and deletes their files. A script that keeps the child's stdin
//! as a pipe gets the cleanup even when the script itself is killed.

use std::io::{Read, Write};

use anyhow::{bail, Context};
use pgpilot_testkit::{Cluster, ClusterOptions};

/// Flags of `pgpilot cluster`.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Also start a streaming replica.
    #[arg(long)]
    pub replica: bool,
    /// A line appended to postgresql.conf, e.g. 'max_connections=600' (repeatable).
    #[arg(long = "conf", value_name = "SETTING")]
    pub conf: Vec<String>,
    /// Keep running at EOF on stdin (e.g. when started with `< /dev/null`).
    #[arg(long)]
    pub ignore_stdin: bool,
}

/// Starts the cluster, announces it, waits for the end signal, and tears
/// the cluster down (on drop).
pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    check_conf_lines(&args.conf)?;
    let opts = ClusterOptions {
        replica: args.replica,
        extra_conf: args.conf,
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(opts)
        .context("starting PostgreSQL (run scripts/install-deps.sh if it is missing)")?;
    announce(&cluster)?;
    wait_for_end(args.ignore_stdin)?;
    tracing::info!("stopping the cluster");
    drop(cluster);
    Ok(())
}

/// Refuses settings that would break the kit: more than one line per flag,
/// or `port` (the kit picks it).
fn check_conf_lines(lines: &[String]) -> anyhow::Result<()> {
    for line in lines {
        if line.contains(['\n', '\r']) {
            bail!("--conf {line:?}: one setting per flag, without line breaks");
        }
        let key = line.split(['=', ' ', '\t']).next().unwrap_or_default();
        if key.trim().eq_ignore_ascii_case("port") {
            bail!("--conf {line:?}: the port is chosen by pgpilot cluster");
        }
    }
    Ok(())
}

/// Prints `{"primary_port":N,"replica_port":M|null,"data_dir":"..."}` and
/// flushes, so a reader of the pipe sees it at once.
fn announce(cluster: &Cluster) -> anyhow::Result<()> {
    let replica_port = cluster
        .replica
        .as_ref()
        .map_or_else(|| "null".to_owned(), |r| r.port.to_string());
    let data_dir = serde_json::to_string(&cluster.primary.data_dir)?;
    let line = format!(
        r#"{{"primary_port":{},"replica_port":{replica_port},"data_dir":{data_dir}}}"#,
        cluster.primary.port
    );
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// Blocks until SIGTERM, SIGINT or (unless `ignore_stdin`) EOF on stdin.
fn wait_for_end(ignore_stdin: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    if !ignore_stdin {
        // A plain thread: tokio's stdin would keep the runtime from shutting
        // down while a read blocks. The process exits without joining it.
        std::thread::spawn(move || {
            let mut sink = [0u8; 512];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            let _ = eof_tx.send(());
        });
    }
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let eof = async {
            if eof_rx.await.is_err() {
                // No stdin watcher: wait for a signal only.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            () = eof => {}
        }
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_lines_are_checked() {
        assert!(check_conf_lines(&["max_connections=600".into()]).is_ok());
        assert!(check_conf_lines(&["shared_buffers = '128MB'".into()]).is_ok());
        assert!(check_conf_lines(&["port=5432".into()]).is_err());
        assert!(check_conf_lines(&["PORT = 1".into()]).is_err());
        assert!(check_conf_lines(&["a=1\nport=2".into()]).is_err());
    }
}
