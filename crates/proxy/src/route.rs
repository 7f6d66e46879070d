//! Choosing the server for a transaction: the primary for anything that
//! may write, the least-loaded healthy, caught-up replica for reads, and
//! read-your-writes by WAL position.
//!
//! Read-your-writes without a round trip on the write path: the monitor
//! samples the primary's WAL position continuously, recording when each
//! sampling query was *sent*. A client whose write committed at instant T
//! needs a replica that replayed a primary position sampled by a query sent
//! after T (that position includes the commit); the earliest such sample
//! is used (see [`Backend::position_after`]), so a read long after the write
//! is not held to other clients' later writes. Until such a sample exists,
//! or while no replica has replayed it, the client reads from the primary.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use pgpilot_config::{Fallback, RoutingSettings, Settings, User};
use pgpilot_pool::Pool;
use pgpilot_sql::{Analysis, RouteHint, Target, TxnControl};

use crate::backends::{Backend, Backends};
use crate::functions::FunctionCatalog;

/// What a transaction's first statement needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// May write, lock or have side effects: the primary.
    Write,
    /// Reads only: a replica may serve it.
    Read,
}

/// A client's routing override (`SET pgpilot.route = …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteOverride {
    #[default]
    Auto,
    Primary,
    Replica,
}

impl RouteOverride {
    /// Parses the value of a `SET pgpilot.route` statement.
    pub fn from_statement(statement: &str) -> RouteOverride {
        let s = statement.to_ascii_lowercase();
        if s.contains("primary") {
            RouteOverride::Primary
        } else if s.contains("replica") {
            RouteOverride::Replica
        } else {
            RouteOverride::Auto
        }
    }
}

/// A client's read-your-writes state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadYourWrites {
    /// When the client's last write transaction committed.
    pub last_write: Option<Instant>,
    /// The primary position that write is known to be within.
    pub needed_lsn: Option<u64>,
}

/// Why a server was chosen (for metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Write,
    Read,
    /// No replica could serve the read (none healthy, lagging, draining).
    ReadFallback,
    /// Replicas had not replayed the client's own write yet.
    RywFallback,
}

/// The chosen server and the pool to check out from.
pub struct Choice {
    pub backend: Arc<Backend>,
    pub pool: Pool,
    pub reason: Reason,
}

/// Why no server could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoServer {
    PrimaryDown,
    NoReplica,
}

/// Where a hint comment or the session's `pgpilot.route` sends a statement
/// whatever it does; `None` when neither decides. A hint beats the setting.
pub fn forced_intent(hint: RouteHint, route: RouteOverride) -> Option<Intent> {
    match (route, hint) {
        (_, RouteHint::Primary) | (RouteOverride::Primary, RouteHint::None) => Some(Intent::Write),
        (_, RouteHint::Replica) | (RouteOverride::Replica, RouteHint::None) => Some(Intent::Read),
        (RouteOverride::Auto, RouteHint::None) => None,
    }
}

/// What the statement itself needs, overrides aside: `Write` when it may
/// write (which is what read-your-writes must track), `Read` otherwise.
pub fn statement_intent(
    analysis: &Analysis,
    catalog: &FunctionCatalog,
    database: &str,
    read_only_fns: &[String],
) -> Intent {
    let class = &analysis.class;
    match class.txn {
        TxnControl::Begin { read_only } => {
            return if read_only {
                Intent::Read
            } else {
                Intent::Write
            }
        }
        TxnControl::End | TxnControl::None => {}
    }
    match class.target {
        Target::Primary => Intent::Write,
        Target::Anywhere => Intent::Read,
        Target::Replica
            if class
                .functions
                .iter()
                .all(|f| catalog.is_read_only(database, f, read_only_fns)) =>
        {
            Intent::Read
        }
        Target::Replica => Intent::Write,
    }
}

/// One attempt at finding a server: what the transaction needs, the
/// servers that already failed it, and the clock reading it is judged at.
pub struct Attempt<'a> {
    pub intent: Intent,
    pub exclude: &'a [u32],
    pub now: Instant,
}

/// Picks the server for a transaction with `attempt.intent`, skipping
/// `attempt.exclude` (servers that just failed for this request).
pub fn choose(
    backends: &Backends,
    settings: &Settings,
    user: &User,
    database: &str,
    attempt: Attempt<'_>,
    ryw: &mut ReadYourWrites,
    memo: &mut PoolMemo,
) -> Result<Choice, NoServer> {
    let Attempt {
        intent,
        exclude,
        now,
    } = attempt;
    let r = &settings.routing;
    // Looked up once: with no replica a read needs no replica pass.
    let to_replicas = intent == Intent::Read && r.enabled && backends.has_replicas();
    if to_replicas {
        if let Some(choice) = choose_replica(backends, settings, user, database, ryw, exclude, now)
        {
            return Ok(choice);
        }
    }
    let primary = backends
        .primary()
        .filter(|p| p.accepts_traffic(now) && !exclude.contains(&p.id));
    let Some(primary) = primary else {
        return Err(NoServer::PrimaryDown);
    };
    let reason = match intent {
        Intent::Write => Reason::Write,
        Intent::Read if !to_replicas => Reason::Read,
        Intent::Read if r.fallback == Fallback::Error => return Err(NoServer::NoReplica),
        Intent::Read if ryw_blocked(backends, r, ryw, now) => Reason::RywFallback,
        Intent::Read => Reason::ReadFallback,
    };
    count(&primary, reason);
    let pool = memo.pool(&primary, settings, user, database);
    Ok(Choice {
        backend: primary,
        pool,
        reason,
    })
}

/// The primary pool a session used last, reused while the primary and its
/// pools are unchanged: a transaction then skips the server's locked
/// two-level (database, user) look-up.
#[derive(Default)]
pub struct PoolMemo {
    last: Option<(Arc<Backend>, u64, Pool)>,
}

impl PoolMemo {
    fn pool(
        &mut self,
        backend: &Arc<Backend>,
        settings: &Settings,
        user: &User,
        database: &str,
    ) -> Pool {
        let epoch = backend.pools_epoch();
        if let Some((b, e, pool)) = &self.last {
            if Arc::ptr_eq(b, backend) && *e == epoch {
                return pool.clone();
            }
        }
        let pool = backend.pool(settings, user, database);
        self.last = Some((backend.clone(), epoch, pool.clone()));
        pool
    }
}

fn count(b: &Backend, reason: Reason) {
    let c = &b.counters;
    let counter = match reason {
        Reason::Write => &c.writes_routed,
        Reason::Read => &c.reads_routed,
        Reason::ReadFallback => &c.read_fallbacks,
        Reason::RywFallback => &c.ryw_fallbacks,
    };
    counter.fetch_add(1, Relaxed);
}

/// The least-loaded replica that is healthy, within the lag limits and has
/// replayed the client's last write.
fn choose_replica(
    backends: &Backends,
    settings: &Settings,
    user: &User,
    database: &str,
    ryw: &mut ReadYourWrites,
    exclude: &[u32],
    now: Instant,
) -> Option<Choice> {
    let r = &settings.routing;
    let needed = needed_lsn(backends, r, ryw)?;
    let mut best: Option<(f64, Arc<Backend>, Pool)> = None;
    backends.for_each_replica(|b| {
        if exclude.contains(&b.id) || !serves_reads(b, r, needed, now) {
            return;
        }
        let pool = b.pool(settings, user, database);
        let load = pool.load();
        if best.as_ref().is_none_or(|(l, _, _)| load < *l) {
            best = Some((load, b.clone(), pool));
        }
    });
    let (_, backend, pool) = best?;
    count(&backend, Reason::Read);
    Some(Choice {
        backend,
        pool,
        reason: Reason::Read,
    })
}

/// Whether replica `b` may serve a read that must see WAL position
/// `needed`: accepting traffic, sampled at least once (a server just added
/// has an unknown lag), within the lag limits, and replayed far enough.
fn serves_reads(b: &Backend, r: &RoutingSettings, needed: u64, now: Instant) -> bool {
    let (replayed, sampled_at) = b.position();
    b.accepts_traffic(now) && sampled_at.is_some() && within_lag(b, r) && replayed >= needed
}

fn within_lag(b: &Backend, r: &RoutingSettings) -> bool {
    let (bytes, ms) = b.lag();
    bytes <= r.max_lag_bytes && u128::from(ms) <= r.max_lag.as_millis()
}

/// The WAL position a replica must have replayed for this client: 0 when
/// it has no write to see; `None` when it cannot be known yet.
pub(crate) fn needed_lsn(
    backends: &Backends,
    r: &RoutingSettings,
    ryw: &mut ReadYourWrites,
) -> Option<u64> {
    if !r.read_your_writes {
        return Some(0);
    }
    let Some(written) = ryw.last_write else {
        return Some(0);
    };
    if let Some(lsn) = ryw.needed_lsn {
        return Some(lsn);
    }
    let lsn = backends.primary()?.position_after(written)?;
    ryw.needed_lsn = Some(lsn);
    Some(lsn)
}

/// Whether only the client's own last write keeps its read off the
/// replicas: some replica could serve a read, none one that must see that
/// write. (With no replica able to serve at all, the read is a plain
/// fallback, whatever the client wrote.)
fn ryw_blocked(
    backends: &Backends,
    r: &RoutingSettings,
    ryw: &mut ReadYourWrites,
    now: Instant,
) -> bool {
    let available = |needed: u64| {
        backends
            .replicas()
            .iter()
            .any(|b| serves_reads(b, r, needed, now))
    };
    if !available(0) {
        return false;
    }
    match needed_lsn(backends, r, ryw) {
        None => ryw.last_write.is_some(),
        Some(needed) => needed > 0 && !available(needed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_beats_the_session_setting_which_beats_nothing() {
        use RouteHint as H;
        use RouteOverride as O;
        assert_eq!(forced_intent(H::None, O::Auto), None);
        assert_eq!(forced_intent(H::None, O::Primary), Some(Intent::Write));
        assert_eq!(forced_intent(H::None, O::Replica), Some(Intent::Read));
        assert_eq!(forced_intent(H::Replica, O::Primary), Some(Intent::Read));
        assert_eq!(forced_intent(H::Primary, O::Replica), Some(Intent::Write));
    }
}

/// Writes shared by a read-your-writes scope wider than one connection
/// (`routing.ryw_scope = "trace" | "token"`): scope key → when its last
/// write committed. Bounded: when full, the oldest half is forgotten (a
/// forgotten scope only loses the *shared* guarantee after that long).
#[derive(Default)]
pub struct SharedWrites {
    map: parking_lot::Mutex<std::collections::HashMap<Box<str>, Instant>>,
}

/// Scopes remembered at most.
const SHARED_WRITES_CAP: usize = 100_000;

impl SharedWrites {
    /// A write under `key` committed at `at`.
    pub fn record(&self, key: &str, at: Instant) {
        let mut map = self.map.lock();
        if map.len() >= SHARED_WRITES_CAP && !map.contains_key(key) {
            let mut times: Vec<Instant> = map.values().copied().collect();
            times.sort_unstable();
            let cutoff = times[times.len() / 2];
            map.retain(|_, t| *t > cutoff);
        }
        map.insert(key.into(), at);
    }

    /// When the last write under `key` committed.
    pub fn latest(&self, key: &str) -> Option<Instant> {
        self.map.lock().get(key).copied()
    }
}

impl ReadYourWrites {
    /// Takes a write made elsewhere in the client's scope at `at` into account.
    pub fn merge(&mut self, at: Instant) {
        if self.last_write.is_none_or(|w| w < at) {
            self.last_write = Some(at);
            self.needed_lsn = None;
        }
    }
}

/// The value a `SET name = 'value'` / `set_config('name', 'value', false)`
/// statement gives: its last quoted literal, else the word after `=`/`TO`.
pub fn setting_value(statement: &str) -> Option<String> {
    if let Some(v) = last_quoted(statement) {
        return Some(v);
    }
    let lower = statement.to_ascii_lowercase();
    let at = lower
        .rfind('=')
        .map(|i| i + 1)
        .or_else(|| lower.rfind(" to ").map(|i| i + 4))?;
    let v = statement[at..].trim().trim_end_matches(';').trim();
    (!v.is_empty()).then(|| v.to_owned())
}

/// The last single-quoted literal in `s`, with `''` unescaped.
fn last_quoted(s: &str) -> Option<String> {
    let mut last = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut lit = String::new();
        loop {
            match chars.next() {
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    lit.push('\'');
                }
                Some('\'') | None => break,
                Some(ch) => lit.push(ch),
            }
        }
        last = Some(lit);
    }
    last
}

#[cfg(test)]
mod scope_tests {
    use super::*;

    #[test]
    fn setting_values() {
        assert_eq!(
            setting_value("SET pgpilot.ryw_token = 'user-42'").as_deref(),
            Some("user-42")
        );
        assert_eq!(
            setting_value("SELECT pg_catalog.set_config('pgpilot.ryw_token', 'a''b', false)")
                .as_deref(),
            Some("a'b")
        );
        assert_eq!(
            setting_value("SET pgpilot.ryw_token TO t1").as_deref(),
            Some("t1")
        );
        assert_eq!(
            setting_value("SET pgpilot.ryw_token = abc;").as_deref(),
            Some("abc")
        );
    }

    #[test]
    fn shared_writes_keep_the_latest_and_stay_bounded() {
        let s = SharedWrites::default();
        let t0 = Instant::now();
        s.record("k", t0);
        s.record("k", t0 + std::time::Duration::from_millis(5));
        assert_eq!(
            s.latest("k"),
            Some(t0 + std::time::Duration::from_millis(5))
        );
        assert_eq!(s.latest("other"), None);
        let mut r = ReadYourWrites {
            last_write: None,
            needed_lsn: Some(7),
        };
        r.merge(t0);
        assert_eq!((r.last_write, r.needed_lsn), (Some(t0), None));
        r.needed_lsn = Some(9);
        r.merge(t0 - std::time::Duration::from_millis(1));
        assert_eq!(r.needed_lsn, Some(9), "an older write changes nothing");
    }
}
