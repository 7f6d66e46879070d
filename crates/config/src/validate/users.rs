//! Checks `[[users]]` entries: names, auth methods, and whether each
//! password can actually do its job (verify the client with the chosen
//! method, log in to PostgreSQL).
//!
//! Also used by [`crate::quick_start`] for the login taken from a URL.

use crate::raw::RawUser;
use crate::secret::SecretKind;
use crate::settings::{AuthMethod, User};

use super::{no_nul, Problems};

/// Checks every entry and that names are unique. An absent or empty list
/// is an error at `users`.
pub(super) fn users(p: &mut Problems, raw: Option<Vec<RawUser>>) -> Vec<User> {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        p.add(
            "users",
            "at least one [[users]] entry is required (name and password)",
        );
    }
    let mut users: Vec<User> = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let path = format!("users[{i}]");
        let user = user(p, &path, entry);
        // An empty name is a placeholder for one already reported.
        let earlier = users
            .iter()
            .position(|u| !user.name.is_empty() && u.name == user.name);
        if let Some(first) = earlier {
            p.add(
                format!("{path}.name"),
                format!(
                    "`{}` is already used by users[{first}]",
                    user.name.escape_default()
                ),
            );
        }
        users.push(user);
    }
    users
}

/// Checks one user entry whose fields live under `path` (`users[0]`).
/// Invalid fields are recorded in `p`; the returned value is then only a
/// placeholder.
pub(crate) fn user(p: &mut Problems, path: &str, raw: RawUser) -> User {
    let name = match raw.name {
        None => {
            p.add(format!("{path}.name"), "is required");
            String::new()
        }
        Some(name) => p
            .parse(&format!("{path}.name"), Some(name), non_empty_name)
            .unwrap_or_default(),
    };
    let auth_path = format!("{path}.auth");
    let auth = p
        .parse(&auth_path, raw.auth, auth_method)
        .unwrap_or_default();
    // With an unknown method, only check the password on its own rather
    // than against a guessed method.
    let auth_to_check = match p.has(&auth_path) {
        true => AuthMethod::Trust,
        false => auth,
    };
    let password_path = format!("{path}.password");
    let password = match raw.password {
        None if auth_to_check != AuthMethod::Trust => {
            p.add(&password_path, missing_password(auth));
            None
        }
        None => None,
        Some(secret) => p.parse(&password_path, Some(secret), |s| {
            client_secret(auth_to_check, s)
        }),
    };
    let server_user = match raw.server_user {
        None => name.clone(),
        Some(server_user) => p
            .parse(
                &format!("{path}.server_user"),
                Some(server_user),
                non_empty_name,
            )
            .unwrap_or_default(),
    };
    let server_password = match raw.server_password {
        None => password
            .clone()
            .filter(|secret| SecretKind::of(secret) == Ok(SecretKind::Plaintext)),
        Some(secret) => p.parse(
            &format!("{path}.server_password"),
            Some(secret),
            server_secret,
        ),
    };
    User {
        name,
        auth,
        password,
        server_user,
        server_password,
    }
}

/// A role or database name: non-empty and, as it reaches the wire as a C
/// string, free of NUL.
pub(super) fn non_empty_name(name: String) -> Result<String, String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    no_nul(name)
}

fn auth_method(text: String) -> Result<AuthMethod, String> {
    AuthMethod::from_name(&text).ok_or_else(|| {
        format!(
            "`{}` is not an auth method; use \"scram-sha-256\", \"md5\" or \"trust\"",
            text.escape_default()
        )
    })
}

fn missing_password(auth: AuthMethod) -> String {
    format!("is required for auth = \"{auth}\" (use auth = \"trust\" for a login without one)")
}

/// A client secret must be non-empty, NUL-free, well-formed and able to
/// verify the chosen method.
fn client_secret(auth: AuthMethod, secret: String) -> Result<String, String> {
    let secret = non_empty_secret(secret)?;
    match (auth, SecretKind::of(&secret)?) {
        (AuthMethod::Md5, SecretKind::ScramVerifier) => Err(
            "a SCRAM-SHA-256 verifier cannot check an MD5 login: MD5 needs \
             md5(password || user name), which cannot be derived from the verifier; \
             give the plaintext password or its md5 hash, or use auth = \"scram-sha-256\""
                .into(),
        ),
        (AuthMethod::ScramSha256, SecretKind::Md5Hash) => Err(
            "an MD5 hash cannot check a SCRAM-SHA-256 login: SCRAM needs the \
             plaintext password or a SCRAM-SHA-256 verifier; give one of those, \
             or use auth = \"md5\""
                .into(),
        ),
        _ => Ok(secret),
    }
}

/// A server password must be something pgpilot can log in with.
pub(super) fn server_secret(secret: String) -> Result<String, String> {
    let secret = non_empty_secret(secret)?;
    match SecretKind::of(&secret)? {
        SecretKind::ScramVerifier => Err(
            "a SCRAM-SHA-256 verifier cannot log in to PostgreSQL (it only checks \
             passwords); give the plaintext password"
                .into(),
        ),
        SecretKind::Plaintext | SecretKind::Md5Hash => Ok(secret),
    }
}

fn non_empty_secret(secret: String) -> Result<String, String> {
    if secret.is_empty() {
        return Err(
            "must not be empty (leave it out, with auth = \"trust\", for no password)".into(),
        );
    }
    no_nul(secret)
}
