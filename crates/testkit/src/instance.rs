//! One PostgreSQL server of a test cluster: where it listens, where its data
//! and log live, and how to reach it.

use std::path::{Path, PathBuf};

/// One running (or stopped, in failure tests) PostgreSQL server of a
/// [`Cluster`](crate::Cluster).
#[derive(Debug, Clone)]
pub struct Instance {
    /// The address it listens on: always `"127.0.0.1"`.
    pub host: String,
    /// Its TCP port, in 20000..32000.
    pub port: u16,
    /// Its data directory (owned by the `postgres` OS user when tests run as root).
    pub data_dir: PathBuf,
    /// Its server log (`pg_ctl -l`), kept outside the data dir.
    pub(crate) log_path: PathBuf,
    /// "primary" or "replica", for error messages.
    pub(crate) name: &'static str,
}

impl Instance {
    /// An instance named `name` whose data dir and log will live in
    /// `work_dir`; its port is chosen when it first starts.
    pub(crate) fn new(name: &'static str, work_dir: &Path) -> Instance {
        Instance {
            host: "127.0.0.1".to_owned(),
            port: 0,
            data_dir: work_dir.join(name),
            log_path: work_dir.join(format!("{name}.log")),
            name,
        }
    }

    /// A connection URL `postgres://user[:password]@127.0.0.1:port/db`, for
    /// drivers and for pointing pgpilot at this server. The kit's user names
    /// and passwords need no percent-encoding; others must not either.
    pub fn url(&self, user: &str, password: Option<&str>, db: &str) -> String {
        let auth = match password {
            Some(password) => format!("{user}:{password}"),
            None => user.to_owned(),
        };
        format!("postgres://{auth}@{}:{}/{db}", self.host, self.port)
    }

    /// The whole server log so far (empty if there is none yet), to put in
    /// failure messages.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The log written after byte `offset` (see [`Instance::log_len`]).
    pub(crate) fn log_since(&self, offset: u64) -> String {
        let bytes = std::fs::read(&self.log_path).unwrap_or_default();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// The log's current length in bytes (0 when it does not exist yet).
    pub(crate) fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log_path).map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_and_without_password() {
        let mut inst = Instance::new("primary", Path::new("/tmp/x"));
        inst.port = 25432;
        assert_eq!(
            inst.url("app", Some("app-secret"), "app"),
            "postgres://app:app-secret@127.0.0.1:25432/app"
        );
        assert_eq!(
            inst.url("postgres", None, "postgres"),
            "postgres://postgres@127.0.0.1:25432/postgres"
        );
    }

    #[test]
    fn paths_live_in_the_work_dir() {
        let inst = Instance::new("replica", Path::new("/tmp/x"));
        assert_eq!(inst.data_dir, Path::new("/tmp/x/replica"));
        assert_eq!(inst.log_path, Path::new("/tmp/x/replica.log"));
        assert_eq!(inst.log(), "");
    }
}
