//! Running one small simple query on a server connection outside any
//! client session: health checks, LSN and lag sampling, catalog look-ups.

use bytes::BytesMut;
use pgpilot_wire::backend::ErrorFields;
use pgpilot_wire::tag::backend as tag;
use pgpilot_wire::{frontend, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::server::ServerConn;

/// Largest message accepted in a probe answer.
const MAX_PROBE_MESSAGE: usize = 16 << 20;

/// One result row as text values (`None` for SQL NULL).
pub type Row = Vec<Option<String>>;

/// Runs `sql` (simple protocol, one statement) and returns its rows. A
/// server ErrorResponse becomes [`Error::Server`]; the connection stays
/// usable in that case.
pub async fn query(conn: &mut ServerConn, sql: &str) -> Result<Vec<Row>> {
    let mut out = BytesMut::new();
    frontend::query(&mut out, sql);
    let io = |e, c: &ServerConn| Error::Io {
        addr: c.addr.to_string(),
        source: e,
    };
    conn.stream.write_all(&out).await.map_err(|e| io(e, conn))?;
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        let frame = read_frame(conn, MAX_PROBE_MESSAGE).await?;
        match frame.tag {
            tag::DATA_ROW => rows.push(data_row(&frame, conn)?),
            tag::ERROR_RESPONSE => error = ErrorFields::decode(frame.body()).ok(),
            tag::READY_FOR_QUERY => break,
            _ => {}
        }
    }
    match error {
        Some(fields) => Err(Error::Server {
            addr: conn.addr.to_string(),
            fields,
        }),
        None => Ok(rows),
    }
}

/// The next whole message from `conn` (at most `max` bytes), reading as
/// needed; end of stream is an error.
pub async fn read_frame(conn: &mut ServerConn, max: usize) -> Result<Frame> {
    loop {
        match Frame::split(&mut conn.read_buf, max) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(source) => {
                return Err(Error::Protocol {
                    addr: conn.addr.to_string(),
                    source,
                })
            }
        }
        let n = conn
            .stream
            .read_buf(&mut conn.read_buf)
            .await
            .map_err(|e| Error::Io {
                addr: conn.addr.to_string(),
                source: e,
            })?;
        if n == 0 {
            let eof = std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            );
            return Err(Error::Io {
                addr: conn.addr.to_string(),
                source: eof,
            });
        }
    }
}

/// Decodes a DataRow's columns as UTF-8 text.
fn data_row(frame: &Frame, conn: &ServerConn) -> Result<Row> {
    let malformed = |reason| Error::Protocol {
        addr: conn.addr.to_string(),
        source: pgpilot_wire::Error::Malformed {
            message: "DataRow",
            reason,
        },
    };
    let body = frame.body();
    let count = body.get(..2).ok_or_else(|| malformed("truncated"))?;
    let mut rest = &body[2..];
    let mut row = Vec::with_capacity(u16::from_be_bytes([count[0], count[1]]) as usize);
    for _ in 0..u16::from_be_bytes([count[0], count[1]]) {
        let len_bytes = rest.get(..4).ok_or_else(|| malformed("truncated"))?;
        let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        rest = &rest[4..];
        if len < 0 {
            row.push(None);
            continue;
        }
        let value = rest
            .get(..len as usize)
            .ok_or_else(|| malformed("truncated"))?;
        row.push(Some(String::from_utf8_lossy(value).into_owned()));
        rest = &rest[len as usize..];
    }
    Ok(row)
}

/// Parses an LSN as PostgreSQL prints it (`16/B374D848`).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some((hi << 32) | lo)
}

/// Formats an LSN the way PostgreSQL does.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trip() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("x/1"), None);
        assert_eq!(parse_lsn("1"), None);
        assert_eq!(parse_lsn("100000000/0"), None);
    }
}
