//! The one fallible conversion from [`crate::raw`] (the TOML as written) to
//! [`crate::settings`] (what pgpilot runs on).
//!
//! Validation never stops at the first problem: each field is checked, a bad
//! one is recorded under its path (`pool.max_size`, `users[1].password`) and
//! replaced by its default so the remaining checks can still run. If
//! anything was recorded the result is [`Error::Invalid`] with all of them,
//! top-level keys first, then `[pool]`, `[upstream]`, `[[users]]`,
//! `[routing]` and `[insight]`. User entries are checked in [`users`], the
//! routing table in [`routing`], the insight table in [`insight`].

mod cache;
mod insight;
mod routing;
mod users;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::duration::parse_duration;
use crate::error::{Error, FieldError, Result};
use crate::raw::{IntOrString, RawConfig, RawPool, RawUpstream};
use crate::settings::{
    PoolMode, PoolSettings, ServerAddr, Settings, Upstream, DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN,
    DEFAULT_MAX_CLIENT_CONNECTIONS, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_STARTUP_TIMEOUT,
    MAX_MAX_MESSAGE_SIZE, MIN_MAX_MESSAGE_SIZE,
};
use crate::size::{format_size, parse_size, size_from_integer};
use crate::url::{parse_host_port, parse_url};

pub(crate) use users::user;

/// Turns a parsed file into settings.
///
/// # Errors
/// [`Error::Invalid`] listing every invalid field.
pub(crate) fn settings_from_raw(raw: RawConfig) -> Result<Settings> {
    let mut problems = Problems::default();
    let p = &mut problems;
    let listen = p
        .parse("listen", raw.listen, socket_addr)
        .unwrap_or(DEFAULT_LISTEN);
    let admin_listen = p
        .parse("admin_listen", raw.admin_listen, admin_addr)
        .unwrap_or(Some(DEFAULT_ADMIN_LISTEN));
    let max_client_connections = p
        .parse(
            "max_client_connections",
            raw.max_client_connections,
            at_least(1),
        )
        .unwrap_or(DEFAULT_MAX_CLIENT_CONNECTIONS);
    let startup_timeout = p
        .parse("startup_timeout", raw.startup_timeout, positive_duration)
        .unwrap_or(DEFAULT_STARTUP_TIMEOUT);
    let max_message_size = p
        .parse("max_message_size", raw.max_message_size, message_size)
        .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
    check_distinct_listeners(p, listen, admin_listen);
    let settings = Settings {
        listen,
        admin_listen,
        max_client_connections,
        startup_timeout,
        max_message_size,
        pool: pool(p, raw.pool),
        upstream: upstream(p, raw.upstream),
        users: users::users(p, raw.users),
        routing: routing::routing(p, raw.routing),
        insight: insight::insight(p, raw.insight),
        cache: cache::cache(p, raw.cache),
    };
    problems.finish(settings)
}

/// Problems found so far, in the order they were found.
#[derive(Default)]
pub(crate) struct Problems {
    errors: Vec<FieldError>,
}

impl Problems {
    /// Records that the value at `path` is invalid.
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    /// Runs `check` on a value that was written. `None` when the value was
    /// absent or invalid (then the problem is recorded); callers fall back to
    /// the default either way.
    pub(crate) fn parse<R, T>(
        &mut self,
        path: &str,
        raw: Option<R>,
        check: impl FnOnce(R) -> std::result::Result<T, String>,
    ) -> Option<T> {
        match check(raw?) {
            Ok(value) => Some(value),
            Err(message) => {
                self.add(path, message);
                None
            }
        }
    }

    /// Whether a problem was recorded at exactly `path`.
    pub(crate) fn has(&self, path: &str) -> bool {
        self.errors.iter().any(|error| error.path == path)
    }

    /// `Ok(value)` when nothing was recorded, else all the problems.
    pub(crate) fn finish<T>(self, value: T) -> Result<T> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(Error::Invalid(self.errors))
        }
    }
}

fn pool(p: &mut Problems, raw: RawPool) -> PoolSettings {
    let default = PoolSettings::default();
    let max_size = p
        .parse("pool.max_size", raw.max_size, non_zero)
        .unwrap_or(default.max_size);
    let min_size = p
        .parse("pool.min_size", raw.min_size, at_least(0))
        .unwrap_or(default.min_size);
    if min_size > max_size.get() && !p.has("pool.max_size") {
        p.add(
            "pool.min_size",
            format!("{min_size} is larger than pool.max_size ({max_size})"),
        );
    }
    let duration = |p: &mut Problems, key: &str, raw: Option<IntOrString>, default: Duration| {
        p.parse(&format!("pool.{key}"), raw, positive_duration)
            .unwrap_or(default)
    };
    PoolSettings {
        mode: p
            .parse("pool.mode", raw.mode, pool_mode)
            .unwrap_or(default.mode),
        min_size,
        max_size,
        connect_timeout: duration(
            p,
            "connect_timeout",
            raw.connect_timeout,
            default.connect_timeout,
        ),
        checkout_timeout: duration(
            p,
            "checkout_timeout",
            raw.checkout_timeout,
            default.checkout_timeout,
        ),
        idle_timeout: duration(p, "idle_timeout", raw.idle_timeout, default.idle_timeout),
        max_lifetime: duration(p, "max_lifetime", raw.max_lifetime, default.max_lifetime),
        max_prepared_statements: p
            .parse(
                "pool.max_prepared_statements",
                raw.max_prepared_statements,
                at_least(0),
            )
            .unwrap_or(default.max_prepared_statements),
        server_reset_query: p
            .parse("pool.server_reset_query", raw.server_reset_query, no_nul)
            .unwrap_or(default.server_reset_query),
    }
}

fn upstream(p: &mut Problems, raw: Option<RawUpstream>) -> Upstream {
    let raw = raw.unwrap_or_default();
    let primary = match raw.primary {
        Some(text) => p.parse("upstream.primary", Some(text), upstream_addr),
        None => {
            p.add(
                "upstream.primary",
                "is required, e.g. primary = \"postgres://127.0.0.1:5432\"",
            );
            None
        }
    };
    let mut replicas: Vec<ServerAddr> = Vec::with_capacity(raw.replicas.len());
    for (i, text) in raw.replicas.into_iter().enumerate() {
        let path = format!("upstream.replicas[{i}]");
        if let Some(replica) = p.parse(&path, Some(text), upstream_addr) {
            add_replica(p, &path, primary.as_ref(), &mut replicas, replica);
        }
    }
    // A missing or invalid primary has been recorded; the placeholder never
    // leaves this module because `finish` then returns the errors.
    let primary = primary.unwrap_or(ServerAddr {
        host: String::new(),
        port: 0,
    });
    Upstream { primary, replicas }
}

/// Appends `replica` unless it is the primary or already listed (recorded
/// at `path`).
pub(crate) fn add_replica(
    p: &mut Problems,
    path: &str,
    primary: Option<&ServerAddr>,
    replicas: &mut Vec<ServerAddr>,
    replica: ServerAddr,
) {
    if primary == Some(&replica) {
        p.add(path, format!("{replica} is the primary"));
    } else if replicas.contains(&replica) {
        p.add(path, format!("{replica} is listed twice"));
    } else {
        replicas.push(replica);
    }
}

/// An upstream server: a `postgres://host:port` URL or bare `host:port`.
/// Credentials and database names are refused: they would be ignored (the
/// users section says how to log in, clients say which database).
fn upstream_addr(text: String) -> std::result::Result<ServerAddr, String> {
    if !text.contains("://") {
        return parse_host_port(&text);
    }
    let url = parse_url(&text)?;
    if url.user.is_some() || url.password.is_some() {
        return Err("credentials in upstream URLs are not used; \
                    set users[].server_user and server_password instead"
            .into());
    }
    if url.database.is_some() {
        return Err("a database name in an upstream URL is not used; \
                    clients choose the database when they connect"
            .into());
    }
    Ok(url.server_addr())
}

/// The admin API cannot share the client port (port 0 excepted: each bind
/// then gets its own port).
pub(crate) fn check_distinct_listeners(
    p: &mut Problems,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
) {
    if admin == Some(listen) && listen.port() != 0 && !p.has("listen") && !p.has("admin_listen") {
        p.add(
            "admin_listen",
            format!("{listen} is already used by listen"),
        );
    }
}

pub(crate) fn socket_addr(text: String) -> std::result::Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "`{}` is not an IP:port address, e.g. 127.0.0.1:6432 or [::1]:6432 \
             (host names are not resolved)",
            text.escape_default()
        )
    })
}

/// `""` or `"off"` (any case) disables the admin API.
fn admin_addr(text: String) -> std::result::Result<Option<SocketAddr>, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    socket_addr(text).map(Some)
}

/// A count that must be at least `min`.
fn at_least(min: usize) -> impl Fn(i64) -> std::result::Result<usize, String> {
    move |value| match usize::try_from(value) {
        Ok(n) if n >= min => Ok(n),
        _ if min == 0 => Err(format!("{value} must not be negative")),
        _ => Err(format!("must be at least {min}")),
    }
}

fn non_zero(value: i64) -> std::result::Result<NonZeroUsize, String> {
    at_least(1)(value).and_then(|n| NonZeroUsize::new(n).ok_or_else(|| "must be at least 1".into()))
}

/// A duration, zero included. A bare integer is refused: its unit would be
/// a guess.
fn duration(value: IntOrString) -> std::result::Result<Duration, String> {
    match value {
        IntOrString::Int(n) => Err(format!(
            "{n} needs a unit: write \"{n}s\" for seconds or \"{n}ms\" for milliseconds"
        )),
        IntOrString::Str(text) => parse_duration(&text),
    }
}

fn positive_duration(value: IntOrString) -> std::result::Result<Duration, String> {
    let duration = duration(value)?;
    if duration.is_zero() {
        return Err("must be greater than 0".into());
    }
    Ok(duration)
}

/// A byte count: a TOML integer, or a string with a binary suffix.
fn byte_size(value: IntOrString) -> std::result::Result<usize, String> {
    match value {
        IntOrString::Int(n) => size_from_integer(n),
        IntOrString::Str(text) => parse_size(&text),
    }
}

fn message_size(value: IntOrString) -> std::result::Result<usize, String> {
    let bytes = byte_size(value)?;
    if !(MIN_MAX_MESSAGE_SIZE..=MAX_MAX_MESSAGE_SIZE).contains(&bytes) {
        return Err(format!(
            "{} is outside the allowed range 8KiB to 1GiB",
            format_size(bytes)
        ));
    }
    Ok(bytes)
}

fn pool_mode(text: String) -> std::result::Result<PoolMode, String> {
    PoolMode::from_name(&text).ok_or_else(|| {
        format!(
            "`{}` is not a pool mode; use \"transaction\" or \"session\"",
            text.escape_default()
        )
    })
}

/// Strings that reach the wire as C strings cannot hold NUL.
pub(crate) fn no_nul(text: String) -> std::result::Result<String, String> {
    if text.contains('\0') {
        return Err("must not contain NUL characters".into());
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
