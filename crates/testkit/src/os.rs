//! Running PostgreSQL's programs as the right OS user and collecting what
//! they print. `initdb` and `postgres` refuse to run as root, so when the
//! test process is root they run as the `postgres` user via `runuser`, and
//! the directories they write are handed to that user first.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The OS user the server runs as when the tests run as root.
const SERVER_OS_USER: &str = "postgres";

/// Whether this process's effective uid is 0, read from `/proc/self/status`
/// (`Uid:` real, effective, saved, fs). Unreadable means "not root".
pub(crate) fn running_as_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .is_some_and(|euid| euid == "0")
}

/// A command that runs `program` as the server's OS user: through
/// `runuser -u postgres --` when root, directly otherwise. Its working
/// directory is `cwd`, which must be readable by that user (PostgreSQL's
/// tools resolve their own path relative to it).
pub(crate) fn server_command(program: &Path, cwd: &Path) -> Command {
    let mut cmd = if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", SERVER_OS_USER, "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    };
    cmd.current_dir(cwd);
    clear_pg_env(&mut cmd);
    cmd
}

/// Removes every `PG*` variable (PGDATA, PGPORT, PGPASSWORD, ...) from
/// `cmd`'s environment, so the caller's shell cannot redirect the kit's
/// programs to another server or data dir.
pub(crate) fn clear_pg_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            cmd.env_remove(name);
        }
    }
}

/// Hands `path` (not recursively) to the server's OS user when root; a no-op
/// otherwise, since the server then runs as this process's user.
pub(crate) fn give_to_server_user(path: &Path) -> Result<()> {
    if !running_as_root() {
        return Ok(());
    }
    let (uid, gid) = server_user_ids()?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| Error::io("chown to postgres", path, e))
}

/// The `postgres` user's uid and gid from `/etc/passwd`.
fn server_user_ids() -> Result<(u32, u32)> {
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| Error::io("read", "/etc/passwd", e))?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != SERVER_OS_USER {
                return None;
            }
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some((uid, gid))
        })
        .ok_or(Error::NoPostgresUser)
}

/// Whether a process with this pid exists on this machine.
pub(crate) fn process_exists(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// The program and its arguments as one line, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion with `stdin` as its input (empty when `None`)
/// and returns its stdout.
///
/// Errors: [`Error::Spawn`] when it cannot start, [`Error::Command`] (with
/// stdout and stderr) when it exits unsuccessfully.
pub(crate) fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let output = run_raw(cmd, stdin)?;
    if !output.status.success() {
        return Err(Error::Command {
            program: describe(cmd),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `cmd` to completion with `stdin` as its input and returns its output
/// whatever the exit status; only a failure to start is an error.
pub(crate) fn run_raw(cmd: &mut Command, stdin: Option<&str>) -> Result<std::process::Output> {
    let program = describe(cmd);
    let spawn_error = |source| Error::Spawn { program, source };
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(source) => return Err(spawn_error(source)),
    };
    // Feed stdin from a thread so a child that prints a lot before reading
    // all of its input cannot deadlock against us on full pipes.
    let writer = match (stdin, child.stdin.take()) {
        (Some(input), Some(mut pipe)) => {
            let input = input.to_owned();
            Some(std::thread::spawn(move || {
                // A child that exits early closes the pipe; its exit status
                // and stderr then tell the real story.
                let _ = pipe.write_all(input.as_bytes());
            }))
        }
        _ => None,
    };
    let output = child.wait_with_output().map_err(spawn_error);
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    output
}
