//! Reading the protocol's primitive field types out of a message body.
//!
//! A [`Reader`] walks a body front to back; every read is bounds-checked and
//! reports the message it belongs to, so a malformed body becomes an
//! [`Error::Malformed`] and never a panic.

use crate::error::{Error, Result};

/// Cursor over one message body.
pub(crate) struct Reader<'a> {
    /// Bytes not yet consumed.
    rest: &'a [u8],
    /// Message name for error reports.
    message: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a [u8], message: &'static str) -> Reader<'a> {
        Reader {
            rest: body,
            message,
        }
    }

    /// A NUL-terminated string, without its terminator.
    pub(crate) fn cstr(&mut self) -> Result<&'a [u8]> {
        let nul = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| Error::malformed(self.message, "unterminated string"))?;
        let (s, tail) = self.rest.split_at(nul);
        self.rest = &tail[1..];
        Ok(s)
    }

    /// A NUL-terminated string that must be UTF-8.
    pub(crate) fn str(&mut self) -> Result<&'a str> {
        let bytes = self.cstr()?;
        std::str::from_utf8(bytes).map_err(|_| Error::malformed(self.message, "invalid UTF-8"))
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        let (&b, tail) = self
            .rest
            .split_first()
            .ok_or_else(|| Error::malformed(self.message, "truncated"))?;
        self.rest = tail;
        Ok(b)
    }

    pub(crate) fn i16(&mut self) -> Result<i16> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn i32(&mut self) -> Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Exactly `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(Error::malformed(self.message, "truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Everything not yet read.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Fails unless the body has been consumed completely.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::malformed(self.message, "trailing bytes"))
        }
    }
}

/// Appends `s` and its NUL terminator.
pub(crate) fn put_cstr(buf: &mut bytes::BytesMut, s: &[u8]) {
    buf.extend_from_slice(s);
    buf.extend_from_slice(&[0]);
}
