//! The admin crate's error type: why the readiness probe found the primary
//! unavailable. Its `Display` text is what `/health/ready` reports in
//! `"error"`, so every variant names the server it was talking to.

use std::time::Duration;

use pgpilot_wire::backend::ErrorFields;

/// Why the primary did not answer `SELECT 1`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings list no users, so there is no login to probe with.
    #[error("no users configured to log in to the primary with")]
    NoUsers,
    /// Connecting or logging in failed (refused, bad password, timeout…).
    #[error(transparent)]
    Login(#[from] pgpilot_pool::Error),
    /// Login plus `SELECT 1` took longer than the probe allows.
    #[error("primary {addr} did not answer SELECT 1 within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    /// Socket error after login, including the server closing the connection.
    #[error("primary {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The server sent bytes that are not a valid message.
    #[error("primary {addr}: protocol error: {source}")]
    Protocol {
        addr: String,
        #[source]
        source: pgpilot_wire::Error,
    },
    /// The server answered `SELECT 1` with an ErrorResponse.
    #[error("primary {addr}: {} {}", fields.code, fields.message)]
    Server { addr: String, fields: ErrorFields },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
