//! A throwaway PostgreSQL cluster for one test: a primary copied from the
//! machine's template, optionally a streaming replica made with
//! pg_basebackup, SQL through psql, failure controls (stop, start, promote),
//! and teardown on drop, also when the test panics.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::binaries::bin_dir;
use crate::error::{Error, Result};
use crate::instance::Instance;
use crate::workdir::{self, WorkDir};
use crate::{os, psql, server, template, SUPERUSER};

/// How long the kit waits for a replica to stream and catch up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How often it polls meanwhile.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How long teardown waits for a server to exit after an immediate stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`Cluster::start`] sets up.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Also start a streaming replica of the primary.
    pub replica: bool,
    /// The replica's `recovery_min_apply_delay`: it receives WAL at once but
    /// applies each commit only this long after it happened.
    pub replica_apply_delay: Option<Duration>,
    /// Lines appended to postgresql.conf (the replica inherits them). They
    /// come last, so they override the kit's settings; do not set `port`.
    pub extra_conf: Vec<String>,
}

/// A running throwaway cluster. Dropping it stops every server
/// immediately and deletes all of its files.
#[derive(Debug)]
pub struct Cluster {
    /// The read-write server.
    pub primary: Instance,
    /// The streaming replica, when [`ClusterOptions::replica`] asked for one.
    pub replica: Option<Instance>,
    /// The PostgreSQL binaries in use.
    bin: PathBuf,
    /// Holds the data dirs, logs and Unix sockets; dropped (deleted) last.
    work: WorkDir,
}

impl Cluster {
    /// Starts a cluster and blocks until it is usable: the primary accepts
    /// connections and, when asked for, the replica is in recovery, streams
    /// from the primary and has received (or, without an apply delay,
    /// replayed) everything the primary had written.
    ///
    /// Errors: [`Error::MissingPostgres`] without the server binaries;
    /// [`Error::ServerStart`] or [`Error::Timeout`] with the server log when
    /// a server does not come up. Whatever was started is torn down again.
    pub fn start(opts: ClusterOptions) -> Result<Cluster> {
        let bin = bin_dir()?;
        workdir::sweep_stale(&bin);
        let template = template::ensure(&bin)?;
        let work = WorkDir::create()?;
        let mut cluster = Cluster {
            primary: Instance::new("primary", work.path()),
            replica: None,
            bin,
            work,
        };
        cluster.start_primary(&template, &opts.extra_conf)?;
        if opts.replica {
            cluster.start_replica(opts.replica_apply_delay)?;
        }
        Ok(cluster)
    }

    /// A primary-only cluster with default options; panics with the whole
    /// error (including how to install PostgreSQL) when it cannot start.
    pub fn primary_only() -> Cluster {
        Cluster::start(ClusterOptions::default()).unwrap_or_else(|e| panic!("test cluster: {e}"))
    }

    /// A primary with a streaming replica; panics with the whole error when
    /// it cannot start.
    pub fn with_replica() -> Cluster {
        let opts = ClusterOptions {
            replica: true,
            ..ClusterOptions::default()
        };
        Cluster::start(opts).unwrap_or_else(|e| panic!("test cluster: {e}"))
    }

    /// The replica; panics when the cluster was started without one.
    pub fn expect_replica(&self) -> &Instance {
        self.replica.as_ref().expect(
            "this cluster has no replica: start it with ClusterOptions { replica: true, .. }",
        )
    }

    /// The directory of the PostgreSQL binaries this cluster runs.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// Runs `sql` on `inst` as the superuser `postgres` over TCP and returns
    /// its output: one line per row, columns separated by `|`, no headers,
    /// no command tags, no final newline (`select 1` gives `"1"`).
    ///
    /// Errors with [`Error::Psql`], including psql's stderr, when the
    /// connection or any statement fails (psql stops at the first error).
    pub fn psql(&self, inst: &Instance, db: &str, sql: &str) -> Result<String> {
        self.psql_as(inst, SUPERUSER, None, db, sql)
    }

    /// Like [`Cluster::psql`], but logs in as `user` with `password` (sent
    /// as `PGPASSWORD`), so it goes through the pg_hba method for that user:
    /// scram-sha-256, md5 for `md5user`, password for `plainuser`.
    pub fn psql_as(
        &self,
        inst: &Instance,
        user: &str,
        password: Option<&str>,
        db: &str,
        sql: &str,
    ) -> Result<String> {
        let target = psql::Target {
            host: &inst.host,
            port: inst.port,
            user,
            password,
            db,
        };
        psql::run(&self.bin, target, sql)
    }

    /// Shuts `inst` down cleanly (`pg_ctl stop -m fast`), for failure tests.
    pub fn stop_instance(&self, inst: &Instance) -> Result<()> {
        server::stop_fast(&self.bin, inst)
    }

    /// Starts a stopped `inst` again on its old port; returns once it
    /// accepts connections.
    pub fn start_instance(&self, inst: &Instance) -> Result<()> {
        let log_start = inst.log_len();
        server::start(&self.bin, inst).map_err(|cause| Error::ServerStart {
            instance: inst.name,
            attempts: 1,
            cause: Box::new(cause),
            log: inst.log_since(log_start),
        })
    }

    /// Promotes the standby `inst` to a primary; returns once it accepts
    /// writes.
    pub fn promote(&self, inst: &Instance) -> Result<()> {
        server::promote(&self.bin, inst)
    }

    /// Blocks until the replica has replayed everything the primary has
    /// flushed so far, e.g. before reading a just-written row there. With an
    /// apply delay this waits for the delay too.
    ///
    /// Errors with [`Error::Timeout`] after 60 s.
    pub fn wait_replica_caught_up(&self) -> Result<()> {
        self.wait_caught_up(self.expect_replica(), "pg_last_wal_replay_lsn()")
    }

    /// Copies the template into the primary's data dir, appends the test's
    /// settings and starts it.
    fn start_primary(&mut self, template: &Path, extra_conf: &[String]) -> Result<()> {
        let data_dir = &self.primary.data_dir;
        template::copy(template, data_dir)?;
        if !extra_conf.is_empty() {
            let lines = format!("\n# extra_conf from the test\n{}\n", extra_conf.join("\n"));
            template::append(&data_dir.join("postgresql.conf"), &lines)?;
        }
        server::first_start(&self.bin, &mut self.primary, self.work.path(), &[])
    }

    /// Clones the primary with pg_basebackup, starts the clone as a
    /// streaming standby and waits until it has caught up.
    fn start_replica(&mut self, apply_delay: Option<Duration>) -> Result<()> {
        let mut replica = Instance::new("replica", self.work.path());
        self.base_backup(&replica)?;
        let lines: Vec<String> = apply_delay
            .map(|d| format!("recovery_min_apply_delay = '{}ms'", d.as_millis()))
            .into_iter()
            .collect();
        let started = server::first_start(&self.bin, &mut replica, self.work.path(), &lines);
        // Recorded even when the start failed, so teardown stops whatever runs.
        self.replica = Some(replica.clone());
        started?;
        self.wait_streaming(&replica)?;
        let lsn = if apply_delay.is_some() {
            "pg_last_wal_receive_lsn()"
        } else {
            "pg_last_wal_replay_lsn()"
        };
        self.wait_caught_up(&replica, lsn)
    }

    /// `pg_basebackup -R -X stream` of the primary into `replica`'s data dir.
    fn base_backup(&self, replica: &Instance) -> Result<()> {
        let mut cmd = os::server_command(&self.bin.join("pg_basebackup"), self.work.path());
        cmd.args([
            "-h",
            &self.primary.host,
            "-p",
            &self.primary.port.to_string(),
        ])
        .args(["-U", SUPERUSER, "-D"])
        .arg(&replica.data_dir)
        .args(["-R", "-X", "stream", "-c", "fast", "-w", "--no-sync"]);
        os::run(&mut cmd, None).map(drop)
    }

    /// Waits until the primary has a streaming WAL sender and `replica` is
    /// in recovery.
    fn wait_streaming(&self, replica: &Instance) -> Result<()> {
        self.wait_until("the replica to stream from the primary", || {
            let senders = self
                .psql(&self.primary, "postgres", "select count(*) from pg_stat_replication where state = 'streaming'")
                .map_err(|e| e.to_string())?;
            let in_recovery = self
                .psql(replica, "postgres", "select pg_is_in_recovery()")
                .map_err(|e| e.to_string())?;
            if senders != "0" && in_recovery == "t" {
                Ok(())
            } else {
                Err(format!("streaming senders on the primary: {senders}, replica in recovery: {in_recovery}"))
            }
        })
    }

    /// Waits until `replica_lsn` (an LSN function evaluated on the replica)
    /// reaches the primary's current WAL flush position.
    fn wait_caught_up(&self, replica: &Instance, replica_lsn: &str) -> Result<()> {
        let target = self.psql(
            &self.primary,
            "postgres",
            "select pg_current_wal_flush_lsn()",
        )?;
        let sql =
            format!("select coalesce({replica_lsn} >= '{target}'::pg_lsn, false), {replica_lsn}");
        self.wait_until("the replica to catch up with the primary", || {
            let answer = self
                .psql(replica, "postgres", &sql)
                .map_err(|e| e.to_string())?;
            match answer.split_once('|') {
                Some(("t", _)) => Ok(()),
                _ => Err(format!(
                    "replica at {answer}, primary flushed up to {target}"
                )),
            }
        })
    }

    /// Polls `ready` until it returns `Ok`, or fails with [`Error::Timeout`]
    /// carrying its last complaint and the server logs.
    fn wait_until(
        &self,
        what: &'static str,
        mut ready: impl FnMut() -> Result<(), String>,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            let last = match ready() {
                Ok(()) => return Ok(()),
                Err(state) => state,
            };
            if started.elapsed() > READY_TIMEOUT {
                return Err(Error::Timeout {
                    what,
                    waited: started.elapsed(),
                    last,
                    log: self.logs(),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Every instance's server log, labelled.
    fn logs(&self) -> String {
        self.instances()
            .map(|inst| {
                format!(
                    "--- {} log ({}) ---\n{}",
                    inst.name,
                    inst.log_path.display(),
                    inst.log()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The primary, then the replica if there is one.
    fn instances(&self) -> impl Iterator<Item = &Instance> {
        std::iter::once(&self.primary).chain(self.replica.as_ref())
    }
}

impl Drop for Cluster {
    /// Stops every server immediately (all at once, then waits for each),
    /// after which the work dir and its data dirs are deleted. Never panics.
    fn drop(&mut self) {
        for inst in self.instances() {
            server::kill_immediately(&self.bin, inst);
        }
        for inst in self.instances() {
            if !server::wait_stopped(inst, STOP_TIMEOUT) {
                tracing::warn!(data_dir = %inst.data_dir.display(), "test server did not stop in time");
            }
        }
    }
}
