//! Tests for the raw → settings conversion: defaults, a full file, every
//! validation rule by its path, and garbage that must not panic.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use proptest::prelude::*;

use crate::secret::{TEST_MD5_HASH, TEST_SCRAM_VERIFIER};
use crate::{from_toml_str, AuthMethod, Error, PoolMode, PoolSettings, ServerAddr, Settings};

/// Upstream and one user: the least a valid file needs.
pub(super) const BASE: &str = "
[upstream]
primary = \"127.0.0.1:5432\"

[[users]]
name = \"app\"
password = \"secret\"
";

/// `extra` (top-level keys and/or a `[pool]` table) followed by [`BASE`].
pub(super) fn with_base(extra: &str) -> String {
    format!("{extra}\n{BASE}")
}

pub(super) fn ok(text: &str) -> Settings {
    from_toml_str(text).unwrap_or_else(|e| panic!("expected valid config, got:\n{e}"))
}

/// The `(path, message)` pairs of an `Invalid` error.
pub(super) fn invalid(text: &str) -> Vec<(String, String)> {
    match from_toml_str(text) {
        Err(Error::Invalid(errors)) => errors.into_iter().map(|e| (e.path, e.message)).collect(),
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

/// Asserts exactly one error, at `path`, whose message contains `needle`.
pub(super) fn assert_one(text: &str, path: &str, needle: &str) {
    let errors = invalid(text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, path, "{errors:?}");
    assert!(errors[0].1.contains(needle), "{errors:?}");
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn defaults() {
    let settings = ok(BASE);
    assert_eq!(settings.listen, addr("127.0.0.1:6432"));
    assert_eq!(settings.admin_listen, Some(addr("127.0.0.1:9930")));
    assert_eq!(settings.max_client_connections, 10_000);
    assert_eq!(settings.startup_timeout, Duration::from_secs(10));
    assert_eq!(settings.max_message_size, 256 * 1024 * 1024);
    let pool = &settings.pool;
    assert_eq!(pool.mode, PoolMode::Transaction);
    assert_eq!(pool.min_size, 0);
    assert_eq!(pool.max_size.get(), 20);
    assert_eq!(pool.connect_timeout, Duration::from_secs(5));
    assert_eq!(pool.checkout_timeout, Duration::from_secs(5));
    assert_eq!(pool.idle_timeout, Duration::from_secs(600));
    assert_eq!(pool.max_lifetime, Duration::from_secs(3600));
    assert_eq!(pool.max_prepared_statements, 200);
    assert_eq!(pool.server_reset_query, "DISCARD ALL");
    assert_eq!(settings.pool, PoolSettings::default());
    assert!(settings.upstream.replicas.is_empty());
    let user = settings.user("app").unwrap();
    assert_eq!(user.auth, AuthMethod::ScramSha256);
    assert_eq!(user.server_user, "app");
    assert_eq!(user.server_password.as_deref(), Some("secret"));
    assert!(settings.user("App").is_none());
    let debug = format!("{settings:?}");
    assert!(
        !debug.contains("secret") && debug.contains("***"),
        "{debug}"
    );
}

#[test]
fn full_file() {
    let settings = ok(&format!(
        r#"
listen = "0.0.0.0:7432"
admin_listen = "[::1]:9000"
max_client_connections = 500
startup_timeout = "2500ms"
max_message_size = "64MiB"

[pool]
mode = "session"
min_size = 2
max_size = 40
connect_timeout = "3s"
checkout_timeout = "1m"
idle_timeout = "2h"
max_lifetime = "1d"
max_prepared_statements = 0
server_reset_query = ""

[upstream]
primary = "postgres://db1.internal:5433"
replicas = ["postgresql://[2001:db8::2]", "db3:6000"]

[[users]]
name = "app"
password = "secret"
auth = "md5"
server_user = "app_rw"
server_password = "other"

[[users]]
name = "reporting"
auth = "scram-sha-256"
password = "{TEST_SCRAM_VERIFIER}"
server_password = "{TEST_MD5_HASH}"

[[users]]
name = "local"
auth = "trust"
"#
    ));
    assert_eq!(settings.listen, addr("0.0.0.0:7432"));
    assert_eq!(settings.admin_listen, Some(addr("[::1]:9000")));
    assert_eq!(settings.max_client_connections, 500);
    assert_eq!(settings.startup_timeout, Duration::from_millis(2500));
    assert_eq!(settings.max_message_size, 64 << 20);
    assert_eq!(
        settings.pool,
        PoolSettings {
            mode: PoolMode::Session,
            min_size: 2,
            max_size: NonZeroUsize::new(40).unwrap(),
            connect_timeout: Duration::from_secs(3),
            checkout_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(7200),
            max_lifetime: Duration::from_secs(86_400),
            max_prepared_statements: 0,
            server_reset_query: String::new(),
        }
    );
    let server = |host: &str, port| ServerAddr {
        host: host.into(),
        port,
    };
    assert_eq!(settings.upstream.primary, server("db1.internal", 5433));
    assert_eq!(
        settings.upstream.replicas,
        [server("2001:db8::2", 5432), server("db3", 6000)]
    );
    let app = settings.user("app").unwrap();
    assert_eq!(
        (app.auth, app.server_user.as_str()),
        (AuthMethod::Md5, "app_rw")
    );
    assert_eq!(app.server_password.as_deref(), Some("other"));
    let reporting = settings.user("reporting").unwrap();
    assert_eq!(reporting.password.as_deref(), Some(TEST_SCRAM_VERIFIER));
    assert_eq!(reporting.server_password.as_deref(), Some(TEST_MD5_HASH));
    let local = settings.user("local").unwrap();
    assert_eq!((local.auth, &local.password), (AuthMethod::Trust, &None));
}

#[test]
fn admin_listen_can_be_turned_off() {
    for value in ["\"\"", "\"off\"", "\"OFF\""] {
        let settings = ok(&with_base(&format!("admin_listen = {value}")));
        assert_eq!(settings.admin_listen, None, "{value}");
    }
}

#[test]
fn pool_size_rules() {
    assert_one(
        &with_base("[pool]\nmin_size = 30\nmax_size = 10"),
        "pool.min_size",
        "larger than pool.max_size (10)",
    );
    let errors = invalid(&with_base("[pool]\nmax_size = 0"));
    assert_eq!(
        errors,
        [("pool.max_size".into(), "must be at least 1".into())]
    );
    // An invalid max_size is not compared with min_size a second time.
    assert_one(
        &with_base("[pool]\nmin_size = 30\nmax_size = -1"),
        "pool.max_size",
        "at least 1",
    );
    assert_one(
        &with_base("[pool]\nmin_size = -1"),
        "pool.min_size",
        "negative",
    );
    assert_one(
        &with_base("[pool]\nmax_prepared_statements = -5"),
        "pool.max_prepared_statements",
        "negative",
    );
    assert_one(
        &with_base("max_client_connections = 0"),
        "max_client_connections",
        "at least 1",
    );
}

#[test]
fn duration_rules() {
    assert_one(
        &with_base("[pool]\nidle_timeout = \"10\""),
        "pool.idle_timeout",
        "needs a unit",
    );
    assert_one(
        &with_base("[pool]\nconnect_timeout = 5"),
        "pool.connect_timeout",
        "\"5s\"",
    );
    assert_one(
        &with_base("[pool]\nmax_lifetime = \"0s\""),
        "pool.max_lifetime",
        "greater than 0",
    );
    assert_one(
        &with_base("[pool]\ncheckout_timeout = \"5 minutes\""),
        "pool.checkout_timeout",
        "not a duration unit",
    );
    assert_one(
        &with_base("startup_timeout = \"400d\""),
        "startup_timeout",
        "maximum is 365d",
    );
}

#[test]
fn message_size_rules() {
    assert_eq!(
        ok(&with_base("max_message_size = 8192")).max_message_size,
        8192
    );
    assert_eq!(
        ok(&with_base("max_message_size = \"1GiB\"")).max_message_size,
        1 << 30
    );
    assert_one(
        &with_base("max_message_size = \"4KiB\""),
        "max_message_size",
        "outside",
    );
    assert_one(
        &with_base("max_message_size = \"2GiB\""),
        "max_message_size",
        "outside",
    );
    assert_one(
        &with_base("max_message_size = \"256MB\""),
        "max_message_size",
        "`MB`",
    );
    assert_one(
        &with_base("max_message_size = -1"),
        "max_message_size",
        "not a byte count",
    );
}

#[test]
fn address_rules() {
    assert_one(
        &with_base("listen = \"localhost:6432\""),
        "listen",
        "not an IP:port",
    );
    assert_one(
        &with_base("listen = \"127.0.0.1\""),
        "listen",
        "not an IP:port",
    );
    assert_one(
        &with_base("admin_listen = \"nope\""),
        "admin_listen",
        "not an IP:port",
    );
    assert_one(
        &with_base("listen = \"127.0.0.1:7000\"\nadmin_listen = \"127.0.0.1:7000\""),
        "admin_listen",
        "already used by listen",
    );
    // Port 0 asks the OS for a free port per socket, so it may repeat.
    ok(&with_base(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"",
    ));
}

#[test]
fn upstream_rules() {
    let users = "[[users]]\nname = \"app\"\nauth = \"trust\"\n";
    assert_one(users, "upstream.primary", "is required");
    assert_one(
        &format!("[upstream]\nreplicas = [\"r:5432\"]\n{users}"),
        "upstream.primary",
        "is required",
    );
    let with_upstream = |upstream: &str| format!("[upstream]\n{upstream}\n{users}");
    assert_one(
        &with_upstream("primary = \"db:99999\""),
        "upstream.primary",
        "not a port",
    );
    assert_one(
        &with_upstream("primary = \"postgres://u:pw@db\""),
        "upstream.primary",
        "credentials",
    );
    assert_one(
        &with_upstream("primary = \"postgres://db/app\""),
        "upstream.primary",
        "database",
    );
    assert_one(
        &with_upstream("primary = \"db\"\nreplicas = [\"r1\", \"postgres://db:5432\"]"),
        "upstream.replicas[1]",
        "is the primary",
    );
    assert_one(
        &with_upstream("primary = \"db\"\nreplicas = [\"r1\", \"r2\", \"r1:5432\"]"),
        "upstream.replicas[2]",
        "listed twice",
    );
}

#[test]
fn users_list_rules() {
    let upstream = "[upstream]\nprimary = \"db\"\n";
    assert_one(upstream, "users", "at least one");
    assert_one(&format!("users = []\n{upstream}"), "users", "at least one");
    let two = format!("{BASE}\n[[users]]\nname = \"app\"\nauth = \"trust\"\n");
    assert_one(&two, "users[1].name", "already used by users[0]");
    assert_one(
        &format!("{upstream}[[users]]\nauth = \"trust\""),
        "users[0].name",
        "is required",
    );
    assert_one(
        &format!("{upstream}[[users]]\nname = \"\"\nauth = \"trust\""),
        "users[0].name",
        "empty",
    );
}

/// `[[users]]` entry `body` after a valid first user, so paths are `users[1]`.
fn second_user(body: &str) -> String {
    format!("{BASE}\n[[users]]\nname = \"second\"\n{body}\n")
}

#[test]
fn password_rules() {
    assert_one(
        &second_user(""),
        "users[1].password",
        "required for auth = \"scram-sha-256\"",
    );
    assert_one(
        &second_user("auth = \"md5\""),
        "users[1].password",
        "auth = \"trust\"",
    );
    assert_one(
        &second_user("password = \"\""),
        "users[1].password",
        "must not be empty",
    );
    assert_one(
        &second_user("password = \"a\\u0000b\""),
        "users[1].password",
        "NUL",
    );
    assert_one(
        &second_user("auth = \"ldap\"\npassword = \"x\""),
        "users[1].auth",
        "not an auth method",
    );
    // An unknown method is reported alone, not also as a password mismatch.
    assert_one(
        &second_user(&format!("auth = \"ldap\"\npassword = \"{TEST_MD5_HASH}\"")),
        "users[1].auth",
        "not an auth method",
    );
    assert_one(
        &second_user(&format!(
            "auth = \"md5\"\npassword = \"{TEST_SCRAM_VERIFIER}\""
        )),
        "users[1].password",
        "SCRAM-SHA-256 verifier cannot check an MD5 login",
    );
    assert_one(
        &second_user(&format!("password = \"{TEST_MD5_HASH}\"")),
        "users[1].password",
        "MD5 hash cannot check a SCRAM-SHA-256 login",
    );
    assert_one(
        &second_user("password = \"SCRAM-SHA-256$4096:abc\""),
        "users[1].password",
        "looks like a SCRAM-SHA-256 verifier",
    );
    assert_one(
        &second_user(&format!(
            "password = \"x\"\nserver_password = \"{TEST_SCRAM_VERIFIER}\""
        )),
        "users[1].server_password",
        "cannot log in to PostgreSQL",
    );
    assert_one(
        &second_user("password = \"x\"\nserver_user = \"\""),
        "users[1].server_user",
        "empty",
    );
}

#[test]
fn server_password_defaults_only_from_plaintext() {
    let md5 = ok(&second_user(&format!(
        "auth = \"md5\"\npassword = \"{TEST_MD5_HASH}\""
    )));
    assert_eq!(md5.users[1].server_password, None);
    let trust = ok(&second_user("auth = \"trust\"\npassword = \"pw\""));
    assert_eq!(trust.users[1].server_password.as_deref(), Some("pw"));
    let scram = ok(&second_user(&format!(
        "password = \"{TEST_SCRAM_VERIFIER}\"\nserver_password = \"pw\""
    )));
    assert_eq!(scram.users[1].server_password.as_deref(), Some("pw"));
}

#[test]
fn several_errors_are_reported_together() {
    let text = r#"
listen = "nowhere"
startup_timeout = 10

[pool]
max_size = 0
mode = "statement"

[routing]
ban_time = "0s"

[upstream]
replicas = ["::1"]

[[users]]
name = "app"
auth = "md5"

[[users]]
name = "app"
auth = "trust"
"#;
    let error = from_toml_str(text).unwrap_err();
    let Error::Invalid(errors) = &error else {
        panic!("expected Invalid, got {error:?}");
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "listen",
            "startup_timeout",
            "pool.max_size",
            "pool.mode",
            "upstream.primary",
            "upstream.replicas[0]",
            "users[0].password",
            "users[1].name",
            "routing.ban_time",
        ]
    );
    let display = error.to_string();
    assert_eq!(display.lines().count(), paths.len(), "{display}");
    assert!(
        display.contains("\npool.max_size: must be at least 1\n"),
        "{display}"
    );
}

#[test]
fn unknown_keys_are_parse_errors_naming_the_key() {
    for (text, key) in [
        (with_base("lisen = \"127.0.0.1:1\""), "lisen"),
        (with_base("[pool]\nmax_szie = 3"), "max_szie"),
        (format!("{BASE}passwd = \"x\""), "passwd"),
        (format!("{BASE}\n[tls]\ncert = \"x\""), "tls"),
    ] {
        match from_toml_str(&text) {
            Err(Error::Parse(message)) => {
                assert!(message.contains(key), "{message}");
                assert!(message.contains("line"), "{message}");
                assert_eq!(message.trim_end(), message, "no trailing newline");
            }
            other => panic!("expected Parse error for {key}, got {other:?}"),
        }
    }
}

#[test]
fn wrong_toml_types_and_syntax_are_parse_errors() {
    for text in [
        with_base("[pool]\nmax_size = \"20\""),
        with_base("listen = 6432"),
        "listen = ".into(),
    ] {
        assert!(
            matches!(from_toml_str(&text), Err(Error::Parse(_))),
            "{text}"
        );
    }
}

/// Keys and values that exercise every validator, for the generators below.
const FRAGMENTS: &[&str] = &[
    "listen = \"127.0.0.1:6432\"",
    "listen = \"::\"",
    "admin_listen = \"off\"",
    "max_client_connections = -3",
    "startup_timeout = \"9999999999999999999d\"",
    "max_message_size = \"1GiB\"",
    "max_message_size = 9223372036854775807",
    "[pool]",
    "min_size = 5",
    "max_size = 0",
    "idle_timeout = \"1ms\"",
    "mode = \"session\"",
    "[upstream]",
    "primary = \"postgres://[::1]:5432\"",
    "primary = \"postgres://%zz@h\"",
    "replicas = [\"db\", \"db\", \"\"]",
    "[[users]]",
    "name = \"app\"",
    "auth = \"md5\"",
    "password = \"md56a422f785c9e20873908ce25d1736ae2\"",
    "password = \"SCRAM-SHA-256$1:$:\"",
    "server_password = \"\"",
    "[routing]",
    "fallback = \"error\"",
    "lsn_poll_interval = \"2s\"",
    "health_check_timeout = \"2m\"",
    "breaker_failures = 0",
    "max_lag_bytes = \"64MiB\"",
    "read_only_functions = [\"A.b\", \"a.B\", \"\", \"x.y.z\"]",
    "\"",
    "[",
    "=",
    "\u{0}",
    "é",
];

proptest! {
    #[test]
    fn never_panics_on_random_text(text in "\\PC{0,200}") {
        let _ = from_toml_str(&text);
    }

    #[test]
    fn never_panics_on_shuffled_fragments(
        picks in proptest::collection::vec(0..FRAGMENTS.len(), 0..24)
    ) {
        let text: Vec<&str> = picks.iter().map(|&i| FRAGMENTS[i]).collect();
        if let Err(Error::Invalid(errors)) = from_toml_str(&text.join("\n")) {
            prop_assert!(!errors.is_empty());
        }
    }

    #[test]
    fn never_panics_on_mutated_example(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let mut bytes = include_bytes!("../../../../pgpilot.example.toml").to_vec();
        for (index, byte) in edits {
            let at = index.index(bytes.len());
            bytes[at] = byte;
        }
        let _ = from_toml_str(&String::from_utf8_lossy(&bytes));
    }
}
