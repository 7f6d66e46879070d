//! One logged-in PostgreSQL backend connection and what pgpilot knows about
//! its state: prepared statements, session parameters it was given, cancel key.
//!
//! Created by [`crate::login`], lent out by [`crate::Pool`], driven by the
//! proxy's `relay`.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::prepared::PreparedLru;

/// A server connection past ReadyForQuery of its login.
#[derive(Debug)]
pub struct ServerConn {
    /// The socket. The relay reads and writes it directly.
    pub stream: TcpStream,
    /// Bytes read from the server and not yet processed.
    pub read_buf: BytesMut,
    /// `host:port` of the server, for logs and cancel requests.
    pub addr: std::sync::Arc<str>,
    /// BackendKeyData: process id.
    pub pid: i32,
    /// BackendKeyData: secret key.
    pub key: i32,
    /// ParameterStatus values the server reported during login.
    pub startup_params: Vec<(String, String)>,
    /// Client-visible session settings currently applied on this connection:
    /// lower-case name → the statement that set it (replayed by `SET`).
    /// Shared with the last client whose settings it took, so the next
    /// checkout by a client with the same settings compares pointers.
    pub session_settings: std::sync::Arc<BTreeMap<String, String>>,
    /// pgpilot-named prepared statements present on this connection.
    pub prepared: PreparedLru,
    /// When the login completed.
    pub created: Instant,
    /// When the connection last went back to the pool.
    pub last_used: Instant,
    /// Set when the connection's state is unknown or it failed; the pool
    /// closes it instead of reusing it.
    pub broken: bool,
}

impl ServerConn {
    /// Whether the connection still looks usable after sitting idle: the
    /// server has not closed it and sent nothing unsolicited (a FATAL on
    /// shutdown, for instance). One non-blocking read, no round trip.
    pub fn is_alive(&self) -> bool {
        let mut probe = [0u8; 1];
        match self.stream.try_read(&mut probe) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            Ok(_) => false,
        }
    }
}
