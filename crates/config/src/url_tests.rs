//! Tests for URL and `host:port` parsing: defaults, IPv6, percent-encoding
//! and the inputs that must be refused.

use super::*;
use proptest::prelude::*;

fn addr(host: &str, port: u16) -> ServerAddr {
    ServerAddr {
        host: host.into(),
        port,
    }
}

#[test]
fn full_url() {
    let url = parse_postgres_url("postgres://app:s3cret@db.internal:6543/orders").unwrap();
    assert_eq!(url.host, "db.internal");
    assert_eq!(url.port, 6543);
    assert_eq!(url.user.as_deref(), Some("app"));
    assert_eq!(url.password.as_deref(), Some("s3cret"));
    assert_eq!(url.database.as_deref(), Some("orders"));
}

#[test]
fn no_port_means_5432_and_postgresql_scheme_works() {
    let url = parse_postgres_url("postgresql://app@localhost").unwrap();
    assert_eq!(url.server_addr(), addr("localhost", 5432));
    assert_eq!(url.password, None);
    assert_eq!(url.database, None);
    let url = parse_postgres_url("postgres://10.0.0.7/").unwrap();
    assert_eq!(url.server_addr(), addr("10.0.0.7", 5432));
    assert_eq!(url.user, None);
    assert_eq!(url.database, None);
}

#[test]
fn ipv6_host() {
    let url = parse_postgres_url("postgres://app@[::1]:5432/db").unwrap();
    assert_eq!(url.host, "::1");
    assert_eq!(url.port, 5432);
    assert_eq!(url.server_addr().to_string(), "[::1]:5432");
    let url = parse_postgres_url("postgres://[2001:db8::1]").unwrap();
    assert_eq!(url.server_addr(), addr("2001:db8::1", 5432));
}

#[test]
fn percent_encoding_is_decoded() {
    let url = parse_postgres_url("postgres://us%40er:p%40ss%3Aw%2Frd%25@h/my%20db").unwrap();
    assert_eq!(url.user.as_deref(), Some("us@er"));
    assert_eq!(url.password.as_deref(), Some("p@ss:w/rd%"));
    assert_eq!(url.database.as_deref(), Some("my db"));
}

#[test]
fn non_utf8_escapes_are_refused() {
    let error = parse_postgres_url("postgres://u:%ff%fe@h").unwrap_err();
    assert!(
        error.to_string().contains("password is not UTF-8"),
        "{error}"
    );
}

#[test]
fn missing_user_is_none() {
    let url = parse_postgres_url("postgres://:pw@h").unwrap();
    assert_eq!(url.user, None);
    assert_eq!(url.password.as_deref(), Some("pw"));
}

#[test]
fn refused_urls_say_why_without_echoing_the_password() {
    let cases = [
        ("mysql://u:topsecret@h", "scheme"),
        ("postgres://u:topsecret@h/db?sslmode=require", "sslmode"),
        ("postgres://u:topsecret@h/db#frag", "fragment"),
        ("postgres://u:topsecret@h1,h2/db", "multiple hosts"),
        ("postgres://u:topsecret@h:0", "port 0"),
        ("postgres://u:topsecret@h:99999", "not a URL"),
        ("postgres:///db", "no host"),
        ("postgres://u:topsecret@h/a/b", "single database"),
        ("not a url", "not a URL"),
    ];
    for (text, expected) in cases {
        let message = parse_postgres_url(text).unwrap_err().to_string();
        assert!(message.contains(expected), "{text}: {message}");
        assert!(!message.contains("topsecret"), "{text}: {message}");
    }
}

#[test]
fn host_port_forms() {
    assert_eq!(parse_host_port("db:6000"), Ok(addr("db", 6000)));
    assert_eq!(parse_host_port("db"), Ok(addr("db", 5432)));
    assert_eq!(
        parse_host_port("127.0.0.1:5433"),
        Ok(addr("127.0.0.1", 5433))
    );
    assert_eq!(parse_host_port("[::1]:5432"), Ok(addr("::1", 5432)));
    assert_eq!(parse_host_port("[::1]"), Ok(addr("::1", 5432)));
}

#[test]
fn host_port_refusals() {
    let cases = [
        ("::1", "brackets"),
        ("fe80::1:5432", "brackets"),
        ("a:b:5432", "contains `:`"),
        ("[::1", "closing"),
        ("[nope]:1", "not an IPv6"),
        ("[::1]x", "`:port`"),
        ("db:", "not a port"),
        ("db:0", "port 0"),
        ("db:65536", "not a port"),
        ("", "no host"),
        (":5432", "no host"),
        ("u:topsecret@db:5432", "`@`"),
        ("/var/run/postgresql", "Unix-domain"),
        ("db host:5432", "contains ` `"),
    ];
    for (text, expected) in cases {
        let message = parse_host_port(text).unwrap_err();
        assert!(message.contains(expected), "{text:?}: {message}");
        assert!(!message.contains("topsecret"), "{text:?}: {message}");
    }
}

#[test]
fn debug_redacts_the_password() {
    let url = parse_postgres_url("postgres://app:hunter2@h").unwrap();
    let text = format!("{url:?}");
    assert!(!text.contains("hunter2") && text.contains("***"), "{text}");
}

#[test]
fn redact_url_hides_only_the_password() {
    assert_eq!(
        redact_url("postgres://app:hunter2@h:5432/db"),
        "postgres://app:***@h:5432/db"
    );
    assert_eq!(
        redact_url("postgres://a:b@c@h/x@y"),
        "postgres://a:***@h/x@y"
    );
    assert_eq!(redact_url("postgres://app@h/db"), "postgres://app@h/db");
    assert_eq!(redact_url("h:5432"), "h:5432");
    assert_eq!(redact_url("u:pw@h"), "u:***@h");
}

proptest! {
    #[test]
    fn never_panics_on_garbage(text in "\\PC{0,40}") {
        let _ = parse_postgres_url(&text);
        let _ = parse_host_port(&text);
        let _ = redact_url(&text);
    }

    #[test]
    fn never_panics_on_url_shaped_garbage(
        text in "postgres(ql)?://[a-z%0-9:@\\[\\]/?#,.]{0,30}"
    ) {
        let _ = parse_postgres_url(&text);
        let _ = redact_url(&text);
    }

    #[test]
    fn user_and_password_round_trip_through_percent_encoding(
        user in "[^\u{0}]{1,12}",
        password in "[^\u{0}]{1,12}",
    ) {
        let text = format!("postgres://{}:{}@h/db", encode(&user), encode(&password));
        let url = parse_postgres_url(&text).unwrap();
        prop_assert_eq!(url.user, Some(user));
        prop_assert_eq!(url.password, Some(password));
    }
}

/// Percent-encodes every byte outside the unreserved set.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
