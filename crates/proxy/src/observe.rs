//! Feeding query insight from the data path: which client statement each
//! Query or Execute runs, when it was sent, and — when its answer completes
//! — its duration, rows, error and where it ran.
//!
//! The hot path only records a key and a reference-counted slice of the SQL
//! text at send time; fingerprinting (once per query shape), statistics and
//! N+1 tracking happen at completion in [`pgpilot_insight::Insight`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use pgpilot_insight::{Location, NPlusOneEvent, NPlusOneTracker, QueryEvent, Sent, Shape};
use pgpilot_wire::backend::TransactionStatus;

use crate::backends::Role;
use crate::session::Session;

/// What a statement sent to the server is, for insight.
#[derive(Debug, Clone)]
pub(crate) struct Statement {
    /// The analyzer's shape key.
    pub key: u128,
    /// The SQL text (shared with the session's last analysis or the
    /// statement registry); statements not in UTF-8 are not observed.
    pub sql: Arc<str>,
    /// The body of the Bind that made the portal (extended protocol):
    /// parameter values, decoded only for the slow log.
    pub bind: Option<Arc<[u8]>>,
}

impl Statement {
    /// The statement as bound by the Bind message `frame`. The body is
    /// copied (tens of bytes): a slice would pin the client's read buffer
    /// and make every later read allocate a new one.
    pub fn bound(self, frame: &pgpilot_wire::Frame) -> Statement {
        let body = Arc::from(frame.body());
        Statement {
            bind: Some(body),
            ..self
        }
    }
}

/// Whether an in-flight entry answers a simple Query or an Execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Query,
    Execute,
}

/// A statement the server is running or will run.
#[derive(Debug)]
struct InFlight {
    kind: Kind,
    stmt: Statement,
    start: Instant,
    location: Location,
    rows: u64,
    error: Option<String>,
}

/// Per-session insight state.
#[derive(Default)]
pub(crate) struct Observer {
    /// Sent and not completed, in order.
    inflight: VecDeque<InFlight>,
    /// The statement the last analyzed message refers to.
    pub last: Option<Statement>,
    /// The client's unnamed statement (extended protocol).
    pub unnamed: Option<Statement>,
    /// The statement behind the portal the next Execute runs.
    pub portal: Option<Statement>,
    /// N+1 detection for this client, created on first use.
    nplus1: Option<Box<NPlusOneTracker>>,
    /// The shape of the last statement recorded, by analyzer key: a client
    /// repeating a query shape skips the proxy-wide shape cache.
    last_shape: Option<(u128, Arc<Shape>)>,
}

impl Session {
    fn insight_on(&self) -> bool {
        self.rt.insight.enabled()
    }

    fn location(&self) -> Location {
        match self.backend.as_ref().map(|b| b.role()) {
            Some(Role::Replica) => Location::Replica,
            _ => Location::Primary,
        }
    }

    /// A simple Query (or Execute) was forwarded: start its clock.
    pub(crate) fn observe_sent(&mut self, execute: bool) {
        if !self.insight_on() {
            return;
        }
        let stmt = if execute {
            self.observer.portal.clone()
        } else {
            self.observer.last.take()
        };
        let Some(stmt) = stmt else { return };
        let kind = if execute { Kind::Execute } else { Kind::Query };
        let location = self.location();
        self.observer.inflight.push_back(InFlight {
            kind,
            stmt,
            start: self.clock.now(),
            location,
            rows: 0,
            error: None,
        });
    }

    /// CommandComplete / EmptyQueryResponse / PortalSuspended arrived.
    pub(crate) fn observe_complete(&mut self, command_tag: Option<&[u8]>) {
        let rows = command_tag.map_or(0, rows_of);
        let Some(head) = self.observer.inflight.front_mut() else {
            return;
        };
        head.rows += rows;
        if head.kind == Kind::Execute {
            self.finish_head();
        }
    }

    /// ErrorResponse arrived with `code`.
    pub(crate) fn observe_error(&mut self, code: &str) {
        let Some(head) = self.observer.inflight.front_mut() else {
            return;
        };
        head.error = Some(code.to_owned());
        if head.kind == Kind::Execute {
            self.finish_head();
        }
    }

    /// ReadyForQuery for the client: a simple Query is complete; Executes
    /// still queued were skipped by the server after an error.
    pub(crate) fn observe_ready(&mut self) {
        while let Some(head) = self.observer.inflight.front() {
            if head.kind == Kind::Query {
                self.finish_head();
                return;
            }
            self.observer.inflight.pop_front();
        }
    }

    /// The server is gone: nothing in flight will complete.
    pub(crate) fn observe_lost(&mut self) {
        self.observer.inflight.clear();
    }

    fn finish_head(&mut self) {
        let Some(f) = self.observer.inflight.pop_front() else {
            return;
        };
        let now = self.clock.now();
        let sql: &str = &f.stmt.sql;
        let insight = self.rt.insight.clone();
        let tags = pgpilot_insight::sqlcomment::parse(sql);
        let endpoint = insight.endpoint(&tags);
        let shape = match &self.observer.last_shape {
            Some((key, shape)) if *key == f.stmt.key => shape.clone(),
            _ => {
                let shape = insight.shape(f.stmt.key, sql, now);
                self.observer.last_shape = Some((f.stmt.key, shape.clone()));
                shape
            }
        };
        let ev = QueryEvent {
            shape,
            duration: now - f.start,
            rows: f.rows,
            error: f.error,
            location: f.location,
            endpoint,
        };
        let trace = tags.trace_id();
        // Parameter values are decoded only for statements the slow log keeps.
        let slow = ev.duration >= insight.settings().slow_threshold;
        let bind = f.stmt.bind.as_deref().filter(|_| slow);
        let bind = bind.and_then(|b| pgpilot_wire::frontend::Bind::decode(b).ok());
        let params = bind
            .as_ref()
            .and_then(|b| b.params().ok())
            .unwrap_or_default();
        let sent = Sent {
            sql,
            params: &params,
            trace_id: trace.as_deref(),
        };
        insight.record(&ev, &sent, now);
        let tracker = self
            .observer
            .nplus1
            .get_or_insert_with(|| Box::new(insight.n_plus_one_tracker()));
        let found = tracker.observe(&NPlusOneEvent {
            fingerprint: ev.shape.fingerprint,
            rows: ev.rows,
            duration: ev.duration,
            trace_id: tags.trace_id_u128(),
            in_transaction: self.client_status != TransactionStatus::Idle,
            endpoint: ev.endpoint.as_ref(),
            at: now,
        });
        if let Some(found) = found {
            insight.report_n_plus_one(&found, now);
        }
    }

    /// The client left: a run of repeats still open is judged now.
    pub(crate) fn observe_end(&mut self) {
        if let Some(found) = self.observer.nplus1.as_mut().and_then(|t| t.finish()) {
            self.rt.insight.report_n_plus_one(&found, Instant::now());
        }
    }
}

/// Rows from a command tag: the last number (`SELECT 5`, `INSERT 0 3`).
fn rows_of(tag: &[u8]) -> u64 {
    let last = tag.rsplit(|&b| b == b' ').next().unwrap_or(b"");
    std::str::from_utf8(last)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::rows_of;

    #[test]
    fn rows_come_from_the_tag() {
        assert_eq!(rows_of(b"SELECT 5"), 5);
        assert_eq!(rows_of(b"INSERT 0 3"), 3);
        assert_eq!(rows_of(b"UPDATE 12"), 12);
        assert_eq!(rows_of(b"BEGIN"), 0);
        assert_eq!(rows_of(b""), 0);
    }
}
