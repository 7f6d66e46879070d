//! Shared set-up for the proxy's integration tests: a throwaway PostgreSQL
//! (the test kit) with pgpilot in front of it on a free port.

#![allow(dead_code)]

use pgpilot_proxy::RunningProxy;
use pgpilot_testkit::{Cluster, ClusterOptions, APP_DB, APP_PASSWORD, APP_USER};
use tokio_postgres::{Client, NoTls};

/// A cluster and a proxy in front of its primary.
pub struct Env {
    pub proxy: RunningProxy,
    pub cluster: Cluster,
}

/// Settings TOML for a proxy in front of `port`, with `extra` appended to `[pool]`.
pub fn settings_toml(port: u16, pool: &str, users: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
admin_listen = "off"
startup_timeout = "2s"
[pool]
{pool}
[upstream]
primary = "127.0.0.1:{port}"
[[users]]
name = "{APP_USER}"
password = "{APP_PASSWORD}"
{users}
"#
    )
}

impl Env {
    /// Primary only, proxy with the given `[pool]` lines.
    pub async fn start(pool: &str) -> Env {
        Env::start_with(ClusterOptions::default(), pool, "").await
    }

    pub async fn start_with(opts: ClusterOptions, pool: &str, users: &str) -> Env {
        let cluster = tokio::task::spawn_blocking(move || Cluster::start(opts))
            .await
            .expect("cluster start task")
            .unwrap_or_else(|e| panic!("could not start PostgreSQL: {e}"));
        let toml = settings_toml(cluster.primary.port, pool, users);
        let settings = pgpilot_config::from_toml_str(&toml)
            .unwrap_or_else(|e| panic!("bad test settings: {e}"));
        let proxy = RunningProxy::start(settings).await.expect("proxy starts");
        Env { proxy, cluster }
    }

    pub fn port(&self) -> u16 {
        self.proxy.addr.port()
    }

    /// libpq-style connection string to the proxy as the app user.
    pub fn conn_str(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}",
            self.port()
        )
    }

    /// URL form, for psql, pgbench and Python drivers.
    pub fn url(&self) -> String {
        format!(
            "postgres://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{}/{APP_DB}",
            self.port()
        )
    }

    /// A tokio-postgres client through the proxy.
    pub async fn client(&self) -> Client {
        connect(&self.conn_str()).await
    }

    /// A tokio-postgres client straight to the primary (bypassing pgpilot).
    pub async fn direct(&self) -> Client {
        let s = format!(
            "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={APP_DB}",
            self.cluster.primary.port
        );
        connect(&s).await
    }

    /// Runs SQL on the primary as superuser.
    pub fn psql(&self, sql: &str) -> String {
        self.cluster
            .psql(&self.cluster.primary, APP_DB, sql)
            .unwrap_or_else(|e| panic!("psql failed: {e}"))
    }
}

pub async fn connect(conn_str: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(conn_str, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {conn_str}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}
