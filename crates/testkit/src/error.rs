//! The test kit's one error type. Every variant carries what a failing test
//! needs to see to fix its environment: the missing path, the command and its
//! stderr, or the server log.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while setting up, driving or tearing down a
/// throwaway PostgreSQL cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A helper server (Redis) could not be started.
    #[error("{0}")]
    Setup(String),

    /// The PostgreSQL server binaries (`postgres`, `initdb`, `pg_ctl`) are not
    /// in the directory the kit looked in.
    #[error(
        "PostgreSQL 15 server binaries not found in {}: install them with \
         `apt-get install -y postgresql-15 postgresql-contrib` \
         (or run scripts/install-deps.sh)",
        dir.display()
    )]
    MissingPostgres {
        /// The directory that was searched (`$PGPILOT_PG_BIN` or the default).
        dir: PathBuf,
    },

    /// A client tool that ships with the server packages is missing.
    #[error(
        "`{name}` not found in {}: install it with \
         `apt-get install -y postgresql-15 postgresql-contrib` \
         (or run scripts/install-deps.sh)",
        dir.display()
    )]
    MissingBinary {
        /// The tool's file name, e.g. `pgbench`.
        name: &'static str,
        /// The directory that was searched.
        dir: PathBuf,
    },

    /// Running as root, but there is no `postgres` OS user to run the server as.
    #[error(
        "running as root but /etc/passwd has no `postgres` user to run the server as \
         (the postgresql-15 package creates it)"
    )]
    NoPostgresUser,

    /// A filesystem operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What the kit was doing, e.g. "create directory".
        action: &'static str,
        /// The path it was doing it to.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A program could not be started at all.
    #[error("could not run {program}: {source}")]
    Spawn {
        /// The program, with its arguments.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A program ran and exited unsuccessfully.
    #[error("{program} failed ({status}):\n{stderr}{stdout}")]
    Command {
        /// The program, with its arguments.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed to stderr.
        stderr: String,
        /// What it printed to stdout (pg_ctl reports failures there).
        stdout: String,
    },

    /// `psql` could not connect or a statement failed.
    #[error("psql as {user} on {host}:{port}/{db} failed ({status}):\n{stderr}")]
    Psql {
        /// The server's host (an address or a Unix socket directory).
        host: String,
        /// The server's port.
        port: u16,
        /// The role psql logged in as.
        user: String,
        /// The database.
        db: String,
        /// psql's exit status.
        status: std::process::ExitStatus,
        /// psql's stderr, which holds the server's error message.
        stderr: String,
    },

    /// A server did not start; the log says why.
    #[error("{instance} did not start after {attempts} attempt(s): {cause}\nserver log:\n{log}")]
    ServerStart {
        /// Which instance ("primary", "replica", "template").
        instance: &'static str,
        /// How many ports were tried.
        attempts: u32,
        /// How the last attempt failed (usually pg_ctl's complaint).
        #[source]
        cause: Box<Error>,
        /// The server log.
        log: String,
    },

    /// A server process exited while the kit waited for it to start.
    #[error("the {instance} server exited while starting")]
    Exited {
        /// Which instance ("primary", "replica", "template").
        instance: &'static str,
    },

    /// Something the kit waits for did not happen in time.
    #[error("timed out after {waited:?} waiting for {what}; last observation: {last}\nserver log:\n{log}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long the kit waited.
        waited: Duration,
        /// The last state (or error) seen while polling.
        last: String,
        /// The relevant server log.
        log: String,
    },

    /// Another process holds the template lock and does not finish.
    #[error(
        "timed out waiting for the template lock {} (held by another test process); \
         remove it if no test is running",
        path.display()
    )]
    TemplateLock {
        /// The lock file.
        path: PathBuf,
    },

    /// `postgres --version` printed something unexpected.
    #[error("cannot parse the server version from `{output}`")]
    Version {
        /// What `postgres --version` printed.
        output: String,
    },
}

/// The test kit's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `action` on `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
