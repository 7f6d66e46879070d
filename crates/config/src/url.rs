//! Parses server addresses: `postgres://user:password@host:port/database`
//! URLs (libpq's URI form, single host only) and bare `host[:port]`.
//!
//! Used by [`crate::validate`] for `[upstream]` and by
//! [`crate::quick_start`] for the `--primary`/`--replica` URLs. Messages
//! name what is wrong without repeating the input, which may hold a password.

use std::fmt;
use std::net::Ipv6Addr;

use url::{Host, Url};

use crate::error::{Error, Result};
use crate::settings::{ServerAddr, DEFAULT_POSTGRES_PORT};

/// The parts of a `postgres://` URL pgpilot uses. Everything is
/// percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// Host name or IP address; IPv6 without brackets.
    pub host: String,
    /// TCP port; 5432 when the URL has none. Never 0.
    pub port: u16,
    /// User name; `None` when the URL has none or it is empty.
    pub user: Option<String>,
    /// Password; `None` when the URL has none or it is empty.
    pub password: Option<String>,
    /// Database name from the path; `None` when the path is empty.
    pub database: Option<String>,
}

impl PgUrl {
    /// The server's address, without credentials.
    pub fn server_addr(&self) -> ServerAddr {
        ServerAddr {
            host: self.host.clone(),
            port: self.port,
        }
    }
}

impl fmt::Debug for PgUrl {
    /// Like a derived `Debug`, with the password printed as `"***"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .finish()
    }
}

/// Parses a `postgres://` or `postgresql://` URL with a single TCP host.
///
/// Accepts `postgres://[user[:password]@]host[:port][/database]` where host
/// may be a name, an IPv4 address or a bracketed IPv6 address. Query
/// parameters (`?sslmode=…`) and fragments are refused rather than ignored,
/// so a setting such as `sslmode=require` is never silently dropped; so are
/// multiple hosts and Unix-domain socket paths.
///
/// # Errors
/// [`Error::Url`] saying what is wrong; the URL is not repeated.
pub fn parse_postgres_url(text: &str) -> Result<PgUrl> {
    parse_url(text).map_err(|reason| Error::Url { reason })
}

/// [`parse_postgres_url`] with the reason as a plain message, for callers
/// that attach a field path.
pub(crate) fn parse_url(text: &str) -> std::result::Result<PgUrl, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err("the scheme must be postgres:// or postgresql://".into());
    }
    if let Some(query) = url.query() {
        let keys: Vec<&str> = query
            .split('&')
            .map(|pair| pair.split_once('=').map_or(pair, |(key, _)| key))
            .collect();
        return Err(format!(
            "query parameters are not supported (found {})",
            keys.join(", ")
        ));
    }
    if url.fragment().is_some() {
        return Err("a `#` fragment is not allowed".into());
    }
    let host = match url.host() {
        Some(Host::Domain(name)) => check_host(name)?.to_owned(),
        Some(Host::Ipv4(addr)) => addr.to_string(),
        Some(Host::Ipv6(addr)) => addr.to_string(),
        None => return Err(no_host()),
    };
    let port = match url.port() {
        Some(0) => return Err("port 0 is not a server port".into()),
        Some(port) => port,
        None => DEFAULT_POSTGRES_PORT,
    };
    Ok(PgUrl {
        host,
        port,
        user: decode_nonempty(url.username(), "user name")?,
        password: decode_nonempty(url.password().unwrap_or(""), "password")?,
        database: database_from_path(url.path())?,
    })
}

/// Parses `host`, `host:port`, `[ipv6]` or `[ipv6]:port` (port defaults
/// to 5432).
pub(crate) fn parse_host_port(text: &str) -> std::result::Result<ServerAddr, String> {
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or("has `[` without a closing `]`")?;
        let addr: Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("`{inside}` in brackets is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("expected `:port` after `]`")?,
            ),
        };
        (addr.to_string(), port)
    } else {
        match text.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                if text.parse::<Ipv6Addr>().is_ok() || host.parse::<Ipv6Addr>().is_ok() {
                    return Err("an IPv6 address needs brackets, e.g. [::1]:5432".into());
                }
                return Err(check_host(host).err().unwrap_or_else(|| "bad host".into()));
            }
            Some((host, port)) => (check_host(host)?.to_owned(), Some(port)),
            None => (check_host(text)?.to_owned(), None),
        }
    };
    let port = match port {
        Some(port) => parse_port(port)?,
        None => DEFAULT_POSTGRES_PORT,
    };
    Ok(ServerAddr { host, port })
}

/// Replaces the password in anything URL-shaped with `***`, for `Debug`
/// output of values that carry URLs. Text that is not URL-shaped comes back
/// unchanged apart from that.
pub(crate) fn redact_url(text: &str) -> String {
    let start = text.find("://").map_or(0, |i| i + 3);
    let authority_len = text[start..]
        .find(['/', '?', '#'])
        .unwrap_or(text.len() - start);
    let authority = &text[start..start + authority_len];
    let Some(at) = authority.rfind('@') else {
        return text.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return text.to_owned();
    };
    let password_start = start + colon + 1;
    let password_end = start + at;
    format!("{}***{}", &text[..password_start], &text[password_end..])
}

fn no_host() -> String {
    "has no host (Unix-domain sockets are not supported)".into()
}

/// Checks a host name: letters, digits, `.`, `-`, `_`. Names the first
/// offending character rather than echoing the host (which may be a
/// mistyped `user:password@host`).
fn check_host(host: &str) -> std::result::Result<&str, String> {
    if host.is_empty() {
        return Err(no_host());
    }
    if host.contains('@') {
        return Err("`@` in a host; credentials belong in the users section".into());
    }
    if host.contains('/') {
        return Err("`/` in a host (Unix-domain sockets are not supported)".into());
    }
    if host.contains(',') {
        return Err("multiple hosts are not supported; list replicas separately".into());
    }
    match host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        Some(c) => Err(format!("the host contains `{}`", c.escape_default())),
        None => Ok(host),
    }
}

fn parse_port(text: &str) -> std::result::Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) => Err("port 0 is not a server port".into()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!(
            "`{}` is not a port (1-65535)",
            text.escape_default()
        )),
    }
}

/// Takes the database from a URL path (`/name`), refusing nested paths.
fn database_from_path(path: &str) -> std::result::Result<Option<String>, String> {
    let name = path.strip_prefix('/').unwrap_or(path);
    if name.contains('/') {
        return Err("the path must be a single database name".into());
    }
    decode_nonempty(name, "database name")
}

/// Percent-decodes `text` as UTF-8; empty input gives `None`.
fn decode_nonempty(text: &str, what: &str) -> std::result::Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let decoded = percent_decode(text.as_bytes());
    match String::from_utf8(decoded) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(_) => Err(format!("the {what} is not UTF-8 after percent-decoding")),
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as is
/// (the WHATWG URL rule).
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex_value(*hi).zip(hex_value(*lo)),
            _ => None,
        };
        match escaped {
            Some((hi, lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

#[cfg(test)]
#[path = "url_tests.rs"]
mod tests;
