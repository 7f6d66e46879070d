//! Starting, stopping and promoting one server with `pg_ctl`, including the
//! per-instance settings file and the retry on a port someone else took.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::instance::Instance;
use crate::os;
use crate::port::free_port;

/// The per-instance settings file, included at the end of the template's
/// postgresql.conf (before the test's `extra_conf`).
pub(crate) const INSTANCE_CONF: &str = "pgpilot-instance.conf";

/// How long the kit waits for a start, stop or promotion.
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// How often it looks at `postmaster.pid` meanwhile.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// How many ports a first start tries before giving up.
const PORT_ATTEMPTS: u32 = 8;

/// Starts `inst` for the first time on a free port, writing its settings
/// file (listen address, port, `socket_dir`, then `lines`). When the port
/// turns out to be taken, retries with another one.
///
/// Errors with [`Error::ServerStart`], carrying the log, when the server
/// fails for any other reason or every port was taken.
pub(crate) fn first_start(
    bin: &Path,
    inst: &mut Instance,
    socket_dir: &Path,
    lines: &[String],
) -> Result<()> {
    for attempt in 1..=PORT_ATTEMPTS {
        inst.port = free_port();
        write_instance_conf(inst, socket_dir, lines)?;
        let log_start = inst.log_len();
        let Err(cause) = start(bin, inst) else {
            return Ok(());
        };
        let port_taken = is_port_conflict(&inst.log_since(log_start));
        if !port_taken || attempt == PORT_ATTEMPTS {
            return Err(Error::ServerStart {
                instance: inst.name,
                attempts: attempt,
                cause: Box::new(cause),
                log: inst.log(),
            });
        }
        tracing::debug!(port = inst.port, "port taken, retrying with another");
    }
    unreachable!("the last attempt always returns")
}

/// Whether a failed start's log says the port was already in use.
fn is_port_conflict(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("could not bind")
}

/// Writes `INSTANCE_CONF` into `inst`'s data dir.
fn write_instance_conf(inst: &Instance, socket_dir: &Path, lines: &[String]) -> Result<()> {
    let mut conf = format!(
        "# written by pgpilot-testkit for the {} instance\n\
         listen_addresses = '127.0.0.1'\n\
         port = {}\n\
         unix_socket_directories = '{}'\n",
        inst.name,
        inst.port,
        socket_dir.display()
    );
    for line in lines {
        conf.push_str(line);
        conf.push('\n');
    }
    let path = inst.data_dir.join(INSTANCE_CONF);
    std::fs::write(&path, conf).map_err(|e| Error::io("write", &path, e))?;
    os::give_to_server_user(&path)
}

/// Starts `inst` and returns once it accepts connections (a standby: once
/// it is consistent and serves read-only queries).
///
/// `pg_ctl start -w` would poll only every 100 ms; the kit starts servers
/// without waiting and watches `postmaster.pid` every few milliseconds.
pub(crate) fn start(bin: &Path, inst: &Instance) -> Result<()> {
    let log_start = inst.log_len();
    let mut cmd = pg_ctl(bin, inst, "start");
    cmd.arg("-W").arg("-l").arg(&inst.log_path);
    os::run(&mut cmd, None)?;
    wait_for_status(
        inst,
        &[STATUS_READY, STATUS_STANDBY],
        log_start,
        "the server to start",
    )
}

/// Shuts `inst` down cleanly (`pg_ctl stop -m fast`: disconnects clients,
/// checkpoints) and returns once the postmaster has exited.
pub(crate) fn stop_fast(bin: &Path, inst: &Instance) -> Result<()> {
    let mut cmd = pg_ctl(bin, inst, "stop");
    cmd.args(["-m", "fast", "-W"]);
    os::run(&mut cmd, None)?;
    if wait_stopped(inst, WAIT_TIMEOUT) {
        Ok(())
    } else {
        Err(timeout(
            inst,
            "the server to stop",
            "postmaster.pid still present",
            0,
        ))
    }
}

/// Promotes the standby `inst` and returns once it accepts writes (the
/// postmaster marks itself ready after recovery has ended).
pub(crate) fn promote(bin: &Path, inst: &Instance) -> Result<()> {
    let log_start = inst.log_len();
    let mut cmd = pg_ctl(bin, inst, "promote");
    cmd.arg("-W");
    os::run(&mut cmd, None)?;
    wait_for_status(inst, &[STATUS_READY], log_start, "the promotion to finish")
}

/// Polls `postmaster.pid` until its status line is one of `wanted`.
///
/// Errors with [`Error::Exited`] when the postmaster is gone and its log
/// (after byte `log_start`) says why, and [`Error::Timeout`] after
/// [`WAIT_TIMEOUT`].
fn wait_for_status(
    inst: &Instance,
    wanted: &[&str],
    log_start: u64,
    what: &'static str,
) -> Result<()> {
    let started = Instant::now();
    loop {
        let pid_file = PidFile::read(&inst.data_dir);
        if pid_file
            .as_ref()
            .is_some_and(|f| wanted.contains(&f.status.as_str()))
        {
            return Ok(());
        }
        let alive = pid_file.as_ref().is_some_and(PidFile::is_alive);
        if !alive && startup_failed(&inst.log_since(log_start)) {
            return Err(Error::Exited {
                instance: inst.name,
            });
        }
        if started.elapsed() > WAIT_TIMEOUT {
            let last = format!("postmaster.pid: {pid_file:?}");
            return Err(timeout(inst, what, &last, log_start));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Whether a server log shows the postmaster giving up.
fn startup_failed(log: &str) -> bool {
    log.contains("FATAL:") || log.contains("PANIC:") || log.contains("database system is shut down")
}

/// An [`Error::Timeout`] for `inst` with its log from byte `log_start`.
fn timeout(inst: &Instance, what: &'static str, last: &str, log_start: u64) -> Error {
    Error::Timeout {
        what,
        waited: WAIT_TIMEOUT,
        last: last.to_owned(),
        log: inst.log_since(log_start),
    }
}

/// The parts of `postmaster.pid` the kit reads (see PostgreSQL's
/// `src/include/utils/pidfile.h`: line 1 is the pid, line 8 the status).
#[derive(Debug)]
struct PidFile {
    /// The postmaster's pid, once written.
    pid: Option<u32>,
    /// `starting`, `ready`, `standby` or `stopping`; empty while starting.
    status: String,
}

/// Line 8 of postmaster.pid once the server accepts connections.
const STATUS_READY: &str = "ready";
/// Line 8 of postmaster.pid once a standby accepts read-only connections.
const STATUS_STANDBY: &str = "standby";

impl PidFile {
    /// The data dir's pid file, or `None` when there is none.
    fn read(data_dir: &Path) -> Option<PidFile> {
        let contents = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
        let mut lines = contents.lines();
        let pid = lines.next().and_then(|line| line.trim().parse().ok());
        let status = lines.nth(6).unwrap_or("").trim().to_owned();
        Some(PidFile { pid, status })
    }

    /// Whether the postmaster is (still, or not yet known to be not) running.
    fn is_alive(&self) -> bool {
        self.pid.is_none_or(os::process_exists)
    }
}

/// Sends an immediate shutdown without waiting for it; see
/// [`wait_stopped`]. Errors (e.g. the server is not running) are ignored:
/// this is for teardown.
pub(crate) fn kill_immediately(bin: &Path, inst: &Instance) {
    if inst.data_dir.join("postmaster.pid").exists() {
        let mut cmd = pg_ctl(bin, inst, "stop");
        cmd.args(["-m", "immediate", "-W"]);
        let _ = os::run(&mut cmd, None);
    }
}

/// Waits up to `limit` for `inst`'s postmaster to exit. It removes
/// `postmaster.pid` last, after closing its listen sockets; a pid file whose
/// process is gone (a crashed or killed server) also counts as stopped.
/// Returns whether it stopped.
pub(crate) fn wait_stopped(inst: &Instance, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while PidFile::read(&inst.data_dir).is_some_and(|f| f.pid.is_none_or(os::process_exists)) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    true
}

/// `pg_ctl <action> -D <data dir>`, run as the server's OS user.
fn pg_ctl(bin: &Path, inst: &Instance, action: &str) -> Command {
    let cwd = inst.data_dir.parent().unwrap_or(&inst.data_dir);
    let mut cmd = os::server_command(&bin.join("pg_ctl"), cwd);
    cmd.args([action, "-D"]).arg(&inst.data_dir);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pid_and_status_from_the_pid_file() {
        let dir =
            std::env::temp_dir().join(format!("pgpilot-kit-pidfile-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let contents = "4242\n/data\n1700000000\n25432\n/tmp\n127.0.0.1\n  1234  5678\nstandby \n";
        std::fs::write(dir.join("postmaster.pid"), contents).unwrap();
        let pid_file = PidFile::read(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(pid_file.pid, Some(4242));
        assert_eq!(pid_file.status, STATUS_STANDBY);
        assert!(PidFile::read(&dir).is_none());
    }

    #[test]
    fn recognises_failed_starts() {
        assert!(startup_failed(
            "FATAL:  could not create any TCP/IP sockets"
        ));
        assert!(startup_failed("LOG:  database system is shut down"));
        assert!(!startup_failed(
            "LOG:  database system is ready to accept connections"
        ));
    }

    #[test]
    fn recognises_port_conflicts() {
        let log = "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use";
        assert!(is_port_conflict(log));
        assert!(!is_port_conflict(
            "FATAL:  unrecognized configuration parameter \"foo\""
        ));
    }
}
