//! A frontend driven message by message, for the prepared-statement and
//! cancel tests that need what real drivers never send: a reused statement
//! name, a Bind to a name that was never parsed, a CancelRequest with a
//! chosen (pid, key), and the exact reply sequence to compare.
//!
//! Encoders come from `pgpilot_wire`, SCRAM from `pgpilot_auth`; every wait
//! is bounded so a proxy that stops answering fails the test instead of
//! hanging it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use pgpilot_auth::{ScramClient, SCRAM_SHA_256};
use pgpilot_wire::backend::{auth_code, Authentication, ErrorFields};
use pgpilot_wire::frame::{begin_message, finish_message};
use pgpilot_wire::frontend::{self, Target};
use pgpilot_wire::tag::backend as tag;
use pgpilot_wire::{startup, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest wait for any one message.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// One backend message as received.
#[derive(Clone)]
pub struct Message {
    pub tag: u8,
    pub body: Bytes,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.tag as char)?;
        if self.tag == tag::ERROR_RESPONSE {
            write!(f, "({:?})", ErrorFields::decode(&self.body).ok())?;
        }
        Ok(())
    }
}

/// A logged-in connection driven message by message.
pub struct HandClient {
    stream: TcpStream,
    buf: BytesMut,
    /// BackendKeyData the proxy issued.
    pub pid: i32,
    pub key: i32,
}

impl HandClient {
    /// Connects to `addr` and logs in (SCRAM-SHA-256, md5, cleartext or
    /// trust, whatever is asked), reading up to the first ReadyForQuery.
    pub async fn connect(addr: SocketAddr, user: &str, password: &str, db: &str) -> HandClient {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        let mut c = HandClient {
            stream,
            buf: BytesMut::new(),
            pid: 0,
            key: 0,
        };
        c.send(|b| startup::startup_message(b, [("user", user), ("database", db)]))
            .await;
        c.authenticate(user, password).await;
        loop {
            let m = c.recv().await;
            match m.tag {
                tag::BACKEND_KEY_DATA => {
                    let (pid, key) = pgpilot_wire::backend::backend_key_data_fields(&m.body)
                        .expect("BackendKeyData");
                    (c.pid, c.key) = (pid, key);
                }
                tag::READY_FOR_QUERY => return c,
                tag::ERROR_RESPONSE => panic!("login failed: {m:?}"),
                _ => {}
            }
        }
    }

    async fn authenticate(&mut self, user: &str, password: &str) {
        let mut scram: Option<ScramClient> = None;
        loop {
            let m = self.recv().await;
            assert_eq!(m.tag, tag::AUTHENTICATION, "during login: {m:?}");
            let auth = Authentication::decode(&m.body).expect("Authentication");
            match auth.code {
                auth_code::OK => return,
                auth_code::CLEARTEXT_PASSWORD => {
                    self.send(|b| frontend::password_message(b, password.as_bytes()))
                        .await
                }
                auth_code::MD5_PASSWORD => {
                    let salt = auth.md5_salt().expect("md5 salt");
                    let answer = pgpilot_auth::md5_response(user, password, salt);
                    self.send(|b| frontend::password_message(b, answer.as_bytes()))
                        .await
                }
                auth_code::SASL => {
                    let client = ScramClient::new(password);
                    let first = client.client_first();
                    self.send(|b| frontend::sasl_initial_response(b, SCRAM_SHA_256, &first))
                        .await;
                    scram = Some(client);
                }
                auth_code::SASL_CONTINUE => {
                    let client = scram.as_mut().expect("SASLContinue after SASL");
                    let answer = client.handle_server_first(auth.data).expect("server-first");
                    self.send(|b| frontend::sasl_response(b, &answer)).await;
                }
                auth_code::SASL_FINAL => {
                    let client = scram.as_ref().expect("SASLFinal after SASL");
                    client.verify_server_final(auth.data).expect("server-final");
                }
                other => panic!("unexpected authentication request {other}"),
            }
        }
    }

    /// Encodes messages with `build` and writes them in one go.
    pub async fn send(&mut self, build: impl FnOnce(&mut BytesMut)) {
        let mut out = BytesMut::new();
        build(&mut out);
        self.stream.write_all(&out).await.expect("write to proxy");
    }

    /// The next backend message; panics after [`RECV_TIMEOUT`] or at end of stream.
    pub async fn recv(&mut self) -> Message {
        loop {
            if let Some(f) = Frame::split(&mut self.buf, 1 << 30).expect("valid backend frame") {
                return Message {
                    tag: f.tag,
                    body: f.raw.slice(5..),
                };
            }
            let read = tokio::time::timeout(RECV_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("proxy answered within the timeout")
                .expect("read from proxy");
            assert!(read > 0, "proxy closed the connection");
        }
    }

    /// Messages up to and including the next ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        loop {
            let m = self.recv().await;
            let done = m.tag == tag::READY_FOR_QUERY;
            out.push(m);
            if done {
                return out;
            }
        }
    }

    /// Sends `build`'s messages (ending in Sync) and returns the answer.
    pub async fn round_trip(&mut self, build: impl FnOnce(&mut BytesMut)) -> Vec<Message> {
        self.send(build).await;
        self.until_ready().await
    }

    /// Runs one simple query and returns the answer.
    pub async fn simple(&mut self, sql: &str) -> Vec<Message> {
        self.round_trip(|b| frontend::query(b, sql)).await
    }
}

/// Parse of `query` (no declared parameter types) as statement `name`.
pub fn parse(b: &mut BytesMut, name: &str, query: &str) {
    frontend::parse(b, name.as_bytes(), query.as_bytes(), &[]);
}

/// Bind of statement `name` to the unnamed portal, no parameters, text results.
pub fn bind(b: &mut BytesMut, name: &str) {
    frontend::bind(b, b"", name.as_bytes(), &[0, 0, 0, 0, 0, 0]);
}

/// Describe of statement `name`.
pub fn describe(b: &mut BytesMut, name: &str) {
    frontend::named(b, false, Target::Statement, name.as_bytes());
}

/// Close of statement `name`.
pub fn close(b: &mut BytesMut, name: &str) {
    frontend::named(b, true, Target::Statement, name.as_bytes());
}

/// Execute of the unnamed portal, all rows.
pub fn execute(b: &mut BytesMut) {
    let start = begin_message(b, b'E');
    b.put_u8(0);
    b.put_i32(0);
    finish_message(b, start);
}

/// CopyData carrying `data`.
pub fn copy_data(b: &mut BytesMut, data: &[u8]) {
    let start = begin_message(b, b'd');
    b.extend_from_slice(data);
    finish_message(b, start);
}

/// CopyDone.
pub fn copy_done(b: &mut BytesMut) {
    b.extend_from_slice(&[b'c', 0, 0, 0, 4]);
}

pub fn sync(b: &mut BytesMut) {
    frontend::sync(b);
}

/// Bind + Execute + Sync of statement `name`.
pub fn run(b: &mut BytesMut, name: &str) {
    bind(b, name);
    execute(b);
    sync(b);
}

/// The message tags as a string, e.g. `"12DCZ"`, for compact assertions.
pub fn tags(msgs: &[Message]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

/// SQLSTATEs of the ErrorResponses among `msgs`, in order.
pub fn error_codes(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.tag == tag::ERROR_RESPONSE)
        .map(|m| ErrorFields::decode(&m.body).expect("ErrorResponse").code)
        .collect()
}

/// The first column of every DataRow among `msgs`, as text (NULL as "NULL").
pub fn first_column(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.tag == tag::DATA_ROW)
        .map(|m| {
            let b = &m.body;
            assert!(b.len() >= 6, "DataRow too short");
            let len = i32::from_be_bytes([b[2], b[3], b[4], b[5]]);
            if len < 0 {
                return "NULL".to_owned();
            }
            String::from_utf8_lossy(&b[6..6 + len as usize]).into_owned()
        })
        .collect()
}

/// The transaction status of the last ReadyForQuery among `msgs`.
pub fn status(msgs: &[Message]) -> char {
    let z = msgs
        .iter()
        .rev()
        .find(|m| m.tag == tag::READY_FOR_QUERY)
        .expect("a ReadyForQuery");
    z.body[0] as char
}

/// Sends a CancelRequest for `(pid, key)` to `addr` on a new connection and
/// waits until the peer closes it (a CancelRequest is never answered), so
/// the request has been acted on when this returns.
pub async fn send_cancel(addr: SocketAddr, pid: i32, key: i32) {
    let mut stream = TcpStream::connect(addr).await.expect("connect for cancel");
    let mut buf = BytesMut::new();
    startup::cancel_request(&mut buf, pid, key);
    stream.write_all(&buf).await.expect("write CancelRequest");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(RECV_TIMEOUT, stream.read_to_end(&mut rest)).await;
}
