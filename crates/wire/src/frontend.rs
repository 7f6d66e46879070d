//! Messages a client sends: decoders for the ones the proxy must look inside
//! and encoders for the ones it writes to servers itself.
//!
//! Decoders borrow from the frame (no copies); the proxy's `session` uses
//! them to track prepared statements and to rewrite statement names.

use bytes::{BufMut, BytesMut};

use crate::cstr::{put_cstr, Reader};
use crate::error::Result;
use crate::frame::{begin_message, finish_message};
use crate::tag::frontend as tag;

/// Parse: create a prepared statement (§55.7 "Parse").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Statement name; empty for the unnamed statement.
    pub name: &'a [u8],
    /// The SQL text.
    pub query: &'a [u8],
    /// Parameter count followed by the OIDs, undecoded (i16 + n×i32).
    pub param_types: &'a [u8],
}

impl<'a> Parse<'a> {
    /// Decodes a Parse body.
    pub fn decode(body: &'a [u8]) -> Result<Parse<'a>> {
        let mut r = Reader::new(body, "Parse");
        let name = r.cstr()?;
        let query = r.cstr()?;
        let param_types = r.rest();
        let mut check = Reader::new(param_types, "Parse");
        let n = check.i16()?;
        check.take(
            usize::try_from(n)
                .unwrap_or(usize::MAX / 8)
                .saturating_mul(4),
        )?;
        check.finish()?;
        Ok(Parse {
            name,
            query,
            param_types,
        })
    }
}

/// Bind: create a portal from a statement (§55.7 "Bind").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind<'a> {
    /// Destination portal; empty for the unnamed portal.
    pub portal: &'a [u8],
    /// Source statement name.
    pub statement: &'a [u8],
    /// Formats, parameter values and result formats, undecoded.
    pub rest: &'a [u8],
}

impl<'a> Bind<'a> {
    /// Decodes the names of a Bind body; the parameters stay raw.
    pub fn decode(body: &'a [u8]) -> Result<Bind<'a>> {
        let mut r = Reader::new(body, "Bind");
        let portal = r.cstr()?;
        let statement = r.cstr()?;
        Ok(Bind {
            portal,
            statement,
            rest: r.rest(),
        })
    }
}

impl Bind<'_> {
    /// The parameter values (`None` for NULL), in the format the client
    /// chose for each (text or binary: see the format codes before them).
    pub fn params(&self) -> Result<Vec<Option<&[u8]>>> {
        let mut r = Reader::new(self.rest, "Bind");
        let formats = r.i16()?;
        r.take(
            usize::try_from(formats)
                .unwrap_or(usize::MAX / 4)
                .saturating_mul(2),
        )?;
        let count = r.i16()?;
        let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1024));
        for _ in 0..count.max(0) {
            let len = r.i32()?;
            out.push(if len < 0 {
                None
            } else {
                Some(r.take(len as usize)?)
            });
        }
        Ok(out)
    }
}

/// What a Describe or Close refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `'S'`: a prepared statement.
    Statement,
    /// `'P'`: a portal.
    Portal,
}

/// Describe or Close: both are a target kind and a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Named<'a> {
    /// Statement or portal.
    pub target: Target,
    /// Its name; empty for the unnamed one.
    pub name: &'a [u8],
}

impl<'a> Named<'a> {
    /// Decodes a Describe or Close body.
    pub fn decode(body: &'a [u8]) -> Result<Named<'a>> {
        let mut r = Reader::new(body, "Describe/Close");
        let target = match r.u8()? {
            b'S' => Target::Statement,
            b'P' => Target::Portal,
            _ => {
                return Err(crate::Error::malformed(
                    "Describe/Close",
                    "target must be 'S' or 'P'",
                ))
            }
        };
        let name = r.cstr()?;
        r.finish()?;
        Ok(Named { target, name })
    }
}

/// An Execute: the portal to run and the row limit (0: all rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execute<'a> {
    pub portal: &'a [u8],
    pub max_rows: i32,
}

impl<'a> Execute<'a> {
    /// Decodes an Execute body.
    pub fn decode(body: &'a [u8]) -> Result<Execute<'a>> {
        let mut r = Reader::new(body, "Execute");
        let portal = r.cstr()?;
        let max_rows = r.i32()?;
        r.finish()?;
        Ok(Execute { portal, max_rows })
    }
}

/// The SQL text of a simple Query message.
pub fn query_text(body: &[u8]) -> Result<&[u8]> {
    let mut r = Reader::new(body, "Query");
    let sql = r.cstr()?;
    r.finish()?;
    Ok(sql)
}

/// A SASLInitialResponse: chosen mechanism and its first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaslInitialResponse<'a> {
    pub mechanism: &'a str,
    pub data: &'a [u8],
}

impl<'a> SaslInitialResponse<'a> {
    /// Decodes the body of a `'p'` message sent in answer to AuthenticationSASL.
    pub fn decode(body: &'a [u8]) -> Result<SaslInitialResponse<'a>> {
        let mut r = Reader::new(body, "SASLInitialResponse");
        let mechanism = r.str()?;
        let len = r.i32()?;
        let data = if len < 0 {
            &[][..]
        } else {
            r.take(len as usize)?
        };
        r.finish()?;
        Ok(SaslInitialResponse { mechanism, data })
    }
}

/// The password of a PasswordMessage (cleartext or md5 answer), without NUL.
pub fn password(body: &[u8]) -> Result<&[u8]> {
    let mut r = Reader::new(body, "PasswordMessage");
    let p = r.cstr()?;
    r.finish()?;
    Ok(p)
}

/// Encodes Parse.
pub fn parse(buf: &mut BytesMut, name: &[u8], query: &[u8], param_types: &[u8]) {
    let start = begin_message(buf, tag::PARSE);
    put_cstr(buf, name);
    put_cstr(buf, query);
    if param_types.is_empty() {
        buf.put_i16(0);
    } else {
        buf.extend_from_slice(param_types);
    }
    finish_message(buf, start);
}

/// Encodes Bind with the given names and the undecoded remainder of a client's Bind.
pub fn bind(buf: &mut BytesMut, portal: &[u8], statement: &[u8], rest: &[u8]) {
    let start = begin_message(buf, tag::BIND);
    put_cstr(buf, portal);
    put_cstr(buf, statement);
    buf.extend_from_slice(rest);
    finish_message(buf, start);
}

/// Encodes Describe (`close = false`) or Close (`close = true`).
pub fn named(buf: &mut BytesMut, close: bool, target: Target, name: &[u8]) {
    let start = begin_message(buf, if close { tag::CLOSE } else { tag::DESCRIBE });
    buf.put_u8(match target {
        Target::Statement => b'S',
        Target::Portal => b'P',
    });
    put_cstr(buf, name);
    finish_message(buf, start);
}

/// Encodes Sync.
pub fn sync(buf: &mut BytesMut) {
    buf.extend_from_slice(&[tag::SYNC, 0, 0, 0, 4]);
}

/// Encodes Terminate.
pub fn terminate(buf: &mut BytesMut) {
    buf.extend_from_slice(&[tag::TERMINATE, 0, 0, 0, 4]);
}

/// Encodes a simple Query.
pub fn query(buf: &mut BytesMut, sql: &str) {
    let start = begin_message(buf, tag::QUERY);
    put_cstr(buf, sql.as_bytes());
    finish_message(buf, start);
}

/// Encodes a PasswordMessage (cleartext or md5 answer).
pub fn password_message(buf: &mut BytesMut, password: &[u8]) {
    let start = begin_message(buf, tag::PASSWORD);
    put_cstr(buf, password);
    finish_message(buf, start);
}

/// Encodes SASLInitialResponse.
pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    let start = begin_message(buf, tag::PASSWORD);
    put_cstr(buf, mechanism.as_bytes());
    buf.put_i32(data.len() as i32);
    buf.extend_from_slice(data);
    finish_message(buf, start);
}

/// Encodes SASLResponse.
pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    let start = begin_message(buf, tag::PASSWORD);
    buf.extend_from_slice(data);
    finish_message(buf, start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, HEADER_LEN};

    fn one(buf: &mut BytesMut) -> Frame {
        Frame::split(buf, 1 << 20).unwrap().unwrap()
    }

    #[test]
    fn parse_round_trip() {
        let mut buf = BytesMut::new();
        parse(&mut buf, b"s1", b"select $1", &[0, 1, 0, 0, 0, 23]);
        let f = one(&mut buf);
        let p = Parse::decode(f.body()).unwrap();
        assert_eq!(p.name, b"s1");
        assert_eq!(p.query, b"select $1");
        assert_eq!(p.param_types, &[0, 1, 0, 0, 0, 23]);
    }

    #[test]
    fn parse_with_lying_param_count_is_malformed() {
        assert!(Parse::decode(b"s\0q\0\x00\x05\0\0\0\x17").is_err());
        assert!(Parse::decode(b"s\0q\0\xff\xff").is_err());
        assert!(Parse::decode(b"s\0q").is_err());
    }

    #[test]
    fn bind_rename_keeps_parameters() {
        let mut buf = BytesMut::new();
        bind(&mut buf, b"", b"client", b"\0\0\0\x01\0\0\0\x01x\0\0");
        let f = one(&mut buf);
        let b = Bind::decode(f.body()).unwrap();
        let mut out = BytesMut::new();
        bind(&mut out, b.portal, b"PGPILOT_7", b.rest);
        let g = one(&mut out);
        let b2 = Bind::decode(g.body()).unwrap();
        assert_eq!(b2.statement, b"PGPILOT_7");
        assert_eq!(b2.rest, b.rest);
    }

    #[test]
    fn bind_params_decode_values_and_nulls() {
        // 1 format code (text), 2 params: 'ab' and NULL, 0 result formats.
        let rest = b"\0\x01\0\0\0\x02\0\0\0\x02ab\xff\xff\xff\xff\0\0";
        let b = Bind {
            portal: b"",
            statement: b"s",
            rest,
        };
        assert_eq!(b.params().unwrap(), vec![Some(&b"ab"[..]), None]);
        let lying = Bind {
            portal: b"",
            statement: b"s",
            rest: b"\0\0\0\x01\0\0\0\x09ab",
        };
        assert!(lying.params().is_err());
    }

    #[test]
    fn describe_close_round_trip_and_bad_target() {
        let mut buf = BytesMut::new();
        named(&mut buf, true, Target::Statement, b"s1");
        let f = one(&mut buf);
        assert_eq!(f.tag, b'C');
        let n = Named::decode(f.body()).unwrap();
        assert_eq!(
            n,
            Named {
                target: Target::Statement,
                name: b"s1"
            }
        );
        assert!(Named::decode(b"Xs1\0").is_err());
    }

    #[test]
    fn sasl_and_password_round_trip() {
        let mut buf = BytesMut::new();
        sasl_initial_response(&mut buf, "SCRAM-SHA-256", b"n,,n=,r=abc");
        let f = one(&mut buf);
        let s = SaslInitialResponse::decode(f.body()).unwrap();
        assert_eq!(s.mechanism, "SCRAM-SHA-256");
        assert_eq!(s.data, b"n,,n=,r=abc");
        password_message(&mut buf, b"md5abc");
        let f = one(&mut buf);
        assert_eq!(password(f.body()).unwrap(), b"md5abc");
        assert_eq!(f.raw.len(), HEADER_LEN + 7);
    }
}
