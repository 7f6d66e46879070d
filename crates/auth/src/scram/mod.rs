//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, without
//! channel binding. `secret` holds the stored verifier, `message` parses the
//! four SCRAM messages, `server` authenticates clients of pgpilot, `client`
//! logs pgpilot into PostgreSQL. This file holds the crypto primitives they
//! share.
//!
//! Passwords are used as raw UTF-8 bytes: no SASLprep (RFC 4013)
//! normalisation is applied. PostgreSQL itself falls back to the raw bytes
//! whenever SASLprep fails (for example on invalid UTF-8 or control
//! characters), and SASLprep leaves printable ASCII unchanged, so ASCII
//! passwords always agree with PostgreSQL. A non-ASCII password that SASLprep
//! would rewrite (non-ASCII spaces, non-NFKC forms) will not match a verifier
//! PostgreSQL derived from it.
//!
//! Protocol reference: PostgreSQL docs, "SASL Authentication" (protocol
//! chapter 55.3) and "SCRAM-SHA-256 Authentication".

mod client;
mod message;
mod secret;
mod server;

pub use client::ScramClient;
pub use secret::ScramSecret;
pub use server::ScramServer;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::digest::CtOutput;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The SASL mechanism name, as sent in AuthenticationSASL and
/// SASLInitialResponse.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Iteration count PostgreSQL uses by default (`scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Largest iteration count [`ScramClient`] accepts from a server. Each
/// iteration is two SHA-256 compressions; 10 million takes seconds of CPU,
/// so a hostile or misconfigured server cannot stall a worker for longer.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// Length of a SHA-256 output, and so of every SCRAM key and signature.
pub(crate) const KEY_LEN: usize = 32;

/// A SHA-256-sized key, signature or proof.
pub(crate) type Key = [u8; KEY_LEN];

/// Random bytes in a nonce before base64 (PostgreSQL also uses 18).
const NONCE_BYTES: usize = 18;

/// HMAC-SHA-256 of the concatenation of `parts` under `key`.
pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> Key {
    // HMAC is defined for keys of every length (long keys are hashed), so
    // `new_from_slice` cannot fail; the `expect` documents an invariant and
    // is not reachable from peer input.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key).expect("HMAC-SHA-256 accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

/// `Hi(password, salt, i)` from RFC 5802 §2.2: PBKDF2-HMAC-SHA-256 with one
/// output block. `iterations` of 0 is treated as 1.
pub(crate) fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let mut block = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut result = block;
    for _ in 1..iterations {
        block = hmac(password, &[&block]);
        xor_into(&mut result, &block);
    }
    result
}

/// The keys RFC 5802 §3 derives from a salted password.
#[derive(Clone)]
pub(crate) struct DerivedKeys {
    /// `HMAC(SaltedPassword, "Client Key")`; proves the password.
    pub(crate) client_key: Key,
    /// `HMAC(SaltedPassword, "Server Key")`; signs the server's reply.
    pub(crate) server_key: Key,
}

impl DerivedKeys {
    /// Runs `Hi` and derives both keys; costs `iterations` HMAC rounds.
    pub(crate) fn from_password(password: &str, salt: &[u8], iterations: u32) -> DerivedKeys {
        let salted = salted_password(password.as_bytes(), salt, iterations);
        DerivedKeys {
            client_key: hmac(&salted, &[b"Client Key"]),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }
}

/// `AuthMessage` of RFC 5802 §3: the three messages the proof signs,
/// joined by commas.
pub(crate) fn auth_message(
    client_first_bare: &[u8],
    server_first: &[u8],
    final_without_proof: &[u8],
) -> Vec<u8> {
    [client_first_bare, server_first, final_without_proof].join(&b',')
}

/// XORs `other` into `target` byte by byte.
pub(crate) fn xor_into(target: &mut Key, other: &Key) {
    for (t, o) in target.iter_mut().zip(other) {
        *t ^= o;
    }
}

/// Compares two keys in constant time (through `subtle`, via `digest`).
pub(crate) fn keys_equal(a: &Key, b: &Key) -> bool {
    CtOutput::<Sha256>::new((*a).into()) == CtOutput::<Sha256>::new((*b).into())
}

/// A fresh random nonce: 18 bytes from the thread-local CSPRNG, base64
/// encoded, so it is printable and never contains `,` (RFC 5802 §7).
pub(crate) fn random_nonce() -> String {
    base64_encode(&rand::random::<[u8; NONCE_BYTES]>())
}

/// Standard padded base64, the alphabet PostgreSQL emits and expects.
pub(crate) fn base64_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Parses an iteration count: plain decimal (no sign, no spaces) in
/// `1..=u32::MAX`; `None` otherwise.
pub(crate) fn parse_iterations(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|&n| n > 0)
}

/// Decodes standard padded base64; `None` for anything else.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// Decodes base64 that must hold exactly one SHA-256-sized value.
pub(crate) fn base64_decode_key(text: &str) -> Option<Key> {
    // 32 bytes encode to exactly 44 characters; reject anything else before
    // allocating.
    if text.len() != 44 {
        return None;
    }
    Key::try_from(base64_decode(text)?.as_slice()).ok()
}

/// Test vectors shared by the SCRAM unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    /// Generated by PostgreSQL 15 with
    /// `SET password_encryption = 'scram-sha-256'; CREATE ROLE pilot PASSWORD 'secret-pw';`
    /// and read back from `pg_authid.rolpassword`.
    pub(crate) const POSTGRES_VERIFIER: &str = "SCRAM-SHA-256$4096:FSuNAXvjtJEDUorM1iNnqw==$hqShb5ll8Xe5vE7uHK6rVFHbwBF5CMQ3Xw2WussVtiE=:WD1p1ehzHfJjYCq7lMg4gNA5GMO0irnI5HC8gwfCa3o=";
    /// The password behind [`POSTGRES_VERIFIER`].
    pub(crate) const POSTGRES_PASSWORD: &str = "secret-pw";

    /// RFC 7677 §3 example exchange (user "user", password "pencil").
    pub(crate) const RFC_PASSWORD: &str = "pencil";
    pub(crate) const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    pub(crate) const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    pub(crate) const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    pub(crate) const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    pub(crate) const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    pub(crate) const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    pub(crate) const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    /// The verifier for the RFC 7677 exchange.
    pub(crate) fn rfc_secret() -> super::ScramSecret {
        let salt = super::base64_decode(RFC_SALT).unwrap_or_default();
        super::ScramSecret::from_password(RFC_PASSWORD, &salt, 4096)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::error::Error;
    use rand::Rng;

    /// Runs a whole exchange; the first error from either side, if any.
    fn exchange(client: &mut ScramClient, server: &mut ScramServer) -> crate::Result<()> {
        let server_first = server.handle_client_first(&client.client_first())?;
        let client_final = client.handle_server_first(&server_first)?;
        let server_final = server.handle_client_final(&client_final)?;
        client.verify_server_final(&server_final)
    }

    #[test]
    fn round_trip_succeeds() {
        let mut client = ScramClient::new("correct horse");
        let mut server = ScramServer::new(ScramSecret::generate("correct horse"));
        exchange(&mut client, &mut server).unwrap();
        assert!(server.is_authenticated());
    }

    #[test]
    fn round_trip_against_postgres_verifier() {
        let secret = ScramSecret::parse(POSTGRES_VERIFIER).unwrap();
        let mut client = ScramClient::new(POSTGRES_PASSWORD);
        let mut server = ScramServer::new(secret);
        exchange(&mut client, &mut server).unwrap();
    }

    #[test]
    fn round_trip_with_wrong_password_fails() {
        let mut client = ScramClient::new("wrong");
        let mut server = ScramServer::new(ScramSecret::parse(POSTGRES_VERIFIER).unwrap());
        assert_eq!(
            exchange(&mut client, &mut server),
            Err(Error::InvalidPassword)
        );
        assert!(!server.is_authenticated());
    }

    #[test]
    fn client_detects_server_without_the_verifier() {
        // An impostor cannot compute the signature for this exchange; any
        // well-formed v= it sends (here: the RFC one) must be refused.
        let mut client = ScramClient::new(POSTGRES_PASSWORD);
        let mut impostor = ScramServer::new(ScramSecret::generate("guess"));
        let server_first = impostor
            .handle_client_first(&client.client_first())
            .unwrap();
        client.handle_server_first(&server_first).unwrap();
        let forged = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
        assert_eq!(
            client.verify_server_final(forged),
            Err(Error::InvalidServerSignature)
        );
    }

    #[test]
    fn pass_through_with_recovered_client_key() {
        let secret = ScramSecret::parse(POSTGRES_VERIFIER).unwrap();
        let mut front = ScramServer::new(secret.clone());
        exchange(&mut ScramClient::new(POSTGRES_PASSWORD), &mut front).unwrap();
        let client_key = front.client_key().unwrap();

        let mut backend = ScramServer::new(secret.clone());
        let mut relay = ScramClient::from_keys(client_key, *secret.server_key());
        exchange(&mut relay, &mut backend).unwrap();

        let mut other_backend = ScramServer::new(ScramSecret::generate(POSTGRES_PASSWORD));
        let mut relay = ScramClient::from_keys(client_key, *secret.server_key());
        assert_eq!(
            exchange(&mut relay, &mut other_backend),
            Err(Error::InvalidPassword)
        );
    }

    #[test]
    fn hi_matches_pbkdf2() {
        // Expected values from Python: hashlib.pbkdf2_hmac("sha256", b"passwd", b"salt", c, 32).
        let one = salted_password(b"passwd", b"salt", 1);
        assert_eq!(
            base64_encode(&one),
            "VawEblbjCJ/sFpHCJUS2BflBhSFt3gRl5oudV8INrLw="
        );
        let two = salted_password(b"passwd", b"salt", 2);
        assert_eq!(
            base64_encode(&two),
            "LUEviW52aF4w31afCnQGNOMfAx90nWB9nkQhC/+5Gmo="
        );
        let many = salted_password(b"passwd", b"salt", 4096);
        assert_eq!(
            base64_encode(&many),
            "IZQ/1behCQXDj61gFX/0mOHoHfHgMlQyVoKnTco7K+g="
        );
        // Zero is treated as one.
        assert_eq!(salted_password(b"passwd", b"salt", 0), one);
    }

    /// Random, truncated and mutated inputs must produce errors, never panics.
    #[test]
    fn parsers_never_panic() {
        let mut rng = rand::rng();
        // A cheap (i=1) server-first keeps mutants that still parse fast.
        let cheap_server_first = RFC_SERVER_FIRST.replace("i=4096", "i=1");
        let seeds: [&[u8]; 5] = [
            RFC_CLIENT_FIRST.as_bytes(),
            RFC_SERVER_FIRST.as_bytes(),
            cheap_server_first.as_bytes(),
            RFC_CLIENT_FINAL.as_bytes(),
            RFC_SERVER_FINAL.as_bytes(),
        ];
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for seed in seeds {
            inputs.extend((0..=seed.len()).map(|n| seed[..n].to_vec()));
            for _ in 0..300 {
                let mut mutated = seed.to_vec();
                let at = rng.random_range(0..mutated.len());
                mutated[at] = rng.random();
                inputs.push(mutated);
            }
        }
        for _ in 0..1000 {
            let len = rng.random_range(0..64);
            let alphabet = b"nyrpcsive=,$+/AZaz09\xff\x00";
            let bytes = (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]);
            inputs.push(bytes.collect());
            inputs.push((0..len).map(|_| rng.random()).collect());
        }
        let secret = rfc_secret();
        for input in &inputs {
            feed_everything(&secret, input);
        }
    }

    /// Feeds `input` to every entry point that reads peer bytes.
    fn feed_everything(secret: &ScramSecret, input: &[u8]) {
        let nonce = RFC_SERVER_NONCE.to_owned();
        let _ = ScramServer::with_nonce(secret.clone(), nonce.clone()).handle_client_first(input);
        let mut server = ScramServer::with_nonce(secret.clone(), nonce);
        if server
            .handle_client_first(RFC_CLIENT_FIRST.as_bytes())
            .is_ok()
        {
            let _ = server.handle_client_final(input);
        }
        let mut client = ScramClient::with_nonce(RFC_PASSWORD, RFC_CLIENT_NONCE.to_owned());
        let _ = client.verify_server_final(input);
        // Mutants of the i=4096 seed would run full PBKDF2 in an unoptimised
        // build; their parsing was already exercised by parse_server_first.
        let expensive = message::parse_server_first(input).is_ok_and(|first| first.iterations > 1);
        if !expensive {
            let _ = client.handle_server_first(input);
        }
        if let Ok(text) = std::str::from_utf8(input) {
            let _ = ScramSecret::parse(text);
            let _ = crate::md5_verify("user", text, [1, 2, 3, 4], input);
        }
    }
}
