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

/// Reads what `stream` holds into `buf`'s spare capacity (topped up to
/// `chunk` bytes when less than half of that is free: reserving before
/// every read cost a trip through `BytesMut::reserve_inner` per read, 2 %
/// of pgpilot's user time) without waiting. `Ok(0)` is end of stream.
///
/// A short read means the socket is drained, so its readiness is cleared
/// right away: the event loop then sleeps until the next epoll edge instead
/// of waking at once for a read that can only return `EAGAIN`. That saves a
/// system call per message in each direction (tokio otherwise clears
/// readiness only when a read fails). Clearing is race-free: tokio ignores
/// the clear if a new readiness event arrived during the read.
pub fn read_drained(
    stream: &TcpStream,
    buf: &mut BytesMut,
    chunk: usize,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < chunk / 2 {
        buf.reserve(chunk);
    }
    let mut got = 0usize;
    let result = stream.try_io(tokio::io::Interest::READABLE, || {
        let spare = buf.spare_capacity_mut();
        let room = spare.len();
        let n = socket2::SockRef::from(stream).recv(spare)?;
        got = n;
        if n > 0 && n < room {
            Err(std::io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    if got > 0 {
        // SAFETY: `recv` initialized the first `got` bytes of the spare
        // capacity (it returns how many bytes it wrote, at most `room`).
        unsafe { buf.set_len(buf.len() + got) };
        return Ok(got);
    }
    result
}
