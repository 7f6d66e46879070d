//! PostgreSQL's legacy `md5` password method (AuthenticationMD5Password,
//! PostgreSQL docs "Password Authentication"). The server sends a 4-byte
//! salt; the client answers with a PasswordMessage holding
//! `"md5" + hex(md5(hex(md5(password ++ user)) ++ salt))`. pgpilot uses
//! [`md5_verify`] when authenticating clients and [`md5_response`] when
//! logging into a backend that asks for md5.
//!
//! MD5 is weak; prefer SCRAM (`crate::scram`). Passwords and user names are
//! used as raw UTF-8 bytes, as PostgreSQL does.

use ::md5::{Digest, Md5};

use crate::scram::ScramSecret;

/// Prefix of both stored md5 hashes and md5 responses.
const MD5_PREFIX: &str = "md5";

/// Length of a hex-encoded MD5 digest.
const MD5_HEX_LEN: usize = 32;

/// The PasswordMessage body (without the trailing NUL) answering an
/// AuthenticationMD5Password request that carried `salt`:
/// `"md5" + hex(md5(hex(md5(password ++ user)) ++ salt))`. A `password`
/// that is itself a stored md5 hash (`"md5"` + 32 lowercase hex, the form
/// PostgreSQL stores) is used as the inner hash, so pgpilot can log in
/// with the hash alone.
pub fn md5_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    match stored_hash(password) {
        Some(hash) => salted_response(hash, salt),
        None => salted_response(&inner_hash(user, password), salt),
    }
}

/// The password hash PostgreSQL stores in `pg_authid.rolpassword` for md5:
/// `"md5" + hex(md5(password ++ user))`.
pub fn md5_stored(user: &str, password: &str) -> String {
    format!("{MD5_PREFIX}{}", inner_hash(user, password))
}

/// Checks a client's md5 PasswordMessage body (`response`, without the
/// trailing NUL) against `stored`, which is either a plaintext password or
/// an `"md5"` + 32 lowercase hex stored hash (PostgreSQL's test for which it
/// is). The comparison is constant-time.
///
/// Returns `false` for a wrong response, an empty `stored` (PostgreSQL never
/// lets an empty password log in), and a `stored` SCRAM verifier, from which
/// an md5 answer cannot be checked: such roles must use SCRAM.
pub fn md5_verify(user: &str, stored: &str, salt: [u8; 4], response: &[u8]) -> bool {
    if stored.is_empty() || ScramSecret::parse(stored).is_ok() {
        return false;
    }
    let inner = match stored_hash(stored) {
        Some(hash) => hash.to_owned(),
        None => inner_hash(user, stored),
    };
    constant_time_eq(salted_response(&inner, salt).as_bytes(), response)
}

/// A fresh random salt for AuthenticationMD5Password.
pub fn random_md5_salt() -> [u8; 4] {
    rand::random()
}

/// The 32 hex digits of a stored md5 hash, if `stored` is one: `"md5"`
/// followed by exactly 32 lowercase hex digits, as PostgreSQL checks.
fn stored_hash(stored: &str) -> Option<&str> {
    let hash = stored.strip_prefix(MD5_PREFIX)?;
    let is_hex = hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (hash.len() == MD5_HEX_LEN && is_hex).then_some(hash)
}

/// `hex(md5(password ++ user))`.
fn inner_hash(user: &str, password: &str) -> String {
    hex_md5(&[password.as_bytes(), user.as_bytes()])
}

/// `"md5" + hex(md5(inner_hex ++ salt))`.
fn salted_response(inner_hex: &str, salt: [u8; 4]) -> String {
    format!("{MD5_PREFIX}{}", hex_md5(&[inner_hex.as_bytes(), &salt]))
}

/// Lowercase hex of the MD5 of the concatenated `parts`.
fn hex_md5(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Equal-length inputs are compared without early exit; a length mismatch
/// returns at once (the expected length is public).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_from_a_stored_hash_equals_response_from_the_password() {
        let salt = [9, 8, 7, 6];
        let stored = md5_stored("md5user", "md5-secret");
        assert_eq!(
            md5_response("md5user", &stored, salt),
            md5_response("md5user", "md5-secret", salt)
        );
        assert!(md5_verify(
            "md5user",
            "md5-secret",
            salt,
            md5_response("md5user", &stored, salt).as_bytes()
        ));
    }

    // Computed independently with Python's hashlib:
    // inner = md5(b"postgres" + b"postgres").hexdigest()
    // "md5" + md5(inner.encode() + bytes([1, 2, 3, 4])).hexdigest()
    const STORED: &str = "md53175bce1d3201d16594cebf9d7eb3f9d";
    const RESPONSE: &str = "md568be9ed08db75f318087ab337aaea044";
    const SALT: [u8; 4] = [1, 2, 3, 4];

    #[test]
    fn known_values() {
        assert_eq!(md5_stored("postgres", "postgres"), STORED);
        assert_eq!(md5_response("postgres", "postgres", SALT), RESPONSE);
    }

    #[test]
    fn verifies_against_plaintext_and_stored_hash() {
        assert!(md5_verify(
            "postgres",
            "postgres",
            SALT,
            RESPONSE.as_bytes()
        ));
        assert!(md5_verify("postgres", STORED, SALT, RESPONSE.as_bytes()));
    }

    #[test]
    fn rejects_wrong_answers() {
        let wrong_password = md5_response("postgres", "postgrex", SALT);
        assert!(!md5_verify(
            "postgres",
            "postgres",
            SALT,
            wrong_password.as_bytes()
        ));
        assert!(!md5_verify(
            "postgres",
            STORED,
            SALT,
            wrong_password.as_bytes()
        ));
        assert!(!md5_verify(
            "postgres",
            STORED,
            [1, 2, 3, 5],
            RESPONSE.as_bytes()
        ));
        assert!(!md5_verify("other", "postgres", SALT, RESPONSE.as_bytes()));
        assert!(!md5_verify("postgres", "postgres", SALT, b""));
        assert!(!md5_verify(
            "postgres",
            "postgres",
            SALT,
            format!("{RESPONSE}\0").as_bytes()
        ));
        assert!(!md5_verify(
            "postgres",
            "postgres",
            SALT,
            &RESPONSE.as_bytes()[..34]
        ));
    }

    #[test]
    fn uppercase_hash_is_a_plaintext_password() {
        let upper = format!("md5{}", STORED[3..].to_uppercase());
        assert!(!md5_verify("postgres", &upper, SALT, RESPONSE.as_bytes()));
        let response = md5_response("postgres", &upper, SALT);
        assert!(md5_verify("postgres", &upper, SALT, response.as_bytes()));
    }

    #[test]
    fn empty_and_scram_stored_passwords_never_match() {
        let empty = md5_response("postgres", "", SALT);
        assert!(!md5_verify("postgres", "", SALT, empty.as_bytes()));
        let scram = ScramSecret::generate("postgres").to_string();
        let response = md5_response("postgres", &scram, SALT);
        assert!(!md5_verify("postgres", &scram, SALT, response.as_bytes()));
        assert!(!md5_verify("postgres", &scram, SALT, RESPONSE.as_bytes()));
    }

    #[test]
    fn random_salts_differ() {
        let salts: std::collections::HashSet<_> = (0..16).map(|_| random_md5_salt()).collect();
        assert!(salts.len() > 1);
    }
}
