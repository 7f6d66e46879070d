//! The replication connection once it is in CopyBoth mode: reads CopyData
//! messages into the [`Decoder`], skips the bulk of huge row changes
//! without buffering them, and sends Standby Status Updates on a timer and
//! whenever the server asks.
//!
//! Set up by [`super::stream_once`]; decoding is in [`super::decoder`].

use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use pgpilot_pool::ServerConn;
use pgpilot_wire::frame::HEADER_LEN;
use pgpilot_wire::replication::{
    pg_timestamp, LogicalMessage, StandbyStatusUpdate, PREFIX_DECODABLE_LEN, XLOG_DATA_HEADER_LEN,
};
use pgpilot_wire::tag::backend as tag;
use pgpilot_wire::FrameHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::decoder::Decoder;
use super::{
    io_error, protocol_error, server_error_body, unexpected, Result, WalEvent, MAX_BUFFERED_MESSAGE,
};

/// Messages above this size that can be handled from their first bytes
/// are skipped rather than buffered.
const SKIP_THRESHOLD: usize = 64 << 10;

/// Free buffer space ensured before each read, so a buffer emptied by
/// skipping is not refilled in tiny reads.
const READ_CHUNK: usize = 16 << 10;

/// A replication connection in CopyBoth mode.
pub(super) struct Stream {
    /// The socket and the bytes read from it but not yet handled.
    conn: ServerConn,
    /// Relations, the open transaction and the watermark.
    decoder: Decoder,
    /// Bytes of a large, already handled message still to be discarded.
    skip: usize,
    /// Scratch buffer for status updates.
    out: BytesMut,
}

/// Whether the stream goes on after the bytes at hand were handled.
enum Flow {
    /// Keep reading; `reply` when the server asked for a status update.
    Continue { reply: bool },
    /// The server ended the stream (CopyDone or CommandComplete).
    Ended,
}

impl Stream {
    /// A stream whose server answered START_REPLICATION at `start`.
    pub(super) fn new(conn: ServerConn, start: u64) -> Stream {
        Stream {
            conn,
            decoder: Decoder::new(start),
            skip: 0,
            out: BytesMut::with_capacity(64),
        }
    }

    /// Reads and decodes until the stream ends, sending a status update
    /// every `interval` and whenever the server asks for one.
    pub(super) async fn run(
        &mut self,
        interval: Duration,
        on_event: &mut (dyn FnMut(WalEvent) + Send),
    ) -> Result<()> {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flow = self.drain(on_event)?;
        loop {
            match flow {
                Flow::Ended => return Ok(()),
                Flow::Continue { reply: true } => self.send_status(false).await?,
                Flow::Continue { reply: false } => {}
            }
            self.conn.read_buf.reserve(READ_CHUNK);
            flow = tokio::select! {
                _ = tick.tick() => {
                    self.send_status(true).await?;
                    Flow::Continue { reply: false }
                }
                read = self.conn.stream.read_buf(&mut self.conn.read_buf) => {
                    self.after_read(read)?;
                    self.drain(on_event)?
                }
            };
        }
    }

    fn after_read(&self, read: std::io::Result<usize>) -> Result<()> {
        match read {
            Ok(0) => Err(io_error(
                &self.conn,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed the replication stream",
                ),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(io_error(&self.conn, e)),
        }
    }

    /// Handles every complete message in the read buffer, and the start of
    /// a large skippable one.
    fn drain(&mut self, on_event: &mut (dyn FnMut(WalEvent) + Send)) -> Result<Flow> {
        let mut reply = false;
        loop {
            let n = self.skip.min(self.conn.read_buf.len());
            self.conn.read_buf.advance(n);
            self.skip -= n;
            if self.skip > 0 {
                return Ok(Flow::Continue { reply });
            }
            let Some(body_len) = self.next_message()? else {
                return Ok(Flow::Continue { reply });
            };
            match self.handle_next(body_len, on_event)? {
                Flow::Continue { reply: r } => reply |= r,
                Flow::Ended => return Ok(Flow::Ended),
            }
        }
    }

    /// The body length of the next message if enough of it is buffered to
    /// handle it: all of it, or for a large skippable XLogData its prefix.
    fn next_message(&mut self) -> Result<Option<usize>> {
        let buf = &mut self.conn.read_buf;
        let header = match FrameHeader::peek(buf, usize::MAX) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(source) => return Err(protocol_error(&self.conn, source)),
        };
        let body_len = header.total_len - HEADER_LEN;
        if header.total_len > SKIP_THRESHOLD && header.tag == tag::COPY_DATA {
            let prefix = XLOG_DATA_HEADER_LEN + PREFIX_DECODABLE_LEN;
            let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + prefix) else {
                return Ok(None);
            };
            if skippable(body) {
                return Ok(Some(body_len));
            }
        }
        if header.total_len > MAX_BUFFERED_MESSAGE {
            let source = pgpilot_wire::Error::MessageTooLarge {
                len: header.total_len,
                max: MAX_BUFFERED_MESSAGE,
            };
            return Err(protocol_error(&self.conn, source));
        }
        if buf.len() < header.total_len {
            buf.reserve(header.total_len - buf.len());
            return Ok(None);
        }
        Ok(Some(body_len))
    }

    /// Handles the message [`Stream::next_message`] found and consumes it
    /// (whatever of it is buffered; the rest becomes `skip`).
    fn handle_next(
        &mut self,
        body_len: usize,
        on_event: &mut (dyn FnMut(WalEvent) + Send),
    ) -> Result<Flow> {
        let buf = &self.conn.read_buf;
        let tag = buf[0];
        let available = body_len.min(buf.len() - HEADER_LEN);
        let body = &buf[HEADER_LEN..HEADER_LEN + available];
        let flow = match tag {
            tag::COPY_DATA => {
                let reply = self
                    .decoder
                    .on_copy_data(body, on_event)
                    .map_err(|e| e.into_error(&self.conn))?;
                Flow::Continue { reply }
            }
            tag::ERROR_RESPONSE => return Err(server_error_body(&self.conn, "streaming", body)),
            tag::COPY_DONE | tag::COMMAND_COMPLETE => Flow::Ended,
            tag::NOTICE_RESPONSE | tag::PARAMETER_STATUS => Flow::Continue { reply: false },
            other => return Err(unexpected(&self.conn, "streaming", other)),
        };
        self.conn.read_buf.advance(HEADER_LEN + available);
        self.skip = body_len - available;
        Ok(flow)
    }

    /// Reports the watermark as written, flushed and applied, so the server
    /// may recycle WAL behind it.
    async fn send_status(&mut self, reply_requested: bool) -> Result<()> {
        let position = self.decoder.watermark;
        self.out.clear();
        StandbyStatusUpdate {
            written: position,
            flushed: position,
            applied: position,
            client_time: pg_timestamp(SystemTime::now()),
            reply_requested,
        }
        .encode(&mut self.out);
        self.conn
            .stream
            .write_all(&self.out)
            .await
            .map_err(|e| io_error(&self.conn, e))
    }
}

/// Whether a CopyData body starting with `prefix` (XLogData header plus
/// [`PREFIX_DECODABLE_LEN`]) can be handled from that prefix alone.
fn skippable(prefix: &[u8]) -> bool {
    prefix.first() == Some(&pgpilot_wire::replication::tag::XLOG_DATA)
        && prefix
            .get(XLOG_DATA_HEADER_LEN)
            .is_some_and(|&t| LogicalMessage::prefix_decodable(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walstream::decoder::tests::xlog;

    #[test]
    fn only_row_changes_and_unknown_messages_are_skippable() {
        let prefix = XLOG_DATA_HEADER_LEN + PREFIX_DECODABLE_LEN;
        for tag in [b'I', b'U', b'D', b'M', b'Y'] {
            let body = xlog(&[tag, 0, 0, 0, 7, b'N']);
            assert!(skippable(&body[..prefix]), "{}", char::from(tag));
        }
        for tag in [b'B', b'C', b'R', b'T'] {
            let body = xlog(&[tag, 0, 0, 0, 7, b'N']);
            assert!(!skippable(&body[..prefix]), "{}", char::from(tag));
        }
        let mut keepalive = vec![b'k'];
        keepalive.extend_from_slice(&[0; 29]);
        keepalive[XLOG_DATA_HEADER_LEN] = b'I';
        assert!(!skippable(&keepalive[..prefix]));
        assert!(!skippable(b""));
    }
}
