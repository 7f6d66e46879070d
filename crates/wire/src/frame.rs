//! Splitting a byte stream into tagged messages.
//!
//! Every message after startup is `tag: u8, len: i32 (including itself), body`.
//! [`FrameHeader::peek`] reads a header without consuming anything, so the
//! relay can walk a buffer of many messages without allocating; [`Frame::split`]
//! cuts one complete message off a `BytesMut` as a cheap `Bytes` handle.
//! The declared length is checked against a caller-supplied cap *before* any
//! buffer grows, so a hostile 2 GB length costs nothing.

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Result};

/// Size of the tag plus the length field.
pub const HEADER_LEN: usize = 5;

/// Tag and total size of a message whose header is in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Message type byte.
    pub tag: u8,
    /// Whole message size: tag + length field + body.
    pub total_len: usize,
}

impl FrameHeader {
    /// Reads the header at the start of `buf`. `Ok(None)` when fewer than five
    /// bytes are present; an error when the length is below 4 or the message
    /// would exceed `max_len` bytes in total.
    #[inline]
    pub fn peek(buf: &[u8], max_len: usize) -> Result<Option<FrameHeader>> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if len < 4 {
            return Err(Error::InvalidLength { len: len.into() });
        }
        let total_len = len as usize + 1;
        if total_len > max_len {
            return Err(Error::MessageTooLarge {
                len: total_len,
                max: max_len,
            });
        }
        Ok(Some(FrameHeader {
            tag: buf[0],
            total_len,
        }))
    }

    /// The header of the first message in `buf` if the whole message is present.
    #[inline]
    pub fn complete(buf: &[u8], max_len: usize) -> Result<Option<FrameHeader>> {
        match FrameHeader::peek(buf, max_len)? {
            Some(h) if buf.len() >= h.total_len => Ok(Some(h)),
            _ => Ok(None),
        }
    }
}

/// One complete message: its tag and its raw bytes (header included, so it
/// can be forwarded unchanged).
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// Message type byte.
    pub tag: u8,
    /// The whole message, header included.
    pub raw: Bytes,
}

impl Frame {
    /// Cuts the first complete message off `buf`. `Ok(None)` means more bytes
    /// are needed; the buffer is reserved for the rest of a large message so
    /// the next read can fill it.
    pub fn split(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>> {
        let Some(header) = FrameHeader::peek(buf, max_len)? else {
            return Ok(None);
        };
        if buf.len() < header.total_len {
            buf.reserve(header.total_len - buf.len());
            return Ok(None);
        }
        let raw = buf.split_to(header.total_len).freeze();
        Ok(Some(Frame {
            tag: header.tag,
            raw,
        }))
    }

    /// The body after the five header bytes.
    pub fn body(&self) -> &[u8] {
        &self.raw[HEADER_LEN..]
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("tag", &(self.tag as char))
            .field("len", &self.raw.len())
            .finish()
    }
}

/// Starts a message with `tag` and a placeholder length; returns the offset
/// to hand to [`finish_message`] once the body is written.
#[inline]
pub fn begin_message(buf: &mut BytesMut, tag: u8) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[tag, 0, 0, 0, 0]);
    start
}

/// Writes the length of the message begun at `start`.
#[inline]
pub fn finish_message(buf: &mut BytesMut, start: usize) {
    let len = (buf.len() - start - 1) as i32;
    buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_more_bytes_is_none() {
        let mut buf = BytesMut::from(&b"Q\0\0"[..]);
        assert_eq!(Frame::split(&mut buf, 1024).unwrap(), None);
        let mut buf = BytesMut::from(&b"Q\0\0\0\x09SEL"[..]);
        assert_eq!(Frame::split(&mut buf, 1024).unwrap(), None);
        assert_eq!(buf.len(), 8, "partial message must stay in the buffer");
    }

    #[test]
    fn splits_complete_messages_in_order() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x06x\0S\0\0\0\x04tail"[..]);
        let a = Frame::split(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(a.tag, b'Q');
        assert_eq!(a.body(), b"x\0");
        let b = Frame::split(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(b.tag, b'S');
        assert_eq!(b.body(), b"");
        assert_eq!(&buf[..], b"tail");
    }

    #[test]
    fn rejects_huge_declared_length_before_buffering() {
        // 2 GB declared: rejected from the header alone.
        let mut buf = BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]);
        let err = Frame::split(&mut buf, 1 << 20).unwrap_err();
        assert!(matches!(err, Error::MessageTooLarge { .. }));
        assert!(buf.capacity() < 1 << 20);
    }

    #[test]
    fn rejects_length_below_four_and_negative() {
        for raw in [&b"Q\0\0\0\x03"[..], &b"Q\xff\xff\xff\xff"[..]] {
            let mut buf = BytesMut::from(raw);
            assert!(matches!(
                Frame::split(&mut buf, 1024),
                Err(Error::InvalidLength { .. })
            ));
        }
    }

    #[test]
    fn begin_finish_round_trip() {
        let mut buf = BytesMut::new();
        let start = begin_message(&mut buf, b'Z');
        buf.extend_from_slice(b"I");
        finish_message(&mut buf, start);
        assert_eq!(&buf[..], b"Z\0\0\0\x05I");
    }
}
