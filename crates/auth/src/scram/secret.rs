//! The stored SCRAM verifier: what PostgreSQL keeps in `pg_authid.rolpassword`
//! and what pgpilot's config or auth query hands to [`ScramServer`]. Parsing,
//! derivation from a plaintext password, and the canonical text form.
//!
//! [`ScramServer`]: super::ScramServer

use std::fmt;
use std::str::FromStr;

use super::{base64_decode, base64_decode_key, base64_encode, hmac, parse_iterations, sha256};
use super::{DerivedKeys, Key};
use super::{DEFAULT_ITERATIONS, SCRAM_SHA_256};
use crate::error::{Error, Result};

/// Salt length PostgreSQL uses for new verifiers.
const SALT_LEN: usize = 16;

/// A stored SCRAM-SHA-256 verifier in PostgreSQL's format
/// `SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>`.
///
/// It lets a server check a client's proof without knowing the password.
/// `Debug` redacts the keys; `==` is not constant-time and must not be used to
/// authenticate anyone.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    /// PBKDF2 rounds the client must run (`i` in server-first-message), > 0.
    iterations: u32,
    /// Per-role random salt (`s` in server-first-message), non-empty.
    salt: Vec<u8>,
    /// `H(ClientKey)`: a client proof is valid when it reveals a key hashing to this.
    stored_key: Key,
    /// `HMAC(SaltedPassword, "Server Key")`: signs server-final-message.
    server_key: Key,
}

impl ScramSecret {
    /// Parses PostgreSQL's text form. Fails with [`Error::InvalidSecret`] on a
    /// different mechanism prefix, a zero or non-decimal iteration count, an
    /// empty or non-base64 salt, or keys that are not base64 of 32 bytes.
    pub fn parse(s: &str) -> Result<ScramSecret> {
        let rest = s
            .strip_prefix(SCRAM_SHA_256)
            .and_then(|rest| rest.strip_prefix('$'))
            .ok_or(Error::InvalidSecret)?;
        let (params, keys) = rest.split_once('$').ok_or(Error::InvalidSecret)?;
        let (iterations, salt) = params.split_once(':').ok_or(Error::InvalidSecret)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(Error::InvalidSecret)?;
        let iterations = parse_iterations(iterations).ok_or(Error::InvalidSecret)?;
        let salt = base64_decode(salt)
            .filter(|salt| !salt.is_empty())
            .ok_or(Error::InvalidSecret)?;
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key: base64_decode_key(stored_key).ok_or(Error::InvalidSecret)?,
            server_key: base64_decode_key(server_key).ok_or(Error::InvalidSecret)?,
        })
    }

    /// Derives the verifier PostgreSQL would store for `password` with this
    /// `salt` and iteration count. The password is used as raw UTF-8 bytes
    /// (no SASLprep; see the module docs). An `iterations` of 0 is raised to 1.
    /// Costs `iterations` HMAC rounds.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        let iterations = iterations.max(1);
        let keys = DerivedKeys::from_password(password, salt, iterations);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&keys.client_key),
            server_key: keys.server_key,
        }
    }

    /// A new verifier for `password` with a random 16-byte salt and 4096
    /// iterations, PostgreSQL's defaults.
    pub fn generate(password: &str) -> ScramSecret {
        let salt = rand::random::<[u8; SALT_LEN]>();
        ScramSecret::from_password(password, &salt, DEFAULT_ITERATIONS)
    }

    /// PBKDF2 iteration count clients must run.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The salt clients receive in server-first-message.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// `H(ClientKey)`, against which client proofs are checked. Together
    /// with the server key it lets anyone impersonate the server: never log it.
    pub fn stored_key(&self) -> &[u8; 32] {
        &self.stored_key
    }

    /// The key that signs server-final-message; pass it to
    /// [`ScramClient::from_keys`](super::ScramClient::from_keys) for
    /// pass-through logins. Never log it.
    pub fn server_key(&self) -> &[u8; 32] {
        &self.server_key
    }

    /// `HMAC(StoredKey, auth_message)`: the client signature a valid proof
    /// is XORed with.
    pub(crate) fn client_signature(&self, auth_message: &[u8]) -> Key {
        hmac(&self.stored_key, &[auth_message])
    }
}

impl FromStr for ScramSecret {
    type Err = Error;

    fn from_str(s: &str) -> Result<ScramSecret> {
        ScramSecret::parse(s)
    }
}

/// Writes PostgreSQL's text form; `parse` of the output yields an equal secret.
impl fmt::Display for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCRAM_SHA_256}${}:{}${}:{}",
            self.iterations,
            base64_encode(&self.salt),
            base64_encode(&self.stored_key),
            base64_encode(&self.server_key),
        )
    }
}

/// Shows the parameters but not the keys, which are password-equivalent
/// for impersonating the server.
impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt", &base64_encode(&self.salt))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scram::fixtures::POSTGRES_VERIFIER;

    #[test]
    fn parses_a_verifier_generated_by_postgres() {
        let secret = ScramSecret::parse(POSTGRES_VERIFIER).unwrap();
        assert_eq!(secret.iterations(), 4096);
        assert_eq!(secret.salt().len(), 16);
        assert_eq!(secret.to_string(), POSTGRES_VERIFIER);
    }

    #[test]
    fn from_password_matches_postgres_derivation() {
        let parsed = ScramSecret::parse(POSTGRES_VERIFIER).unwrap();
        let derived = ScramSecret::from_password("secret-pw", parsed.salt(), 4096);
        assert_eq!(derived, parsed);
        let wrong = ScramSecret::from_password("secret-px", parsed.salt(), 4096);
        assert_ne!(wrong, parsed);
    }

    #[test]
    fn display_parse_round_trip() {
        let secret = ScramSecret::generate("hunter2");
        assert_eq!(secret.iterations(), DEFAULT_ITERATIONS);
        assert_eq!(secret.salt().len(), SALT_LEN);
        let text = secret.to_string();
        assert_eq!(text.parse::<ScramSecret>().unwrap(), secret);
        assert_ne!(
            ScramSecret::generate("hunter2"),
            secret,
            "salt must be random"
        );
    }

    #[test]
    fn zero_iterations_are_raised_to_one() {
        let secret = ScramSecret::from_password("pw", b"salt", 0);
        assert_eq!(secret.iterations(), 1);
        assert_eq!(ScramSecret::parse(&secret.to_string()).unwrap(), secret);
    }

    #[test]
    fn debug_redacts_keys() {
        let secret = ScramSecret::parse(POSTGRES_VERIFIER).unwrap();
        let debug = format!("{secret:?}");
        assert!(debug.contains("4096"));
        assert!(!debug.contains("hqShb5ll"));
        assert!(!debug.contains("WD1p1ehz"));
    }

    #[test]
    fn rejects_malformed_verifiers() {
        let key = "hqShb5ll8Xe5vE7uHK6rVFHbwBF5CMQ3Xw2WussVtiE=";
        let bad = [
            String::new(),
            "md5abcdef".to_string(),
            format!("SCRAM-SHA-1$4096:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$0:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$-1:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$+4096:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$99999999999:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$4096:${key}:{key}"),
            format!("SCRAM-SHA-256$4096:!!!${key}:{key}"),
            format!("SCRAM-SHA-256$4096c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}:c2FsdA=="),
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}:{key}$"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}:{key}:{key}"),
        ];
        for text in &bad {
            assert_eq!(
                ScramSecret::parse(text),
                Err(Error::InvalidSecret),
                "{text}"
            );
        }
    }
}
