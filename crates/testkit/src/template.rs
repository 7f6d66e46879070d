//! The machine-wide template data directory that every test cluster copies
//! instead of running initdb: initdb'd once, with the kit's pg_hba.conf,
//! shared settings, roles and `app` database already in place.
//!
//! It lives at `<base>/pgpilot-kit-template-<version>-r<revision>` (base:
//! `/dev/shm`, see [`crate::workdir::base_dir`]) and appears
//! atomically (built under a temporary name, then renamed), so a directory
//! at that path is always complete. A lock file keeps concurrent test
//! processes from all building it at once; correctness does not depend on
//! the lock, only speed does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::binaries::server_version;
use crate::error::{Error, Result};
use crate::instance::Instance;
use crate::os;
use crate::psql;
use crate::server;
use crate::workdir::{self, WorkDir};
use crate::{APP_DB, APP_PASSWORD, APP_USER, MD5_PASSWORD, MD5_USER, PLAIN_PASSWORD, PLAIN_USER};

/// Bump whenever the template's contents change, so machines stop using
/// templates built by an older kit.
const REVISION: u32 = 2;

/// How long to wait for another process that is building the template.
const LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// Client authentication for every instance; see the crate docs.
const PG_HBA: &str = "\
# written by pgpilot-testkit
local all all trust
host replication postgres 127.0.0.1/32 trust
host all postgres 127.0.0.1/32 trust
host all md5user 127.0.0.1/32 md5
host all plainuser 127.0.0.1/32 password
host all all 127.0.0.1/32 scram-sha-256
";

/// Settings shared by every instance, appended to postgresql.conf. The
/// per-instance file comes last so it can set the port and socket dir.
const SHARED_CONF: &str = "
# pgpilot-testkit: settings shared by every test instance
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = 128MB
hot_standby = on
fsync = off
full_page_writes = off
max_connections = 300
shared_buffers = 64MB
logging_collector = off
include_if_exists = 'pgpilot-instance.conf'
";

/// The path of an up-to-date template for the server in `bin`, building it
/// first if this machine has none.
pub(crate) fn ensure(bin: &Path) -> Result<PathBuf> {
    let version = server_version(bin)?;
    let path = workdir::base_dir().join(format!("pgpilot-kit-template-{version}-r{REVISION}"));
    if path.is_dir() {
        return Ok(path);
    }
    let _lock = Lock::acquire(
        path.with_file_name(format!("pgpilot-kit-template-{version}-r{REVISION}.lock")),
    )?;
    if !path.is_dir() {
        build(bin, &path)?;
    }
    Ok(path)
}

/// Builds the template in a work dir and renames it to `target`. Losing the
/// rename to a concurrent builder is success.
fn build(bin: &Path, target: &Path) -> Result<()> {
    tracing::info!(path = %target.display(), "building the test cluster template");
    let work = WorkDir::create()?;
    let mut inst = Instance::new("template", work.path());
    initdb(bin, &inst.data_dir, work.path())?;
    configure(&inst.data_dir)?;
    bootstrap(bin, &mut inst, work.path())?;
    match std::fs::rename(&inst.data_dir, target) {
        Ok(()) => Ok(()),
        Err(_) if target.is_dir() => Ok(()),
        Err(e) => Err(Error::io("rename template into place at", target, e)),
    }
}

/// Runs initdb (trust auth, superuser `postgres`, UTF8, C locale, no fsync,
/// 1 MB WAL segments so each copy carries 1 MB of WAL rather than 16).
fn initdb(bin: &Path, data_dir: &Path, cwd: &Path) -> Result<()> {
    let mut cmd = os::server_command(&bin.join("initdb"), cwd);
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-A", "trust", "--auth-local=trust", "-U", "postgres"])
        .args(["-E", "UTF8", "--locale=C", "--wal-segsize=1"])
        .args(["--no-sync", "--no-instructions"]);
    os::run(&mut cmd, None).map(drop)
}

/// Writes pg_hba.conf and appends the shared settings to postgresql.conf.
fn configure(data_dir: &Path) -> Result<()> {
    let hba = data_dir.join("pg_hba.conf");
    std::fs::write(&hba, PG_HBA).map_err(|e| Error::io("write", &hba, e))?;
    append(&data_dir.join("postgresql.conf"), SHARED_CONF)
}

/// Appends `text` to the file at `path`, which must exist.
pub(crate) fn append(path: &Path, text: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|e| Error::io("append to", path, e))
}

/// Starts the template server, creates the roles and database, and shuts
/// it down cleanly (so copies start without crash recovery).
fn bootstrap(bin: &Path, inst: &mut Instance, work_dir: &Path) -> Result<()> {
    server::first_start(bin, inst, work_dir, &[])?;
    let target = psql::Target {
        host: &inst.host,
        port: inst.port,
        user: "postgres",
        password: None,
        db: "postgres",
    };
    let created = psql::run(bin, target, &bootstrap_sql());
    let stopped = server::stop_fast(bin, inst);
    if created.is_err() || stopped.is_err() {
        server::kill_immediately(bin, inst);
        server::wait_stopped(inst, Duration::from_secs(10));
    }
    created.and(stopped)?;
    // Each copy writes its own; the template's names a port and socket dir
    // that no longer exist.
    let conf = inst.data_dir.join(server::INSTANCE_CONF);
    std::fs::remove_file(&conf).map_err(|e| Error::io("remove", &conf, e))
}

/// The roles, grants and database every cluster starts with.
fn bootstrap_sql() -> String {
    format!(
        "CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}';
SET password_encryption = 'md5';
CREATE ROLE {MD5_USER} LOGIN PASSWORD '{MD5_PASSWORD}';
RESET password_encryption;
CREATE ROLE {PLAIN_USER} LOGIN PASSWORD '{PLAIN_PASSWORD}';
GRANT CREATE ON DATABASE postgres TO {APP_USER}, {MD5_USER}, {PLAIN_USER};
GRANT CREATE ON SCHEMA public TO {APP_USER}, {MD5_USER}, {PLAIN_USER};
CREATE DATABASE {APP_DB} OWNER {APP_USER};
"
    )
}

/// Copies the template to `data_dir` (`cp -a`, which keeps the server
/// user's ownership when run as root).
pub(crate) fn copy(template: &Path, data_dir: &Path) -> Result<()> {
    let mut cmd = Command::new("cp");
    cmd.arg("-a").arg(template).arg(data_dir);
    os::run(&mut cmd, None).map(drop)
}

/// An exclusive lock file holding its owner's pid; removed on drop.
struct Lock {
    /// The lock file.
    path: PathBuf,
}

impl Lock {
    /// Creates the lock file, waiting while a live process holds it and
    /// taking it over from a dead one.
    fn acquire(path: PathBuf) -> Result<Lock> {
        let started = Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    let _ = write!(file, "{}", std::process::id());
                    return Ok(Lock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("create lock file", &path, e)),
            }
            if holder_is_dead(&path) {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if started.elapsed() > LOCK_TIMEOUT {
                return Err(Error::TemplateLock { path });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the lock file names a process that no longer exists. A file
/// without a pid yet belongs to a holder that is still writing it.
fn holder_is_dead(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| !os::process_exists(pid))
}
