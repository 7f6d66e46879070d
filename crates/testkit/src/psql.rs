//! Running SQL through `psql`, isolated from the caller's environment: no
//! `PG*` variables, no `~/.pgpass`, no `~/.psqlrc`, never a password prompt.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};
use crate::os;

/// Who runs SQL where: the connection parameters of one psql invocation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    /// An address, or a Unix socket directory.
    pub(crate) host: &'a str,
    /// The server's port.
    pub(crate) port: u16,
    /// The role to log in as.
    pub(crate) user: &'a str,
    /// Sent as `PGPASSWORD` when given.
    pub(crate) password: Option<&'a str>,
    /// The database to connect to.
    pub(crate) db: &'a str,
}

/// Runs `sql` (any number of statements, each in its own transaction unless
/// the script says otherwise) with `psql -X -q -A -t -v ON_ERROR_STOP=1`,
/// and returns what the statements printed, without the final newline:
/// one line per row, columns separated by `|`, no headers or command tags.
///
/// Errors with [`Error::Psql`], carrying psql's stderr, when the connection
/// or any statement fails.
pub(crate) fn run(bin: &Path, target: Target<'_>, sql: &str) -> Result<String> {
    let mut cmd = command(bin, target);
    let output = os::run_raw(&mut cmd, Some(sql))?;
    if !output.status.success() {
        return Err(Error::Psql {
            host: target.host.to_owned(),
            port: target.port,
            user: target.user.to_owned(),
            db: target.db.to_owned(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(stdout.strip_suffix('\n').unwrap_or(&stdout).to_owned())
}

/// The psql command for `target`, reading its script from stdin.
fn command(bin: &Path, target: Target<'_>) -> Command {
    let mut cmd = Command::new(bin.join("psql"));
    os::clear_pg_env(&mut cmd);
    // A path that cannot exist, so libpq neither reads ~/.pgpass nor warns.
    cmd.env("PGPASSFILE", "/dev/null/pgpass")
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGAPPNAME", "pgpilot-testkit");
    if let Some(password) = target.password {
        cmd.env("PGPASSWORD", password);
    }
    cmd.args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", target.host, "-p", &target.port.to_string()])
        .args(["-U", target.user, "-d", target.db, "-f", "-"]);
    cmd
}
