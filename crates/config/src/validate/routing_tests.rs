//! Tests for the `[routing]` table: defaults, a full section, every
//! validation rule by its path, and unknown keys.

use std::time::Duration;

use proptest::prelude::*;

use super::function_name;
use crate::validate::tests::{assert_one, invalid, ok, with_base, BASE};
use crate::{from_toml_str, Error, Fallback, RoutingSettings, RywScope};

/// A `[routing]` table holding `body`, before [`BASE`].
fn with_routing(body: &str) -> String {
    with_base(&format!("[routing]\n{body}\n"))
}

#[test]
fn defaults() {
    let settings = ok(BASE);
    let routing = &settings.routing;
    assert!(routing.enabled);
    assert!(!routing.auto_role);
    assert_eq!(routing.fallback, Fallback::Primary);
    assert_eq!(routing.max_lag, Duration::from_secs(10));
    assert_eq!(routing.max_lag_bytes, 64 * 1024 * 1024);
    assert!(routing.read_your_writes);
    assert_eq!(routing.health_check_interval, Duration::from_secs(1));
    assert_eq!(routing.health_check_timeout, Duration::from_secs(1));
    assert_eq!(routing.lsn_poll_interval, Duration::from_millis(10));
    assert_eq!(routing.breaker_failures, 3);
    assert_eq!(routing.ban_time, Duration::from_secs(5));
    assert_eq!(routing.monitor_database, "postgres");
    assert!(routing.read_only_functions.is_empty());
    assert_eq!(*routing, RoutingSettings::default());
    // An empty table is the same as none.
    assert_eq!(ok(&with_routing("")).routing, RoutingSettings::default());
}

#[test]
fn full_section() {
    let settings = ok(&with_routing(
        r#"
enabled = false
auto_role = true
fallback = "error"
max_lag = "30s"
max_lag_bytes = 1048576
read_your_writes = false
health_check_interval = "2s"
health_check_timeout = "500ms"
lsn_poll_interval = "2s"
breaker_failures = 5
ban_time = "1m"
monitor_database = "pgpilot_monitor"
ryw_scope = "trace"
read_only_functions = ["My_Func", "Reporting.Daily_Total", "_x$1", "été"]
"#,
    ));
    assert_eq!(
        settings.routing,
        RoutingSettings {
            enabled: false,
            auto_role: true,
            fallback: Fallback::Error,
            max_lag: Duration::from_secs(30),
            max_lag_bytes: 1 << 20,
            read_your_writes: false,
            ryw_scope: RywScope::Trace,
            health_check_interval: Duration::from_secs(2),
            health_check_timeout: Duration::from_millis(500),
            lsn_poll_interval: Duration::from_secs(2),
            breaker_failures: 5,
            ban_time: Duration::from_secs(60),
            monitor_database: "pgpilot_monitor".into(),
            read_only_functions: vec![
                "my_func".into(),
                "reporting.daily_total".into(),
                "_x$1".into(),
                "été".into(),
            ],
        }
    );
    assert_eq!(
        ok(&with_routing("max_lag_bytes = \"1GiB\""))
            .routing
            .max_lag_bytes,
        1 << 30
    );
}

#[test]
fn fallback_rule() {
    assert_one(
        &with_routing("fallback = \"replica\""),
        "routing.fallback",
        "use \"primary\" or \"error\"",
    );
    assert_one(
        &with_routing("fallback = \"Primary\""),
        "routing.fallback",
        "not a fallback",
    );
}

#[test]
fn lag_rules() {
    assert_one(
        &with_routing("max_lag = \"0s\""),
        "routing.max_lag",
        "greater than 0",
    );
    assert_one(&with_routing("max_lag = 10"), "routing.max_lag", "\"10s\"");
    assert_one(
        &with_routing("max_lag_bytes = 0"),
        "routing.max_lag_bytes",
        "greater than 0",
    );
    assert_one(
        &with_routing("max_lag_bytes = \"64MB\""),
        "routing.max_lag_bytes",
        "`MB`",
    );
    assert_one(
        &with_routing("max_lag_bytes = -1"),
        "routing.max_lag_bytes",
        "not a byte count",
    );
}

#[test]
fn health_check_rules() {
    assert_one(
        &with_routing("health_check_interval = \"0ms\""),
        "routing.health_check_interval",
        "greater than 0",
    );
    assert_one(
        &with_routing("health_check_timeout = \"0s\""),
        "routing.health_check_timeout",
        "greater than 0",
    );
    assert_one(
        &with_routing("health_check_timeout = \"61s\""),
        "routing.health_check_timeout",
        "61s is longer than the maximum 1m",
    );
    let at_max = ok(&with_routing("health_check_timeout = \"60s\""));
    assert_eq!(at_max.routing.health_check_timeout, Duration::from_secs(60));
    assert_one(
        &with_routing("ban_time = \"0s\""),
        "routing.ban_time",
        "greater than 0",
    );
}

#[test]
fn lsn_poll_interval_rules() {
    assert_one(
        &with_routing("lsn_poll_interval = \"0ms\""),
        "routing.lsn_poll_interval",
        "at least 1ms",
    );
    assert_one(
        &with_routing("lsn_poll_interval = \"5\""),
        "routing.lsn_poll_interval",
        "needs a unit",
    );
    let finest = ok(&with_routing("lsn_poll_interval = \"1ms\""));
    assert_eq!(finest.routing.lsn_poll_interval, Duration::from_millis(1));
    assert_one(
        &with_routing("lsn_poll_interval = \"1001ms\""),
        "routing.lsn_poll_interval",
        "1001ms is longer than routing.health_check_interval (1s)",
    );
    // A health check interval below the default poll interval is blamed
    // when the poll interval was left out.
    assert_one(
        &with_routing("health_check_interval = \"5ms\""),
        "routing.health_check_interval",
        "shorter than routing.lsn_poll_interval (default 10ms)",
    );
    ok(&with_routing(
        "health_check_interval = \"5ms\"\nlsn_poll_interval = \"5ms\"",
    ));
    // An invalid interval is not compared a second time.
    assert_one(
        &with_routing("health_check_interval = \"0s\"\nlsn_poll_interval = \"2s\""),
        "routing.health_check_interval",
        "greater than 0",
    );
}

#[test]
fn breaker_failures_rule() {
    for value in ["0", "-1"] {
        assert_one(
            &with_routing(&format!("breaker_failures = {value}")),
            "routing.breaker_failures",
            "must be at least 1",
        );
    }
    assert_one(
        &with_routing("breaker_failures = 4294967296"),
        "routing.breaker_failures",
        "the maximum is 4294967295",
    );
    let one = ok(&with_routing("breaker_failures = 1"));
    assert_eq!(one.routing.breaker_failures, 1);
}

#[test]
fn monitor_database_rule() {
    assert_one(
        &with_routing("monitor_database = \"\""),
        "routing.monitor_database",
        "must not be empty",
    );
    assert_one(
        &with_routing("monitor_database = \"a\\u0000b\""),
        "routing.monitor_database",
        "NUL",
    );
}

#[test]
fn read_only_function_rules() {
    assert_one(
        &with_routing("read_only_functions = [\"ok\", \"\"]"),
        "routing.read_only_functions[1]",
        "must not be empty",
    );
    for bad in [
        "a.b.c",
        "1abc",
        "my func",
        "\\\"Quoted\\\"",
        "a.",
        ".a",
        "f()",
        "a-b",
        "$x",
        " f",
    ] {
        assert_one(
            &with_routing(&format!("read_only_functions = [\"{bad}\"]")),
            "routing.read_only_functions[0]",
            "is not a function name",
        );
    }
    let long = "f".repeat(64);
    assert_one(
        &with_routing(&format!("read_only_functions = [\"s.{long}\"]")),
        "routing.read_only_functions[0]",
        "63-byte identifier limit",
    );
    ok(&with_routing(&format!(
        "read_only_functions = [\"{}\"]",
        "f".repeat(63)
    )));
    assert_one(
        &with_routing("read_only_functions = [\"f\", \"g\", \"F\"]"),
        "routing.read_only_functions[2]",
        "`f` is already listed at read_only_functions[0]",
    );
    // Every bad entry is reported, each under its own index.
    let errors = invalid(&with_routing(
        "read_only_functions = [\"\", \"ok\", \"a b\"]",
    ));
    let paths: Vec<&str> = errors.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routing.read_only_functions[0]",
            "routing.read_only_functions[2]"
        ]
    );
}

#[test]
fn unknown_keys_and_wrong_types_are_parse_errors() {
    for (body, needle) in [
        ("max_lag_byte = 1", "max_lag_byte"),
        ("health_check = \"1s\"", "health_check"),
        ("enabled = \"yes\"", "line"),
        ("read_only_functions = \"f\"", "line"),
        ("breaker_failures = \"3\"", "line"),
    ] {
        match from_toml_str(&with_routing(body)) {
            Err(Error::Parse(message)) => assert!(message.contains(needle), "{message}"),
            other => panic!("expected Parse error for {body}, got {other:?}"),
        }
    }
}

#[test]
fn function_names_fold_ascii_only() {
    assert_eq!(
        function_name("Public.NOW_Utc".into()),
        Ok("public.now_utc".into())
    );
    assert_eq!(function_name("ÉTÉ".into()), Ok("ÉtÉ".into()));
}

proptest! {
    #[test]
    fn function_name_never_panics(text in "\\PC{0,80}") {
        if let Ok(name) = function_name(text) {
            prop_assert!(!name.is_empty() && name.split('.').count() <= 2);
        }
    }
}
