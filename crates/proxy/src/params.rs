//! Client session settings and how they follow a client across servers.
//!
//! Design (documented in the README): pgpilot *replays* settings rather than
//! pinning clients. A client's startup parameters and every session-level
//! `SET` it ran are kept as `SET` statements by lower-case name; each server
//! connection records which of those statements it currently has. At
//! checkout, the difference is sent ahead of the client's first message as
//! one hidden simple query (`SET …; RESET …`), so a client's settings hold on
//! whichever server it lands on and never leak to another client. State that
//! cannot be replayed pins the client instead (see `pgpilot_sql::PinReason`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

/// Lower-case setting name → the statement that establishes it.
pub type Settings = BTreeMap<String, String>;

/// What a StartupMessage asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupRequest {
    pub user: String,
    pub database: String,
    /// Settings from the packet and from `options=-c name=value`.
    pub settings: Settings,
    /// Original-case names and values, for ParameterStatus overrides.
    pub raw: Vec<(String, String)>,
}

/// Why a startup packet was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupProblem {
    NoUser,
    BadName(String),
    Replication,
}

/// Reads user, database and settings out of the startup parameters.
pub fn parse_startup(params: &[(String, String)]) -> Result<StartupRequest, StartupProblem> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let user = get("user")
        .filter(|u| !u.is_empty())
        .ok_or(StartupProblem::NoUser)?;
    if get("replication").is_some_and(|v| v != "false" && v != "0" && v != "off") {
        return Err(StartupProblem::Replication);
    }
    let database = get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    let mut raw: Vec<(String, String)> = params
        .iter()
        .filter(|(n, _)| !NOT_SETTINGS.contains(&n.as_str()))
        .cloned()
        .collect();
    if let Some(options) = get("options") {
        raw.extend(parse_options(&options));
    }
    let mut settings = Settings::new();
    for (name, value) in &raw {
        if !valid_name(name) {
            return Err(StartupProblem::BadName(name.clone()));
        }
        settings.insert(name.to_ascii_lowercase(), set_statement(name, value));
    }
    Ok(StartupRequest {
        user,
        database,
        settings,
        raw,
    })
}

/// `-c name=value` and `--name=value` pairs of the `options` parameter.
fn parse_options(options: &str) -> Vec<(String, String)> {
    let words = split_escaped(options);
    let mut out = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let pair = if w == "-c" {
            it.next().map(String::as_str)
        } else if let Some(rest) = w.strip_prefix("-c") {
            Some(rest)
        } else {
            w.strip_prefix("--")
        };
        if let Some((n, v)) = pair.and_then(|p| p.split_once('=')) {
            out.push((n.replace('-', "_"), v.to_owned()));
        }
    }
    out
}

/// Splits on whitespace; a backslash escapes the next character (libpq's rule).
fn split_escaped(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Setting names are identifiers, possibly dotted (`myapp.user_id`).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && name.len() <= 63
}

/// The statement that applies a startup parameter as PostgreSQL applies
/// `-c name=value` at login: `set_config` takes the value as the setting's
/// text, so a list such as `search_path=a,b` keeps two elements (in
/// `SET search_path = 'a,b'` the quoted value is one identifier, `"a,b"`).
/// `name` must have passed [`valid_name`].
pub fn set_statement(name: &str, value: &str) -> String {
    format!(
        "SELECT pg_catalog.set_config('{name}', {}, false)",
        pgpilot_sql::quote::literal(value)
    )
}

/// Brings the record of a server's settings in line with the client's:
/// the SQL to run there first, or `None` when they already match. Either
/// way the server's record then shares the client's map, so the next such
/// check is a pointer comparison (clients with equal startup settings
/// share one map; see `Runtime::intern_settings`).
pub fn sync(client: &Arc<Settings>, server: &mut Arc<Settings>) -> Option<String> {
    if Arc::ptr_eq(client, server) {
        return None;
    }
    let sql = sync_sql(client, server);
    *server = client.clone();
    sql
}

/// The SQL that turns a server's settings into the client's, or `None`
/// when they already match.
fn sync_sql(client: &Settings, server: &Settings) -> Option<String> {
    if client == server {
        return None;
    }
    let mut sql = String::new();
    for (name, stmt) in client {
        if server.get(name) != Some(stmt) {
            let _ = write!(sql, "{stmt};");
        }
    }
    for name in server.keys() {
        if !client.contains_key(name) {
            let _ = write!(sql, "RESET {name};");
        }
    }
    Some(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_shares_the_clients_map() {
        let map = |pairs: &[(&str, &str)]| {
            Arc::new(
                pairs
                    .iter()
                    .map(|(n, v)| (n.to_string(), set_statement(n, v)))
                    .collect::<Settings>(),
            )
        };
        let client = map(&[("application_name", "a")]);
        let mut server = map(&[("application_name", "a")]);
        assert_eq!(sync(&client, &mut server), None, "equal content");
        assert!(Arc::ptr_eq(&client, &server), "then shared");
        assert_eq!(sync(&client, &mut server), None);

        let other = map(&[("timezone", "UTC")]);
        let sql = sync(&other, &mut server).expect("different settings");
        assert!(
            sql.contains("'timezone', 'UTC'") && sql.contains("RESET application_name"),
            "{sql}"
        );
        assert!(Arc::ptr_eq(&other, &server));
    }

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn startup_settings_and_options() {
        let r = parse_startup(&p(&[
            ("user", "app"),
            ("application_name", "it's"),
            ("options", "-c search_path=a,b --statement-timeout=5s"),
        ]))
        .unwrap();
        assert_eq!(r.database, "app");
        assert_eq!(
            r.settings["application_name"],
            "SELECT pg_catalog.set_config('application_name', 'it''s', false)"
        );
        assert_eq!(
            r.settings["search_path"],
            "SELECT pg_catalog.set_config('search_path', 'a,b', false)"
        );
        assert_eq!(
            r.settings["statement_timeout"],
            "SELECT pg_catalog.set_config('statement_timeout', '5s', false)"
        );
    }

    #[test]
    fn hostile_names_are_refused() {
        let e = parse_startup(&p(&[("user", "a"), ("x = 1; drop table t; --", "v")]));
        assert!(matches!(e, Err(StartupProblem::BadName(_))));
        assert_eq!(
            parse_startup(&p(&[("database", "d")])),
            Err(StartupProblem::NoUser)
        );
        assert_eq!(
            parse_startup(&p(&[("user", "a"), ("replication", "database")])),
            Err(StartupProblem::Replication)
        );
    }

    #[test]
    fn sync_sets_changed_and_resets_extra() {
        let mut client = Settings::new();
        client.insert("timezone".into(), "SET TimeZone = 'UTC'".into());
        let mut server = Settings::new();
        server.insert("search_path".into(), "SET search_path TO x".into());
        assert_eq!(
            sync_sql(&client, &server).unwrap(),
            "SET TimeZone = 'UTC';RESET search_path;"
        );
        assert_eq!(sync_sql(&client, &client), None);
    }
}
