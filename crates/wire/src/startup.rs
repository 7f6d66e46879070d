//! The untagged first packet of a connection: StartupMessage, SSLRequest,
//! GSSENCRequest and CancelRequest (protocol docs §55.2.1, §55.2.9, §55.2.10).
//!
//! It has no tag byte, only `len: i32, code: i32, body`; the code tells which
//! packet it is. The proxy's handshake calls [`Startup::split`] until it gets
//! a StartupMessage; the pool encodes its own with [`startup_message`].

use bytes::{BufMut, BytesMut};

use crate::cstr::{put_cstr, Reader};
use crate::error::{Error, Result};

/// Protocol version 3.0 as sent in a StartupMessage.
pub const PROTOCOL_3_0: i32 = 196_608;
/// The request code of an SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// The request code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// The request code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// PostgreSQL's own cap on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;

/// One decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// A StartupMessage for protocol 3.x: minor version and parameters in order.
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
    },
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// A request to cancel the query running on the backend `(pid, key)`.
    Cancel { pid: i32, key: i32 },
    /// A version code pgpilot does not speak (e.g. protocol 2.0).
    Unsupported { code: i32 },
}

impl Startup {
    /// Takes one packet off `buf`; `Ok(None)` until it is complete.
    pub fn split(buf: &mut BytesMut) -> Result<Option<Startup>> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if !(8..=MAX_STARTUP_LEN as i32).contains(&len) {
            return Err(startup_len_error(len));
        }
        let len = len as usize;
        if buf.len() < len {
            return Ok(None);
        }
        let packet = buf.split_to(len);
        decode(&packet[4..]).map(Some)
    }
}

fn startup_len_error(len: i32) -> Error {
    if len > MAX_STARTUP_LEN as i32 {
        Error::MessageTooLarge {
            len: len as usize,
            max: MAX_STARTUP_LEN,
        }
    } else {
        Error::InvalidLength { len: len.into() }
    }
}

fn decode(body: &[u8]) -> Result<Startup> {
    let mut r = Reader::new(body, "startup");
    let code = r.i32()?;
    match code {
        SSL_REQUEST_CODE => Ok(Startup::SslRequest),
        GSSENC_REQUEST_CODE => Ok(Startup::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            let pid = r.i32()?;
            let key = r.i32()?;
            Ok(Startup::Cancel { pid, key })
        }
        c if c >> 16 == 3 => Ok(Startup::Startup {
            minor: (c & 0xffff) as u16,
            params: decode_params(&mut r)?,
        }),
        code => Ok(Startup::Unsupported { code }),
    }
}

fn decode_params(r: &mut Reader<'_>) -> Result<Vec<(String, String)>> {
    let mut params = Vec::new();
    loop {
        let name = r.str()?;
        if name.is_empty() {
            r.finish()?;
            return Ok(params);
        }
        let value = r.str()?;
        params.push((name.to_owned(), value.to_owned()));
    }
}

/// Encodes a protocol 3.0 StartupMessage with `params` (e.g. `user`, `database`).
pub fn startup_message<'a>(
    buf: &mut BytesMut,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let start = buf.len();
    buf.put_i32(0);
    buf.put_i32(PROTOCOL_3_0);
    for (name, value) in params {
        put_cstr(buf, name.as_bytes());
        put_cstr(buf, value.as_bytes());
    }
    buf.put_u8(0);
    let len = (buf.len() - start) as i32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Encodes a CancelRequest for backend `(pid, key)`.
pub fn cancel_request(buf: &mut BytesMut, pid: i32, key: i32) {
    buf.put_i32(16);
    buf.put_i32(CANCEL_REQUEST_CODE);
    buf.put_i32(pid);
    buf.put_i32(key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_round_trip() {
        let mut buf = BytesMut::new();
        startup_message(&mut buf, [("user", "app"), ("database", "db")]);
        let got = Startup::split(&mut buf).unwrap().unwrap();
        assert_eq!(
            got,
            Startup::Startup {
                minor: 0,
                params: vec![
                    ("user".into(), "app".into()),
                    ("database".into(), "db".into())
                ]
            }
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn ssl_gss_cancel_and_unsupported() {
        let mut buf = BytesMut::from(&[0, 0, 0, 8, 4, 210, 22, 47][..]);
        assert_eq!(Startup::split(&mut buf).unwrap(), Some(Startup::SslRequest));
        let mut buf = BytesMut::from(&[0, 0, 0, 8, 4, 210, 22, 48][..]);
        assert_eq!(
            Startup::split(&mut buf).unwrap(),
            Some(Startup::GssEncRequest)
        );
        let mut buf = BytesMut::new();
        cancel_request(&mut buf, 42, -7);
        assert_eq!(
            Startup::split(&mut buf).unwrap(),
            Some(Startup::Cancel { pid: 42, key: -7 })
        );
        let mut buf = BytesMut::from(&[0, 0, 0, 8, 0, 2, 0, 0][..]);
        assert_eq!(
            Startup::split(&mut buf).unwrap(),
            Some(Startup::Unsupported { code: 2 << 16 })
        );
    }

    #[test]
    fn partial_and_hostile_lengths() {
        let mut buf = BytesMut::from(&[0, 0, 0][..]);
        assert_eq!(Startup::split(&mut buf).unwrap(), None);
        let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0][..]);
        assert!(Startup::split(&mut buf).is_err());
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 0, 3, 0, 0][..]);
        assert!(Startup::split(&mut buf).is_err());
    }

    #[test]
    fn unterminated_params_are_malformed() {
        let mut buf = BytesMut::from(&[0, 0, 0, 13, 0, 3, 0, 0, b'u', b's', b'e', b'r', 0][..]);
        assert!(Startup::split(&mut buf).is_err());
    }
}
