//! The server side of SCRAM-SHA-256: pgpilot checking a client's password
//! against a stored [`ScramSecret`] during startup. The proxy's handshake
//! feeds it SASLInitialResponse and SASLResponse data and sends back what it
//! returns in AuthenticationSASLContinue and AuthenticationSASLFinal.
//!
//! Exchange (PostgreSQL docs, "SASL Authentication"):
//! `handle_client_first` → server-first-message, then
//! `handle_client_final` → server-final-message or [`Error::InvalidPassword`].

use std::fmt;

use super::message::{self, Gs2Flag};
use super::{auth_message, base64_encode, hmac, keys_equal, random_nonce, sha256, xor_into};
use super::{Key, ScramSecret};
use crate::error::{Error, Result};

/// One SCRAM-SHA-256 authentication of one client, as the server.
///
/// A state machine over bytes: call [`handle_client_first`] once, then
/// [`handle_client_final`] once. Any error ends the exchange; later calls
/// fail with [`Error::Protocol`]. Channel binding is not offered, so
/// advertise only [`SCRAM_SHA_256`] (not `-PLUS`) in AuthenticationSASL.
///
/// [`handle_client_first`]: ScramServer::handle_client_first
/// [`handle_client_final`]: ScramServer::handle_client_final
/// [`SCRAM_SHA_256`]: super::SCRAM_SHA_256
pub struct ScramServer {
    /// The verifier of the role being authenticated.
    secret: ScramSecret,
    /// This server's half of the nonce, appended to the client's.
    server_nonce: String,
    /// Where the exchange stands.
    state: ServerState,
}

/// Progress of a [`ScramServer`].
enum ServerState {
    /// Nothing received yet.
    AwaitingClientFirst,
    /// server-first-message sent; waiting for client-final-message.
    AwaitingClientFinal(Exchange),
    /// The proof was valid.
    Authenticated {
        /// ClientKey recovered from the proof; see [`ScramServer::client_key`].
        client_key: Key,
    },
    /// The exchange failed or was driven out of order.
    Failed,
}

/// What the server must remember between its two messages.
struct Exchange {
    /// Channel-binding flag of client-first; `c=` must echo its header.
    gs2_flag: Gs2Flag,
    /// client-first-message-bare, verbatim, for AuthMessage.
    client_first_bare: String,
    /// server-first-message as sent, for AuthMessage.
    server_first: String,
    /// Client nonce + server nonce; client-final must repeat it exactly.
    nonce: String,
}

impl ScramServer {
    /// Starts an exchange for the role whose verifier is `secret`, with a
    /// fresh random server nonce.
    pub fn new(secret: ScramSecret) -> ScramServer {
        ScramServer::with_nonce(secret, random_nonce())
    }

    /// Like [`ScramServer::new`] with a fixed server nonce, for tests and
    /// test vectors. The nonce must be non-empty printable ASCII without `,`
    /// (RFC 5802 §7), or clients will reject server-first-message.
    pub fn with_nonce(secret: ScramSecret, nonce: String) -> ScramServer {
        ScramServer {
            secret,
            server_nonce: nonce,
            state: ServerState::AwaitingClientFirst,
        }
    }

    /// Takes the data of SASLInitialResponse (client-first-message) and
    /// returns server-first-message for AuthenticationSASLContinue.
    ///
    /// Errors: [`Error::UnsupportedChannelBinding`] if the client demands
    /// channel binding (`p=`); [`Error::Protocol`] if the message is
    /// malformed or this is not the first call.
    pub fn handle_client_first(&mut self, client_first: &[u8]) -> Result<Vec<u8>> {
        let ServerState::AwaitingClientFirst =
            std::mem::replace(&mut self.state, ServerState::Failed)
        else {
            return Err(Error::Protocol(
                "client-first-message received out of order",
            ));
        };
        let first = message::parse_client_first(client_first)?;
        let nonce = format!("{}{}", first.nonce, self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            base64_encode(self.secret.salt()),
            self.secret.iterations()
        );
        self.state = ServerState::AwaitingClientFinal(Exchange {
            gs2_flag: first.gs2_flag,
            client_first_bare: first.bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        });
        Ok(server_first.into_bytes())
    }

    /// Takes the data of SASLResponse (client-final-message) and, if the
    /// client's proof is valid, returns server-final-message (`v=...`) for
    /// AuthenticationSASLFinal, after which the client is authenticated.
    ///
    /// Errors: [`Error::InvalidPassword`] if the proof does not match the
    /// verifier (compared in constant time); [`Error::Protocol`] if the
    /// message is malformed, `c=` does not echo the GS2 header, the nonce
    /// differs from server-first's, or this call is out of order.
    pub fn handle_client_final(&mut self, client_final: &[u8]) -> Result<Vec<u8>> {
        let ServerState::AwaitingClientFinal(exchange) =
            std::mem::replace(&mut self.state, ServerState::Failed)
        else {
            return Err(Error::Protocol(
                "client-final-message received out of order",
            ));
        };
        let fin = message::parse_client_final(client_final)?;
        if fin.channel_binding != exchange.gs2_flag.header().as_bytes() {
            return Err(Error::Protocol(
                "channel binding (c=) does not echo the GS2 header",
            ));
        }
        if fin.nonce != exchange.nonce {
            return Err(Error::Protocol(
                "nonce in client-final-message does not match",
            ));
        }
        let auth = auth_message(
            exchange.client_first_bare.as_bytes(),
            exchange.server_first.as_bytes(),
            fin.without_proof.as_bytes(),
        );
        // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); the
        // client knows the password iff H(ClientKey) == StoredKey.
        let mut client_key = self.secret.client_signature(&auth);
        xor_into(&mut client_key, &fin.proof);
        if !keys_equal(&sha256(&client_key), self.secret.stored_key()) {
            return Err(Error::InvalidPassword);
        }
        let server_signature = hmac(self.secret.server_key(), &[&auth]);
        self.state = ServerState::Authenticated { client_key };
        Ok(format!("v={}", base64_encode(&server_signature)).into_bytes())
    }

    /// Whether [`handle_client_final`](ScramServer::handle_client_final)
    /// accepted the client's proof.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, ServerState::Authenticated { .. })
    }

    /// After a successful exchange, the ClientKey the client proved it knows;
    /// `None` before that or after a failure.
    ///
    /// Together with the verifier's ServerKey it lets pgpilot log into a
    /// PostgreSQL that stores the same verifier without knowing the password
    /// ([`ScramClient::from_keys`](super::ScramClient::from_keys)), as
    /// PgBouncer does. It is password-equivalent: never log or persist it.
    pub fn client_key(&self) -> Option<[u8; 32]> {
        match &self.state {
            ServerState::Authenticated { client_key } => Some(*client_key),
            _ => None,
        }
    }
}

/// Shows the progress only; the secret and keys are redacted.
impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ServerState::AwaitingClientFirst => "AwaitingClientFirst",
            ServerState::AwaitingClientFinal(_) => "AwaitingClientFinal",
            ServerState::Authenticated { .. } => "Authenticated",
            ServerState::Failed => "Failed",
        };
        f.debug_struct("ScramServer")
            .field("secret", &self.secret)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scram::fixtures::*;
    use crate::scram::{base64_decode, DerivedKeys};

    fn rfc_server() -> ScramServer {
        ScramServer::with_nonce(rfc_secret(), RFC_SERVER_NONCE.to_owned())
    }

    /// Builds a client-final-message with a correct proof for `password`.
    fn client_final(
        password: &str,
        client_first: &str,
        server_first: &[u8],
        binding: &str,
    ) -> Vec<u8> {
        let first = message::parse_server_first(server_first).unwrap();
        let keys = DerivedKeys::from_password(password, &first.salt, first.iterations);
        let without_proof = format!("c={binding},r={}", first.nonce);
        let bare = client_first.get(3..).unwrap();
        let auth = auth_message(bare.as_bytes(), server_first, without_proof.as_bytes());
        let mut proof = hmac(&sha256(&keys.client_key), &[&auth]);
        xor_into(&mut proof, &keys.client_key);
        format!("{without_proof},p={}", base64_encode(&proof)).into_bytes()
    }

    #[test]
    fn rfc_7677_exchange() {
        let mut server = rfc_server();
        let server_first = server
            .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
            .unwrap();
        assert_eq!(server_first, RFC_SERVER_FIRST.as_bytes());
        assert!(!server.is_authenticated());
        let server_final = server
            .handle_client_final(RFC_CLIENT_FINAL.as_bytes())
            .unwrap();
        assert_eq!(server_final, RFC_SERVER_FINAL.as_bytes());
        assert!(server.is_authenticated());
        let salt = base64_decode(RFC_SALT).unwrap();
        let keys = DerivedKeys::from_password(RFC_PASSWORD, &salt, 4096);
        assert_eq!(server.client_key(), Some(keys.client_key));
    }

    #[test]
    fn wrong_password_is_invalid_password() {
        let salt = base64_decode(RFC_SALT).unwrap();
        let secret = ScramSecret::from_password("pencil2", &salt, 4096);
        let mut server = ScramServer::with_nonce(secret, RFC_SERVER_NONCE.to_owned());
        server
            .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
            .unwrap();
        let result = server.handle_client_final(RFC_CLIENT_FINAL.as_bytes());
        assert_eq!(result, Err(Error::InvalidPassword));
        assert!(!server.is_authenticated());
        assert_eq!(server.client_key(), None);
    }

    #[test]
    fn tampered_proof_is_invalid_password() {
        let mut server = rfc_server();
        server
            .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
            .unwrap();
        let tampered = RFC_CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
        assert_eq!(
            server.handle_client_final(tampered.as_bytes()),
            Err(Error::InvalidPassword)
        );
    }

    #[test]
    fn tampered_nonce_is_rejected() {
        let mut server = rfc_server();
        server
            .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
            .unwrap();
        let tampered = RFC_CLIENT_FINAL.replace("hNlF$k0", "hNlF$k1");
        let result = server.handle_client_final(tampered.as_bytes());
        assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");
    }

    #[test]
    fn y_flag_must_be_echoed() {
        let client_first = "y,,n=,r=clientnonce";
        let mut server = ScramServer::with_nonce(rfc_secret(), "servernonce".to_owned());
        let server_first = server.handle_client_first(client_first.as_bytes()).unwrap();
        let good = client_final(RFC_PASSWORD, client_first, &server_first, "eSws");
        assert!(server.handle_client_final(&good).is_ok());

        let mut server = ScramServer::with_nonce(rfc_secret(), "servernonce".to_owned());
        let server_first = server.handle_client_first(client_first.as_bytes()).unwrap();
        let mismatched = client_final(RFC_PASSWORD, client_first, &server_first, "biws");
        let result = server.handle_client_final(&mismatched);
        assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");
    }

    #[test]
    fn channel_binding_request_is_refused() {
        let mut server = rfc_server();
        let result = server.handle_client_first(b"p=tls-server-end-point,,n=,r=abc");
        assert_eq!(result, Err(Error::UnsupportedChannelBinding));
    }

    #[test]
    fn out_of_order_calls_fail() {
        let mut server = rfc_server();
        let result = server.handle_client_final(RFC_CLIENT_FINAL.as_bytes());
        assert!(matches!(result, Err(Error::Protocol(_))));
        // The failed call ended the exchange.
        assert!(server
            .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
            .is_err());

        let mut server = rfc_server();
        server
            .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
            .unwrap();
        assert!(server
            .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
            .is_err());

        let mut server = rfc_server();
        server
            .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
            .unwrap();
        server
            .handle_client_final(RFC_CLIENT_FINAL.as_bytes())
            .unwrap();
        assert!(server
            .handle_client_final(RFC_CLIENT_FINAL.as_bytes())
            .is_err());
        assert!(
            !server.is_authenticated(),
            "any error, even a replay, ends the exchange"
        );
    }

    #[test]
    fn malformed_final_ends_the_exchange() {
        let mut server = rfc_server();
        server
            .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
            .unwrap();
        assert!(server.handle_client_final(b"garbage").is_err());
        assert!(server
            .handle_client_final(RFC_CLIENT_FINAL.as_bytes())
            .is_err());
    }

    #[test]
    fn debug_redacts_secrets() {
        let mut server = rfc_server();
        server
            .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
            .unwrap();
        server
            .handle_client_final(RFC_CLIENT_FINAL.as_bytes())
            .unwrap();
        let debug = format!("{server:?}");
        assert!(debug.contains("Authenticated"));
        let stored = base64_encode(rfc_secret().stored_key());
        let server_key = base64_encode(rfc_secret().server_key());
        assert!(!debug.contains(&stored) && !debug.contains(&server_key));
    }
}
