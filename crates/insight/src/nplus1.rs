//! N+1 detection on the wire: a source query followed by a run of
//! executions of one other fingerprint (the same statement with different
//! parameters: an ORM loading children one parent at a time).
//!
//! Each client connection owns an [`NPlusOneTracker`] and feeds it every
//! completed query. Queries are grouped by trace (the sqlcommenter
//! `traceparent`) when present, else by transaction, else by a burst of
//! queries on the connection separated by at most `burst_gap`. Within a
//! group, `min_repeats` (default 5) consecutive executions of one
//! fingerprint after a query of another fingerprint are reported when the
//! run ends (Sentry's shape). Like bullet, when the source returned N rows
//! and about N repeats follow, the finding says so. There is no time floor:
//! a fast N+1 on today's data is tomorrow's slow page.
//!
//! Findings go to the shared [`NPlusOneLog`], deduplicated per (source,
//! repeated) with an occurrence counter, and to [`crate::findings`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pg_query::protobuf::AExprKind;
use pg_query::NodeEnum;
use serde::Serialize;

use crate::clock::{duration_micros, micros_to_ms, rfc3339};
use crate::shape::fingerprint_hex;

/// Thresholds of the detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NPlusOneSettings {
    /// Consecutive executions of one fingerprint that make an N+1.
    pub min_repeats: usize,
    /// Without a trace or a transaction, queries further apart than this
    /// belong to different bursts.
    pub burst_gap: Duration,
}

impl Default for NPlusOneSettings {
    fn default() -> NPlusOneSettings {
        NPlusOneSettings {
            min_repeats: 5,
            burst_gap: Duration::from_millis(100),
        }
    }
}

/// One completed query on a client connection.
#[derive(Debug, Clone, Copy)]
pub struct NPlusOneEvent<'a> {
    pub fingerprint: u64,
    /// Rows returned.
    pub rows: u64,
    pub duration: Duration,
    /// From [`crate::sqlcomment::Tags::trace_id_u128`].
    pub trace_id: Option<u128>,
    /// The query ran inside an explicit transaction block.
    pub in_transaction: bool,
    pub endpoint: Option<&'a Arc<str>>,
    /// When it completed.
    pub at: Instant,
}

/// How the queries of a finding were grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grouping {
    Trace,
    Transaction,
    Burst,
}

/// One detected N+1 run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NPlusOne {
    pub source_fingerprint: u64,
    pub repeated_fingerprint: u64,
    /// Consecutive executions of the repeated fingerprint.
    pub count: usize,
    /// Their summed duration.
    pub total_duration: Duration,
    /// Rows the source query returned.
    pub source_rows: u64,
    /// The repeats number about the source's rows (within 20%): bullet's
    /// strong signal that each row was loaded one by one.
    pub matches_source_rows: bool,
    pub endpoint: Option<Arc<str>>,
    pub grouping: Grouping,
    /// The rewrite; [`batch_fix`] of the repeated text when known.
    pub fix: String,
}

/// The group a query belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Trace(u128),
    /// Sequence number of the transaction on this connection.
    Transaction(u64),
    /// Sequence number of the burst on this connection.
    Burst(u64),
}

/// A run of one fingerprint in progress.
#[derive(Debug, Clone)]
struct Run {
    fingerprint: u64,
    count: usize,
    total: Duration,
    /// Rows of the last execution (the source of the next run).
    last_rows: u64,
    /// The query just before the run: (fingerprint, rows).
    source: Option<(u64, u64)>,
    endpoint: Option<Arc<str>>,
}

/// Per-connection detector state. Not shared: one per client.
#[derive(Debug)]
pub struct NPlusOneTracker {
    settings: NPlusOneSettings,
    group: Option<Group>,
    /// Counters giving transactions and bursts distinct group ids.
    sequence: u64,
    last_at: Option<Instant>,
    run: Option<Run>,
}

impl NPlusOneTracker {
    pub fn new(settings: NPlusOneSettings) -> NPlusOneTracker {
        NPlusOneTracker {
            settings: NPlusOneSettings {
                min_repeats: settings.min_repeats.max(2),
                ..settings
            },
            group: None,
            sequence: 0,
            last_at: None,
            run: None,
        }
    }

    /// Feeds one completed query; returns a finding when it ended a
    /// qualifying run (at most one per call). Allocation-free except when
    /// a run starts with an endpoint (an `Arc` clone) or a finding is made.
    pub fn observe(&mut self, ev: &NPlusOneEvent<'_>) -> Option<NPlusOne> {
        let group = self.group_of(ev);
        self.last_at = Some(ev.at);
        let mut found = None;
        if self.group != Some(group) {
            found = self.finish();
            self.group = Some(group);
        }
        match &mut self.run {
            Some(run) if run.fingerprint == ev.fingerprint => {
                run.count += 1;
                run.total += ev.duration;
                run.last_rows = ev.rows;
            }
            _ => {
                let source = self.run.as_ref().map(|r| (r.fingerprint, r.last_rows));
                found = found.or_else(|| self.finish_run());
                self.run = Some(Run {
                    fingerprint: ev.fingerprint,
                    count: 1,
                    total: ev.duration,
                    last_rows: ev.rows,
                    source,
                    endpoint: ev.endpoint.cloned(),
                });
            }
        }
        found
    }

    /// Ends the current group (connection closed or idle): reports a
    /// qualifying run in progress.
    pub fn finish(&mut self) -> Option<NPlusOne> {
        let found = self.finish_run();
        self.run = None;
        self.group = None;
        found
    }

    fn finish_run(&mut self) -> Option<NPlusOne> {
        let run = self.run.take()?;
        let (source_fingerprint, source_rows) = run.source?;
        if run.count < self.settings.min_repeats || source_fingerprint == run.fingerprint {
            return None;
        }
        let n = run.count as u64;
        let matches_source_rows =
            source_rows > 0 && n * 5 >= source_rows * 4 && n * 5 <= source_rows * 6;
        Some(NPlusOne {
            source_fingerprint,
            repeated_fingerprint: run.fingerprint,
            count: run.count,
            total_duration: run.total,
            source_rows,
            matches_source_rows,
            endpoint: run.endpoint,
            grouping: match self.group {
                Some(Group::Trace(_)) => Grouping::Trace,
                Some(Group::Transaction(_)) => Grouping::Transaction,
                _ => Grouping::Burst,
            },
            fix: batch_fix(None),
        })
    }

    fn group_of(&mut self, ev: &NPlusOneEvent<'_>) -> Group {
        if let Some(trace) = ev.trace_id {
            return Group::Trace(trace);
        }
        let gap_ok = self
            .last_at
            .is_some_and(|last| ev.at.saturating_duration_since(last) <= self.settings.burst_gap);
        match (self.group, ev.in_transaction) {
            (Some(g @ Group::Transaction(_)), true) => g,
            (Some(g @ Group::Burst(_)), false) if gap_ok => g,
            (_, in_txn) => {
                self.sequence += 1;
                if in_txn {
                    Group::Transaction(self.sequence)
                } else {
                    Group::Burst(self.sequence)
                }
            }
        }
    }
}

/// The rewrite for a repeated query: when its normalized text filters on
/// `col = $n`, batching on that column; else the general advice.
pub fn batch_fix(repeated_normalized: Option<&str>) -> String {
    let target = repeated_normalized.and_then(equality_on_parameter);
    match target {
        Some((table, col)) => format!(
            "Load them in one query: collect the {col} values from the source query's rows and run \
             SELECT … FROM {table} WHERE {col} = ANY($1) once with them as an array, or JOIN {table} \
             into the source query (ORM: eager loading such as includes / select_related / JOIN FETCH)."
        ),
        None => "Load them in one query: batch the parameters into one array and filter with \
                 WHERE col = ANY($1), or JOIN the table into the source query \
                 (ORM: eager loading such as includes / select_related / JOIN FETCH)."
            .to_owned(),
    }
}

/// `(table, column)` of a `column = $n` filter in a single-table SELECT.
fn equality_on_parameter(sql: &str) -> Option<(String, String)> {
    let parsed = std::panic::catch_unwind(|| pg_query::parse(sql, 0))
        .ok()?
        .ok()?;
    let stmt = parsed
        .protobuf
        .stmts
        .first()?
        .stmt
        .as_ref()?
        .node
        .as_ref()?;
    let NodeEnum::SelectStmt(s) = stmt else {
        return None;
    };
    let table = s.from_clause.iter().find_map(|n| match n.node.as_ref()? {
        NodeEnum::RangeVar(r) => Some(r.relname.clone()),
        _ => None,
    })?;
    let mut pending = vec![s.where_clause.as_ref()?.node.as_ref()?];
    while let Some(node) = pending.pop() {
        match node {
            NodeEnum::BoolExpr(b) => pending.extend(b.args.iter().filter_map(|a| a.node.as_ref())),
            NodeEnum::AExpr(e) if e.kind == AExprKind::AexprOp as i32 => {
                let sides = (
                    e.lexpr.as_ref().and_then(|n| n.node.as_ref()),
                    e.rexpr.as_ref().and_then(|n| n.node.as_ref()),
                );
                let col = match sides {
                    (Some(NodeEnum::ColumnRef(c)), Some(NodeEnum::ParamRef(_)))
                    | (Some(NodeEnum::ParamRef(_)), Some(NodeEnum::ColumnRef(c))) => c,
                    _ => continue,
                };
                let name = col
                    .fields
                    .iter()
                    .rev()
                    .find_map(|f| match f.node.as_ref()? {
                        NodeEnum::String(s) => Some(s.sval.clone()),
                        _ => None,
                    })?;
                return Some((table, name));
            }
            _ => {}
        }
    }
    None
}

/// One (source, repeated) pair, however often it happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NPlusOneView {
    pub source_fingerprint: String,
    pub repeated_fingerprint: String,
    /// Runs detected.
    pub occurrences: u64,
    /// Repeats in the latest and in the longest run.
    pub last_count: usize,
    pub max_count: usize,
    /// Summed duration of the latest run.
    pub last_total_ms: f64,
    pub source_rows: u64,
    pub matches_source_rows: bool,
    pub endpoint: Option<String>,
    pub grouping: Grouping,
    pub fix: String,
    pub first_seen: String,
    pub last_seen: String,
}

/// Deduplicated N+1 findings, shared by all connections, bounded.
pub struct NPlusOneLog {
    map: Mutex<HashMap<(u64, u64), (NPlusOneView, u64)>>,
    capacity: usize,
}

impl NPlusOneLog {
    pub fn new(capacity: usize) -> NPlusOneLog {
        NPlusOneLog {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Adds one finding seen at `at_unix_us`; returns its occurrence count.
    pub fn add(&self, f: &NPlusOne, at_unix_us: u64) -> u64 {
        let mut map = self.map.lock();
        let key = (f.source_fingerprint, f.repeated_fingerprint);
        if !map.contains_key(&key) && map.len() >= self.capacity {
            let oldest = map
                .iter()
                .min_by_key(|(_, (_, last))| *last)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        let now = rfc3339(at_unix_us);
        let (view, last) = map.entry(key).or_insert_with(|| {
            (
                NPlusOneView {
                    source_fingerprint: fingerprint_hex(f.source_fingerprint),
                    repeated_fingerprint: fingerprint_hex(f.repeated_fingerprint),
                    occurrences: 0,
                    last_count: 0,
                    max_count: 0,
                    last_total_ms: 0.0,
                    source_rows: 0,
                    matches_source_rows: false,
                    endpoint: None,
                    grouping: f.grouping,
                    fix: String::new(),
                    first_seen: now.clone(),
                    last_seen: String::new(),
                },
                0,
            )
        });
        view.occurrences += 1;
        view.last_count = f.count;
        view.max_count = view.max_count.max(f.count);
        view.last_total_ms = micros_to_ms(duration_micros(f.total_duration));
        view.source_rows = f.source_rows;
        view.matches_source_rows = f.matches_source_rows;
        view.endpoint = f
            .endpoint
            .as_deref()
            .map(str::to_owned)
            .or(view.endpoint.take());
        view.grouping = f.grouping;
        view.fix.clone_from(&f.fix);
        view.last_seen = now;
        *last = at_unix_us;
        view.occurrences
    }

    /// All pairs, most occurrences first.
    pub fn views(&self) -> Vec<NPlusOneView> {
        let mut out: Vec<NPlusOneView> = self.map.lock().values().map(|(v, _)| v.clone()).collect();
        out.sort_by(|a, b| {
            b.occurrences
                .cmp(&a.occurrences)
                .then_with(|| a.repeated_fingerprint.cmp(&b.repeated_fingerprint))
        });
        out
    }

    /// Pairs in which `fingerprint` is the source or the repeated query.
    pub fn involving(&self, fingerprint: u64) -> Vec<NPlusOneView> {
        let map = self.map.lock();
        map.iter()
            .filter(|((s, r), _)| *s == fingerprint || *r == fingerprint)
            .map(|(_, (v, _))| v.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: u64 = 1;
    const CHILD: u64 = 2;
    const OTHER: u64 = 3;

    struct Feed {
        tracker: NPlusOneTracker,
        at: Instant,
        found: Vec<NPlusOne>,
    }

    impl Feed {
        fn new() -> Feed {
            Feed {
                tracker: NPlusOneTracker::new(NPlusOneSettings::default()),
                at: Instant::now(),
                found: Vec::new(),
            }
        }

        fn query(
            &mut self,
            fingerprint: u64,
            rows: u64,
            trace: Option<u128>,
            txn: bool,
            gap_ms: u64,
        ) {
            self.at += Duration::from_millis(gap_ms);
            let ev = NPlusOneEvent {
                fingerprint,
                rows,
                duration: Duration::from_micros(200),
                trace_id: trace,
                in_transaction: txn,
                endpoint: None,
                at: self.at,
            };
            self.found.extend(self.tracker.observe(&ev));
        }

        fn n_plus_one(&mut self, repeats: usize, trace: Option<u128>, txn: bool, gap_ms: u64) {
            self.query(SOURCE, repeats as u64, trace, txn, gap_ms);
            for _ in 0..repeats {
                self.query(CHILD, 1, trace, txn, gap_ms);
            }
        }

        fn end(&mut self) -> &[NPlusOne] {
            self.found.extend(self.tracker.finish());
            &self.found
        }
    }

    #[test]
    fn five_repeats_fire_four_do_not() {
        let mut f = Feed::new();
        f.n_plus_one(5, None, false, 1);
        let found = f.end();
        assert_eq!(found.len(), 1);
        let n = &found[0];
        assert_eq!(
            (n.source_fingerprint, n.repeated_fingerprint, n.count),
            (SOURCE, CHILD, 5)
        );
        assert_eq!(n.total_duration, Duration::from_millis(1));
        assert!(n.matches_source_rows);
        assert_eq!(n.grouping, Grouping::Burst);

        let mut f = Feed::new();
        f.n_plus_one(4, None, false, 1);
        assert!(f.end().is_empty());
    }

    #[test]
    fn reported_when_the_run_ends() {
        let mut f = Feed::new();
        f.n_plus_one(6, None, false, 1);
        assert!(f.found.is_empty(), "still running");
        f.query(OTHER, 1, None, false, 1);
        assert_eq!(f.found.len(), 1);
        assert_eq!(f.found[0].count, 6);
    }

    #[test]
    fn no_source_no_finding() {
        let mut f = Feed::new();
        for _ in 0..10 {
            f.query(CHILD, 1, None, false, 1);
        }
        assert!(f.end().is_empty());
    }

    #[test]
    fn bursts_split_on_the_gap_and_no_time_floor() {
        let mut f = Feed::new();
        // Slow queries 150 ms apart without trace or transaction: separate bursts.
        f.n_plus_one(6, None, false, 150);
        assert!(f.end().is_empty());
        // The same loop grouped by a trace is found whatever the gaps.
        let mut f = Feed::new();
        f.n_plus_one(6, Some(0xabc), false, 150);
        let found = f.end();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].grouping, Grouping::Trace);
    }

    #[test]
    fn grouped_by_transaction() {
        let mut f = Feed::new();
        f.n_plus_one(5, None, true, 500);
        let found = f.end();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].grouping, Grouping::Transaction);
    }

    #[test]
    fn a_new_trace_starts_a_new_group() {
        let mut f = Feed::new();
        f.query(SOURCE, 10, Some(1), false, 1);
        for _ in 0..3 {
            f.query(CHILD, 1, Some(1), false, 1);
        }
        // Next request: its repeats do not extend the previous trace's run.
        for _ in 0..3 {
            f.query(CHILD, 1, Some(2), false, 1);
        }
        assert!(f.end().is_empty());
    }

    #[test]
    fn interleaved_traces_would_split_runs() {
        let mut f = Feed::new();
        f.query(SOURCE, 10, Some(1), false, 1);
        for _ in 0..5 {
            f.query(CHILD, 1, Some(1), false, 1);
        }
        f.query(SOURCE, 10, Some(2), false, 1);
        assert_eq!(f.found.len(), 1, "trace 1's run ends when trace 2 starts");
    }

    #[test]
    fn batch_fix_names_the_column() {
        let fix = batch_fix(Some("SELECT id, body FROM comments WHERE post_id = $1"));
        assert!(
            fix.contains("FROM comments WHERE post_id = ANY($1)"),
            "{fix}"
        );
        let fix = batch_fix(Some("SELECT 1"));
        assert!(fix.contains("= ANY($1)"));
    }

    #[test]
    fn log_deduplicates_with_occurrences() {
        let log = NPlusOneLog::new(10);
        let mut f = Feed::new();
        f.n_plus_one(5, None, false, 1);
        f.query(OTHER, 1, None, false, 1000);
        f.n_plus_one(7, None, false, 1);
        let found = f.end().to_vec();
        assert_eq!(found.len(), 2);
        for n in &found {
            log.add(n, 0);
        }
        let views = log.views();
        assert_eq!(views.len(), 1);
        assert_eq!(
            (
                views[0].occurrences,
                views[0].last_count,
                views[0].max_count
            ),
            (2, 7, 7)
        );
        assert_eq!(log.involving(CHILD).len(), 1);
        assert!(log.involving(OTHER).is_empty());
    }
}
