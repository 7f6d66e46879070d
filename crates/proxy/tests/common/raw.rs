//! Raw protocol clients for tests that must send what no driver would send:
//! a bare TCP socket, `pgpilot_wire` encoders, and readers whose every wait
//! is bounded, so a proxy that stops answering fails the test instead of
//! hanging it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use pgpilot_auth::ScramClient;
use pgpilot_wire::backend::{auth_code, Authentication, ErrorFields};
use pgpilot_wire::tag::backend as tag;
use pgpilot_wire::{frontend, startup, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on any single wait for the proxy.
pub const WAIT: Duration = Duration::from_secs(5);

/// Largest message these helpers accept from the proxy.
const MAX_MESSAGE: usize = 1 << 24;

/// A client socket speaking the protocol by hand.
pub struct RawConn {
    pub stream: TcpStream,
    /// Bytes received and not yet split into messages.
    pub buf: BytesMut,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        RawConn {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connects and logs in as `user` with SCRAM-SHA-256, up to the first
    /// ReadyForQuery.
    pub async fn login_scram(addr: SocketAddr, user: &str, password: &str, db: &str) -> RawConn {
        let mut conn = RawConn::connect(addr).await;
        conn.send_startup(&[("user", user), ("database", db)]).await;
        conn.scram(password).await;
        conn.until_ready().await;
        conn
    }

    /// Writes `bytes`; errors (the proxy may already have closed) are returned.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .await
            .unwrap_or_else(|e| panic!("send to proxy: {e}"));
    }

    /// Sends a protocol 3.0 StartupMessage with `params`.
    pub async fn send_startup(&mut self, params: &[(&str, &str)]) {
        let mut out = BytesMut::new();
        startup::startup_message(&mut out, params.iter().copied());
        self.send(&out).await;
    }

    /// Sends a simple Query.
    pub async fn send_query(&mut self, sql: &str) {
        let mut out = BytesMut::new();
        frontend::query(&mut out, sql);
        self.send(&out).await;
    }

    /// Runs `sql` as a simple query; the messages up to ReadyForQuery.
    pub async fn query(&mut self, sql: &str) -> Vec<Frame> {
        self.send_query(sql).await;
        self.until_ready().await
    }

    /// One read into the buffer; `false` at end of stream (a reset counts
    /// as the end). Panics when nothing arrives within [`WAIT`].
    async fn fill(&mut self) -> bool {
        match tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(0)) => false,
            Ok(Ok(_)) => true,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Ok(Err(e)) => panic!("read from proxy: {e}"),
            Err(_) => panic!("proxy sent nothing for {WAIT:?}"),
        }
    }

    /// The next raw byte (the answer to an SSLRequest); `None` at end of stream.
    pub async fn read_byte(&mut self) -> Option<u8> {
        if self.buf.is_empty() && !self.fill().await {
            return None;
        }
        let byte = self.buf[0];
        let _ = self.buf.split_to(1);
        Some(byte)
    }

    /// The next message; `None` at end of stream.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            let split = Frame::split(&mut self.buf, MAX_MESSAGE)
                .unwrap_or_else(|e| panic!("proxy sent an invalid message: {e}"));
            if let Some(frame) = split {
                return Some(frame);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Messages up to and including ReadyForQuery; panics if the proxy
    /// closes first (with the error it sent, if any).
    pub async fn until_ready(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let Some(frame) = self.next().await else {
                panic!(
                    "proxy closed before ReadyForQuery; error: {:?}",
                    first_error(&frames)
                );
            };
            let ready = frame.tag == tag::READY_FOR_QUERY;
            frames.push(frame);
            if ready {
                return frames;
            }
        }
    }

    /// Every message until the proxy closes the connection, which must
    /// happen within `within`.
    pub async fn until_closed(&mut self, within: Duration) -> Vec<Frame> {
        let mut frames = Vec::new();
        let read_all = async {
            while let Some(frame) = self.next().await {
                frames.push(frame);
            }
        };
        if tokio::time::timeout(within, read_all).await.is_err() {
            panic!("proxy did not close the connection within {within:?}");
        }
        frames
    }

    /// Answers the proxy's SCRAM-SHA-256 exchange up to AuthenticationOk.
    /// Panics on an ErrorResponse or any other method.
    pub async fn scram(&mut self, password: &str) {
        let sasl = self.expect_auth().await;
        assert_eq!(sasl.0, auth_code::SASL, "expected AuthenticationSASL");
        let mut client = ScramClient::new(password);
        let mut out = BytesMut::new();
        frontend::sasl_initial_response(
            &mut out,
            pgpilot_auth::SCRAM_SHA_256,
            &client.client_first(),
        );
        self.send(&out.split()).await;
        let (code, server_first) = self.expect_auth().await;
        assert_eq!(code, auth_code::SASL_CONTINUE);
        let client_final = client
            .handle_server_first(&server_first)
            .expect("valid server-first-message");
        frontend::sasl_response(&mut out, &client_final);
        self.send(&out).await;
        let (code, server_final) = self.expect_auth().await;
        assert_eq!(code, auth_code::SASL_FINAL);
        client
            .verify_server_final(&server_final)
            .expect("proxy proves it knows the verifier");
        let (code, _) = self.expect_auth().await;
        assert_eq!(code, auth_code::OK);
    }

    /// The next message, which must be an Authentication request: its code and data.
    async fn expect_auth(&mut self) -> (i32, Vec<u8>) {
        let frame = self.next().await.expect("proxy closed during login");
        if frame.tag == tag::ERROR_RESPONSE {
            panic!("login failed: {:?}", error_fields(&frame));
        }
        assert_eq!(frame.tag, tag::AUTHENTICATION, "expected Authentication");
        let auth = Authentication::decode(frame.body()).expect("valid Authentication");
        (auth.code, auth.data.to_vec())
    }
}

/// The fields of an ErrorResponse; panics on any other message.
pub fn error_fields(frame: &Frame) -> ErrorFields {
    assert_eq!(
        frame.tag,
        tag::ERROR_RESPONSE,
        "expected ErrorResponse, got {frame:?}"
    );
    ErrorFields::decode(frame.body()).expect("valid ErrorResponse")
}

/// The first ErrorResponse among `frames`.
pub fn first_error(frames: &[Frame]) -> Option<ErrorFields> {
    frames
        .iter()
        .find(|f| f.tag == tag::ERROR_RESPONSE)
        .map(error_fields)
}

/// The first column of every DataRow in `frames`, as text (`None` for NULL).
pub fn first_column(frames: &[Frame]) -> Vec<Option<String>> {
    frames
        .iter()
        .filter(|f| f.tag == tag::DATA_ROW)
        .map(|f| {
            let body = f.body();
            let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
            usize::try_from(len)
                .ok()
                .map(|len| String::from_utf8_lossy(&body[6..6 + len]).into_owned())
        })
        .collect()
}
