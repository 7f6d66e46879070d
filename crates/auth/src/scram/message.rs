//! Parsers for the four SCRAM messages of RFC 5802 §7, as PostgreSQL sends
//! them inside SASLInitialResponse, AuthenticationSASLContinue, SASLResponse
//! and AuthenticationSASLFinal. [`super::server`] and [`super::client`] build
//! the messages they send themselves and use these to read the peer's.
//!
//! Parsing is strict: attributes must appear in the RFC's order, optional
//! extensions and unknown attributes are rejected, and every failure is an
//! [`Error::Protocol`] with a fixed description, never a panic. Values borrow
//! from the input.

use super::{base64_decode, base64_decode_key, parse_iterations, Key, MAX_ITERATIONS};
use crate::error::{Error, Result};

/// The GS2 channel-binding flag of client-first-message. `p=<cb-name>` is
/// refused before this type is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gs2Flag {
    /// `n`: the client does not support channel binding.
    NotSupported,
    /// `y`: the client supports it but thinks the server does not. Safe to
    /// accept because pgpilot never advertises `SCRAM-SHA-256-PLUS`.
    ServerUnsupported,
}

impl Gs2Flag {
    /// The full GS2 header (no authzid), which client-final-message must
    /// echo base64-encoded in `c=`.
    pub(crate) fn header(self) -> &'static str {
        match self {
            Gs2Flag::NotSupported => "n,,",
            Gs2Flag::ServerUnsupported => "y,,",
        }
    }
}

/// A parsed client-first-message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ClientFirst<'a> {
    /// The channel-binding flag the client sent.
    pub(crate) gs2_flag: Gs2Flag,
    /// client-first-message-bare, verbatim, for AuthMessage.
    pub(crate) bare: &'a str,
    /// The client's nonce: printable ASCII, no `,`, non-empty.
    pub(crate) nonce: &'a str,
}

/// A parsed server-first-message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ServerFirst<'a> {
    /// Client nonce followed by the server's part; printable, non-empty.
    pub(crate) nonce: &'a str,
    /// Decoded salt, non-empty.
    pub(crate) salt: Vec<u8>,
    /// PBKDF2 rounds, in `1..=MAX_ITERATIONS`.
    pub(crate) iterations: u32,
}

/// A parsed client-final-message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ClientFinal<'a> {
    /// Decoded `c=` value; must equal the GS2 header of client-first.
    pub(crate) channel_binding: Vec<u8>,
    /// Combined nonce; must equal the one in server-first.
    pub(crate) nonce: &'a str,
    /// client-final-message-without-proof, verbatim, for AuthMessage.
    pub(crate) without_proof: &'a str,
    /// Decoded ClientProof.
    pub(crate) proof: Key,
}

/// A parsed server-final-message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ServerFinal<'a> {
    /// `v=`: the decoded ServerSignature.
    Verifier(Key),
    /// `e=`: the server's error value.
    Error(&'a str),
}

/// Parses SASLInitialResponse data. `p=` in the GS2 header is
/// [`Error::UnsupportedChannelBinding`]; an authzid, a mandatory extension
/// (`m=`), a missing or non-printable nonce, or anything after the nonce is
/// [`Error::Protocol`]. The user name is ignored, as PostgreSQL does.
pub(crate) fn parse_client_first(input: &[u8]) -> Result<ClientFirst<'_>> {
    let text = utf8(input)?;
    let (flag, rest) = text
        .split_once(',')
        .ok_or(Error::Protocol("client-first-message lacks a GS2 header"))?;
    let gs2_flag = parse_gs2_flag(flag)?;
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(Error::Protocol("client-first-message lacks a GS2 header"))?;
    if !authzid.is_empty() {
        return Err(Error::Protocol(
            "authorization identity (a=) is not supported",
        ));
    }
    let mut attrs = bare.split(',');
    let user = attrs.next();
    if user.is_some_and(|user| user.starts_with("m=")) {
        return Err(Error::Protocol(
            "mandatory SCRAM extensions (m=) are not supported",
        ));
    }
    attribute(user, "n=", "client-first-message lacks the user name (n=)")?;
    let nonce = attribute(
        attrs.next(),
        "r=",
        "client-first-message lacks the nonce (r=)",
    )?;
    check_nonce(nonce)?;
    no_more(attrs, "unexpected attribute after the client nonce")?;
    Ok(ClientFirst {
        gs2_flag,
        bare,
        nonce,
    })
}

/// Parses AuthenticationSASLContinue data. Fails on a mandatory extension,
/// a non-printable nonce, a salt that is empty or not base64, an iteration
/// count outside `1..=MAX_ITERATIONS`, or trailing attributes. Does not check
/// the nonce against the client's; the caller knows that.
pub(crate) fn parse_server_first(input: &[u8]) -> Result<ServerFirst<'_>> {
    let text = utf8(input)?;
    let mut attrs = text.split(',');
    let first = attrs.next();
    if first.is_some_and(|first| first.starts_with("m=")) {
        return Err(Error::Protocol(
            "mandatory SCRAM extensions (m=) are not supported",
        ));
    }
    let nonce = attribute(first, "r=", "server-first-message lacks the nonce (r=)")?;
    check_nonce(nonce)?;
    let salt = attribute(
        attrs.next(),
        "s=",
        "server-first-message lacks the salt (s=)",
    )?;
    let salt = base64_decode(salt)
        .filter(|salt| !salt.is_empty())
        .ok_or(Error::Protocol("invalid salt in server-first-message"))?;
    let iterations = attribute(
        attrs.next(),
        "i=",
        "server-first-message lacks the iteration count (i=)",
    )?;
    let iterations = parse_iterations(iterations).ok_or(Error::Protocol(
        "invalid iteration count in server-first-message",
    ))?;
    if iterations > MAX_ITERATIONS {
        return Err(Error::Protocol(
            "iteration count in server-first-message is too large",
        ));
    }
    no_more(attrs, "unexpected attribute in server-first-message")?;
    Ok(ServerFirst {
        nonce,
        salt,
        iterations,
    })
}

/// Parses SASLResponse data: `c=<base64>,r=<nonce>,p=<base64 proof>` and
/// nothing else. The proof must decode to exactly 32 bytes.
pub(crate) fn parse_client_final(input: &[u8]) -> Result<ClientFinal<'_>> {
    let text = utf8(input)?;
    let (without_proof, proof) = text
        .rsplit_once(',')
        .ok_or(Error::Protocol("client-final-message lacks the proof (p=)"))?;
    let proof = attribute(
        Some(proof),
        "p=",
        "client-final-message lacks the proof (p=)",
    )?;
    let proof = base64_decode_key(proof)
        .ok_or(Error::Protocol("malformed proof in client-final-message"))?;
    let mut attrs = without_proof.split(',');
    let binding = attribute(
        attrs.next(),
        "c=",
        "client-final-message lacks channel binding (c=)",
    )?;
    let channel_binding = base64_decode(binding).ok_or(Error::Protocol(
        "malformed channel binding in client-final-message",
    ))?;
    let nonce = attribute(
        attrs.next(),
        "r=",
        "client-final-message lacks the nonce (r=)",
    )?;
    no_more(attrs, "unexpected attribute in client-final-message")?;
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

/// Parses AuthenticationSASLFinal data: `v=<base64 signature>` or
/// `e=<error>`. The signature must decode to exactly 32 bytes.
pub(crate) fn parse_server_final(input: &[u8]) -> Result<ServerFinal<'_>> {
    let text = utf8(input)?;
    let mut attrs = text.split(',');
    let first = attrs.next();
    if let Some(error) = first.and_then(|first| first.strip_prefix("e=")) {
        return Ok(ServerFinal::Error(error));
    }
    let signature = attribute(first, "v=", "server-final-message lacks the verifier (v=)")?;
    let signature = base64_decode_key(signature).ok_or(Error::Protocol(
        "malformed verifier in server-final-message",
    ))?;
    no_more(attrs, "unexpected attribute in server-final-message")?;
    Ok(ServerFinal::Verifier(signature))
}

/// SCRAM messages are UTF-8 text (RFC 5802 §7).
fn utf8(input: &[u8]) -> Result<&str> {
    std::str::from_utf8(input).map_err(|_| Error::Protocol("SCRAM message is not valid UTF-8"))
}

/// Reads the GS2 cbind-flag; see [`Gs2Flag`].
fn parse_gs2_flag(flag: &str) -> Result<Gs2Flag> {
    match flag {
        "n" => Ok(Gs2Flag::NotSupported),
        "y" => Ok(Gs2Flag::ServerUnsupported),
        _ if flag.starts_with("p=") => Err(Error::UnsupportedChannelBinding),
        _ => Err(Error::Protocol("invalid GS2 channel-binding flag")),
    }
}

/// The value of `part` if it is `<prefix><value>`; `missing` otherwise.
fn attribute<'a>(part: Option<&'a str>, prefix: &str, missing: &'static str) -> Result<&'a str> {
    part.and_then(|part| part.strip_prefix(prefix))
        .ok_or(Error::Protocol(missing))
}

/// Fails with `unexpected` if any attribute is left.
fn no_more<'a>(mut rest: impl Iterator<Item = &'a str>, unexpected: &'static str) -> Result<()> {
    match rest.next() {
        Some(_) => Err(Error::Protocol(unexpected)),
        None => Ok(()),
    }
}

/// RFC 5802: a nonce is non-empty printable ASCII other than `,`.
fn check_nonce(nonce: &str) -> Result<()> {
    let printable = |b: u8| (0x21..=0x7e).contains(&b) && b != b',';
    if nonce.is_empty() || !nonce.bytes().all(printable) {
        return Err(Error::Protocol("nonce is empty or not printable ASCII"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scram::fixtures::*;

    #[test]
    fn parses_rfc_messages() {
        let first = parse_client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(first.gs2_flag, Gs2Flag::NotSupported);
        assert_eq!(first.bare, "n=user,r=rOprNGfwEbeRWgbNEkqO");
        assert_eq!(first.nonce, RFC_CLIENT_NONCE);

        let server_first = parse_server_first(RFC_SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(
            server_first.nonce,
            format!("{RFC_CLIENT_NONCE}{RFC_SERVER_NONCE}")
        );
        assert_eq!(server_first.salt, base64_decode(RFC_SALT).unwrap());
        assert_eq!(server_first.iterations, 4096);

        let client_final = parse_client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(client_final.channel_binding, b"n,,");
        assert_eq!(client_final.nonce, server_first.nonce);
        assert!(RFC_CLIENT_FINAL.starts_with(&format!("{},p=", client_final.without_proof)));

        let server_final = parse_server_final(RFC_SERVER_FINAL.as_bytes()).unwrap();
        assert!(matches!(server_final, ServerFinal::Verifier(_)));
        assert_eq!(
            parse_server_final(b"e=invalid-proof").unwrap(),
            ServerFinal::Error("invalid-proof")
        );
    }

    #[test]
    fn accepts_y_flag_and_empty_user() {
        let first = parse_client_first(b"y,,n=,r=abc").unwrap();
        assert_eq!(first.gs2_flag, Gs2Flag::ServerUnsupported);
        assert_eq!(first.gs2_flag.header(), "y,,");
        assert_eq!(first.bare, "n=,r=abc");
    }

    #[test]
    fn refuses_channel_binding() {
        let result = parse_client_first(b"p=tls-server-end-point,,n=,r=abc");
        assert_eq!(result, Err(Error::UnsupportedChannelBinding));
    }

    #[test]
    fn rejects_malformed_client_first() {
        let bad: &[&[u8]] = &[
            b"",
            b"n",
            b"n,",
            b"n,,",
            b"x,,n=,r=abc",
            b"p,,n=,r=abc",
            b"n,a=admin,n=,r=abc",
            b"n,,m=ext,n=,r=abc",
            b"n,,r=abc",
            b"n,,n=",
            b"n,,n=,r=",
            b"n,,n=,r=a b",
            b"n,,n=,r=abc,x=ext",
            b"n,,n=,x=abc",
            b"n,,n=,r=\xff",
            b"n,,n=,r=caf\xc3\xa9",
        ];
        for input in bad {
            assert!(
                matches!(parse_client_first(input), Err(Error::Protocol(_))),
                "{input:?}"
            );
        }
    }

    #[test]
    fn rejects_malformed_server_first() {
        let bad: &[&str] = &[
            "",
            "r=abc",
            "r=abc,s=c2FsdA==",
            "s=c2FsdA==,r=abc,i=1",
            "m=x,r=abc,s=c2FsdA==,i=1",
            "r=,s=c2FsdA==,i=1",
            "r=abc,s=,i=1",
            "r=abc,s=!!!,i=1",
            "r=abc,s=c2FsdA,i=1",
            "r=abc,s=c2FsdA==,i=0",
            "r=abc,s=c2FsdA==,i=-1",
            "r=abc,s=c2FsdA==,i=+1",
            "r=abc,s=c2FsdA==,i= 1",
            "r=abc,s=c2FsdA==,i=4294967296",
            "r=abc,s=c2FsdA==,i=10000001",
            "r=abc,s=c2FsdA==,i=4096,x=1",
            "r=abc,s=c2FsdA==,i=4096,",
        ];
        for input in bad {
            assert!(
                matches!(
                    parse_server_first(input.as_bytes()),
                    Err(Error::Protocol(_))
                ),
                "{input}"
            );
        }
        assert!(parse_server_first(b"r=abc,s=c2FsdA==,i=10000000").is_ok());
    }

    #[test]
    fn rejects_malformed_client_final() {
        let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let bad = [
            String::new(),
            format!("p={proof}"),
            format!("r=abc,p={proof}"),
            format!("c=biws,p={proof}"),
            "c=biws,r=abc".to_owned(),
            "c=biws,r=abc,p=".to_owned(),
            "c=biws,r=abc,p=c2FsdA==".to_owned(),
            format!("c=biws,r=abc,p={proof}A"),
            format!("c=bi!s,r=abc,p={proof}"),
            format!("c=biws,r=abc,x=1,p={proof}"),
            format!("c=biws,r=abc,p={proof},x=1"),
            format!("r=abc,c=biws,p={proof}"),
        ];
        for input in &bad {
            assert!(
                matches!(
                    parse_client_final(input.as_bytes()),
                    Err(Error::Protocol(_))
                ),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_malformed_server_final() {
        let bad: &[&str] = &[
            "",
            "v=",
            "v=c2FsdA==",
            "x=abc",
            "v=!!!",
            &format!("{RFC_SERVER_FINAL},x=1"),
        ];
        for input in bad {
            assert!(
                matches!(
                    parse_server_final(input.as_bytes()),
                    Err(Error::Protocol(_))
                ),
                "{input}"
            );
        }
    }
}
