//! Tests for the `[insight]` table: defaults, a full section, every
//! validation rule by its path, and unknown keys.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use super::{histogram_precision, optional_path};
use crate::validate::tests::{assert_one, invalid, ok, with_base, BASE};
use crate::{from_toml_str, Error, InsightConfig};

/// An `[insight]` table holding `body`, before [`BASE`].
fn with_insight(body: &str) -> String {
    with_base(&format!("[insight]\n{body}\n"))
}

#[test]
fn defaults() {
    let insight = ok(BASE).insight;
    assert!(insight.enabled);
    assert_eq!(insight.max_fingerprints.get(), 2000);
    assert_eq!(insight.slow_threshold, Duration::from_millis(500));
    assert_eq!(insight.slow_log_capacity, 1000);
    assert_eq!(insight.slow_log_file, None);
    assert!(insight.redact_params && insight.lints);
    assert_eq!(insight.n_plus_one_min_repeats, 5);
    assert_eq!(insight.burst_gap, Duration::from_millis(100));
    assert_eq!(insight.store_path, None);
    assert_eq!(insight.retention_days, 7);
    assert_eq!(insight.histogram_precision, 2);
    assert!(insight.explain && !insight.explain_analyze);
    assert_eq!(insight.explain_interval, Duration::from_secs(10));
    assert_eq!(insight.explain_top, 5);
    assert_eq!(insight, InsightConfig::default());
    // An empty table is the same as none.
    assert_eq!(ok(&with_insight("")).insight, InsightConfig::default());
}

#[test]
fn full_section() {
    let insight = ok(&with_insight(
        r#"
enabled = false
max_fingerprints = 500
slow_threshold = "1s"
slow_log_capacity = 0
slow_log_file = "/var/log/pgpilot/slow.jsonl"
redact_params = false
lints = false
n_plus_one_min_repeats = 2
burst_gap = "250ms"
store_path = "history.sqlite"
retention_days = 30
histogram_precision = 3
explain = true
explain_analyze = true
explain_interval = "1m"
explain_top = 0
"#,
    ))
    .insight;
    assert_eq!(
        insight,
        InsightConfig {
            enabled: false,
            max_fingerprints: NonZeroUsize::new(500).unwrap(),
            slow_threshold: Duration::from_secs(1),
            slow_log_capacity: 0,
            slow_log_file: Some(PathBuf::from("/var/log/pgpilot/slow.jsonl")),
            redact_params: false,
            lints: false,
            n_plus_one_min_repeats: 2,
            burst_gap: Duration::from_millis(250),
            store_path: Some(PathBuf::from("history.sqlite")),
            retention_days: 30,
            histogram_precision: 3,
            explain: true,
            explain_analyze: true,
            explain_interval: Duration::from_secs(60),
            explain_top: 0,
        }
    );
}

#[test]
fn empty_paths_mean_none() {
    let insight = ok(&with_insight("slow_log_file = \"\"\nstore_path = \"\"")).insight;
    assert_eq!((insight.slow_log_file, insight.store_path), (None, None));
    assert_one(
        &with_insight("store_path = \"  \""),
        "insight.store_path",
        "only whitespace",
    );
    assert_one(
        &with_insight("slow_log_file = \"a\\u0000b\""),
        "insight.slow_log_file",
        "NUL",
    );
    assert_eq!(optional_path("x".into()), Ok(Some(PathBuf::from("x"))));
}

#[test]
fn count_rules() {
    assert_one(
        &with_insight("max_fingerprints = 0"),
        "insight.max_fingerprints",
        "at least 1",
    );
    assert_one(
        &with_insight("slow_log_capacity = -1"),
        "insight.slow_log_capacity",
        "must not be negative",
    );
    assert_one(
        &with_insight("n_plus_one_min_repeats = 1"),
        "insight.n_plus_one_min_repeats",
        "at least 2",
    );
    assert_one(
        &with_insight("explain_top = -5"),
        "insight.explain_top",
        "must not be negative",
    );
    assert_one(
        &with_insight("retention_days = 0"),
        "insight.retention_days",
        "at least 1",
    );
    assert_one(
        &with_insight("retention_days = 4294967296"),
        "insight.retention_days",
        "the maximum is 4294967295",
    );
}

#[test]
fn histogram_precision_rule() {
    for bad in ["0", "4", "-1", "256"] {
        assert_one(
            &with_insight(&format!("histogram_precision = {bad}")),
            "insight.histogram_precision",
            "between 1 and 3 significant digits",
        );
    }
    for good in 1..=3 {
        assert_eq!(histogram_precision(good), Ok(good as u8));
    }
}

#[test]
fn duration_rules() {
    // A zero threshold logs every statement; a zero gap or interval is refused.
    let all = ok(&with_insight("slow_threshold = \"0ms\"")).insight;
    assert_eq!(all.slow_threshold, Duration::ZERO);
    assert_one(
        &with_insight("slow_threshold = 500"),
        "insight.slow_threshold",
        "\"500ms\"",
    );
    assert_one(
        &with_insight("burst_gap = \"0ms\""),
        "insight.burst_gap",
        "greater than 0",
    );
    assert_one(
        &with_insight("explain_interval = \"0s\""),
        "insight.explain_interval",
        "greater than 0",
    );
}

#[test]
fn combination_rules() {
    assert_one(
        &with_insight("explain = false\nexplain_analyze = true"),
        "insight.explain_analyze",
        "needs insight.explain = true",
    );
    ok(&with_insight("explain = false\nexplain_analyze = false"));
    assert_one(
        &with_insight("slow_log_file = \"x.db\"\nstore_path = \"x.db\""),
        "insight.slow_log_file",
        "`x.db` is also insight.store_path",
    );
}

#[test]
fn every_bad_key_is_reported() {
    let errors = invalid(&with_insight(
        "max_fingerprints = 0\nburst_gap = \"0ms\"\nhistogram_precision = 9",
    ));
    let paths: Vec<&str> = errors.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "insight.max_fingerprints",
            "insight.burst_gap",
            "insight.histogram_precision"
        ]
    );
}

#[test]
fn unknown_keys_and_wrong_types_are_parse_errors() {
    for (body, needle) in [
        ("slow_treshold = \"1s\"", "slow_treshold"),
        ("enabled = \"yes\"", "line"),
        ("max_fingerprints = \"2000\"", "line"),
        ("store_path = 1", "line"),
    ] {
        match from_toml_str(&with_insight(body)) {
            Err(Error::Parse(message)) => assert!(message.contains(needle), "{message}"),
            other => panic!("expected Parse error for {body}, got {other:?}"),
        }
    }
}
