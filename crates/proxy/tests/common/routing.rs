//! Helpers for the routing tests (primary + streaming replica behind
//! pgpilot): which server ran a statement, pgpilot's view of each server and
//! its routing counters, and bounded waits for the monitor.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_proxy::backends::Backend;
use pgpilot_testkit::{APP_DB, APP_PASSWORD, APP_USER};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::{connect, Env};

/// How long a test waits for the monitor to notice something (a sample, a
/// catalog, a promotion) before failing.
pub const MONITOR_WAIT: Duration = Duration::from_secs(10);

/// Which server of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Primary,
    Replica,
}

impl Server {
    pub fn as_str(self) -> &'static str {
        match self {
            Server::Primary => "primary",
            Server::Replica => "replica",
        }
    }
}

/// A backend's routing counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteCounts {
    pub reads: u64,
    pub writes: u64,
    pub read_fallbacks: u64,
    pub ryw_fallbacks: u64,
}

impl RouteCounts {
    pub fn of(b: &Backend) -> RouteCounts {
        let c = &b.counters;
        RouteCounts {
            reads: c.reads_routed.load(Relaxed),
            writes: c.writes_routed.load(Relaxed),
            read_fallbacks: c.read_fallbacks.load(Relaxed),
            ryw_fallbacks: c.ryw_fallbacks.load(Relaxed),
        }
    }

    /// Transactions routed to the server, for any reason.
    pub fn total(&self) -> u64 {
        self.reads + self.writes + self.read_fallbacks + self.ryw_fallbacks
    }

    /// What changed since `before`.
    pub fn since(&self, before: &RouteCounts) -> RouteCounts {
        RouteCounts {
            reads: self.reads - before.reads,
            writes: self.writes - before.writes,
            read_fallbacks: self.read_fallbacks - before.read_fallbacks,
            ryw_fallbacks: self.ryw_fallbacks - before.ryw_fallbacks,
        }
    }
}

impl Env {
    pub fn primary_port(&self) -> u16 {
        self.cluster.primary.port
    }

    pub fn replica_port(&self) -> u16 {
        self.cluster.expect_replica().port
    }

    /// The server listening on `port`.
    pub fn server_at(&self, port: u16) -> Server {
        if port == self.primary_port() {
            Server::Primary
        } else if port == self.replica_port() {
            Server::Replica
        } else {
            panic!("no server of this cluster listens on port {port}")
        }
    }

    /// pgpilot's record of the server on `port`, if it has one.
    pub fn find_backend(&self, port: u16) -> Option<Arc<Backend>> {
        let addr = format!("127.0.0.1:{port}");
        self.proxy
            .rt
            .backends
            .all()
            .into_iter()
            .find(|b| b.addr == addr)
    }

    /// pgpilot's record of `server`; panics when it has none.
    pub fn backend(&self, server: Server) -> Arc<Backend> {
        let port = match server {
            Server::Primary => self.primary_port(),
            Server::Replica => self.replica_port(),
        };
        self.find_backend(port)
            .unwrap_or_else(|| panic!("pgpilot has no {} backend", server.as_str()))
    }

    /// Current routing counters of the primary and the replica (zero for a
    /// server pgpilot does not know right now).
    pub fn counts(&self) -> (RouteCounts, RouteCounts) {
        let of = |port| {
            self.find_backend(port)
                .map(|b| RouteCounts::of(&b))
                .unwrap_or_default()
        };
        (of(self.primary_port()), of(self.replica_port()))
    }

    /// A client straight to the replica (bypassing pgpilot).
    pub async fn replica_direct(&self) -> Client {
        connect(&format!(
            "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}",
            self.replica_port()
        ))
        .await
    }

    /// Waits until pgpilot's monitor has sampled every server and loaded
    /// the function catalog of the app database, so plain reads that call
    /// built-in functions (`inet_server_port()`) may go to the replica.
    /// Logs a client in first: catalogs are loaded for databases in use.
    pub async fn wait_routing_ready(&self) {
        let _login = self.client().await;
        let rt = &self.proxy.rt;
        wait_for("every server sampled", || {
            rt.backends
                .all()
                .iter()
                .all(|b| b.is_healthy() && b.position().1.is_some())
        })
        .await;
        wait_for("the app database's function catalog", || {
            rt.functions.is_read_only(APP_DB, "inet_server_port", &[])
        })
        .await;
    }
}

/// Polls `ready` every 10 ms until it holds; panics after [`MONITOR_WAIT`].
pub async fn wait_for(what: &str, mut ready: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < MONITOR_WAIT,
            "timed out after {MONITOR_WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// Runs `sql` (one simple Query, possibly several statements) and returns
/// the last column of the last row it returned, if any.
pub async fn last_value(
    client: &Client,
    sql: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .iter()
        .rev()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(r.len() - 1).map(str::to_owned)),
            _ => None,
        })
        .flatten())
}

/// The port in the last column of the last row `sql` returned; panics on
/// an error or no row.
pub async fn port_of(client: &Client, sql: &str) -> u16 {
    let value = last_value(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    value
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{sql}: no port in the last column"))
}

/// One request a client made and what came of it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it was sent, since the load started.
    pub at: Duration,
    /// How long the answer took.
    pub took: Duration,
    /// The port in the answer, or the error.
    pub outcome: Result<u16, ClientError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// SQLSTATE, or "none" when the driver saw no server error.
    pub code: String,
    pub message: String,
}

/// Clients running one kind of request in a loop until stopped.
pub struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Seen>>>,
}

impl Load {
    /// Starts `clients` connections through pgpilot; client `c` sends
    /// `sql(c, n)` as its `n`th simple Query, which must return a port.
    pub async fn start(env: &Env, clients: u32, sql: fn(u32, u64) -> String) -> Load {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let client = env.client().await;
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut n = 0;
                while !stop.load(Relaxed) {
                    let at = started.elapsed();
                    let outcome = request(&client, &sql(c, n)).await;
                    let took = started.elapsed() - at;
                    seen.push(Seen { at, took, outcome });
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                seen
            }));
        }
        Load {
            started,
            stop,
            tasks,
        }
    }

    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the clients; everything they saw, client by client.
    pub async fn finish(self) -> Vec<Vec<Seen>> {
        self.stop.store(true, Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.push(t.await.expect("client task"));
        }
        all
    }
}

/// A [`Load`] request: an autocommit read that returns the server's port.
pub fn read_sql(_client: u32, _n: u64) -> String {
    "select inet_server_port()".into()
}

/// Sends `sql`; the port in the last column of its last row, or the error.
pub async fn request(client: &tokio_postgres::Client, sql: &str) -> Result<u16, ClientError> {
    match client.simple_query(sql).await {
        Ok(messages) => messages
            .iter()
            .rev()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(r.len() - 1).and_then(|v| v.parse().ok()),
                _ => None,
            })
            .ok_or_else(|| ClientError {
                code: "none".into(),
                message: format!("{sql}: no port in the answer"),
            }),
        Err(e) => Err(ClientError {
            code: e
                .code()
                .map_or_else(|| "none".to_owned(), |c| c.code().to_owned()),
            message: e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
        }),
    }
}
