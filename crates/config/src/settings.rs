//! The validated settings the rest of pgpilot runs on. Every value here has
//! passed [`crate::validate`]: addresses are parsed, durations are positive,
//! sizes are in range, every user can authenticate.
//!
//! Built once at start-up (and again on reload) and handed to the listener,
//! pools and admin API; nothing here reads the file or the environment.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::cache::CacheConfig;
use crate::insight::InsightConfig;
use crate::secret::SecretKind;

/// Default client listen address.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 6432);
/// Default admin API listen address.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9930);
/// Default cap on concurrent client connections.
pub const DEFAULT_MAX_CLIENT_CONNECTIONS: usize = 10_000;
/// Default time a client has to finish its startup and authentication.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest client message, 256 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 256 << 20;
/// Smallest allowed `max_message_size`, 8 KiB.
pub const MIN_MAX_MESSAGE_SIZE: usize = 8 << 10;
/// Largest allowed `max_message_size`, 1 GiB (PostgreSQL's own limit for a
/// single field value).
pub const MAX_MAX_MESSAGE_SIZE: usize = 1 << 30;
/// Default most server connections per pool.
pub const DEFAULT_POOL_MAX_SIZE: NonZeroUsize = match NonZeroUsize::new(20) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};
/// PostgreSQL's default port, used when an address leaves it out.
pub const DEFAULT_POSTGRES_PORT: u16 = 5432;
/// Longest allowed `routing.health_check_timeout`: a check that may hang
/// longer than this would leave a dead server in rotation for too long.
pub const MAX_HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// Shortest allowed `routing.lsn_poll_interval`, the config's finest
/// duration unit.
pub const MIN_LSN_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where clients connect. Default `127.0.0.1:6432`.
    pub listen: SocketAddr,
    /// Where the admin HTTP API listens; `None` disables it. Default
    /// `Some(127.0.0.1:9930)`; TOML `admin_listen = ""` or `"off"` gives `None`.
    pub admin_listen: Option<SocketAddr>,
    /// Client connections accepted at once; further ones are refused.
    /// Default 10000, at least 1.
    pub max_client_connections: usize,
    /// How long a client may take from TCP accept to `ReadyForQuery`
    /// (startup packet and authentication). Default 10s, positive.
    pub startup_timeout: Duration,
    /// Largest client message accepted, in bytes, header included; larger
    /// ones close the connection. Default 256 MiB, between 8 KiB and 1 GiB.
    pub max_message_size: usize,
    /// Server connection pools, one per (user, server).
    pub pool: PoolSettings,
    /// The PostgreSQL servers behind the proxy.
    pub upstream: Upstream,
    /// Client logins. At least one; names are unique.
    pub users: Vec<User>,
    /// Read/write splitting, replica health and lag. Defaults when
    /// `[routing]` is absent.
    pub routing: RoutingSettings,
    /// Query statistics, slow log, lints, N+1 detection, history and plan
    /// insights. Defaults when `[insight]` is absent.
    pub insight: InsightConfig,
    /// The query-result cache. Defaults (off) when `[cache]` is absent.
    pub cache: CacheConfig,
}

impl Settings {
    /// The user a client named in its startup message, if configured.
    /// Names are compared exactly (PostgreSQL role names are case-sensitive
    /// once they reach the server).
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|user| user.name == name)
    }
}

/// How server connections are pooled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// When a server connection goes back to the pool. Default
    /// [`PoolMode::Transaction`].
    pub mode: PoolMode,
    /// Server connections kept open per pool even when idle. Default 0,
    /// at most `max_size`.
    pub min_size: usize,
    /// Most server connections per pool. Default 20.
    pub max_size: NonZeroUsize,
    /// Time allowed to open and authenticate a server connection. Default 5s.
    pub connect_timeout: Duration,
    /// How long a client waits for a free server connection before it gets
    /// an error. Default 5s.
    pub checkout_timeout: Duration,
    /// Idle server connections above `min_size` are closed after this long.
    /// Default 10m.
    pub idle_timeout: Duration,
    /// Server connections are closed (once idle) after this long, whatever
    /// their use. Default 1h.
    pub max_lifetime: Duration,
    /// Prepared statements remembered per server connection (LRU) so they
    /// can be re-prepared transparently in transaction mode; 0 disables
    /// tracking. Default 200.
    pub max_prepared_statements: usize,
    /// Run on a server connection before another client gets it in session
    /// mode; empty means none. Default `"DISCARD ALL"`.
    pub server_reset_query: String,
}

impl Default for PoolSettings {
    /// The documented defaults, as used when `[pool]` is absent.
    fn default() -> PoolSettings {
        PoolSettings {
            mode: PoolMode::Transaction,
            min_size: 0,
            max_size: DEFAULT_POOL_MAX_SIZE,
            connect_timeout: Duration::from_secs(5),
            checkout_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10 * 60),
            max_lifetime: Duration::from_secs(60 * 60),
            max_prepared_statements: 200,
            server_reset_query: "DISCARD ALL".to_owned(),
        }
    }
}

/// When a client gives its server connection back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolMode {
    /// At the end of each transaction (`ReadyForQuery` with status idle).
    /// TOML `"transaction"`.
    #[default]
    Transaction,
    /// When the client disconnects. TOML `"session"`.
    Session,
}

impl PoolMode {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        }
    }

    /// Parses the TOML spelling; `None` for anything else.
    pub fn from_name(name: &str) -> Option<PoolMode> {
        [PoolMode::Transaction, PoolMode::Session]
            .into_iter()
            .find(|mode| mode.as_str() == name)
    }
}

impl fmt::Display for PoolMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How queries are spread over the primary and replicas, and how servers
/// are watched so that only healthy, caught-up ones get reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingSettings {
    /// Send read-only queries to replicas when `upstream.replicas` is not
    /// empty; when false every query goes to the primary. Default true.
    pub enabled: bool,
    /// Find out which configured server is the primary by asking each
    /// `pg_is_in_recovery()`, so a promoted replica takes writes; when
    /// false `upstream.primary` is always the primary. Default false.
    pub auto_role: bool,
    /// What happens to a read when no replica can serve it. Default
    /// [`Fallback::Primary`].
    pub fallback: Fallback,
    /// Replicas whose replay lags further behind than this (in time) are
    /// taken out of rotation until they catch up. Default 10s, positive.
    pub max_lag: Duration,
    /// Replicas whose replay LSN is further behind the primary's WAL
    /// position than this many bytes are taken out of rotation until they
    /// catch up. Default 64 MiB, positive.
    pub max_lag_bytes: u64,
    /// After a client's write commits, its reads go only to servers that
    /// have replayed that commit's LSN. Default true.
    pub read_your_writes: bool,
    /// Who shares a read-your-writes guarantee: one client connection
    /// (default), one sqlcommenter trace, or one application token.
    pub ryw_scope: RywScope,
    /// Time between health checks of each server (`SELECT 1` plus the
    /// LSN/lag poll). Default 1s, positive.
    pub health_check_interval: Duration,
    /// Bound on one health check; a check that takes longer counts as a
    /// failure. Default 1s, positive and at most [`MAX_HEALTH_CHECK_TIMEOUT`].
    pub health_check_timeout: Duration,
    /// Time between samples of the replicas' replay LSNs and the primary's
    /// WAL position; sets how quickly read-your-writes sees a replica catch
    /// up. Default 10ms, at least [`MIN_LSN_POLL_INTERVAL`] and at most
    /// `health_check_interval`.
    pub lsn_poll_interval: Duration,
    /// Consecutive failed checks or connections after which a server's
    /// circuit breaker opens and it gets no traffic. Default 3, at least 1.
    pub breaker_failures: u32,
    /// How long an open breaker keeps a server out before it is probed
    /// again. Default 5s, positive.
    pub ban_time: Duration,
    /// Database the health monitor connects to, logging in as the first
    /// user's `server_user`. Default `"postgres"`, non-empty.
    pub monitor_database: String,
    /// User-defined functions known to be read-only, so queries calling
    /// them may go to replicas (other volatile functions send a query to
    /// the primary). `name` or `schema.name`, unquoted identifiers with
    /// ASCII letters lower-cased as PostgreSQL folds them; no duplicates.
    /// Default none.
    pub read_only_functions: Vec<String>,
}

impl Default for RoutingSettings {
    /// The documented defaults, as used when `[routing]` is absent.
    fn default() -> RoutingSettings {
        RoutingSettings {
            enabled: true,
            auto_role: false,
            fallback: Fallback::Primary,
            max_lag: Duration::from_secs(10),
            max_lag_bytes: 64 << 20,
            read_your_writes: true,
            ryw_scope: RywScope::Connection,
            health_check_interval: Duration::from_secs(1),
            health_check_timeout: Duration::from_secs(1),
            lsn_poll_interval: Duration::from_millis(10),
            breaker_failures: 3,
            ban_time: Duration::from_secs(5),
            monitor_database: "postgres".to_owned(),
            read_only_functions: Vec::new(),
        }
    }
}

/// Where a read goes when no replica is healthy and caught up enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// The primary serves it. TOML `"primary"`.
    #[default]
    Primary,
    /// The client gets an error instead, keeping read load off the
    /// primary. TOML `"error"`.
    Error,
}

/// The scope of read-your-writes (`routing.ryw_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RywScope {
    /// A client connection sees its own writes. TOML `"connection"`.
    #[default]
    Connection,
    /// Every connection serving one sqlcommenter `traceparent` trace sees
    /// the trace's writes (and each connection its own). TOML `"trace"`.
    Trace,
    /// Every connection that set the same `pgpilot.ryw_token` sees the
    /// writes made under it (and each connection its own). TOML `"token"`.
    Token,
}

impl RywScope {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RywScope::Connection => "connection",
            RywScope::Trace => "trace",
            RywScope::Token => "token",
        }
    }

    /// Parses the TOML spelling; `None` for anything else.
    pub fn from_name(name: &str) -> Option<RywScope> {
        [RywScope::Connection, RywScope::Trace, RywScope::Token]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

impl Fallback {
    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Primary => "primary",
            Fallback::Error => "error",
        }
    }

    /// Parses the TOML spelling; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Fallback> {
        [Fallback::Primary, Fallback::Error]
            .into_iter()
            .find(|fallback| fallback.as_str() == name)
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The PostgreSQL servers behind the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Takes writes (and reads when there are no replicas).
    pub primary: ServerAddr,
    /// Streaming replicas that may serve read-only queries. Default none.
    pub replicas: Vec<ServerAddr>,
}

/// A server's TCP address, host name not yet resolved (so DNS changes are
/// picked up when connections are opened).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    /// Host name or IP address; IPv6 without brackets (`::1`).
    pub host: String,
    /// TCP port, never 0. Default 5432 when the address omits it.
    pub port: u16,
}

impl fmt::Display for ServerAddr {
    /// `host:port`, with the host in brackets when it is an IPv6 address
    /// (`[::1]:5432`) so the output can be parsed back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One client login and the PostgreSQL login it maps to.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Name clients give in their startup message. Non-empty, unique.
    pub name: String,
    /// How clients prove who they are. Default [`AuthMethod::ScramSha256`].
    pub auth: AuthMethod,
    /// The client secret: plaintext, `md5<32 hex>` or a `SCRAM-SHA-256$…`
    /// verifier (see [`SecretKind`]). Always present unless `auth` is
    /// [`AuthMethod::Trust`], and always usable with `auth`.
    pub password: Option<String>,
    /// Role name used to log in to PostgreSQL. Default: `name`.
    pub server_user: String,
    /// Password (plaintext, or an MD5 hash that only answers MD5 servers)
    /// sent to PostgreSQL. Default: `password` when that is plaintext,
    /// otherwise `None`, meaning the server must not ask for one.
    pub server_password: Option<String>,
}

impl User {
    /// What kind of secret `password` is; `None` when there is no password.
    pub fn password_kind(&self) -> Option<SecretKind> {
        self.password
            .as_deref()
            .and_then(|secret| SecretKind::of(secret).ok())
    }
}

impl fmt::Debug for User {
    /// Like a derived `Debug`, but secrets print as `"***"` so logs and
    /// panics never show them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("auth", &self.auth)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("server_user", &self.server_user)
            .field(
                "server_password",
                &self.server_password.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

/// How a client authenticates to pgpilot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// SASL SCRAM-SHA-256. TOML `"scram-sha-256"`.
    #[default]
    ScramSha256,
    /// MD5 challenge. TOML `"md5"`.
    Md5,
    /// No password asked. TOML `"trust"`.
    Trust,
}

impl AuthMethod {
    /// The TOML spelling (PostgreSQL's `pg_hba.conf` names).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Trust => "trust",
        }
    }

    /// Parses the TOML spelling; `None` for anything else.
    pub fn from_name(name: &str) -> Option<AuthMethod> {
        [AuthMethod::ScramSha256, AuthMethod::Md5, AuthMethod::Trust]
            .into_iter()
            .find(|method| method.as_str() == name)
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "app".into(),
            auth: AuthMethod::ScramSha256,
            password: Some("hunter2".into()),
            server_user: "app_rw".into(),
            server_password: Some("hunter3".into()),
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let text = format!("{:?}", user());
        assert!(!text.contains("hunter"), "{text}");
        assert!(
            text.contains("\"***\"") && text.contains("app_rw"),
            "{text}"
        );
        let trust = User {
            password: None,
            server_password: None,
            ..user()
        };
        assert!(format!("{trust:?}").contains("password: None"));
    }

    #[test]
    fn server_addr_display_brackets_ipv6() {
        let v4 = ServerAddr {
            host: "db.internal".into(),
            port: 5432,
        };
        let v6 = ServerAddr {
            host: "::1".into(),
            port: 5433,
        };
        assert_eq!(v4.to_string(), "db.internal:5432");
        assert_eq!(v6.to_string(), "[::1]:5433");
    }

    #[test]
    fn names_round_trip() {
        for mode in [PoolMode::Transaction, PoolMode::Session] {
            assert_eq!(PoolMode::from_name(mode.as_str()), Some(mode));
        }
        for method in [AuthMethod::ScramSha256, AuthMethod::Md5, AuthMethod::Trust] {
            assert_eq!(AuthMethod::from_name(method.as_str()), Some(method));
        }
        for fallback in [Fallback::Primary, Fallback::Error] {
            assert_eq!(Fallback::from_name(fallback.as_str()), Some(fallback));
        }
        assert_eq!(Fallback::from_name("replica"), None);
        assert_eq!(AuthMethod::from_name("SCRAM-SHA-256"), None);
    }

    #[test]
    fn password_kind_reports_the_secret() {
        assert_eq!(user().password_kind(), Some(SecretKind::Plaintext));
        let md5 = User {
            password: Some(crate::secret::TEST_MD5_HASH.into()),
            ..user()
        };
        assert_eq!(md5.password_kind(), Some(SecretKind::Md5Hash));
    }
}
