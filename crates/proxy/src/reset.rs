//! Cleaning a server connection before another client may use it, after a
//! session-mode or pinned client leaves: the reset query (default
//! `DISCARD ALL`) and the bookkeeping that goes with it.

use std::time::Duration;

use bytes::BytesMut;
use pgpilot_pool::PooledConn;
use pgpilot_wire::tag::backend as tag;
use pgpilot_wire::{frontend, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bound on the reset round trip.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `sql` on `conn` and waits for ReadyForQuery; on any failure the
/// connection is marked broken so the pool closes it.
pub async fn reset_server(conn: &mut PooledConn, sql: &str) {
    let ok = matches!(
        tokio::time::timeout(RESET_TIMEOUT, run(conn, sql)).await,
        Ok(Ok(true))
    );
    if ok {
        conn.session_settings = Default::default();
        conn.prepared.clear();
    } else {
        conn.broken = true;
    }
}

/// True when the query succeeded and the server is idle again.
async fn run(conn: &mut PooledConn, sql: &str) -> std::io::Result<bool> {
    let mut out = BytesMut::new();
    frontend::query(&mut out, sql);
    conn.stream.write_all(&out).await?;
    let mut failed = false;
    loop {
        let frame = match Frame::split(&mut conn.read_buf, 1 << 24) {
            Ok(Some(f)) => f,
            Ok(None) => {
                let server = &mut **conn;
                if server.stream.read_buf(&mut server.read_buf).await? == 0 {
                    return Ok(false);
                }
                continue;
            }
            Err(_) => return Ok(false),
        };
        match frame.tag {
            tag::ERROR_RESPONSE => failed = true,
            tag::READY_FOR_QUERY => return Ok(!failed && frame.body() == b"I"),
            _ => {}
        }
    }
}
