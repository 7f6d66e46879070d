//! Authenticating a client against the users in the settings: SCRAM-SHA-256,
//! md5, or trust when a user is explicitly configured so (protocol §55.2.2,
//! §55.3). Wrong or unknown credentials end in `28P01`, as PostgreSQL does.

use bytes::BytesMut;
use pgpilot_auth::{ScramServer, SCRAM_SHA_256};
use pgpilot_config::{AuthMethod, User};
use pgpilot_wire::backend::{self, auth_code, ErrorFields};
use pgpilot_wire::frontend::{self, SaslInitialResponse};
use pgpilot_wire::sqlstate;
use pgpilot_wire::tag::frontend as tag;
use tokio::net::TcpStream;

use crate::error::{Result, SessionError};
use crate::io::{read_frame, write_all};
use crate::runtime::Runtime;

/// Largest authentication message accepted from a client.
const MAX_AUTH_MESSAGE: usize = 16 * 1024;

/// The error PostgreSQL sends for a bad password (and for unknown users, so
/// that user names cannot be probed).
pub fn auth_failed(user: &str) -> SessionError {
    SessionError::Auth(ErrorFields {
        severity: "FATAL".into(),
        code: sqlstate::INVALID_PASSWORD.into(),
        message: format!("password authentication failed for user \"{user}\""),
    })
}

/// Runs the exchange for `user`; on success nothing has been sent yet for
/// AuthenticationOk (the caller sends it with the rest of the welcome).
pub async fn authenticate(
    rt: &Runtime,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    user: &User,
) -> Result<()> {
    let secret = user.password.as_deref();
    match (user.auth, secret) {
        (AuthMethod::Trust, _) => Ok(()),
        (AuthMethod::Md5, Some(stored)) => md5(stream, buf, &user.name, stored).await,
        (AuthMethod::ScramSha256, Some(stored)) => {
            let secret = rt
                .scram_secret(&user.name, stored)
                .ok_or_else(|| auth_failed(&user.name))?;
            scram(stream, buf, &user.name, secret).await
        }
        (_, None) => Err(auth_failed(&user.name)),
    }
}

async fn read_password(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<pgpilot_wire::Frame> {
    let frame = read_frame(stream, buf, MAX_AUTH_MESSAGE).await?;
    if frame.tag != tag::PASSWORD {
        return Err(SessionError::Unexpected("expected a password message"));
    }
    Ok(frame)
}

async fn md5(stream: &mut TcpStream, buf: &mut BytesMut, user: &str, stored: &str) -> Result<()> {
    let salt: [u8; 4] = rand::random();
    let mut out = BytesMut::new();
    backend::authentication(&mut out, auth_code::MD5_PASSWORD, &salt);
    write_all(stream, &out).await?;
    let frame = read_password(stream, buf).await?;
    let response = frontend::password(frame.body()).map_err(SessionError::ClientProtocol)?;
    if pgpilot_auth::md5_verify(user, stored, salt, response) {
        Ok(())
    } else {
        Err(auth_failed(user))
    }
}

async fn scram(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    user: &str,
    secret: pgpilot_auth::ScramSecret,
) -> Result<()> {
    let mut out = BytesMut::new();
    backend::authentication_sasl(&mut out, &[SCRAM_SHA_256]);
    write_all(stream, &out.split()).await?;

    let frame = read_password(stream, buf).await?;
    let initial =
        SaslInitialResponse::decode(frame.body()).map_err(SessionError::ClientProtocol)?;
    if initial.mechanism != SCRAM_SHA_256 {
        return Err(SessionError::Unexpected("unsupported SASL mechanism"));
    }
    let mut server = ScramServer::new(secret);
    let server_first = server
        .handle_client_first(initial.data)
        .map_err(|_| auth_failed(user))?;
    backend::authentication(&mut out, auth_code::SASL_CONTINUE, &server_first);
    write_all(stream, &out.split()).await?;

    let frame = read_password(stream, buf).await?;
    let server_final = server
        .handle_client_final(frame.body())
        .map_err(|_| auth_failed(user))?;
    backend::authentication(&mut out, auth_code::SASL_FINAL, &server_final);
    write_all(stream, &out).await
}
