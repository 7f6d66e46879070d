//! The client side of SCRAM-SHA-256: pgpilot logging into PostgreSQL. The
//! backend connector sends [`ScramClient::client_first`] in
//! SASLInitialResponse, answers AuthenticationSASLContinue with
//! [`ScramClient::handle_server_first`] in SASLResponse, and checks
//! AuthenticationSASLFinal with [`ScramClient::verify_server_final`].

use std::fmt;

use super::message::{self, ServerFinal};
use super::{auth_message, base64_encode, hmac, keys_equal, random_nonce, sha256, xor_into};
use super::{DerivedKeys, Key};
use crate::error::{Error, Result};

/// The GS2 header pgpilot sends: no channel binding, no authzid.
const GS2_HEADER: &str = "n,,";

/// `c=` of client-final-message: base64 of [`GS2_HEADER`].
const CHANNEL_BINDING: &str = "biws";

/// One SCRAM-SHA-256 login to a server, as the client.
///
/// Call [`client_first`](ScramClient::client_first), then
/// [`handle_server_first`](ScramClient::handle_server_first) once, then
/// [`verify_server_final`](ScramClient::verify_server_final). Only after the
/// last one succeeds is the server known to hold this role's verifier. The
/// password is used as raw UTF-8 bytes (no SASLprep; see the module docs).
pub struct ScramClient {
    /// What proves our identity.
    credentials: Credentials,
    /// `n=` value (already escaped as RFC 5802 saslname). Empty, because
    /// PostgreSQL ignores it and takes the user from the startup packet.
    username: String,
    /// Our nonce: printable ASCII without `,`.
    nonce: String,
    /// Where the exchange stands.
    state: ClientState,
}

/// The secret the client proves knowledge of.
enum Credentials {
    /// A plaintext password; keys are derived with the server's salt.
    Password(String),
    /// ClientKey and ServerKey taken from a verifier exchange; valid only
    /// against a server holding that same verifier.
    Keys(DerivedKeys),
}

/// Progress of a [`ScramClient`].
enum ClientState {
    /// client-first-message may be sent; waiting for server-first.
    AwaitingServerFirst,
    /// client-final-message sent; waiting for server-final.
    AwaitingServerFinal {
        /// The signature a server holding our verifier must send back.
        server_signature: Key,
    },
    /// server-first-message was rejected or arrived twice.
    Failed,
}

impl ScramClient {
    /// Starts a login with `password` and a fresh random nonce.
    pub fn new(password: &str) -> ScramClient {
        ScramClient::with_nonce(password, random_nonce())
    }

    /// Like [`ScramClient::new`] with a fixed nonce, for tests and test
    /// vectors. The nonce must be non-empty printable ASCII without `,`
    /// (RFC 5802 §7), or the server will reject client-first-message.
    pub fn with_nonce(password: &str, nonce: String) -> ScramClient {
        ScramClient::build(Credentials::Password(password.to_owned()), nonce)
    }

    /// Starts a login that proves knowledge of a verifier's keys instead of
    /// the password: `client_key` from [`ScramServer::client_key`] after the
    /// client authenticated to pgpilot, `server_key` from the same
    /// [`ScramSecret`]. The salt and iteration count the server sends are
    /// ignored, so this succeeds only if the server stores that very
    /// verifier; otherwise it rejects the proof.
    ///
    /// [`ScramServer::client_key`]: super::ScramServer::client_key
    /// [`ScramSecret`]: super::ScramSecret
    pub fn from_keys(client_key: [u8; 32], server_key: [u8; 32]) -> ScramClient {
        let keys = DerivedKeys {
            client_key,
            server_key,
        };
        ScramClient::build(Credentials::Keys(keys), random_nonce())
    }

    fn build(credentials: Credentials, nonce: String) -> ScramClient {
        ScramClient {
            credentials,
            username: String::new(),
            nonce,
            state: ClientState::AwaitingServerFirst,
        }
    }

    /// The data of SASLInitialResponse: `n,,n=,r=<nonce>`. Pure; may be
    /// called any time.
    pub fn client_first(&self) -> Vec<u8> {
        format!("{GS2_HEADER}{}", self.client_first_bare()).into_bytes()
    }

    /// Takes server-first-message (AuthenticationSASLContinue data) and
    /// returns client-final-message for SASLResponse. Runs PBKDF2 with the
    /// server's iteration count, capped at [`MAX_ITERATIONS`].
    ///
    /// Errors ([`Error::Protocol`]): malformed message, a nonce that does not
    /// strictly extend ours, an invalid or empty salt, an iteration count of
    /// 0 or above the cap, or a second call.
    ///
    /// [`MAX_ITERATIONS`]: super::MAX_ITERATIONS
    pub fn handle_server_first(&mut self, server_first: &[u8]) -> Result<Vec<u8>> {
        let ClientState::AwaitingServerFirst =
            std::mem::replace(&mut self.state, ClientState::Failed)
        else {
            return Err(Error::Protocol(
                "server-first-message received out of order",
            ));
        };
        let first = message::parse_server_first(server_first)?;
        let extends_ours =
            first.nonce.len() > self.nonce.len() && first.nonce.starts_with(&self.nonce);
        if !extends_ours {
            return Err(Error::Protocol(
                "server nonce does not extend the client nonce",
            ));
        }
        let keys = match &self.credentials {
            Credentials::Password(password) => {
                DerivedKeys::from_password(password, &first.salt, first.iterations)
            }
            Credentials::Keys(keys) => keys.clone(),
        };
        let without_proof = format!("c={CHANNEL_BINDING},r={}", first.nonce);
        let auth = auth_message(
            self.client_first_bare().as_bytes(),
            server_first,
            without_proof.as_bytes(),
        );
        // ClientProof = ClientKey XOR HMAC(H(ClientKey), AuthMessage).
        let mut proof = hmac(&sha256(&keys.client_key), &[&auth]);
        xor_into(&mut proof, &keys.client_key);
        self.state = ClientState::AwaitingServerFinal {
            server_signature: hmac(&keys.server_key, &[&auth]),
        };
        Ok(format!("{without_proof},p={}", base64_encode(&proof)).into_bytes())
    }

    /// Checks server-final-message (AuthenticationSASLFinal data). `Ok` means
    /// the server proved it holds this role's verifier.
    ///
    /// Errors: [`Error::InvalidServerSignature`] on a wrong `v=`,
    /// [`Error::ServerError`] on `e=...`, [`Error::Protocol`] if malformed
    /// or called before [`handle_server_first`](ScramClient::handle_server_first)
    /// succeeded.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<()> {
        let ClientState::AwaitingServerFinal { server_signature } = &self.state else {
            return Err(Error::Protocol(
                "server-final-message received out of order",
            ));
        };
        match message::parse_server_final(server_final)? {
            ServerFinal::Error(reason) => Err(Error::ServerError(reason.to_owned())),
            ServerFinal::Verifier(signature) if keys_equal(&signature, server_signature) => Ok(()),
            ServerFinal::Verifier(_) => Err(Error::InvalidServerSignature),
        }
    }

    /// client-first-message-bare: `n=<user>,r=<nonce>`.
    fn client_first_bare(&self) -> String {
        format!("n={},r={}", self.username, self.nonce)
    }
}

/// Shows the progress only; the password and keys are redacted.
impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ClientState::AwaitingServerFirst => "AwaitingServerFirst",
            ClientState::AwaitingServerFinal { .. } => "AwaitingServerFinal",
            ClientState::Failed => "Failed",
        };
        f.debug_struct("ScramClient")
            .field("nonce", &self.nonce)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scram::fixtures::*;

    /// The RFC 7677 client, which (unlike PostgreSQL clients) sends a user name.
    fn rfc_client() -> ScramClient {
        let mut client = ScramClient::with_nonce(RFC_PASSWORD, RFC_CLIENT_NONCE.to_owned());
        client.username = "user".to_owned();
        client
    }

    #[test]
    fn rfc_7677_exchange() {
        let mut client = rfc_client();
        assert_eq!(client.client_first(), RFC_CLIENT_FIRST.as_bytes());
        let client_final = client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .unwrap();
        assert_eq!(String::from_utf8(client_final).unwrap(), RFC_CLIENT_FINAL);
        assert!(client
            .verify_server_final(RFC_SERVER_FINAL.as_bytes())
            .is_ok());
    }

    #[test]
    fn postgres_style_client_first() {
        let client = ScramClient::with_nonce("pw", "abc".to_owned());
        assert_eq!(client.client_first(), b"n,,n=,r=abc");
        let random = ScramClient::new("pw").client_first();
        assert!(random.starts_with(b"n,,n=,r=") && random.len() > 20);
    }

    #[test]
    fn server_nonce_must_extend_ours() {
        let cases = [
            "r=rOprNGfwEbeRWgbNEkqX%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "r=rOprNGfwEbeRWgbNEkq,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "r=xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        ];
        for server_first in cases {
            let result = rfc_client().handle_server_first(server_first.as_bytes());
            assert!(
                matches!(result, Err(Error::Protocol(_))),
                "{server_first}: {result:?}"
            );
        }
    }

    #[test]
    fn huge_iteration_count_is_refused_without_hashing() {
        let server_first = "r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4294967295";
        let result = rfc_client().handle_server_first(server_first.as_bytes());
        assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");
    }

    #[test]
    fn bad_salt_is_refused() {
        for salt in ["", "%%%%", "W22ZaJ0SNY7soEsUEjb6gQ"] {
            let server_first = format!("r=rOprNGfwEbeRWgbNEkqOxyz,s={salt},i=4096");
            let result = rfc_client().handle_server_first(server_first.as_bytes());
            assert!(
                matches!(result, Err(Error::Protocol(_))),
                "{salt}: {result:?}"
            );
        }
    }

    #[test]
    fn wrong_server_signature_is_refused() {
        let mut client = rfc_client();
        client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .unwrap();
        let forged = format!("v={}", base64_encode(&[7u8; 32]));
        assert_eq!(
            client.verify_server_final(forged.as_bytes()),
            Err(Error::InvalidServerSignature)
        );
        let result = client.verify_server_final(b"v=not base64");
        assert!(matches!(result, Err(Error::Protocol(_))));
    }

    #[test]
    fn server_error_is_reported() {
        let mut client = rfc_client();
        client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .unwrap();
        let result = client.verify_server_final(b"e=invalid-proof");
        assert_eq!(result, Err(Error::ServerError("invalid-proof".to_owned())));
    }

    #[test]
    fn out_of_order_calls_fail() {
        let client = rfc_client();
        let result = client.verify_server_final(RFC_SERVER_FINAL.as_bytes());
        assert!(matches!(result, Err(Error::Protocol(_))));

        let mut client = rfc_client();
        client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .unwrap();
        assert!(client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .is_err());
        // The duplicate ended the exchange; the real signature no longer counts.
        assert!(client
            .verify_server_final(RFC_SERVER_FINAL.as_bytes())
            .is_err());
    }

    #[test]
    fn debug_redacts_password() {
        let client = ScramClient::with_nonce("sup3r-secret", "abc".to_owned());
        assert!(!format!("{client:?}").contains("sup3r-secret"));
    }
}
