//! Opening a server connection: TCP connect, StartupMessage, authentication
//! (SCRAM-SHA-256, md5, cleartext, trust) and the ParameterStatus /
//! BackendKeyData preamble up to the first ReadyForQuery (protocol docs §55.2.1).

use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgpilot_auth::ScramClient;
use pgpilot_wire::backend::{self, auth_code, Authentication, ErrorFields};
use pgpilot_wire::tag::backend as tag;
use pgpilot_wire::{frontend, startup, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::server::ServerConn;

/// Largest message accepted from a server during login.
const MAX_LOGIN_MESSAGE: usize = 1 << 20;

/// Where and as whom to log in.
#[derive(Clone)]
pub struct LoginParams {
    /// `host:port`.
    pub addr: String,
    /// Role on the server.
    pub user: String,
    /// Password for that role, if the server asks for one.
    pub password: Option<String>,
    /// Database to connect to.
    pub database: String,
}

impl std::fmt::Debug for LoginParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginParams")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Connects and logs in within `timeout`.
pub async fn connect(params: &LoginParams, timeout: Duration) -> Result<ServerConn> {
    connect_with(params, &[], timeout).await
}

/// Like [`connect`], with `extra` startup parameters sent after `user` and
/// `database`, e.g. `("replication", "database")` for a logical
/// replication connection (protocol docs §55.4).
pub async fn connect_with(
    params: &LoginParams,
    extra: &[(&str, &str)],
    timeout: Duration,
) -> Result<ServerConn> {
    match tokio::time::timeout(timeout, connect_inner(params, extra)).await {
        Ok(r) => r,
        Err(_) => Err(Error::ConnectTimeout {
            addr: params.addr.clone(),
            timeout,
        }),
    }
}

async fn connect_inner(params: &LoginParams, extra: &[(&str, &str)]) -> Result<ServerConn> {
    let io = |source| Error::Io {
        addr: params.addr.clone(),
        source,
    };
    let stream = TcpStream::connect(&params.addr).await.map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    let mut login = Login {
        params,
        stream,
        buf: BytesMut::with_capacity(8192),
        out: BytesMut::with_capacity(256),
    };
    login.send_startup(extra).await?;
    login.authenticate().await?;
    login.preamble().await
}

/// The login conversation's state.
struct Login<'a> {
    params: &'a LoginParams,
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
}

impl Login<'_> {
    fn err_io(&self, source: std::io::Error) -> Error {
        Error::Io {
            addr: self.params.addr.clone(),
            source,
        }
    }

    async fn flush(&mut self) -> Result<()> {
        let out = self.out.split();
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| self.err_io(e))
    }

    async fn read_frame(&mut self) -> Result<Frame> {
        loop {
            match Frame::split(&mut self.buf, MAX_LOGIN_MESSAGE) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(source) => {
                    return Err(Error::Protocol {
                        addr: self.params.addr.clone(),
                        source,
                    })
                }
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| self.err_io(e))?;
            if n == 0 {
                let eof = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed the connection during login",
                );
                return Err(self.err_io(eof));
            }
        }
    }

    async fn send_startup(&mut self, extra: &[(&str, &str)]) -> Result<()> {
        let p = self.params;
        let base = [("user", p.user.as_str()), ("database", p.database.as_str())];
        startup::startup_message(&mut self.out, base.into_iter().chain(extra.iter().copied()));
        self.flush().await
    }

    fn protocol(&self, source: pgpilot_wire::Error) -> Error {
        Error::Protocol {
            addr: self.params.addr.clone(),
            source,
        }
    }

    fn server_error(&self, frame: &Frame) -> Error {
        match ErrorFields::decode(frame.body()) {
            Ok(fields) => Error::Server {
                addr: self.params.addr.clone(),
                fields,
            },
            Err(e) => self.protocol(e),
        }
    }

    fn password(&self) -> Result<&str> {
        self.params.password.as_deref().ok_or_else(|| Error::Auth {
            addr: self.params.addr.clone(),
            reason: format!(
                "server requires a password for user {:?} but none is configured",
                self.params.user
            ),
        })
    }

    /// Answers authentication requests until AuthenticationOk.
    async fn authenticate(&mut self) -> Result<()> {
        let mut scram: Option<ScramClient> = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                tag::AUTHENTICATION => {}
                tag::ERROR_RESPONSE => return Err(self.server_error(&frame)),
                _ => {
                    return Err(self.protocol(pgpilot_wire::Error::Malformed {
                        message: "login",
                        reason: "expected Authentication",
                    }))
                }
            }
            let auth = Authentication::decode(frame.body()).map_err(|e| self.protocol(e))?;
            match auth.code {
                auth_code::OK => return Ok(()),
                auth_code::CLEARTEXT_PASSWORD => {
                    let pw = self.password()?.to_owned();
                    frontend::password_message(&mut self.out, pw.as_bytes());
                }
                auth_code::MD5_PASSWORD => {
                    let salt = auth.md5_salt().map_err(|e| self.protocol(e))?;
                    let answer =
                        pgpilot_auth::md5_response(&self.params.user, self.password()?, salt);
                    frontend::password_message(&mut self.out, answer.as_bytes());
                }
                auth_code::SASL => scram = Some(self.sasl_start(&auth)?),
                auth_code::SASL_CONTINUE => self.sasl_continue(scram.as_mut(), auth.data)?,
                auth_code::SASL_FINAL => self.sasl_final(scram.as_ref(), auth.data)?,
                other => {
                    return Err(Error::Auth {
                        addr: self.params.addr.clone(),
                        reason: format!("unsupported authentication request {other}"),
                    })
                }
            }
            self.flush().await?;
        }
    }

    fn sasl_start(&mut self, auth: &Authentication<'_>) -> Result<ScramClient> {
        let mechanisms = auth.sasl_mechanisms().map_err(|e| self.protocol(e))?;
        if !mechanisms.contains(&pgpilot_auth::SCRAM_SHA_256) {
            return Err(Error::Auth {
                addr: self.params.addr.clone(),
                reason: format!(
                    "server offers SASL mechanisms {mechanisms:?}; pgpilot speaks SCRAM-SHA-256"
                ),
            });
        }
        let client = ScramClient::new(self.password()?);
        frontend::sasl_initial_response(
            &mut self.out,
            pgpilot_auth::SCRAM_SHA_256,
            &client.client_first(),
        );
        Ok(client)
    }

    fn sasl_continue(&mut self, scram: Option<&mut ScramClient>, data: &[u8]) -> Result<()> {
        let addr = self.params.addr.clone();
        let client = scram.ok_or_else(|| Error::Auth {
            addr: addr.clone(),
            reason: "SASLContinue before SASL".into(),
        })?;
        let answer = client.handle_server_first(data).map_err(|e| Error::Auth {
            addr,
            reason: format!("SCRAM: {e}"),
        })?;
        frontend::sasl_response(&mut self.out, &answer);
        Ok(())
    }

    fn sasl_final(&mut self, scram: Option<&ScramClient>, data: &[u8]) -> Result<()> {
        let addr = self.params.addr.clone();
        let client = scram.ok_or_else(|| Error::Auth {
            addr: addr.clone(),
            reason: "SASLFinal before SASL".into(),
        })?;
        client.verify_server_final(data).map_err(|e| Error::Auth {
            addr,
            reason: format!("SCRAM server signature: {e}"),
        })
    }

    /// Collects ParameterStatus and BackendKeyData up to ReadyForQuery.
    async fn preamble(mut self) -> Result<ServerConn> {
        let (mut pid, mut key) = (0, 0);
        let mut startup_params = Vec::new();
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                tag::PARAMETER_STATUS => {
                    let (n, v) = backend::parameter_status_fields(frame.body())
                        .map_err(|e| self.protocol(e))?;
                    startup_params.push((n.to_owned(), v.to_owned()));
                }
                tag::BACKEND_KEY_DATA => {
                    (pid, key) = backend::backend_key_data_fields(frame.body())
                        .map_err(|e| self.protocol(e))?;
                }
                tag::READY_FOR_QUERY => break,
                tag::ERROR_RESPONSE => return Err(self.server_error(&frame)),
                _ => {} // NoticeResponse and the like during login are dropped.
            }
        }
        let now = Instant::now();
        Ok(ServerConn {
            stream: self.stream,
            read_buf: self.buf,
            addr: self.params.addr.as_str().into(),
            pid,
            key,
            startup_params,
            session_settings: Default::default(),
            prepared: Default::default(),
            created: now,
            last_used: now,
            broken: false,
        })
    }
}
