//! Query insight: which queries cost the most, why, and from which endpoint
//! of the application (pg_stat_statements, pganalyze and Sentry in one).
//!
//! A pure library: no sockets, no async runtime, and the clock is passed in
//! (`now: Instant` on every call) so tests are deterministic. [`Insight`]
//! bundles the parts; the proxy's session feeds it, the admin API reads it.
//!
//! Per query, on the session's path:
//!
//! ```no_run
//! # use std::time::{Duration, Instant, SystemTime};
//! # use pgpilot_insight::*;
//! # let insight = Insight::new(InsightSettings::default(), Instant::now(), SystemTime::now()).unwrap();
//! # let (sql, key, now) = ("SELECT 1", 1u128, Instant::now());
//! let tags = sqlcomment::parse(sql);                // cheap without a comment
//! let endpoint = insight.endpoint(&tags);           // interned Arc<str>
//! let shape = insight.shape(key, sql, now);         // parses only new shapes; lints them
//! // … run the query …
//! let ev = QueryEvent { shape, duration: Duration::from_millis(3), rows: 1, error: None,
//!                       location: Location::Primary, endpoint };
//! let trace = tags.trace_id();
//! insight.record(&ev, &Sent { sql, params: &[], trace_id: trace.as_deref() }, now);
//! let mut tracker = insight.n_plus_one_tracker();   // one per client connection
//! if let Some(found) = tracker.observe(&NPlusOneEvent {
//!     fingerprint: ev.shape.fingerprint, rows: ev.rows, duration: ev.duration,
//!     trace_id: tags.trace_id_u128(), in_transaction: false, endpoint: ev.endpoint.as_ref(), at: now,
//! }) {
//!     insight.report_n_plus_one(&found, now);
//! }
//! ```
//!
//! Periodically, on a blocking thread: [`Insight::flush`] (slow-log file,
//! SQLite history). Plan insights: the proxy runs EXPLAIN on a side
//! connection and files the result with [`Insight::add_plan`], which
//! analyses it ([`plans`]), files [`FindingKind::Plan`] findings and keeps
//! the plan for [`Insight::detail`].

pub mod clock;
pub mod endpoints;
pub mod findings;
pub mod intern;
pub mod lints;
pub mod nplus1;
pub mod plans;
pub mod shape;
pub mod slowlog;
pub mod sqlcomment;
pub mod stats;
pub mod store;
pub mod windows;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::RwLock;
use serde::Serialize;

pub use clock::Clock;
pub use endpoints::{EndpointOrder, EndpointView};
pub use findings::{Finding, FindingKind, FindingView, Findings};
pub use lints::{Lint, LintContext, Severity};
pub use nplus1::{NPlusOne, NPlusOneEvent, NPlusOneSettings, NPlusOneTracker, NPlusOneView};
pub use plans::{PlanInsight, PlanSource, PlanView, TableSize, TableStats};
pub use shape::{parse_fingerprint_hex, Shape, ShapeCache};
pub use slowlog::{SlowEntry, SlowLog, SlowLogSettings, SlowQuery};
pub use sqlcomment::Tags;
pub use stats::{Location, QueryDetail, QueryEvent, QueryStore, QueryView, StoreLimits, TopBy};
pub use store::{FlushReport, HistoryPoint, HistoryStore};

/// Errors of this crate: only the history store does I/O that can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("history store {}: {source}", path.display())]
    Store {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Settings of query insight (validated values; the config crate maps its
/// TOML onto this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsightSettings {
    /// Off: [`Insight::record`] and [`Insight::shape`]'s lints do nothing.
    pub enabled: bool,
    /// Fingerprints tracked (pg_stat_statements.max).
    pub max_fingerprints: usize,
    /// Endpoints tracked; more are counted under `(other)`.
    pub max_endpoints: usize,
    /// Significant digits of the latency histograms (3: 0.1% precision,
    /// 30–130 kB per fingerprint; 2: 1%, 10–25 kB).
    pub histogram_sigfig: u8,
    /// Lexer keys whose shape is cached.
    pub shape_cache_capacity: usize,
    /// Statements at least this slow go to the slow log.
    pub slow_threshold: Duration,
    pub slow_log_capacity: usize,
    /// Append slow statements to this JSON-lines file.
    pub slow_log_file: Option<PathBuf>,
    /// Slow log: literals in the text become `$n`, parameters `<redacted>`.
    pub redact_params: bool,
    /// Lint each new shape.
    pub lints: bool,
    /// Consecutive repeats that make an N+1.
    pub n_plus_one_min_repeats: usize,
    /// Queries further apart start a new burst (without trace or transaction).
    pub burst_gap: Duration,
    /// Findings kept.
    pub max_findings: usize,
    /// SQLite file for the history of windows; none keeps no history.
    pub store_path: Option<PathBuf>,
    /// Days of hour windows kept in the store.
    pub retention_days: u32,
}

impl Default for InsightSettings {
    fn default() -> InsightSettings {
        InsightSettings {
            enabled: true,
            max_fingerprints: 5000,
            max_endpoints: 1000,
            histogram_sigfig: 3,
            shape_cache_capacity: 10_000,
            slow_threshold: Duration::from_millis(500),
            slow_log_capacity: 1000,
            slow_log_file: None,
            redact_params: true,
            lints: true,
            n_plus_one_min_repeats: 5,
            burst_gap: Duration::from_millis(100),
            max_findings: 1000,
            store_path: None,
            retention_days: 7,
        }
    }
}

/// What the session knows about a query beyond its [`QueryEvent`]; read
/// only when the query is slow.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent<'a> {
    /// The text as sent.
    pub sql: &'a str,
    /// Bind parameters in wire form (`None` = NULL).
    pub params: &'a [Option<&'a [u8]>],
    /// From [`Tags::trace_id`].
    pub trace_id: Option<&'a str>,
}

/// One fingerprint with everything known about it (`GET /api/queries/{fp}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryInsight {
    #[serde(flatten)]
    pub detail: QueryDetail,
    /// Lints, N+1 and plan findings about this fingerprint.
    pub findings: Vec<FindingView>,
    /// N+1 pairs where it is the source or the repeated query.
    pub n_plus_one: Vec<NPlusOneView>,
    /// Its latest EXPLAIN, when it was explained.
    pub plan: Option<PlanView>,
}

/// Query insight for one proxy. Shared (`Arc<Insight>`) by all sessions.
pub struct Insight {
    settings: InsightSettings,
    shapes: ShapeCache,
    stats: QueryStore,
    slow: SlowLog,
    findings: Findings,
    n_plus_one: nplus1::NPlusOneLog,
    /// Latest EXPLAIN per fingerprint.
    plans: plans::PlanStore,
    endpoints: intern::Interner,
    history: Option<HistoryStore>,
    /// Texts of fingerprints from the store, loaded at start.
    stored_texts: RwLock<HashMap<u64, String>>,
}

impl Insight {
    /// Builds it; `now` and `wall` must be read together (they anchor the
    /// clock). Opens the history store when configured.
    pub fn new(settings: InsightSettings, now: Instant, wall: SystemTime) -> Result<Insight> {
        let history = match &settings.store_path {
            Some(path) => Some(HistoryStore::open(path, settings.retention_days)?),
            None => None,
        };
        let stored_texts = match &history {
            Some(h) => h
                .load_texts(settings.max_fingerprints)?
                .into_iter()
                .collect(),
            None => HashMap::new(),
        };
        let limits = StoreLimits {
            max_fingerprints: settings.max_fingerprints,
            max_endpoints: settings.max_endpoints,
            histogram_sigfig: settings.histogram_sigfig,
        };
        Ok(Insight {
            shapes: ShapeCache::new(settings.shape_cache_capacity),
            stats: QueryStore::new(limits, Clock::new(now, wall)),
            slow: SlowLog::new(SlowLogSettings {
                threshold: settings.slow_threshold,
                capacity: settings.slow_log_capacity,
                file: settings.slow_log_file.clone(),
                redact: settings.redact_params,
            }),
            findings: Findings::new(settings.max_findings),
            n_plus_one: nplus1::NPlusOneLog::new(settings.max_findings),
            plans: plans::PlanStore::default(),
            endpoints: intern::Interner::new(settings.max_endpoints),
            history,
            stored_texts: RwLock::new(stored_texts),
            settings,
        })
    }

    pub fn settings(&self) -> &InsightSettings {
        &self.settings
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// The shape of `sql`, whose literal-blind lexer key is `key`. A new
    /// shape is parsed and, when lints are on, linted (findings filed at
    /// `now`).
    pub fn shape(&self, key: u128, sql: &str, now: Instant) -> Arc<Shape> {
        self.shape_with(key, sql, LintContext::default(), now)
    }

    /// [`Insight::shape`] with session knowledge for the lints.
    pub fn shape_with(&self, key: u128, sql: &str, ctx: LintContext, now: Instant) -> Arc<Shape> {
        let (shape, new) = self.shapes.get_or_insert(key, sql);
        if new && shape.parsed && self.settings.enabled && self.settings.lints {
            let at = self.stats.clock().unix_micros(now);
            for lint in lints::lint_with(sql, ctx) {
                self.findings.add(
                    Finding {
                        kind: FindingKind::Lint,
                        rule: lint.rule.to_owned(),
                        fingerprint: shape.fingerprint,
                        endpoint: None,
                        severity: lint.severity,
                        message: lint.message,
                        fix: lint.fix,
                    },
                    at,
                );
            }
        }
        shape
    }

    /// The interned endpoint of a query's tags (route, else controller#action).
    pub fn endpoint(&self, tags: &Tags) -> Option<Arc<str>> {
        tags.endpoint().map(|e| self.endpoints.intern(&e))
    }

    /// Records one completed query: statistics always (one lock, no
    /// allocation for a known fingerprint), the slow log when it is slow.
    pub fn record(&self, ev: &QueryEvent, sent: &Sent<'_>, now: Instant) {
        if !self.settings.enabled {
            return;
        }
        self.stats.record(ev, now);
        if self.slow.is_slow(ev.duration) {
            let q = SlowQuery {
                sql: sent.sql,
                params: sent.params,
                shape: &ev.shape,
                duration: ev.duration,
                rows: ev.rows,
                error: ev.error.as_deref(),
                location: ev.location,
                endpoint: ev.endpoint.as_deref(),
                trace_id: sent.trace_id,
            };
            self.slow.record(&q, self.stats.clock().unix_micros(now));
        }
    }

    /// A detector for one client connection, with the configured thresholds.
    pub fn n_plus_one_tracker(&self) -> NPlusOneTracker {
        NPlusOneTracker::new(NPlusOneSettings {
            min_repeats: self.settings.n_plus_one_min_repeats,
            burst_gap: self.settings.burst_gap,
        })
    }

    /// Files an N+1 a tracker found: into the N+1 log and the findings,
    /// with the fix written for the repeated query's text.
    pub fn report_n_plus_one(&self, found: &NPlusOne, now: Instant) {
        let at = self.stats.clock().unix_micros(now);
        let repeated = self.query_text(found.repeated_fingerprint);
        let source = self.query_text(found.source_fingerprint);
        let mut found = found.clone();
        found.fix = nplus1::batch_fix(repeated.as_deref());
        self.n_plus_one.add(&found, at);
        let message = n_plus_one_message(&found, source.as_deref(), repeated.as_deref());
        self.findings.add(
            Finding {
                kind: FindingKind::NPlusOne,
                rule: "n_plus_one".to_owned(),
                fingerprint: found.repeated_fingerprint,
                endpoint: found.endpoint.clone(),
                severity: Severity::Warning,
                message,
                fix: found.fix,
            },
            at,
        );
    }

    /// Files a finding from elsewhere: the plan analyser's hook (kind
    /// [`FindingKind::Plan`], rules such as `seq_scan`).
    pub fn add_finding(&self, finding: Finding, now: Instant) {
        self.findings
            .add(finding, self.stats.clock().unix_micros(now));
    }

    /// Files an EXPLAIN (FORMAT JSON) result of `fingerprint`: analyses it
    /// ([`plans::analyze_plan_with`], `tables` sizing plain EXPLAINs),
    /// files one plan finding per insight, attributed to the fingerprint's
    /// busiest endpoint, withdraws its earlier plan findings this plan
    /// shows are gone (only rules a plan of this kind can show), and keeps
    /// the plan for [`Insight::detail`]. Returns the insights.
    pub fn add_plan(
        &self,
        fingerprint: u64,
        explain: &serde_json::Value,
        source: PlanSource,
        tables: &TableStats,
        now: Instant,
    ) -> Vec<PlanInsight> {
        let insights = plans::analyze_plan_with(explain, source.analyzed, tables);
        let at = self.stats.clock().unix_micros(now);
        let rules: Vec<&'static str> = insights.iter().map(|i| i.rule).collect();
        let endpoint = self.busiest_endpoint(fingerprint, now);
        let shows = |rule: &str| source.analyzed || !plans::needs_analyze(rule);
        self.findings
            .remove_where(FindingKind::Plan, fingerprint, |rule, ep| {
                let found = rules.contains(&rule);
                (shows(rule) && !found) || (found && ep != endpoint.as_deref())
            });
        for i in &insights {
            self.findings.add(
                Finding {
                    kind: FindingKind::Plan,
                    rule: i.rule.to_owned(),
                    fingerprint,
                    endpoint: endpoint.clone(),
                    severity: i.severity,
                    message: i.message.clone(),
                    fix: i.fix.clone(),
                },
                at,
            );
        }
        self.plans.insert(fingerprint, explain, source, rules, at);
        insights
    }

    /// The latest EXPLAIN of `fingerprint`.
    pub fn plan(&self, fingerprint: u64) -> Option<PlanView> {
        self.plans.get(fingerprint)
    }

    /// The endpoint that spent the most time running `fingerprint`.
    fn busiest_endpoint(&self, fingerprint: u64, now: Instant) -> Option<Arc<str>> {
        let detail = self.stats.detail(fingerprint, now)?;
        let top = detail.endpoints.first()?;
        Some(self.endpoints.intern(&top.endpoint))
    }

    /// Top fingerprints (`GET /api/queries`).
    pub fn top(&self, by: TopBy, limit: usize, now: Instant) -> Vec<QueryView> {
        self.stats.top(by, limit, now)
    }

    /// One fingerprint's statistics, windows, endpoints and findings.
    pub fn detail(&self, fingerprint: u64, now: Instant) -> Option<QueryInsight> {
        Some(QueryInsight {
            detail: self.stats.detail(fingerprint, now)?,
            findings: self.findings.for_fingerprint(fingerprint),
            n_plus_one: self.n_plus_one.involving(fingerprint),
            plan: self.plans.get(fingerprint),
        })
    }

    /// Endpoints by database time, mean, p99 or calls.
    pub fn endpoints(&self, order: EndpointOrder, limit: usize) -> Vec<EndpointView> {
        self.stats.endpoints(order, limit)
    }

    /// The slow log, newest first.
    pub fn slow_queries(&self, limit: usize) -> Vec<SlowEntry> {
        self.slow.recent(limit)
    }

    /// All findings (`GET /api/findings`).
    pub fn findings(&self) -> Vec<FindingView> {
        self.findings.views()
    }

    /// N+1 pairs with their occurrence counts.
    pub fn n_plus_one(&self) -> Vec<NPlusOneView> {
        self.n_plus_one.views()
    }

    /// Stored windows of `fingerprint` since `since`; empty without a store.
    pub fn history(&self, fingerprint: u64, since: SystemTime) -> Result<Vec<HistoryPoint>> {
        match &self.history {
            Some(h) => h.load_history(fingerprint, clock::unix_micros(since) / 1_000_000),
            None => Ok(Vec::new()),
        }
    }

    /// Normalized text of a fingerprint: tracked now, or known from the store.
    pub fn query_text(&self, fingerprint: u64) -> Option<String> {
        match self.stats.shape(fingerprint) {
            Some(shape) => Some(shape.normalized.clone()),
            None => self.stored_texts.read().get(&fingerprint).cloned(),
        }
    }

    /// The statistics store, for callers that need more than the facade.
    pub fn stats(&self) -> &QueryStore {
        &self.stats
    }

    /// Periodic maintenance (blocking I/O: run it on a blocking thread about
    /// once a minute): appends queued slow-log lines, writes closed windows
    /// to the history store and prunes it.
    pub fn flush(&self, now: Instant) -> Result<FlushReport> {
        let slow_lines_written = self.slow.write_pending();
        let mut report = match &self.history {
            Some(h) => h.flush(&self.stats, now)?,
            None => FlushReport::default(),
        };
        report.slow_lines_written = slow_lines_written;
        Ok(report)
    }
}

/// The finding's message: counts, texts, and bullet's row-count signal.
fn n_plus_one_message(f: &NPlusOne, source: Option<&str>, repeated: Option<&str>) -> String {
    const SHOWN: usize = 200;
    let text = |t: Option<&str>, fp: u64| match t {
        Some(t) => shape::cut(t.to_owned(), SHOWN),
        None => shape::fingerprint_hex(fp),
    };
    let grouping = match f.grouping {
        nplus1::Grouping::Trace => "trace",
        nplus1::Grouping::Transaction => "transaction",
        nplus1::Grouping::Burst => "burst of queries",
    };
    let rows = if f.matches_source_rows {
        format!(" — one per row of the {} rows it returned", f.source_rows)
    } else {
        String::new()
    };
    format!(
        "N+1: {} executions of `{}` ({:.1} ms in total) after `{}` in one {grouping}{rows}.",
        f.count,
        text(repeated, f.repeated_fingerprint),
        clock::micros_to_ms(clock::duration_micros(f.total_duration)),
        text(source, f.source_fingerprint),
    )
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn insight(settings: InsightSettings) -> (Insight, Instant) {
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_040);
        let insight = Insight::new(settings, t0, wall).unwrap_or_else(|e| panic!("{e}"));
        (insight, t0)
    }

    fn run(i: &Insight, key: u128, sql: &str, ms: u64, now: Instant) -> QueryEvent {
        let tags = sqlcomment::parse(sql);
        let ev = QueryEvent {
            shape: i.shape(key, sql, now),
            duration: Duration::from_millis(ms),
            rows: 1,
            error: None,
            location: Location::Primary,
            endpoint: i.endpoint(&tags),
        };
        let trace = tags.trace_id();
        i.record(
            &ev,
            &Sent {
                sql,
                params: &[],
                trace_id: trace.as_deref(),
            },
            now,
        );
        ev
    }

    #[test]
    fn end_to_end_stats_lints_slow_log_and_endpoints() {
        let (i, t0) = insight(InsightSettings::default());
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for id in 0..3 {
            let sql = format!(
                "SELECT * FROM users WHERE id = {id} /*route='%2Fusers',traceparent='{tp}'*/"
            );
            run(&i, 1, &sql, 2, t0);
        }
        run(
            &i,
            2,
            "SELECT name FROM users WHERE id = 7 /*route='/users'*/",
            800,
            t0,
        );
        let top = i.top(TopBy::TotalTime, 10, t0);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].query, "SELECT name FROM users WHERE id = $1");
        assert_eq!(top[1].calls, 3);
        let findings = i.findings();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].rule, "select_star");
        assert_eq!(findings[0].fingerprint, top[1].fingerprint);
        let slow = i.slow_queries(10);
        assert_eq!(slow.len(), 1);
        assert_eq!(slow[0].endpoint.as_deref(), Some("/users"));
        assert!(!slow[0].query.contains('7'), "{}", slow[0].query);
        let eps = i.endpoints(EndpointOrder::TotalTime, 10);
        assert_eq!(eps.len(), 1);
        assert_eq!((eps[0].endpoint.as_str(), eps[0].calls), ("/users", 4));
        let fp = parse_fingerprint_hex(&top[1].fingerprint).unwrap_or_default();
        let detail = i.detail(fp, t0).unwrap_or_else(|| panic!("tracked"));
        assert_eq!(detail.findings.len(), 1);
        let json = serde_json::to_value(&detail).unwrap_or_default();
        assert_eq!(json["calls"], 3);
        assert_eq!(json["findings"][0]["kind"], "lint");
    }

    #[test]
    fn n_plus_one_is_reported_with_a_concrete_fix() {
        let (i, t0) = insight(InsightSettings::default());
        let mut tracker = i.n_plus_one_tracker();
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut at = t0;
        let mut feed =
            |i: &Insight, key: u128, sql: &str, rows: u64, tracker: &mut NPlusOneTracker| {
                at += Duration::from_millis(2);
                let mut ev = run(i, key, sql, 1, at);
                ev.rows = rows;
                let tags = sqlcomment::parse(sql);
                tracker.observe(&NPlusOneEvent {
                    fingerprint: ev.shape.fingerprint,
                    rows: ev.rows,
                    duration: ev.duration,
                    trace_id: tags.trace_id_u128(),
                    in_transaction: false,
                    endpoint: ev.endpoint.as_ref(),
                    at,
                })
            };
        let comment = format!("/*controller='posts',action='index',traceparent='{tp}'*/");
        assert!(feed(
            &i,
            10,
            &format!("SELECT id, title FROM posts LIMIT 5 {comment}"),
            5,
            &mut tracker
        )
        .is_none());
        for id in 1..=5 {
            let sql = format!("SELECT id, body FROM comments WHERE post_id = {id} {comment}");
            assert!(feed(&i, 11, &sql, 1, &mut tracker).is_none());
        }
        let found = tracker.finish().unwrap_or_else(|| panic!("N+1 found"));
        i.report_n_plus_one(&found, at);
        let f: Vec<FindingView> = i
            .findings()
            .into_iter()
            .filter(|f| f.kind == FindingKind::NPlusOne)
            .collect();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, "n_plus_one");
        assert_eq!(f[0].endpoint.as_deref(), Some("posts#index"));
        assert!(f[0].fix.contains("WHERE post_id = ANY($1)"), "{}", f[0].fix);
        assert!(f[0].message.contains("5 executions"), "{}", f[0].message);
        assert!(
            f[0].message.contains("one per row of the 5 rows"),
            "{}",
            f[0].message
        );
        assert_eq!(i.n_plus_one()[0].occurrences, 1);
    }

    #[test]
    fn disabled_records_nothing() {
        let (i, t0) = insight(InsightSettings {
            enabled: false,
            ..InsightSettings::default()
        });
        run(&i, 1, "SELECT * FROM t", 900, t0);
        assert!(i.top(TopBy::Calls, 10, t0).is_empty());
        assert!(i.findings().is_empty());
        assert!(i.slow_queries(10).is_empty());
    }

    #[test]
    fn plan_findings_come_through_the_hook() {
        let (i, t0) = insight(InsightSettings::default());
        i.add_finding(
            Finding {
                kind: FindingKind::Plan,
                rule: "seq_scan".into(),
                fingerprint: 42,
                endpoint: None,
                severity: Severity::Warning,
                message: "Seq Scan on orders removes 99% of rows".into(),
                fix: "CREATE INDEX CONCURRENTLY ON orders (user_id)".into(),
            },
            t0,
        );
        let json = serde_json::to_value(i.findings()).unwrap_or_default();
        assert_eq!(json[0]["kind"], "plan");
        assert_eq!(json[0]["rule"], "seq_scan");
    }

    #[test]
    fn plans_are_filed_kept_and_withdrawn_when_gone() {
        let (i, t0) = insight(InsightSettings::default());
        let ev = run(
            &i,
            1,
            "SELECT id FROM orders ORDER BY amount /*route='/orders'*/",
            3,
            t0,
        );
        let fp = ev.shape.fingerprint;
        let spill = plans::parse_explain(include_str!("../tests/fixtures/plans/sort_spill.json"))
            .unwrap_or_default();
        let clean = plans::parse_explain(include_str!(
            "../tests/fixtures/plans/clean_index_scan.json"
        ))
        .unwrap_or_default();
        let analyzed = PlanSource {
            analyzed: true,
            generic: false,
        };
        let found = i.add_plan(fp, &spill, analyzed, &TableStats::new(), t0);
        assert_eq!(found.len(), 1);
        let plan_findings = |i: &Insight| -> Vec<FindingView> {
            i.findings()
                .into_iter()
                .filter(|f| f.kind == FindingKind::Plan)
                .collect()
        };
        let f = plan_findings(&i);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, "sort_spill");
        assert_eq!(f[0].fingerprint, ev.shape.fingerprint_hex);
        assert_eq!(
            f[0].endpoint.as_deref(),
            Some("/orders"),
            "busiest endpoint"
        );
        let detail = i.detail(fp, t0).unwrap_or_else(|| panic!("tracked"));
        let plan = detail.plan.unwrap_or_else(|| panic!("plan kept"));
        assert!(plan.source.analyzed);
        assert_eq!(plan.rules, ["sort_spill"]);
        assert_eq!(plan.plan, spill);

        i.add_plan(fp, &clean, PlanSource::default(), &TableStats::new(), t0);
        assert_eq!(
            plan_findings(&i).len(),
            1,
            "a plain EXPLAIN cannot show a spill, so it does not withdraw one"
        );
        i.add_plan(fp, &clean, analyzed, &TableStats::new(), t0);
        assert!(plan_findings(&i).is_empty(), "gone from an analyzed plan");
        assert!(i.plan(fp).is_some_and(|p| p.rules.is_empty()));
    }

    #[test]
    fn history_survives_a_restart() {
        let dir =
            std::env::temp_dir().join(format!("pgpilot-insight-facade-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let settings = InsightSettings {
            store_path: Some(dir.join("history.sqlite")),
            ..InsightSettings::default()
        };
        let fp = {
            let (i, t0) = insight(settings.clone());
            let ev = run(&i, 1, "SELECT name FROM users WHERE id = 1", 5, t0);
            let report = i
                .flush(t0 + Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(report.windows_written, 1);
            ev.shape.fingerprint
        };
        let (i, _) = insight(settings);
        assert_eq!(
            i.query_text(fp).as_deref(),
            Some("SELECT name FROM users WHERE id = $1")
        );
        let history = i.history(fp, UNIX_EPOCH).unwrap_or_default();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].window.calls, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
