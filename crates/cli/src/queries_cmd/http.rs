//! A minimal HTTP/1.1 GET over `std::net::TcpStream`, enough to read the
//! admin API's JSON: one request with `Connection: close`, the response read
//! to its end (capped), `Content-Length` or chunked bodies (RFC 9112 §7.1).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};

/// Bound on connecting, and on each read or write.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response read; the admin API's lists are far smaller.
const MAX_RESPONSE: u64 = 64 << 20;

/// A response: status code and (de-chunked) body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `GET path` from `addr` (`host:port`).
///
/// # Errors
/// When the address does not resolve, nothing accepts the connection, the
/// exchange times out, or the response is not well-formed HTTP/1.x.
pub fn get(addr: &str, path: &str) -> anyhow::Result<Response> {
    let mut stream = connect(addr)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n\
         User-Agent: pgpilot\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE + 1).read_to_end(&mut raw)?;
    if raw.len() as u64 > MAX_RESPONSE {
        bail!("response larger than {} MiB", MAX_RESPONSE >> 20);
    }
    parse_response(&raw)
}

/// The first address of `addr` that accepts a connection.
fn connect(addr: &str) -> anyhow::Result<TcpStream> {
    let mut last = None;
    for candidate in addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
    {
        match TcpStream::connect_timeout(&candidate, TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e).with_context(|| format!("connecting to {addr}")),
        None => bail!("{addr} resolves to no address"),
    }
}

/// Splits a whole response into status and body.
///
/// # Errors
/// A missing end of headers, a malformed status line, a body shorter than
/// its `Content-Length`, or bad chunk framing.
pub fn parse_response(raw: &[u8]) -> anyhow::Result<Response> {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        bail!("response ended inside its headers");
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split(' ').collect::<Vec<_>>().as_slice() {
        [version, code, ..] if version.starts_with("HTTP/1.") => code.parse::<u16>().ok(),
        _ => None,
    };
    let Some(status) = status else {
        bail!("not an HTTP/1.x status line: {status_line:?}");
    };
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("bad Content-Length")?);
        }
    }
    let body = match (chunked, length) {
        (true, _) => dechunk(body)?,
        (false, Some(n)) if body.len() < n => {
            bail!("body has {} of its {n} bytes", body.len())
        }
        (false, Some(n)) => body[..n].to_vec(),
        (false, None) => body.to_vec(),
    };
    Ok(Response { status, body })
}

/// Decodes a chunked body: hex size line (extensions ignored), data, CRLF,
/// until the zero-size chunk; trailers are ignored.
///
/// # Errors
/// A bad size line, or data shorter than its chunk's size.
pub fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            bail!("chunked body ends inside a chunk-size line");
        };
        let line = String::from_utf8_lossy(&rest[..line_end]);
        let hex = line.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(hex, 16) else {
            bail!("bad chunk size {hex:?}");
        };
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size.saturating_add(2) || &rest[size..size + 2] != b"\r\n" {
            bail!("chunked body ends inside a {size}-byte chunk");
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_body() {
        let raw =
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-type: application/json\r\n\r\n[]";
        let r = parse_response(raw).unwrap();
        assert_eq!(
            r,
            Response {
                status: 200,
                body: b"[]".to_vec()
            }
        );
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n[]";
        assert!(parse_response(short).is_err());
    }

    #[test]
    fn chunked_body_with_extension_and_trailer() {
        let raw = b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n\
                    4;x=y\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (400, &b"{\"a\":1}"[..]));
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        for raw in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SSH-2.0-x\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab",
        ] {
            assert!(
                parse_response(raw).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
