//! Settings for `pgpilot proxy --listen ADDR --primary URL [--replica URL]...`:
//! a working proxy from the command line alone, no config file.
//!
//! The primary URL's credentials become the only client login, so a client
//! connects to pgpilot exactly as it would to PostgreSQL. Everything not
//! given on the command line takes the config file's defaults.

use std::fmt;
use std::net::SocketAddr;

use crate::error::Result;
use crate::insight::InsightConfig;
use crate::raw::RawUser;
use crate::settings::{AuthMethod, PoolSettings, RoutingSettings, ServerAddr, Settings, Upstream};
use crate::settings::{User, DEFAULT_STARTUP_TIMEOUT};
use crate::settings::{DEFAULT_MAX_CLIENT_CONNECTIONS, DEFAULT_MAX_MESSAGE_SIZE};
use crate::url::{parse_host_port, parse_url, redact_url, PgUrl};
use crate::validate::{add_replica, check_distinct_listeners, user, Problems};

/// What the `proxy` subcommand was given.
#[derive(Clone, PartialEq, Eq)]
pub struct QuickStart {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// `postgres://user[:password]@host[:port][/database]` of the primary.
    /// The user is required. The database, if any, is not used: clients
    /// choose theirs when they connect.
    pub primary_url: String,
    /// Replica URLs (or bare `host[:port]`). They may repeat the primary's credentials but not name
    /// different ones: pgpilot logs in to every server as the same user.
    pub replica_urls: Vec<String>,
    /// Where the admin API listens; `None` turns it off (unlike the config
    /// file, where leaving `admin_listen` out means the default address).
    pub admin_listen: Option<SocketAddr>,
}

impl fmt::Debug for QuickStart {
    /// Like a derived `Debug`, with URL passwords printed as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let replicas: Vec<String> = self.replica_urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("QuickStart")
            .field("listen", &self.listen)
            .field("primary_url", &redact_url(&self.primary_url))
            .field("replica_urls", &replicas)
            .field("admin_listen", &self.admin_listen)
            .finish()
    }
}

impl Settings {
    /// Builds settings from command-line URLs.
    ///
    /// The primary URL's percent-decoded user and password become the single
    /// login: `auth = "scram-sha-256"` with that plaintext password, and the
    /// same user and password towards PostgreSQL. A URL without a password
    /// gives `auth = "trust"`: pgpilot then asks clients for no password and
    /// sends none to PostgreSQL, which must accept the user without one.
    /// Pool, timeout and routing settings take their defaults.
    ///
    /// # Errors
    /// [`crate::Error::Invalid`] with paths `primary_url`,
    /// `primary_url.password` (and other fields of the derived user),
    /// `replica_urls[i]` and `admin_listen`.
    pub fn quick_start(q: &QuickStart) -> Result<Settings> {
        let mut problems = Problems::default();
        let p = &mut problems;
        let primary = p.parse("primary_url", Some(q.primary_url.as_str()), parse_url);
        let users: Vec<User> = primary
            .as_ref()
            .and_then(|url| login_from_url(p, url))
            .map(|raw| user(p, "primary_url", raw))
            .into_iter()
            .collect();
        let primary_addr = primary.as_ref().map(PgUrl::server_addr);
        let replicas = replicas(p, primary.as_ref(), &q.replica_urls);
        check_distinct_listeners(p, q.listen, q.admin_listen);
        let settings = Settings {
            listen: q.listen,
            admin_listen: q.admin_listen,
            max_client_connections: DEFAULT_MAX_CLIENT_CONNECTIONS,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            pool: PoolSettings::default(),
            upstream: Upstream {
                // `None` means an error was recorded and `finish` returns it.
                primary: primary_addr.unwrap_or(ServerAddr {
                    host: String::new(),
                    port: 0,
                }),
                replicas,
            },
            users,
            routing: RoutingSettings::default(),
            insight: InsightConfig::default(),
            cache: crate::cache::CacheConfig::default(),
        };
        problems.finish(settings)
    }
}

/// Parses the replica URLs, recording bad ones under `replica_urls[i]`.
fn replicas(p: &mut Problems, primary: Option<&PgUrl>, urls: &[String]) -> Vec<ServerAddr> {
    let primary_addr = primary.map(PgUrl::server_addr);
    let mut replicas = Vec::with_capacity(urls.len());
    for (i, text) in urls.iter().enumerate() {
        let path = format!("replica_urls[{i}]");
        let Some(url) = p.parse(&path, Some(text.as_str()), replica_url) else {
            continue;
        };
        if !same_credentials(primary, &url) {
            p.add(
                &path,
                "its user or password differs from primary_url's; \
                 pgpilot logs in to every server as the same user",
            );
        }
        add_replica(
            p,
            &path,
            primary_addr.as_ref(),
            &mut replicas,
            url.server_addr(),
        );
    }
    replicas
}

/// The raw user entry a URL stands for; `None` (with the problem recorded)
/// when the URL has no user.
fn login_from_url(p: &mut Problems, url: &PgUrl) -> Option<RawUser> {
    let Some(name) = url.user.clone() else {
        p.add(
            "primary_url",
            "needs a user name, e.g. postgres://app:secret@127.0.0.1:5432/app",
        );
        return None;
    };
    let auth = match url.password {
        Some(_) => AuthMethod::ScramSha256,
        None => AuthMethod::Trust,
    };
    Some(RawUser {
        name: Some(name),
        auth: Some(auth.as_str().to_owned()),
        password: url.password.clone(),
        server_user: None,
        server_password: None,
    })
}

/// A replica is a URL or, as in the config file, a bare `host[:port]`.
fn replica_url(text: &str) -> std::result::Result<PgUrl, String> {
    if text.contains("://") {
        return parse_url(text);
    }
    parse_host_port(text).map(|addr| PgUrl {
        host: addr.host,
        port: addr.port,
        user: None,
        password: None,
        database: None,
    })
}

/// A replica URL may leave credentials out or repeat the primary's.
fn same_credentials(primary: Option<&PgUrl>, replica: &PgUrl) -> bool {
    if replica.user.is_none() && replica.password.is_none() {
        return true;
    }
    primary
        .is_some_and(|primary| primary.user == replica.user && primary.password == replica.password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn quick(primary: &str, replicas: &[&str]) -> QuickStart {
        QuickStart {
            listen: "127.0.0.1:6432".parse().unwrap(),
            primary_url: primary.into(),
            replica_urls: replicas.iter().map(|r| r.to_string()).collect(),
            admin_listen: Some("127.0.0.1:9930".parse().unwrap()),
        }
    }

    fn paths(result: Result<Settings>) -> Vec<String> {
        match result {
            Err(Error::Invalid(errors)) => errors.into_iter().map(|e| e.path).collect(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn url_credentials_become_the_login() {
        let q = quick("postgres://app%2Buser:p%40ss%3Aw0rd@db:5433/orders", &[]);
        let settings = Settings::quick_start(&q).unwrap();
        assert_eq!(settings.upstream.primary.to_string(), "db:5433");
        assert_eq!(settings.users.len(), 1);
        let user = settings.user("app+user").unwrap();
        assert_eq!(user.auth, AuthMethod::ScramSha256);
        assert_eq!(user.password.as_deref(), Some("p@ss:w0rd"));
        assert_eq!(user.server_user, "app+user");
        assert_eq!(user.server_password.as_deref(), Some("p@ss:w0rd"));
        assert_eq!(settings.pool, PoolSettings::default());
        assert_eq!(settings.routing, RoutingSettings::default());
        assert_eq!(settings.admin_listen, q.admin_listen);
    }

    #[test]
    fn no_password_means_trust() {
        let settings = Settings::quick_start(&quick("postgres://app@db", &[])).unwrap();
        let user = settings.user("app").unwrap();
        assert_eq!(user.auth, AuthMethod::Trust);
        assert_eq!(
            (user.password.as_ref(), user.server_password.as_ref()),
            (None, None)
        );
    }

    #[test]
    fn missing_user_is_an_error() {
        assert_eq!(
            paths(Settings::quick_start(&quick("postgres://db:5432", &[]))),
            ["primary_url"]
        );
    }

    #[test]
    fn replicas_may_repeat_but_not_change_credentials() {
        let q = quick(
            "postgres://app:pw@primary/db",
            &[
                "postgres://app:pw@r1/db",
                "postgres://r2:5433",
                "postgres://other:pw@r3",
            ],
        );
        assert_eq!(paths(Settings::quick_start(&q)), ["replica_urls[2]"]);
        let q = quick(
            "postgres://app:pw@primary",
            &["postgres://r1", "[::1]:5433"],
        );
        let replicas = Settings::quick_start(&q).unwrap().upstream.replicas;
        let shown: Vec<String> = replicas.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["r1:5432", "[::1]:5433"]);
    }

    #[test]
    fn all_problems_are_reported_together() {
        let mut q = quick(
            "postgres://app:%00@primary",
            &["mysql://r1", "postgres://primary"],
        );
        q.admin_listen = Some(q.listen);
        assert_eq!(
            paths(Settings::quick_start(&q)),
            [
                "primary_url.password",
                "replica_urls[0]",
                "replica_urls[1]",
                "admin_listen"
            ]
        );
    }

    #[test]
    fn debug_hides_url_passwords() {
        let q = quick("postgres://app:hunter2@db", &["postgres://app:hunter2@r1"]);
        let text = format!("{q:?}");
        assert!(
            !text.contains("hunter2") && text.contains("app:***@db"),
            "{text}"
        );
    }
}
