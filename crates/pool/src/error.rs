//! The pool crate's error type.

use pgpilot_wire::backend::ErrorFields;

/// Why a server connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// TCP connect or I/O with the server failed.
    #[error("server {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The server did not finish the login within the connect timeout.
    #[error("server {addr}: login timed out after {timeout:?}")]
    ConnectTimeout {
        addr: String,
        timeout: std::time::Duration,
    },
    /// The server refused the login with an ErrorResponse (bad password,
    /// unknown database, too many connections…); forwarded to the client.
    #[error("server {addr}: {} {}", fields.code, fields.message)]
    Server { addr: String, fields: ErrorFields },
    /// The server asked for an authentication method pgpilot cannot answer
    /// (e.g. a password is needed but none is configured).
    #[error("server {addr}: {reason}")]
    Auth { addr: String, reason: String },
    /// The server broke the protocol.
    #[error("server {addr}: protocol error: {source}")]
    Protocol {
        addr: String,
        #[source]
        source: pgpilot_wire::Error,
    },
    /// No connection became free within the checkout timeout.
    #[error("timed out after {waited:?} waiting for a server connection (pool {pool}, max_size {max_size})")]
    CheckoutTimeout {
        pool: String,
        waited: std::time::Duration,
        max_size: usize,
    },
    /// The pool is shut down or was removed.
    #[error("pool {pool} is closed")]
    Closed { pool: String },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
