//! The one place where an internal failure becomes what the client sees: an
//! `ErrorResponse` with severity and SQLSTATE, and whether the session
//! survives it.

use bytes::BytesMut;
use pgpilot_wire::backend::{self, ErrorFields};
use pgpilot_wire::sqlstate;

/// Everything that can end or interrupt a client session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client socket failed or closed.
    #[error("client I/O: {0}")]
    ClientIo(#[source] std::io::Error),
    /// The client sent bytes that are not valid protocol.
    #[error("client protocol violation: {0}")]
    ClientProtocol(#[source] pgpilot_wire::Error),
    /// The client sent a message that is valid but not allowed here.
    #[error("client protocol violation: {0}")]
    Unexpected(&'static str),
    /// The server connection failed mid-request.
    #[error("server {addr}: {source}")]
    ServerIo {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The server sent something the proxy cannot follow.
    #[error("server {addr} protocol error: {reason}")]
    ServerProtocol { addr: String, reason: String },
    /// No server connection could be had.
    #[error(transparent)]
    Pool(#[from] pgpilot_pool::Error),
    /// Login failed: the fields go to the client verbatim.
    #[error("authentication failed: {} {}", .0.code, .0.message)]
    Auth(ErrorFields),
    /// The session exceeded a configured limit.
    #[error("{message}")]
    Limit { code: &'static str, message: String },
    /// Routing found no server for the request.
    #[error("{message}")]
    Routing { code: &'static str, message: String },
    /// pgpilot is shutting down.
    #[error("pgpilot is shutting down")]
    Shutdown,
}

/// What happens to the session after an error was reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Report it as ERROR and keep serving the client.
    Continue,
    /// Report it as FATAL (when the socket still works) and close.
    Close,
}

impl SessionError {
    /// SQLSTATE, message and disposition for the client.
    pub fn classify(&self) -> (String, String, Disposition) {
        use Disposition::*;
        let (code, close): (&str, Disposition) = match self {
            SessionError::ClientIo(_) => (sqlstate::CONNECTION_FAILURE, Close),
            SessionError::ClientProtocol(_) | SessionError::Unexpected(_) => {
                (sqlstate::PROTOCOL_VIOLATION, Close)
            }
            SessionError::ServerIo { .. } => (sqlstate::CONNECTION_FAILURE, Close),
            SessionError::ServerProtocol { .. } => (sqlstate::PROTOCOL_VIOLATION, Close),
            SessionError::Pool(e) => return pool_error(e),
            SessionError::Auth(f) => return (f.code.clone(), f.message.clone(), Close),
            SessionError::Limit { code, .. } => (code, Close),
            SessionError::Routing { code, message } => {
                return ((*code).to_owned(), message.clone(), Continue)
            }
            SessionError::Shutdown => (sqlstate::ADMIN_SHUTDOWN, Close),
        };
        (code.to_owned(), format!("pgpilot: {self}"), close)
    }

    /// Encodes the error for the client; returns whether the session goes on.
    pub fn respond(&self, out: &mut BytesMut) -> Disposition {
        let (code, message, disposition) = self.classify();
        let severity = match disposition {
            Disposition::Continue => "ERROR",
            Disposition::Close => "FATAL",
        };
        backend::error_response(out, severity, &code, &message);
        disposition
    }
}

/// Pool failures are per-request: the client may retry, the session lives.
fn pool_error(e: &pgpilot_pool::Error) -> (String, String, Disposition) {
    use pgpilot_pool::Error as P;
    let code = match e {
        P::Server { fields, .. } => {
            return (
                fields.code.clone(),
                fields.message.clone(),
                Disposition::Continue,
            )
        }
        P::CheckoutTimeout { .. } => sqlstate::TOO_MANY_CONNECTIONS,
        P::Closed { .. } => sqlstate::CANNOT_CONNECT_NOW,
        P::Auth { .. } => sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
        P::Io { .. } | P::ConnectTimeout { .. } | P::Protocol { .. } => {
            sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION
        }
    };
    (
        code.to_owned(),
        format!("pgpilot: {e}"),
        Disposition::Continue,
    )
}

/// Result alias for session code.
pub type Result<T> = std::result::Result<T, SessionError>;
