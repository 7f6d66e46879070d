//! Recognises what a `password` value is: plaintext, a PostgreSQL MD5 hash
//! or a SCRAM-SHA-256 verifier, using the same rules PostgreSQL applies to
//! `pg_authid.rolpassword` (`src/backend/libpq/crypt.c`,
//! `get_password_type`).
//!
//! [`crate::validate`] uses the kind to check it fits the user's auth method;
//! the `auth` crate uses it to pick how to verify a client.

/// The prefix PostgreSQL puts on SCRAM-SHA-256 verifiers.
const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// Base64 length of a 32-byte SHA-256 key, with its one `=` of padding.
const SCRAM_KEY_BASE64_LEN: usize = 44;

/// What kind of secret a password string holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// The password itself. Works for every auth method, client and server side.
    Plaintext,
    /// `"md5"` followed by 32 lowercase hex digits: `md5(password || user)`,
    /// as stored by PostgreSQL. Only answers MD5 authentication, and only for
    /// the user whose name was hashed in.
    Md5Hash,
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as stored
    /// by PostgreSQL. Verifies SCRAM clients; cannot log in anywhere itself.
    ScramVerifier,
}

impl SecretKind {
    /// Classifies `secret`.
    ///
    /// # Errors
    /// A message when the text starts like a SCRAM verifier but is malformed.
    /// PostgreSQL would silently take such a string as a plaintext password;
    /// in a config file it is almost certainly a truncated copy-paste.
    pub fn of(secret: &str) -> Result<SecretKind, String> {
        if is_md5_hash(secret) {
            return Ok(SecretKind::Md5Hash);
        }
        match secret.strip_prefix(SCRAM_PREFIX) {
            Some(rest) => check_scram_verifier(rest)
                .map(|()| SecretKind::ScramVerifier)
                .map_err(|why| format!("looks like a SCRAM-SHA-256 verifier but {why}")),
            None => Ok(SecretKind::Plaintext),
        }
    }

    /// How the kind is named in messages.
    pub fn describe(self) -> &'static str {
        match self {
            SecretKind::Plaintext => "a plaintext password",
            SecretKind::Md5Hash => "an MD5 hash",
            SecretKind::ScramVerifier => "a SCRAM-SHA-256 verifier",
        }
    }
}

/// PostgreSQL's test: exactly `md5` + 32 characters from `0-9a-f`.
fn is_md5_hash(secret: &str) -> bool {
    secret.len() == 35
        && secret.starts_with("md5")
        && secret
            .bytes()
            .skip(3)
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks `<iterations>:<salt>$<StoredKey>:<ServerKey>` (the part after the
/// prefix), returning why it is malformed.
fn check_scram_verifier(rest: &str) -> Result<(), &'static str> {
    let (params, keys) = rest.split_once('$').ok_or("has no `$` before the keys")?;
    let (iterations, salt) = params
        .split_once(':')
        .ok_or("has no `:` between iterations and salt")?;
    match iterations.parse::<u32>() {
        Ok(n) if n > 0 => {}
        _ => return Err("its iteration count is not a positive integer"),
    }
    if salt.is_empty() || !is_base64(salt) {
        return Err("its salt is not base64");
    }
    let (stored_key, server_key) = keys
        .split_once(':')
        .ok_or("has no `:` between StoredKey and ServerKey")?;
    for key in [stored_key, server_key] {
        if key.len() != SCRAM_KEY_BASE64_LEN || !is_base64(key) {
            return Err("its keys are not 32 bytes of base64 each");
        }
    }
    Ok(())
}

/// Standard base64 alphabet, length a multiple of 4, at most two trailing `=`.
fn is_base64(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    text.len() % 4 == 0
        && text.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// SCRAM-SHA-256 verifier for the password `secret` (salt
/// `pgpilot-test-salt`, 4096 iterations), computed as PostgreSQL does.
#[cfg(test)]
pub(crate) const TEST_SCRAM_VERIFIER: &str = "SCRAM-SHA-256$4096:cGdwaWxvdC10ZXN0LXNhbHQ=$\
    YdWJuXriQXbcXsU4B1eQ8fQT1pNwsDYxjXyd44yLPNU=:nj+4GRJLNcnqbHpjVSk4RufyqhwEmEEmb7+Fa8Raqpk=";

/// `md5(\"secret\" || \"app\")` as PostgreSQL stores it for user `app`.
#[cfg(test)]
pub(crate) const TEST_MD5_HASH: &str = "md56a422f785c9e20873908ce25d1736ae2";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_kind() {
        assert_eq!(SecretKind::of("secret"), Ok(SecretKind::Plaintext));
        assert_eq!(SecretKind::of(TEST_MD5_HASH), Ok(SecretKind::Md5Hash));
        assert_eq!(
            SecretKind::of(TEST_SCRAM_VERIFIER),
            Ok(SecretKind::ScramVerifier)
        );
    }

    #[test]
    fn md5_lookalikes_are_plaintext_like_in_postgres() {
        // Uppercase hex and wrong lengths are plaintext to PostgreSQL too.
        assert_eq!(
            SecretKind::of("md56A422F785C9E20873908CE25D1736AE2"),
            Ok(SecretKind::Plaintext)
        );
        assert_eq!(SecretKind::of("md5abc"), Ok(SecretKind::Plaintext));
    }

    #[test]
    fn malformed_scram_verifiers_are_errors() {
        for bad in [
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$0:c2FsdA==$a:b",
            "SCRAM-SHA-256$4096:!!!!$a:b",
            "SCRAM-SHA-256$4096:c2FsdA==$short:short",
        ] {
            let message = SecretKind::of(bad).unwrap_err();
            assert!(message.starts_with("looks like a SCRAM"), "{message}");
        }
    }
}
