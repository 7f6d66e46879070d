//! The front door of a client connection: the startup packet (SSLRequest and
//! GSSENCRequest answered `N`, CancelRequest forwarded, unknown versions
//! refused), authentication, and the welcome (AuthenticationOk,
//! ParameterStatus, BackendKeyData, ReadyForQuery). Runs under the startup
//! timeout; hands a logged-in [`Login`] to the session.

use std::sync::Arc;

use bytes::BytesMut;
use pgpilot_pool::{Pool, PooledConn};
use pgpilot_wire::backend::{self, auth_code, TransactionStatus};
use pgpilot_wire::sqlstate;
use pgpilot_wire::startup::Startup;
use tokio::net::TcpStream;

use crate::cancel::{self, CancelSlot};
use crate::client_auth::{self, auth_failed};
use crate::error::{Result, SessionError};
use crate::io::{read_more, write_all};
use crate::params::{self, StartupProblem, StartupRequest};
use crate::runtime::Runtime;

/// A client that passed authentication and has been welcomed.
pub struct Login {
    pub request: StartupRequest,
    /// The configured user the client authenticated as.
    pub user: pgpilot_config::User,
    /// The client's pool on the primary.
    pub pool: Pool,
    /// The server `server` belongs to (session mode).
    pub backend: Option<Arc<crate::backends::Backend>>,
    /// Proxy-issued BackendKeyData pid (the cancel registry key).
    pub pid: i32,
    pub cancel: Arc<CancelSlot>,
    /// The connection used to learn server parameters; kept in session mode.
    pub server: Option<PooledConn>,
    /// Bytes the client sent after its startup packet, not yet processed.
    pub leftover: BytesMut,
}

/// Runs the startup phase. `Ok(None)` when the connection was a
/// CancelRequest (already handled) and should just close.
pub async fn handshake(rt: &Runtime, stream: &mut TcpStream) -> Result<Option<Login>> {
    let mut buf = BytesMut::with_capacity(1024);
    let params = match read_startup(rt, stream, &mut buf).await? {
        Some(params) => params,
        None => return Ok(None),
    };
    let request = params::parse_startup(&params).map_err(startup_error)?;
    let settings = rt.settings.load_full();
    let user = settings
        .user(&request.user)
        .ok_or_else(|| auth_failed(&request.user))?;
    if let Err(e) = client_auth::authenticate(rt, stream, &mut buf, user).await {
        rt.counters
            .auth_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(e);
    }
    let session_mode = settings.pool.mode == pgpilot_config::PoolMode::Session;
    let (backend, pool, server) =
        login_server(rt, &settings, user, &request.database, session_mode).await?;
    let params = match (&server, pool.server_params()) {
        (Some(conn), _) => std::sync::Arc::new(conn.startup_params.clone()),
        (None, Some(p)) => p,
        (None, None) => std::sync::Arc::new(Vec::new()),
    };
    let (pid, key, cancel) = rt.cancels.register();
    let mut out = BytesMut::with_capacity(512);
    welcome(&mut out, &params, &request, pid, key);
    if let Err(e) = write_all(stream, &out).await {
        rt.cancels.unregister(pid);
        return Err(e);
    }
    Ok(Some(Login {
        request,
        user: user.clone(),
        backend: session_mode.then_some(backend),
        pool,
        pid,
        cancel,
        server: if session_mode { server } else { None },
        leftover: buf,
    }))
}

/// The client's pool on the primary and, when needed, a connection: a pool
/// that has never logged in checks the database and credentials now (an
/// unknown database fails the login with 3D000), and session mode keeps
/// the connection. With the primary down, a replica can vouch instead.
async fn login_server(
    rt: &Runtime,
    settings: &pgpilot_config::Settings,
    user: &pgpilot_config::User,
    database: &str,
    session_mode: bool,
) -> Result<(Arc<crate::backends::Backend>, Pool, Option<PooledConn>)> {
    let primary = rt
        .backends
        .primary()
        .or_else(|| rt.backends.all().into_iter().next());
    let primary = primary.ok_or_else(|| {
        login_pool_error(pgpilot_pool::Error::Closed {
            pool: "no servers configured".into(),
        })
    })?;
    let pool = primary.pool(settings, user, database);
    if !session_mode && pool.server_params().is_some() {
        return Ok((primary, pool, None));
    }
    let err = match pool.checkout().await {
        Ok(conn) => return Ok((primary, pool, Some(conn))),
        Err(e) => e,
    };
    if !session_mode
        && matches!(
            err,
            pgpilot_pool::Error::Io { .. } | pgpilot_pool::Error::ConnectTimeout { .. }
        )
    {
        for replica in rt.backends.replicas() {
            let rpool = replica.pool(settings, user, database);
            if rpool.server_params().is_some() || rpool.checkout().await.is_ok() {
                return Ok((primary, pool_with_params(pool, &rpool), None));
            }
        }
    }
    Err(login_pool_error(err))
}

/// `pool`, which learns server parameters from `other` when it has none.
fn pool_with_params(pool: Pool, other: &Pool) -> Pool {
    if pool.server_params().is_none() {
        if let Some(p) = other.server_params() {
            pool.set_server_params(p);
        }
    }
    pool
}

/// Reads startup packets until a StartupMessage; answers SSL/GSS requests
/// with `N` and forwards cancels.
async fn read_startup(
    rt: &Runtime,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<Option<Vec<(String, String)>>> {
    loop {
        let packet = match Startup::split(buf).map_err(SessionError::ClientProtocol)? {
            Some(p) => p,
            None => {
                read_more(stream, buf).await?;
                continue;
            }
        };
        match packet {
            Startup::SslRequest | Startup::GssEncRequest => write_all(stream, b"N").await?,
            Startup::Cancel { pid, key } => {
                forward_cancel(rt, pid, key).await;
                return Ok(None);
            }
            Startup::Unsupported { code } => {
                return Err(SessionError::Limit {
                    code: sqlstate::FEATURE_NOT_SUPPORTED,
                    message: format!(
                        "unsupported frontend protocol {}.{}: server supports 3.0",
                        code >> 16,
                        code & 0xffff
                    ),
                })
            }
            Startup::Startup { params, .. } => return Ok(Some(params)),
        }
    }
}

async fn forward_cancel(rt: &Runtime, pid: i32, key: i32) {
    let Some(target) = rt.cancels.target(pid, key) else {
        return;
    };
    rt.counters
        .cancels_forwarded
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = cancel::forward(&target).await {
        tracing::warn!(server = %target.addr, error = %e, "cancel request could not be forwarded");
    }
}

fn startup_error(p: StartupProblem) -> SessionError {
    let (code, message) = match p {
        StartupProblem::NoUser => (
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            "no PostgreSQL user name specified in startup packet".to_owned(),
        ),
        StartupProblem::BadName(n) => (
            sqlstate::PROTOCOL_VIOLATION,
            format!("invalid startup parameter name {n:?}"),
        ),
        StartupProblem::Replication => (
            sqlstate::FEATURE_NOT_SUPPORTED,
            "replication connections are not supported by pgpilot".to_owned(),
        ),
    };
    SessionError::Limit { code, message }
}

/// A pool failure during login is fatal for the login (unknown database,
/// server down), reported with the server's own SQLSTATE when it has one.
fn login_pool_error(e: pgpilot_pool::Error) -> SessionError {
    match e {
        pgpilot_pool::Error::Server { fields, .. } => SessionError::Auth(fields),
        other => SessionError::Limit {
            code: sqlstate::CANNOT_CONNECT_NOW,
            message: format!("pgpilot: {other}"),
        },
    }
}

/// AuthenticationOk, the server's parameters with the client's own startup
/// values on top, BackendKeyData and ReadyForQuery.
fn welcome(
    out: &mut BytesMut,
    server_params: &[(String, String)],
    request: &StartupRequest,
    pid: i32,
    key: i32,
) {
    backend::authentication(out, auth_code::OK, &[]);
    for (name, value) in server_params {
        let own = request
            .raw
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        let value = own.map_or(value.as_str(), |(_, v)| v.as_str());
        backend::parameter_status(out, name, value);
    }
    backend::backend_key_data(out, pid, key);
    backend::ready_for_query(out, TransactionStatus::Idle);
}
