//! Throwaway PostgreSQL 15 clusters for pgpilot's tests (dev-only).
//!
//! [`Cluster::start`] gives each test its own primary, and optionally a
//! streaming replica, on free ports in 20000..32000, with data dirs under
//! `/dev/shm/pgpilot-kit-<pid>-...` (or `$PGPILOT_KIT_DIR`, or `/tmp` where
//! there is no `/dev/shm`) that are deleted on drop, also when the test
//! panics. Clusters are copies of a template data dir built once per
//! machine, so a start costs a copy and a `pg_ctl start`, not an initdb.
//!
//! Every cluster has these roles (pg_hba method in brackets, over TCP on
//! 127.0.0.1): the superuser `postgres` (trust, no password),
//! [`APP_USER`] (scram-sha-256), [`MD5_USER`] (md5, with an md5-hashed
//! password) and [`PLAIN_USER`] (cleartext `password`). The three non-super
//! users may create in database `postgres` and its `public` schema;
//! [`APP_DB`] belongs to [`APP_USER`].
//!
//! The server binaries come from `/usr/lib/postgresql/15/bin` or
//! `$PGPILOT_PG_BIN`. Missing binaries are an error that says how to install
//! them ([`Error::MissingPostgres`]); the panicking constructors
//! ([`Cluster::primary_only`], [`Cluster::with_replica`]) make that a loud
//! test failure, never a skip. As root, the servers run as the `postgres`
//! OS user.

mod binaries;
mod cluster;
mod error;
mod instance;
mod os;
mod port;
mod psql;
pub mod redis;
mod server;
mod template;
mod workdir;

pub use binaries::{bin_dir, pgbench_path};
pub use cluster::{Cluster, ClusterOptions};
pub use error::{Error, Result};
pub use instance::Instance;
pub use port::free_port;
pub use redis::RedisServer;

/// The superuser; trusted without a password on 127.0.0.1.
pub const SUPERUSER: &str = "postgres";
/// A login role authenticated with scram-sha-256; owns [`APP_DB`].
pub const APP_USER: &str = "app";
/// [`APP_USER`]'s password.
pub const APP_PASSWORD: &str = "app-secret";
/// A login role whose password is stored md5-hashed and checked with md5.
pub const MD5_USER: &str = "md5user";
/// [`MD5_USER`]'s password.
pub const MD5_PASSWORD: &str = "md5-secret";
/// A login role checked with the cleartext `password` method.
pub const PLAIN_USER: &str = "plainuser";
/// [`PLAIN_USER`]'s password.
pub const PLAIN_PASSWORD: &str = "plain-secret";
/// A database owned by [`APP_USER`].
pub const APP_DB: &str = "app";
