//! Finding the PostgreSQL 15 binaries. A missing server is a loud error that
//! says how to install it, never a silent skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::os;

/// Where Debian's postgresql-15 package puts the server binaries.
const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// Overrides [`DEFAULT_BIN_DIR`] when set.
const BIN_DIR_ENV: &str = "PGPILOT_PG_BIN";

/// The programs the kit cannot work without.
const REQUIRED: [&str; 5] = ["postgres", "initdb", "pg_ctl", "pg_basebackup", "psql"];

/// The directory holding the PostgreSQL server binaries: `$PGPILOT_PG_BIN`
/// when set, else `/usr/lib/postgresql/15/bin`.
///
/// Errors with [`Error::MissingPostgres`] (whose message says how to install
/// them) when any of `postgres`, `initdb`, `pg_ctl`, `pg_basebackup`, `psql`
/// is missing there.
pub fn bin_dir() -> Result<PathBuf> {
    checked_bin_dir(std::env::var_os(BIN_DIR_ENV))
}

/// [`bin_dir`] with the environment variable's value passed in.
fn checked_bin_dir(env_value: Option<std::ffi::OsString>) -> Result<PathBuf> {
    let dir = env_value
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_BIN_DIR), PathBuf::from);
    if REQUIRED.iter().all(|name| dir.join(name).is_file()) {
        Ok(dir)
    } else {
        Err(Error::MissingPostgres { dir })
    }
}

/// The `pgbench` next to the server binaries.
///
/// Errors with [`Error::MissingPostgres`] when the server is missing and
/// [`Error::MissingBinary`] when only pgbench is.
pub fn pgbench_path() -> Result<PathBuf> {
    let dir = bin_dir()?;
    let path = dir.join("pgbench");
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinary {
            name: "pgbench",
            dir,
        })
    }
}

/// The server's full version, e.g. `15.18`, from `postgres --version`
/// (which prints `postgres (PostgreSQL) 15.18 (Debian ...)`).
pub(crate) fn server_version(bin: &Path) -> Result<String> {
    let output = os::run(Command::new(bin.join("postgres")).arg("--version"), None)?;
    output
        .split_whitespace()
        .nth(2)
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_owned)
        .ok_or(Error::Version { output })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_say_how_to_install_them() {
        let err =
            checked_bin_dir(Some("/nonexistent/pg/bin".into())).expect_err("dir does not exist");
        assert!(matches!(err, Error::MissingPostgres { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("/nonexistent/pg/bin"), "{message}");
        assert!(
            message.contains("apt-get install -y postgresql-15"),
            "{message}"
        );
        assert!(message.contains("scripts/install-deps.sh"), "{message}");
    }

    #[test]
    fn empty_override_means_the_default_dir() {
        match checked_bin_dir(Some("".into())) {
            Ok(dir) => assert_eq!(dir, Path::new(DEFAULT_BIN_DIR)),
            Err(Error::MissingPostgres { dir }) => assert_eq!(dir, Path::new(DEFAULT_BIN_DIR)),
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
}
