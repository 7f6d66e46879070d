//! Accepting client connections: the `max_client_connections` gate, the
//! startup timeout, and one task per client running handshake → session.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;
use pgpilot_wire::sqlstate;
use tokio::net::{TcpListener, TcpStream};

use crate::error::SessionError;
use crate::handshake;
use crate::runtime::Runtime;
use crate::session::Session;

/// Accepts clients forever.
pub async fn accept_loop(rt: Arc<Runtime>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let rt = rt.clone();
        tokio::spawn(async move {
            tracing::trace!(%peer, "client connected");
            serve_client(rt, stream).await;
        });
    }
}

/// Guard that keeps the client count right however the task ends.
struct ClientCount(Arc<Runtime>);

impl Drop for ClientCount {
    fn drop(&mut self) {
        self.0.counters.clients.fetch_sub(1, Relaxed);
    }
}

async fn serve_client(rt: Arc<Runtime>, mut stream: TcpStream) {
    let open = rt.counters.clients.fetch_add(1, Relaxed) + 1;
    let _count = ClientCount(rt.clone());
    let settings = rt.settings.load_full();
    if open > settings.max_client_connections {
        rt.counters.refused_connections.fetch_add(1, Relaxed);
        refuse(&mut stream).await;
        return;
    }
    let login = match tokio::time::timeout(
        settings.startup_timeout,
        handshake::handshake(&rt, &mut stream),
    )
    .await
    {
        Err(_) => return, // Never finished its startup: close silently, as PostgreSQL does.
        Ok(Ok(None)) => return,
        Ok(Ok(Some(login))) => login,
        Ok(Err(e)) => {
            report(&mut stream, &e).await;
            return;
        }
    };
    Session::new(rt, stream, login).run().await;
}

async fn report(stream: &mut TcpStream, e: &SessionError) {
    use tokio::io::AsyncWriteExt;
    if matches!(e, SessionError::ClientIo(_)) {
        return;
    }
    tracing::debug!(error = %e, "login failed");
    let mut out = BytesMut::new();
    e.respond(&mut out);
    let _ = stream.write_all(&out).await;
}

/// Tells an over-limit client `53300` (after its startup packet, so that
/// drivers read it as a login error, not as an SSL answer).
async fn refuse(stream: &mut TcpStream) {
    let err = SessionError::Limit {
        code: sqlstate::TOO_MANY_CONNECTIONS,
        message: "sorry, too many clients already".into(),
    };
    let read = async {
        let mut buf = BytesMut::new();
        loop {
            match pgpilot_wire::startup::Startup::split(&mut buf) {
                Ok(Some(
                    pgpilot_wire::startup::Startup::SslRequest
                    | pgpilot_wire::startup::Startup::GssEncRequest,
                )) => {
                    crate::io::write_all(stream, b"N").await?;
                }
                Ok(Some(_)) | Err(_) => return Ok::<_, SessionError>(()),
                Ok(None) => crate::io::read_more(stream, &mut buf).await?,
            }
        }
    };
    if let Ok(Ok(())) = tokio::time::timeout(std::time::Duration::from_secs(5), read).await {
        report(stream, &err).await;
    }
}
