//! Small socket helpers for the handshake phase (the relay uses its own
//! non-blocking loop).

use bytes::BytesMut;
use pgpilot_wire::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Result, SessionError};

/// Reads until one complete tagged message is buffered and returns it.
pub async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut, max: usize) -> Result<Frame> {
    loop {
        if let Some(frame) = Frame::split(buf, max).map_err(SessionError::ClientProtocol)? {
            return Ok(frame);
        }
        read_more(stream, buf).await?;
    }
}

/// One read; end of stream is an error.
pub async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<()> {
    let n = stream.read_buf(buf).await.map_err(SessionError::ClientIo)?;
    if n == 0 {
        return Err(SessionError::ClientIo(
            std::io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    Ok(())
}

pub async fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> Result<()> {
    stream
        .write_all(bytes)
        .await
        .map_err(SessionError::ClientIo)
}
