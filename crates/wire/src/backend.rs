//! Messages a server sends: decoders for the ones the proxy acts on and
//! encoders for the ones it answers clients with itself.
//!
//! The relay forwards most backend messages untouched; it only looks inside
//! ReadyForQuery (transaction status), ErrorResponse (logging, recovery),
//! ParameterStatus and the authentication exchange.

use bytes::{BufMut, BytesMut};

use crate::cstr::{put_cstr, Reader};
use crate::error::{Error, Result};
use crate::frame::{begin_message, finish_message};
use crate::tag::backend as tag;

/// Authentication request codes (§55.7 "AuthenticationOk" and siblings).
pub mod auth_code {
    pub const OK: i32 = 0;
    pub const CLEARTEXT_PASSWORD: i32 = 3;
    pub const MD5_PASSWORD: i32 = 5;
    pub const SASL: i32 = 10;
    pub const SASL_CONTINUE: i32 = 11;
    pub const SASL_FINAL: i32 = 12;
}

/// An Authentication* message: its code and the bytes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authentication<'a> {
    pub code: i32,
    pub data: &'a [u8],
}

impl<'a> Authentication<'a> {
    pub fn decode(body: &'a [u8]) -> Result<Authentication<'a>> {
        let mut r = Reader::new(body, "Authentication");
        let code = r.i32()?;
        Ok(Authentication {
            code,
            data: r.rest(),
        })
    }

    /// The 4-byte salt of AuthenticationMD5Password.
    pub fn md5_salt(&self) -> Result<[u8; 4]> {
        <[u8; 4]>::try_from(self.data)
            .map_err(|_| Error::malformed("AuthenticationMD5Password", "salt must be 4 bytes"))
    }

    /// Mechanism names of AuthenticationSASL.
    pub fn sasl_mechanisms(&self) -> Result<Vec<&'a str>> {
        let mut r = Reader::new(self.data, "AuthenticationSASL");
        let mut out = Vec::new();
        loop {
            let m = r.str()?;
            if m.is_empty() {
                return Ok(out);
            }
            out.push(m);
        }
    }
}

/// ParameterStatus: a run-time parameter's current value.
pub fn parameter_status_fields(body: &[u8]) -> Result<(&str, &str)> {
    let mut r = Reader::new(body, "ParameterStatus");
    let name = r.str()?;
    let value = r.str()?;
    Ok((name, value))
}

/// BackendKeyData: `(process id, secret key)` for CancelRequest.
pub fn backend_key_data_fields(body: &[u8]) -> Result<(i32, i32)> {
    let mut r = Reader::new(body, "BackendKeyData");
    let pid = r.i32()?;
    let key = r.i32()?;
    Ok((pid, key))
}

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// `'I'`: not in a transaction block.
    Idle,
    /// `'T'`: in a transaction block.
    InTransaction,
    /// `'E'`: in a failed transaction block.
    Failed,
}

impl TransactionStatus {
    pub fn decode(body: &[u8]) -> Result<TransactionStatus> {
        match body {
            [b'I'] => Ok(TransactionStatus::Idle),
            [b'T'] => Ok(TransactionStatus::InTransaction),
            [b'E'] => Ok(TransactionStatus::Failed),
            _ => Err(Error::malformed("ReadyForQuery", "unknown status")),
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse that pgpilot reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// `S`: ERROR, FATAL, PANIC, WARNING, NOTICE…
    pub severity: String,
    /// `C`: the SQLSTATE.
    pub code: String,
    /// `M`: the primary message.
    pub message: String,
}

impl ErrorFields {
    /// Decodes the fields pgpilot cares about; unknown fields are skipped.
    pub fn decode(body: &[u8]) -> Result<ErrorFields> {
        let mut r = Reader::new(body, "ErrorResponse");
        let mut out = ErrorFields::default();
        loop {
            let kind = r.u8()?;
            if kind == 0 {
                return Ok(out);
            }
            let value = String::from_utf8_lossy(r.cstr()?).into_owned();
            match kind {
                b'S' => out.severity = value,
                b'C' => out.code = value,
                b'M' => out.message = value,
                _ => {}
            }
        }
    }
}

/// The command tag of CommandComplete, e.g. `SELECT 1` or `COMMIT`.
pub fn command_tag(body: &[u8]) -> Result<&[u8]> {
    Reader::new(body, "CommandComplete").cstr()
}

/// Encodes an Authentication* message with `code` and `data`.
pub fn authentication(buf: &mut BytesMut, code: i32, data: &[u8]) {
    let start = begin_message(buf, tag::AUTHENTICATION);
    buf.put_i32(code);
    buf.extend_from_slice(data);
    finish_message(buf, start);
}

/// Encodes AuthenticationSASL offering `mechanisms`.
pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    let start = begin_message(buf, tag::AUTHENTICATION);
    buf.put_i32(auth_code::SASL);
    for m in mechanisms {
        put_cstr(buf, m.as_bytes());
    }
    buf.put_u8(0);
    finish_message(buf, start);
}

/// Encodes ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    let start = begin_message(buf, tag::PARAMETER_STATUS);
    put_cstr(buf, name.as_bytes());
    put_cstr(buf, value.as_bytes());
    finish_message(buf, start);
}

/// Encodes BackendKeyData.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, key: i32) {
    let start = begin_message(buf, tag::BACKEND_KEY_DATA);
    buf.put_i32(pid);
    buf.put_i32(key);
    finish_message(buf, start);
}

/// Encodes ReadyForQuery.
pub fn ready_for_query(buf: &mut BytesMut, status: TransactionStatus) {
    buf.extend_from_slice(&[tag::READY_FOR_QUERY, 0, 0, 0, 5, status.byte()]);
}

/// Encodes an ErrorResponse (or, with `notice`, a NoticeResponse) with
/// severity, SQLSTATE and message.
pub fn error_response(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    let start = begin_message(buf, tag::ERROR_RESPONSE);
    error_fields(buf, severity, code, message);
    finish_message(buf, start);
}

/// Encodes a NoticeResponse.
pub fn notice_response(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    let start = begin_message(buf, tag::NOTICE_RESPONSE);
    error_fields(buf, severity, code, message);
    finish_message(buf, start);
}

fn error_fields(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    for (kind, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        buf.put_u8(kind);
        put_cstr(buf, value.as_bytes());
    }
    buf.put_u8(0);
}

/// Encodes a body-less message such as ParseComplete or CloseComplete.
pub fn empty(buf: &mut BytesMut, message_tag: u8) {
    buf.extend_from_slice(&[message_tag, 0, 0, 0, 4]);
}

/// Encodes CommandComplete with `command_tag`.
pub fn command_complete(buf: &mut BytesMut, command_tag: &str) {
    let start = begin_message(buf, tag::COMMAND_COMPLETE);
    put_cstr(buf, command_tag.as_bytes());
    finish_message(buf, start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;

    #[test]
    fn error_response_round_trip() {
        let mut buf = BytesMut::new();
        error_response(&mut buf, "FATAL", "28P01", "password authentication failed");
        let f = Frame::split(&mut buf, 1 << 16).unwrap().unwrap();
        assert_eq!(f.tag, b'E');
        let e = ErrorFields::decode(f.body()).unwrap();
        assert_eq!(e.severity, "FATAL");
        assert_eq!(e.code, "28P01");
        assert_eq!(e.message, "password authentication failed");
    }

    #[test]
    fn truncated_error_is_malformed_not_panic() {
        assert!(ErrorFields::decode(b"SERROR").is_err());
        assert!(ErrorFields::decode(b"").is_err());
    }

    #[test]
    fn auth_sasl_mechanisms() {
        let mut buf = BytesMut::new();
        authentication_sasl(&mut buf, &["SCRAM-SHA-256"]);
        let f = Frame::split(&mut buf, 1 << 16).unwrap().unwrap();
        let a = Authentication::decode(f.body()).unwrap();
        assert_eq!(a.code, auth_code::SASL);
        assert_eq!(a.sasl_mechanisms().unwrap(), vec!["SCRAM-SHA-256"]);
        assert!(a.md5_salt().is_err());
    }

    #[test]
    fn ready_for_query_status() {
        let mut buf = BytesMut::new();
        ready_for_query(&mut buf, TransactionStatus::Failed);
        let f = Frame::split(&mut buf, 64).unwrap().unwrap();
        assert_eq!(
            TransactionStatus::decode(f.body()).unwrap(),
            TransactionStatus::Failed
        );
        assert!(TransactionStatus::decode(b"X").is_err());
    }

    #[test]
    fn key_data_and_parameter_status() {
        let mut buf = BytesMut::new();
        backend_key_data(&mut buf, 10, -20);
        parameter_status(&mut buf, "TimeZone", "UTC");
        let k = Frame::split(&mut buf, 64).unwrap().unwrap();
        assert_eq!(backend_key_data_fields(k.body()).unwrap(), (10, -20));
        let p = Frame::split(&mut buf, 64).unwrap().unwrap();
        assert_eq!(
            parameter_status_fields(p.body()).unwrap(),
            ("TimeZone", "UTC")
        );
    }
}
