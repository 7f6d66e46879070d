//! Running client programs (psql, pgbench, python3) against the proxy, with
//! the caller's `PG*` environment, `~/.pgpass` and `~/.psqlrc` kept out,
//! a bound on the run time, and both output streams kept for the failure
//! message.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

/// `program` with a clean libpq environment and `PGPASSWORD` set.
pub fn command(program: impl Into<PathBuf>, password: &str) -> Command {
    let mut cmd = Command::new(program.into());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&name);
        }
    }
    // A path that cannot exist, so libpq neither reads ~/.pgpass nor warns.
    cmd.env("PGPASSFILE", "/dev/null/pgpass")
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGPASSWORD", password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// `psql -X -v ON_ERROR_STOP=1` from the test kit's binaries, for `url`.
pub fn psql(url: &str, password: &str) -> Command {
    let bin = pgpilot_testkit::bin_dir().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = command(bin.join("psql"), password);
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url]);
    cmd
}

/// Runs `cmd` to completion within `limit`; panics when it cannot start
/// or overruns (the child is killed).
pub async fn run(mut cmd: Command, limit: Duration) -> Output {
    let what = format!("{:?}", cmd.as_std());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {what}: {e}"));
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// Exit status, stdout and stderr, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
