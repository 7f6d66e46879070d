//! Tests of the exposition writer: escaping, one HELP/TYPE per family, and
//! output that a line-by-line parser of the 0.0.4 format accepts.

use std::collections::HashMap;

use super::*;

/// One parsed sample line.
#[derive(Debug)]
struct Line {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Reads a quoted label value starting after the opening quote; returns the
/// unescaped value and the rest after the closing quote.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\n' => return Err("raw newline in label value".into()),
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, 'n')) => out.push('\n'),
                other => return Err(format!("bad escape {other:?}")),
            },
            c => out.push(c),
        }
    }
    Err("unterminated label value".into())
}

/// Parses `name{l="v",...} value` or `name value`.
fn parse_sample(line: &str) -> Result<Line, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = r.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = r.find("=\"").ok_or("label without =\"")?;
            let label = &r[..eq];
            if !is_name(label) {
                return Err(format!("bad label name {label:?}"));
            }
            let (value, after) = quoted(&r[eq + 2..])?;
            labels.push((label.to_owned(), value));
            r = after.strip_prefix(',').unwrap_or(after);
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|e| format!("bad value {v:?}: {e}"))?,
    };
    Ok(Line {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Checks the whole text line by line; returns the samples.
/// Every sample must follow its family's HELP and TYPE, each given once.
fn parse(text: &str) -> Vec<Line> {
    let mut help = HashMap::new();
    let mut kind = HashMap::new();
    let mut samples = Vec::new();
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(
                help.insert(name.to_owned(), ()).is_none(),
                "HELP twice for {name}"
            );
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').expect("TYPE line has a type");
            assert!(matches!(t, "gauge" | "counter"), "type {t}");
            assert!(help.contains_key(name), "TYPE before HELP for {name}");
            assert!(
                kind.insert(name.to_owned(), ()).is_none(),
                "TYPE twice for {name}"
            );
        } else {
            let s = parse_sample(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            assert!(kind.contains_key(&s.name), "sample before TYPE: {line}");
            samples.push(s);
        }
    }
    samples
}

fn snapshot(database: &str, user: &str) -> PoolSnapshot {
    PoolSnapshot {
        server: "127.0.0.1:5432".into(),
        database: database.into(),
        user: user.into(),
        cl_active: 3,
        cl_waiting: 1,
        sv_active: 2,
        sv_idle: 5,
        sv_login: 0,
        maxwait_us: 1_500_000,
        xact_count: 42,
        query_count: 57,
        xact_time_us: 2_250_000,
        query_time_us: 1_000,
        wait_time_us: 0,
        bytes_received: 1024,
        bytes_sent: 4096,
        connect_errors: 1,
        checkout_timeouts: 2,
        min_size: 0,
        max_size: 20,
    }
}

fn value_of<'a>(samples: &'a [Line], name: &str, database: &str) -> &'a Line {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels
                    .iter()
                    .any(|(l, v)| l == "database" && v == database)
        })
        .unwrap_or_else(|| panic!("no {name} for {database}"))
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
    assert_eq!(escape_label_value("x\ny"), "x\\ny");
    assert_eq!(escape_label_value("plain-db_1"), "plain-db_1");
    let mut exp = Exposition::default();
    exp.sample("m", &[("database", "we\"ird\\\nname")], Value::Int(1));
    assert_eq!(exp.finish(), "m{database=\"we\\\"ird\\\\\\nname\"} 1\n");
}

#[test]
fn help_text_is_escaped_and_written_once() {
    let mut exp = Exposition::default();
    exp.family("m_total", Kind::Counter, "back\\slash\nnewline");
    let text = exp.finish();
    assert_eq!(
        text,
        "# HELP m_total back\\\\slash\\nnewline\n# TYPE m_total counter\n"
    );
}

#[test]
fn values_use_the_formats_spellings() {
    assert_eq!(
        Value::Int(18_446_744_073_709_551_615).to_string(),
        "18446744073709551615"
    );
    assert_eq!(Value::seconds_from_us(1_500_000).to_string(), "1.5");
    assert_eq!(Value::seconds_from_us(0).to_string(), "0");
    assert_eq!(Value::Float(f64::NAN).to_string(), "NaN");
    assert_eq!(Value::Float(f64::INFINITY).to_string(), "+Inf");
    assert_eq!(Value::Float(f64::NEG_INFINITY).to_string(), "-Inf");
}

#[test]
fn pool_snapshot_renders_with_labels_and_values() {
    let pools = [snapshot("app", "app"), snapshot("odd\"db", "u\\1")];
    let samples = parse(&render(&pools, &[]));
    let s = value_of(&samples, "pgpilot_pool_transactions_total", "app");
    assert_eq!(
        s.labels,
        vec![
            ("database".into(), "app".into()),
            ("user".into(), "app".into()),
            ("server".into(), "127.0.0.1:5432".into())
        ]
    );
    assert_eq!(s.value, 42.0);
    assert_eq!(value_of(&samples, "pgpilot_pool_sv_idle", "app").value, 5.0);
    assert_eq!(
        value_of(&samples, "pgpilot_pool_maxwait_seconds", "app").value,
        1.5
    );
    assert_eq!(
        value_of(&samples, "pgpilot_pool_xact_time_seconds_total", "app").value,
        2.25
    );
    assert_eq!(
        value_of(&samples, "pgpilot_pool_sent_bytes_total", "app").value,
        4096.0
    );
    assert_eq!(
        value_of(&samples, "pgpilot_pool_checkout_timeouts_total", "app").value,
        2.0
    );
    let odd = value_of(&samples, "pgpilot_pool_cl_active", "odd\"db");
    assert_eq!(odd.labels[1], ("user".into(), "u\\1".into()));
    assert_eq!(samples.len(), POOL_FAMILIES.len() * pools.len());
}

#[test]
fn every_family_has_help_and_type_once_even_without_pools() {
    let proxy = [ProxySample {
        name: "pgpilot_clients",
        kind: Kind::Gauge,
        help: "Clients",
        value: Value::Int(7),
    }];
    let text = render(&[], &proxy);
    let samples = parse(&text);
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].value, 7.0);
    for family in POOL_FAMILIES {
        assert_eq!(
            text.matches(&format!("# HELP {} ", family.name)).count(),
            1,
            "{}",
            family.name
        );
        assert_eq!(
            text.matches(&format!("# TYPE {} ", family.name)).count(),
            1,
            "{}",
            family.name
        );
    }
    assert!(text.contains(
        "# HELP pgpilot_pool_cl_active Clients logged in and not waiting (PgBouncer cl_active)\n"
    ));
}

#[test]
fn counters_end_in_total_and_names_are_unique() {
    let mut seen = std::collections::HashSet::new();
    for family in POOL_FAMILIES {
        assert!(is_name(family.name), "{}", family.name);
        assert!(seen.insert(family.name), "duplicate {}", family.name);
        assert_eq!(
            family.kind == Kind::Counter,
            family.name.ends_with("_total"),
            "{}",
            family.name
        );
    }
}

#[test]
fn parser_rejects_malformed_lines() {
    assert!(parse_sample("m{a=\"unterminated} 1").is_err());
    assert!(parse_sample("m{a=\"x\\q\"} 1").is_err());
    assert!(parse_sample("9bad 1").is_err());
    assert!(parse_sample("m not-a-number").is_err());
    assert!(parse_sample("m{a=\"v\"} 1").is_ok());
}

#[test]
fn proxy_figures_are_read_from_the_runtime() {
    let settings = pgpilot_config::from_toml_str(
        "[upstream]\nprimary = \"db:5432\"\n[[users]]\nname = \"a\"\nauth = \"trust\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rt = Runtime::new(settings);
    rt.counters.auth_failures.fetch_add(3, Relaxed);
    rt.counters.clients.fetch_add(2, Relaxed);
    let proxy = proxy_samples(&rt);
    let samples = parse(&render(&[], &proxy));
    let get = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
    assert_eq!(get("pgpilot_auth_failures_total"), Some(3.0));
    assert_eq!(get("pgpilot_clients"), Some(2.0));
    assert_eq!(get("pgpilot_prepared_statements"), Some(0.0));
    assert_eq!(get("pgpilot_parse_cache_entries"), Some(0.0));
    assert_eq!(samples.len(), 9);
    for s in &proxy {
        assert_eq!(
            s.kind == Kind::Counter,
            s.name.ends_with("_total"),
            "{}",
            s.name
        );
    }
}
