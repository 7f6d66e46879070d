//! Plan insights at run time: a background task that EXPLAINs the query
//! shapes that cost the most and files what their plans show.
//!
//! Every `interval` (at most one EXPLAIN per interval, so it never adds
//! noticeable load) it picks one fingerprint not tried in the last
//! `retry_after`: newest in the slow log first, then the top by total time
//! (a 100 ms query run 10,000 times a day matters more than one slow
//! report). On a side connection — a healthy replica when there is one,
//! else the primary, logged in with a pool's server credentials — it runs,
//! inside `BEGIN READ ONLY` … `ROLLBACK` under a `statement_timeout`:
//!
//! ```sql
//! PREPARE pgpilot_explain AS <normalized text with $n>;
//! SET LOCAL plan_cache_mode = force_generic_plan;
//! EXPLAIN (FORMAT JSON) EXECUTE pgpilot_explain(NULL, …);   -- one NULL per $n
//! DEALLOCATE pgpilot_explain;                                -- after the ROLLBACK
//! ```
//!
//! `ANALYZE, BUFFERS` only when configured, only for read-only statements
//! (classified `Target::Replica`, every function known read-only), and
//! only with real values: none needed, or the slow log's unredacted
//! parameters — then with a custom plan for those values. If that fails,
//! the plain generic EXPLAIN is tried. For a plain EXPLAIN the scanned
//! tables' `pg_class` sizes go along, so `seq_scan` can judge selectivity.
//! Results go to [`pgpilot_insight::Insight::add_plan`]. Errors are
//! logged and the fingerprint counts as tried: this task never fails the
//! proxy.
//!
//! Neighbours: the session records queries into the insight library; the
//! admin API reads the findings and plans it files here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_config::Settings;
use pgpilot_insight::plans::{self, Explainable};
use pgpilot_insight::slowlog::REDACTED;
use pgpilot_insight::{parse_fingerprint_hex, PlanInsight, PlanSource, TopBy};
use pgpilot_pool::login::LoginParams;
use pgpilot_sql::Target;

use crate::backends::Backend;
use crate::runtime::Runtime;

mod side;

use side::Attempt;

/// How the explain task behaves: `[insight] explain*` settings, plus
/// constants for what the config does not expose (timeout, retry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainSettings {
    /// Run the background task at all.
    pub enabled: bool,
    /// At most one EXPLAIN per interval.
    pub interval: Duration,
    /// Use `EXPLAIN (ANALYZE, BUFFERS)` where it is safe (read-only, real values).
    pub analyze: bool,
    /// `statement_timeout` of the EXPLAIN; the whole attempt, login
    /// included, is bounded by this plus [`LOGIN_TIMEOUT`].
    pub timeout: Duration,
    /// A fingerprint is explained again after this long.
    pub retry_after: Duration,
    /// How many of the top fingerprints by total time are candidates.
    pub top: usize,
}

impl Default for ExplainSettings {
    fn default() -> ExplainSettings {
        ExplainSettings {
            enabled: true,
            interval: Duration::from_secs(10),
            analyze: false,
            timeout: Duration::from_secs(10),
            retry_after: Duration::from_secs(3600),
            top: 5,
        }
    }
}

impl ExplainSettings {
    /// The settings in effect: `[insight] explain`, `explain_analyze`,
    /// `explain_interval` and `explain_top`.
    pub fn from_settings(settings: &Settings) -> ExplainSettings {
        let i = &settings.insight;
        ExplainSettings {
            enabled: i.enabled && i.explain,
            interval: i.explain_interval,
            analyze: i.explain && i.explain_analyze,
            top: i.explain_top,
            ..ExplainSettings::default()
        }
    }
}

/// Bound on logging in to the side server.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Slow-log entries looked at per pick (newest first): older slow
/// fingerprints are reached through the top by total time.
const SLOW_LOOKBACK: usize = 200;

/// Why one fingerprint could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("fingerprint {0:016x} has no known text")]
    UnknownFingerprint(u64),
    #[error("fingerprint {0:016x} is not one preparable statement")]
    NotExplainable(u64),
    #[error("no server to explain on")]
    NoServer,
    #[error("no configured user to log in as")]
    NoLogin,
    #[error("login: {0}")]
    Login(#[source] pgpilot_pool::Error),
    #[error("{0}")]
    Query(#[source] pgpilot_pool::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("EXPLAIN returned no JSON plan")]
    NoPlan,
}

/// The background task: one EXPLAIN per interval, forever.
pub async fn explain_forever(rt: Arc<Runtime>) {
    let mut tried: HashMap<u64, Instant> = HashMap::new();
    loop {
        let settings = ExplainSettings::from_settings(&rt.settings.load());
        tokio::time::sleep(settings.interval).await;
        if !settings.enabled || !rt.insight.enabled() {
            continue;
        }
        let now = Instant::now();
        tried.retain(|_, at| now.duration_since(*at) < settings.retry_after);
        let Some(fingerprint) = next_candidate(&rt, &mut tried, settings.top, now) else {
            continue;
        };
        tried.insert(fingerprint, now);
        match explain_fingerprint(&rt, fingerprint, &settings).await {
            Ok(found) => {
                let rules: Vec<&str> = found.iter().map(|i| i.rule).collect();
                tracing::info!(fingerprint = %format!("{fingerprint:016x}"), ?rules, "plan explained");
            }
            Err(e @ (ExplainError::Query(_) | ExplainError::NotExplainable(_))) => {
                tracing::info!(fingerprint = %format!("{fingerprint:016x}"), error = %e, "could not explain");
            }
            Err(e) => {
                tracing::warn!(fingerprint = %format!("{fingerprint:016x}"), error = %e, "could not explain");
            }
        }
    }
}

/// The next fingerprint to explain: slow log first (newest first), then
/// the top `top` by total time; untried and explainable. Unexplainable
/// ones met on the way are marked tried so they are not parsed again.
fn next_candidate(
    rt: &Runtime,
    tried: &mut HashMap<u64, Instant>,
    top: usize,
    now: Instant,
) -> Option<u64> {
    let slow = rt
        .insight
        .slow_queries(SLOW_LOOKBACK)
        .into_iter()
        .filter_map(|e| parse_fingerprint_hex(&e.fingerprint));
    let costly = rt
        .insight
        .top(TopBy::TotalTime, top, now)
        .into_iter()
        .filter_map(|q| parse_fingerprint_hex(&q.fingerprint));
    let candidates: Vec<u64> = slow.chain(costly).collect();
    for fp in candidates {
        if tried.contains_key(&fp) {
            continue;
        }
        match rt
            .insight
            .query_text(fp)
            .as_deref()
            .and_then(plans::explainable)
        {
            Some(_) => return Some(fp),
            None => {
                tried.insert(fp, now);
            }
        }
    }
    None
}

/// Explains `fingerprint` now (the background task's step, and the API's
/// on-demand call): files the findings and keeps the plan. Not rate
/// limited: callers decide how often.
pub async fn explain_fingerprint(
    rt: &Runtime,
    fingerprint: u64,
    settings: &ExplainSettings,
) -> Result<Vec<PlanInsight>, ExplainError> {
    let text = rt
        .insight
        .query_text(fingerprint)
        .ok_or(ExplainError::UnknownFingerprint(fingerprint))?;
    let shape = plans::explainable(&text).ok_or(ExplainError::NotExplainable(fingerprint))?;
    let server = side_server(rt).ok_or(ExplainError::NoServer)?;
    let params = login_params(rt, &server).ok_or(ExplainError::NoLogin)?;
    let attempts = attempts(rt, fingerprint, &text, shape, &params.database, settings);
    let bound = settings.timeout + LOGIN_TIMEOUT;
    let run = side::explain_on(&params, &attempts, settings.timeout);
    let (plan, source, tables) = tokio::time::timeout(bound, run)
        .await
        .map_err(|_| ExplainError::Timeout(bound))??;
    Ok(rt
        .insight
        .add_plan(fingerprint, &plan, source, &tables, Instant::now()))
}

/// The ANALYZE attempt when it is allowed, then the generic plain one.
fn attempts(
    rt: &Runtime,
    fingerprint: u64,
    text: &str,
    shape: Explainable,
    database: &str,
    settings: &ExplainSettings,
) -> Vec<Attempt> {
    let mut out = Vec::with_capacity(2);
    if settings.analyze && read_only(rt, text, database) {
        let values = if shape.params == 0 {
            Some((text.to_owned(), Vec::new()))
        } else {
            captured(rt, fingerprint)
        };
        if let Some((sql, args)) = values {
            out.push(Attempt {
                sql,
                args,
                source: PlanSource {
                    analyzed: true,
                    generic: false,
                },
            });
        }
    }
    out.push(Attempt {
        sql: text.to_owned(),
        args: vec![None; shape.params],
        source: PlanSource {
            analyzed: false,
            generic: shape.params > 0,
        },
    });
    out
}

/// Whether running the statement cannot write: a read by classification
/// whose functions are all known read-only in `database`.
fn read_only(rt: &Runtime, text: &str, database: &str) -> bool {
    let analysis = rt.analyzer.analyze(text);
    let settings = rt.settings.load();
    let configured = &settings.routing.read_only_functions;
    analysis.class.target == Target::Replica
        && analysis
            .class
            .functions
            .iter()
            .all(|f| rt.functions.is_read_only(database, f, configured))
}

/// A slow-log capture of `fingerprint` with real values: its text as sent
/// and its parameters, when the log keeps them (redaction off) and they
/// match the text's `$n`.
fn captured(rt: &Runtime, fingerprint: u64) -> Option<(String, Vec<Option<String>>)> {
    if rt.insight.settings().redact_params {
        return None;
    }
    rt.insight
        .slow_queries(SLOW_LOOKBACK)
        .into_iter()
        .filter(|e| parse_fingerprint_hex(&e.fingerprint) == Some(fingerprint))
        .filter(|e| e.params.iter().flatten().all(|p| p != REDACTED))
        .find(|e| plans::explainable(&e.query).is_some_and(|x| x.params == e.params.len()))
        .map(|e| (e.query, e.params))
}

/// A healthy replica accepting traffic, else the primary.
fn side_server(rt: &Runtime) -> Option<Arc<Backend>> {
    let now = Instant::now();
    rt.backends
        .replicas()
        .into_iter()
        .find(|b| b.is_healthy() && b.accepts_traffic(now))
        .or_else(|| rt.backends.primary())
}

/// Server credentials and database for the side connection. The insight
/// library does not record a fingerprint's database, so this is the
/// first pool's (on `server`, else on any server; else the monitor's
/// database), logged in as that pool's user's server role.
fn login_params(rt: &Runtime, server: &Backend) -> Option<LoginParams> {
    let settings = rt.settings.load();
    let mut keys: Vec<(String, String)> = server
        .pools()
        .iter()
        .map(|p| (p.key().database.clone(), p.key().user.clone()))
        .collect();
    keys.sort();
    let (database, user) = keys
        .into_iter()
        .next()
        .or_else(|| {
            let s = rt.backends.snapshots().into_iter().next()?;
            Some((s.database, s.user))
        })
        .unwrap_or_else(|| (settings.routing.monitor_database.clone(), String::new()));
    let user = settings.user(&user).or_else(|| settings.users.first())?;
    Some(LoginParams {
        addr: server.addr.clone(),
        user: user.server_user.clone(),
        password: user.server_password.clone(),
        database,
    })
}

#[cfg(test)]
mod tests {
    use pgpilot_insight::{Location, QueryEvent, Sent};

    use super::*;

    fn runtime(insight: &str) -> Arc<Runtime> {
        let toml = format!(
            "[upstream]\nprimary = \"127.0.0.1:5432\"\n[[users]]\nname = \"u\"\npassword = \"p\"\n[insight]\n{insight}\n"
        );
        Runtime::new(pgpilot_config::from_toml_str(&toml).expect("settings"))
    }

    /// Records `sql` `calls` times taking `ms` each; returns its fingerprint.
    fn record(rt: &Runtime, sql: &str, ms: u64, calls: usize) -> u64 {
        let now = Instant::now();
        let shape = rt.insight.shape(rt.analyzer.analyze(sql).key, sql, now);
        for _ in 0..calls {
            let ev = QueryEvent {
                shape: shape.clone(),
                duration: Duration::from_millis(ms),
                rows: 1,
                error: None,
                location: Location::Primary,
                endpoint: None,
            };
            let sent = Sent {
                sql,
                ..Sent::default()
            };
            rt.insight.record(&ev, &sent, now);
        }
        shape.fingerprint
    }

    #[test]
    fn slow_queries_first_then_the_costliest_untried_explainable_ones() {
        let rt = runtime("");
        let busy = record(&rt, "SELECT name FROM users WHERE id = 1", 100, 50);
        let slow = record(&rt, "SELECT * FROM orders WHERE total > 10", 900, 1);
        let begin = record(&rt, "BEGIN", 1000, 10);
        let now = Instant::now();
        let mut tried = HashMap::new();
        assert_eq!(next_candidate(&rt, &mut tried, 5, now), Some(slow));
        assert!(tried.contains_key(&begin), "not explainable: remembered");
        tried.insert(slow, now);
        assert_eq!(next_candidate(&rt, &mut tried, 5, now), Some(busy));
        tried.insert(busy, now);
        assert_eq!(next_candidate(&rt, &mut tried, 5, now), None);
        assert_eq!(
            next_candidate(&rt, &mut HashMap::new(), 0, now),
            Some(slow),
            "explain_top = 0 still explains slow queries"
        );
    }

    fn kinds(a: &[Attempt]) -> Vec<(bool, bool, usize)> {
        a.iter()
            .map(|a| (a.source.analyzed, a.source.generic, a.args.len()))
            .collect()
    }

    #[test]
    fn analyze_only_for_reads_with_real_values() {
        let settings = |analyze| ExplainSettings {
            analyze,
            ..ExplainSettings::default()
        };
        let rt = runtime("");
        let plan = |rt: &Runtime, sql: &str, analyze| {
            let fp = record(rt, sql, 900, 1);
            let text = rt.insight.query_text(fp).expect("text");
            let shape = plans::explainable(&text).expect("explainable");
            attempts(rt, fp, &text, shape, "app", &settings(analyze))
        };
        let read = "SELECT id FROM orders WHERE customer_id = 42 AND status = 'paid'";
        assert_eq!(kinds(&plan(&rt, read, false)), [(false, true, 2)]);
        assert_eq!(
            kinds(&plan(&rt, read, true)),
            [(false, true, 2)],
            "parameters redacted: no values to analyze with"
        );
        let a = plan(&rt, "SELECT id FROM orders ORDER BY id", true);
        assert_eq!(kinds(&a), [(true, false, 0), (false, false, 0)]);
        let write = "UPDATE orders SET status = 'x'";
        assert_eq!(kinds(&plan(&rt, write, true)), [(false, true, 1)]);
        let locking = "SELECT id FROM orders FOR UPDATE";
        assert_eq!(kinds(&plan(&rt, locking, true)), [(false, false, 0)]);
        let volatile = "SELECT my_writer()";
        assert_eq!(
            kinds(&plan(&rt, volatile, true)),
            [(false, false, 0)],
            "an unknown function may write"
        );

        let unredacted = runtime("redact_params = false");
        let a = plan(&unredacted, read, true);
        assert_eq!(kinds(&a), [(true, false, 0), (false, true, 2)]);
        assert_eq!(a[0].sql, read, "the text as sent, with its literals");
    }
}
