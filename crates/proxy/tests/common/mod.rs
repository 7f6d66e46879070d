//! Shared set-up for the proxy's integration tests: a throwaway PostgreSQL
//! (the test kit) with pgpilot in front of it on a free port.

#![allow(dead_code)]

pub mod external;
pub mod hand_client;
pub mod routing;
pub mod wire_client;

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

/// Everything a test may add to the generated settings, for
/// [`Env::start_setup`] and [`Env::settings_for`].
#[derive(Debug, Clone, Default)]
pub struct Setup {
    pub cluster: ClusterOptions,
    /// Top-level keys (`max_client_connections = 3`), placed before any table.
    pub top: String,
    /// Lines of the `[pool]` table.
    pub pool: String,
    /// Lines appended inside the first `[[users]]` table (the app user).
    pub app_user: String,
    /// Whole extra `[[users]]` tables, appended after the app user's.
    pub extra_users: String,
}

impl Setup {
    /// A setup with the given `[pool]` lines and nothing else.
    pub fn pool(pool: &str) -> Setup {
        Setup {
            pool: pool.to_owned(),
            ..Setup::default()
        }
    }
}

/// Settings TOML for a proxy in front of `port` as described by `setup`.
pub fn setup_toml(port: u16, setup: &Setup) -> String {
    let Setup {
        top,
        pool,
        app_user,
        extra_users,
        ..
    } = setup;
    format!(
        r#"
listen = "127.0.0.1:0"
admin_listen = "off"
startup_timeout = "2s"
{top}
[pool]
{pool}
[upstream]
primary = "127.0.0.1:{port}"
[[users]]
name = "{APP_USER}"
password = "{APP_PASSWORD}"
{app_user}
{extra_users}
"#
    )
}

impl Env {
    /// A cluster and a proxy configured by `setup` (top-level keys, extra
    /// `[[users]]` tables…).
    pub async fn start_setup(setup: Setup) -> Env {
        let opts = setup.cluster.clone();
        let cluster = tokio::task::spawn_blocking(move || Cluster::start(opts))
            .await
            .expect("cluster start task")
            .unwrap_or_else(|e| panic!("could not start PostgreSQL: {e}"));
        let toml = setup_toml(cluster.primary.port, &setup);
        let settings = pgpilot_config::from_toml_str(&toml)
            .unwrap_or_else(|e| panic!("bad test settings: {e}"));
        let proxy = RunningProxy::start(settings).await.expect("proxy starts");
        Env { proxy, cluster }
    }

    /// Validated settings for this environment's cluster as described by
    /// `setup`, e.g. to hand to `env.proxy.rt.reload`. `listen` is port 0:
    /// reload does not rebind.
    pub fn settings_for(&self, setup: &Setup) -> pgpilot_config::Settings {
        let toml = setup_toml(self.cluster.primary.port, setup);
        pgpilot_config::from_toml_str(&toml).unwrap_or_else(|e| panic!("bad test settings: {e}"))
    }

    /// libpq-style connection string to the proxy as `user` with
    /// `password` (none for trust) on `db`, plus `extra` key=value pairs.
    pub fn conn_str_as(&self, user: &str, password: Option<&str>, db: &str, extra: &str) -> String {
        let password = password.map_or_else(String::new, |p| format!(" password={p}"));
        format!(
            "host=127.0.0.1 port={} user={user}{password} dbname={db} {extra}",
            self.port()
        )
    }
}

/// Connects with `conn_str`; the driver's error (with the server's SQLSTATE,
/// if it sent one) when the login fails.
pub async fn try_connect(conn_str: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(conn_str, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The SQLSTATE of a driver error, or a panic naming the error when it has none.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    match e.code() {
        Some(code) => code.code().to_owned(),
        None => panic!("expected a server error with a SQLSTATE, got: {e:?}"),
    }
}

/// The single value of a one-row, one-column simple query, as text.
pub async fn one_value(client: &Client, sql: &str) -> Option<String> {
    let rows = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// A primary with a streaming replica and pgpilot routing over both, for
/// [`Env::start_routed`] and [`Env::routed_settings`].
#[derive(Debug, Clone, Default)]
pub struct RoutingSetup {
    /// Cluster options; [`Env::start_routed`] always asks for the replica.
    pub cluster: ClusterOptions,
    /// Lines of the `[routing]` table.
    pub routing: String,
    /// Lines of the `[pool]` table.
    pub pool: String,
}

impl RoutingSetup {
    /// A setup with the given `[routing]` lines and nothing else.
    pub fn routing(routing: &str) -> RoutingSetup {
        RoutingSetup {
            routing: routing.to_owned(),
            ..RoutingSetup::default()
        }
    }
}

/// Settings TOML for a proxy with the primary on `primary` and replicas on
/// `replicas` (all on 127.0.0.1), configured by `setup`.
pub fn routed_toml(primary: u16, replicas: &[u16], setup: &RoutingSetup) -> String {
    let replicas = replicas
        .iter()
        .map(|p| format!("\"127.0.0.1:{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let RoutingSetup { routing, pool, .. } = setup;
    format!(
        r#"
listen = "127.0.0.1:0"
admin_listen = "off"
startup_timeout = "2s"
[pool]
{pool}
[upstream]
primary = "127.0.0.1:{primary}"
replicas = [{replicas}]
[routing]
{routing}
[[users]]
name = "{APP_USER}"
password = "{APP_PASSWORD}"
"#
    )
}

impl Env {
    /// A primary and a streaming replica, with pgpilot routing over both as
    /// `setup` says.
    pub async fn start_routed(setup: RoutingSetup) -> Env {
        let mut opts = setup.cluster.clone();
        opts.replica = true;
        let cluster = tokio::task::spawn_blocking(move || Cluster::start(opts))
            .await
            .expect("cluster start task")
            .unwrap_or_else(|e| panic!("could not start PostgreSQL: {e}"));
        let replica = cluster.expect_replica().port;
        let toml = routed_toml(cluster.primary.port, &[replica], &setup);
        let settings = pgpilot_config::from_toml_str(&toml)
            .unwrap_or_else(|e| panic!("bad test settings: {e}"));
        let proxy = RunningProxy::start(settings).await.expect("proxy starts");
        Env { proxy, cluster }
    }

    /// Validated settings naming this cluster's primary and the replicas on
    /// `replicas` (none, or this cluster's replica), e.g. for
    /// `env.proxy.rt.reload`.
    pub fn routed_settings(
        &self,
        replicas: &[u16],
        setup: &RoutingSetup,
    ) -> pgpilot_config::Settings {
        let toml = routed_toml(self.cluster.primary.port, replicas, setup);
        pgpilot_config::from_toml_str(&toml).unwrap_or_else(|e| panic!("bad test settings: {e}"))
    }
}
