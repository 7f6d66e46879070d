//! `/health/live` and `/health/ready`: the probes an orchestrator polls.
//!
//! Liveness only says the admin listener still serves. Readiness logs in to
//! the upstream primary as the first configured user and runs `SELECT 1`
//! (simple Query, protocol docs §55.2.2), all within [`READY_TIMEOUT`]. The
//! answer is cached for [`READY_CACHE_TTL`] behind an async mutex, so any
//! number of concurrent scrapers cause at most one login per second.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::BytesMut;
use pgpilot_config::Settings;
use pgpilot_pool::login::{self, LoginParams};
use pgpilot_pool::{PoolSnapshot, ServerConn};
use pgpilot_proxy::Runtime;
use pgpilot_wire::backend::ErrorFields;
use pgpilot_wire::tag::backend as tag;
use pgpilot_wire::{frontend, Frame};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::AdminState;

/// Bound on the whole readiness check: connect, login and `SELECT 1`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one readiness answer is reused.
pub const READY_CACHE_TTL: Duration = Duration::from_secs(1);

/// Largest message accepted from the primary while probing.
const MAX_PROBE_MESSAGE: usize = 1 << 20;

/// The outcome of one readiness probe, serialized as the response body
/// (`{"status":"ready",...}` or `{"status":"unavailable",...}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Readiness {
    /// The primary answered `SELECT 1`.
    Ready {
        /// `host:port` of the primary.
        primary: String,
        /// Login plus query round trip, in milliseconds.
        latency_ms: f64,
    },
    /// The primary could not be reached, refused the login or the query,
    /// or was too slow.
    Unavailable {
        /// `host:port` of the primary.
        primary: String,
        /// Why, as text.
        error: String,
    },
}

impl Readiness {
    /// 200 when ready, 503 otherwise.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Readiness::Ready { .. } => StatusCode::OK,
            Readiness::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The last readiness answer and when it was taken.
pub struct ReadyCache {
    /// `None` before the first probe. Held across the probe so concurrent
    /// requests wait for one probe instead of starting their own.
    last: Mutex<Option<(Instant, Readiness)>>,
    /// How long an answer stays fresh.
    ttl: Duration,
}

impl Default for ReadyCache {
    fn default() -> Self {
        ReadyCache::new(READY_CACHE_TTL)
    }
}

impl ReadyCache {
    /// An empty cache whose answers stay fresh for `ttl`.
    pub fn new(ttl: Duration) -> ReadyCache {
        ReadyCache {
            last: Mutex::new(None),
            ttl,
        }
    }

    /// The cached answer while fresh; otherwise awaits `probe` (not polled
    /// at all on a hit) and caches what it returns.
    pub async fn get_or_probe(&self, probe: impl Future<Output = Readiness>) -> Readiness {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < self.ttl {
                return answer.clone();
            }
        }
        let answer = probe.await;
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

/// `GET /health/live`: always 200 `{"status":"ok"}`.
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /health/ready`: 200 when the primary answers `SELECT 1` within
/// [`READY_TIMEOUT`], 503 otherwise; answers are cached for [`READY_CACHE_TTL`].
pub async fn ready(State(state): State<Arc<AdminState>>) -> Response {
    let answer = state.ready.get_or_probe(probe(&state.rt)).await;
    (answer.status_code(), Json(answer)).into_response()
}

/// Checks the primary of `rt`'s current settings once, uncached.
pub async fn probe(rt: &Runtime) -> Readiness {
    let settings = rt.settings.load_full();
    let primary = settings.upstream.primary.to_string();
    let start = Instant::now();
    let outcome = match probe_login(&settings, &rt.backends.snapshots()) {
        Ok(params) => match tokio::time::timeout(READY_TIMEOUT, select_one(&params)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                addr: primary.clone(),
                timeout: READY_TIMEOUT,
            }),
        },
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => Readiness::Ready {
            primary,
            latency_ms: start.elapsed().as_secs_f64() * 1000.0,
        },
        Err(e) => {
            tracing::warn!(%primary, error = %e, "readiness probe failed");
            Readiness::Unavailable {
                primary,
                error: e.to_string(),
            }
        }
    }
}

/// Whom the probe logs in as: the first configured user's server login, on
/// the database of a pool that user already has (else any pool's database,
/// else a database named like the server user, PostgreSQL's own default).
///
/// # Errors
/// [`Error::NoUsers`] when the settings list no users.
pub fn probe_login(settings: &Settings, pools: &[PoolSnapshot]) -> Result<LoginParams> {
    let user = settings.users.first().ok_or(Error::NoUsers)?;
    let database = pools
        .iter()
        .find(|p| p.user == user.name)
        .or_else(|| pools.first())
        .map_or_else(|| user.server_user.clone(), |p| p.database.clone());
    Ok(LoginParams {
        addr: settings.upstream.primary.to_string(),
        user: user.server_user.clone(),
        password: user.server_password.clone(),
        database,
    })
}

/// Logs in with `params`, runs `SELECT 1` and says goodbye with Terminate.
async fn select_one(params: &LoginParams) -> Result<()> {
    let mut conn = login::connect(params, READY_TIMEOUT).await?;
    let mut out = BytesMut::with_capacity(32);
    frontend::query(&mut out, "SELECT 1");
    let outcome = match conn.stream.write_all(&out).await {
        Ok(()) => read_until_ready(&mut conn).await,
        Err(source) => Err(Error::Io {
            addr: conn.addr.to_string(),
            source,
        }),
    };
    out.clear();
    frontend::terminate(&mut out);
    // Best effort: a missing Terminate only costs a log line on the server.
    let _ = conn.stream.write_all(&out).await;
    outcome
}

/// Reads the answer to a simple Query up to ReadyForQuery; an
/// ErrorResponse anywhere in it makes the outcome that error.
async fn read_until_ready(conn: &mut ServerConn) -> Result<()> {
    let mut failure: Option<ErrorFields> = None;
    loop {
        while let Some(frame) = split_frame(conn)? {
            match frame.tag {
                tag::ERROR_RESPONSE => failure = Some(decode_error(conn, &frame)?),
                tag::READY_FOR_QUERY => return server_outcome(conn, failure),
                _ => {}
            }
        }
        let read = conn.stream.read_buf(&mut conn.read_buf).await;
        match read {
            Ok(0) if failure.is_some() => return server_outcome(conn, failure),
            Ok(0) => {
                let eof = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed the connection before ReadyForQuery",
                );
                return Err(io_error(conn, eof));
            }
            Ok(_) => {}
            Err(source) => return Err(io_error(conn, source)),
        }
    }
}

fn split_frame(conn: &mut ServerConn) -> Result<Option<Frame>> {
    Frame::split(&mut conn.read_buf, MAX_PROBE_MESSAGE).map_err(|source| Error::Protocol {
        addr: conn.addr.to_string(),
        source,
    })
}

fn decode_error(conn: &ServerConn, frame: &Frame) -> Result<ErrorFields> {
    ErrorFields::decode(frame.body()).map_err(|source| Error::Protocol {
        addr: conn.addr.to_string(),
        source,
    })
}

fn server_outcome(conn: &ServerConn, failure: Option<ErrorFields>) -> Result<()> {
    match failure {
        None => Ok(()),
        Some(fields) => Err(Error::Server {
            addr: conn.addr.to_string(),
            fields,
        }),
    }
}

fn io_error(conn: &ServerConn, source: std::io::Error) -> Error {
    Error::Io {
        addr: conn.addr.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra_users: &str) -> Settings {
        settings_at(1, extra_users)
    }

    /// One trust user `app` (server login `srv`/`pw`) plus `extra_users`,
    /// with the primary at `127.0.0.1:port`.
    fn settings_at(port: u16, extra_users: &str) -> Settings {
        let text = format!(
            "[upstream]\nprimary = \"127.0.0.1:{port}\"\n[[users]]\nname = \"app\"\nauth = \"trust\"\nserver_user = \"srv\"\nserver_password = \"pw\"\n{extra_users}"
        );
        pgpilot_config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn pool(database: &str, user: &str) -> PoolSnapshot {
        PoolSnapshot {
            database: database.into(),
            user: user.into(),
            ..PoolSnapshot::default()
        }
    }

    fn ready(ms: f64) -> Readiness {
        Readiness::Ready {
            primary: "p:1".into(),
            latency_ms: ms,
        }
    }

    #[test]
    fn login_uses_first_user_and_its_server_credentials() {
        let s = settings("[[users]]\nname = \"other\"\nauth = \"trust\"\n");
        let p = probe_login(&s, &[]).unwrap();
        assert_eq!(p.addr, "127.0.0.1:1");
        assert_eq!(p.user, "srv");
        assert_eq!(p.password.as_deref(), Some("pw"));
        assert_eq!(
            p.database, "srv",
            "no pool yet: database named like the server user"
        );
    }

    #[test]
    fn login_prefers_a_pool_of_the_first_user() {
        let s = settings("");
        let p = probe_login(&s, &[pool("a", "other"), pool("b", "app")]).unwrap();
        assert_eq!(p.database, "b");
        let p = probe_login(&s, &[pool("a", "other")]).unwrap();
        assert_eq!(p.database, "a");
    }

    #[test]
    fn body_shapes() {
        let json = serde_json::to_value(ready(1.5)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"status": "ready", "primary": "p:1", "latency_ms": 1.5})
        );
        let down = Readiness::Unavailable {
            primary: "p:1".into(),
            error: "boom".into(),
        };
        assert_eq!(down.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        let json = serde_json::to_value(down).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"status": "unavailable", "primary": "p:1", "error": "boom"})
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cache_reuses_an_answer_for_its_ttl() {
        let cache = ReadyCache::default();
        assert_eq!(cache.get_or_probe(async { ready(1.0) }).await, ready(1.0));
        tokio::time::advance(READY_CACHE_TTL / 2).await;
        assert_eq!(cache.get_or_probe(async { ready(2.0) }).await, ready(1.0));
        tokio::time::advance(READY_CACHE_TTL / 2).await;
        assert_eq!(cache.get_or_probe(async { ready(3.0) }).await, ready(3.0));
    }

    #[tokio::test]
    async fn refused_connection_is_unavailable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let s = settings_at(port, "");
        let rt = Runtime::new(s);
        match probe(&rt).await {
            Readiness::Unavailable { primary, error } => {
                assert_eq!(primary, format!("127.0.0.1:{port}"));
                assert!(error.contains(&primary), "{error}");
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and then says nothing, like a hung primary.
        let _server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let rt = Runtime::new(settings_at(port, ""));
        let start = Instant::now();
        let answer = probe(&rt).await;
        match answer {
            // Login's own bound or the probe's, whichever fires first: both are 1 s.
            Readiness::Unavailable { error, .. } => assert!(error.contains("1s"), "{error}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
        assert!(start.elapsed() <= READY_TIMEOUT + Duration::from_millis(100));
    }
}
