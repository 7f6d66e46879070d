//! Getting a server for the client's next transaction and giving it back:
//! routing ([`crate::route`]) picks the server, the pool lends a
//! connection, the client's settings are synced onto it; at the end of the
//! transaction it is released, with read-your-writes bookkeeping.
//!
//! A read whose replica cannot be reached is retried on another server
//! before anything was sent, so the client never sees that failure.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use pgpilot_config::RywScope;
use pgpilot_pool::{PoolStats, PooledConn};
use pgpilot_sql::{Analysis, SessionEffect};

use crate::error::SessionError;
use crate::expect::Expect;
use crate::params;
use crate::route::{self, Intent, NoServer};
use crate::session::{Session, Txn};

/// Servers tried for one read before giving up.
const READ_ATTEMPTS: usize = 3;

/// A routing decision already made for a checkout, and the clock reading
/// it was made with.
struct First {
    choice: route::Choice,
    now: Instant,
}

impl Session {
    /// What the statement `analysis` needs, noting possible writes for
    /// read-your-writes. A read sent to the primary by a hint or by
    /// `pgpilot.route` is not a write: the client's next reads need not wait
    /// for the replicas.
    pub(crate) fn intent_of(&mut self, analysis: &Analysis) -> Intent {
        let settings = self.rt.settings.load();
        let r = &settings.routing;
        let own = route::statement_intent(
            analysis,
            &self.rt.functions,
            &self.database,
            &r.read_only_functions,
        );
        if own == Intent::Write {
            self.note_cache_writes(analysis);
            self.wrote = true;
            if self.ryw_key.is_some() {
                self.wrote_key = self.ryw_key.clone();
            }
        }
        if let Some(forced) = route::forced_intent(analysis.hint, self.route_override) {
            return forced;
        }
        if self.primary_only(analysis) {
            return Intent::Write;
        }
        own
    }

    /// The read-your-writes scope key of `sql` (`routing.ryw_scope`): its
    /// sqlcommenter trace id, or the session's token; `None` for
    /// connection scope.
    pub(crate) fn ryw_scope_key(&self, sql: &str) -> Option<Box<str>> {
        match self.rt.settings.load().routing.ryw_scope {
            RywScope::Connection => None,
            RywScope::Trace => pgpilot_insight::sqlcomment::parse(sql)
                .trace_id()
                .map(Into::into),
            RywScope::Token => self.ryw_token.clone(),
        }
    }

    /// A read is about to be routed: writes made elsewhere in its scope
    /// (same trace or token) count as the client's own.
    pub(crate) fn merge_shared_writes(&mut self) {
        let Some(key) = self.ryw_key.as_deref() else {
            return;
        };
        if let Some(at) = self.rt.shared_writes.latest(key) {
            self.ryw.merge(at);
        }
    }

    /// Reads a replica cannot serve for this session: a statement that
    /// pins the client (it will stay on that server, writes included, so it
    /// must be the primary: `SET ROLE`, `SET SESSION CHARACTERISTICS`…), or
    /// any transaction while the client's default isolation is serializable
    /// (a standby refuses serializable transactions).
    fn primary_only(&self, analysis: &Analysis) -> bool {
        let pins = analysis
            .effects
            .iter()
            .any(|e| matches!(e, SessionEffect::Pin(_)));
        pins || self.serializable_default
    }

    /// Checks out a server for `self.next_intent` if the session has none
    /// (see [`Session::adopt_server`]).
    pub(crate) async fn ensure_server(&mut self) -> Result<(), SessionError> {
        if self.server.is_some() {
            return Ok(());
        }
        let first = match self.adopt_idle() {
            Ok(()) => return Ok(()),
            Err(first) => first,
        };
        // Boxed: a checkout that opens a connection or waits is a large
        // future; inline, it would make the future of every message
        // handler that may check out (all of them) as large.
        let result = Box::pin(self.checkout_routed(first)).await;
        if result.is_err() {
            // The message that needed a server will not run, nor will its effects.
            self.pending.discard_open();
            // The failure may have come after a wait: the next message of
            // this event must not start from the reading taken before it.
            self.clock.reset();
        }
        result
    }

    /// The common case without a future: the routed pool has an idle
    /// connection. Otherwise returns the routing decision made (if any),
    /// for [`Session::checkout_routed`] to wait on.
    fn adopt_idle(&mut self) -> Result<(), Option<First>> {
        if self.cache.fill_on_primary {
            return Err(None);
        }
        let intent = self.next_intent;
        if intent == Intent::Read {
            self.merge_shared_writes();
        }
        let now = self.clock.now();
        let settings = self.rt.settings.load();
        let choice = self.route(&settings, intent, &[], now).map_err(|_| None)?;
        let Some(conn) = choice.pool.try_idle(now) else {
            return Err(Some(First { choice, now }));
        };
        self.next_intent = Intent::Write;
        self.adopt_server(conn, now);
        self.backend = Some(choice.backend);
        Ok(())
    }

    /// Where a statement of `intent` goes now, `exclude` aside.
    fn route(
        &mut self,
        settings: &pgpilot_config::Settings,
        intent: Intent,
        exclude: &[u32],
        now: Instant,
    ) -> Result<route::Choice, NoServer> {
        let attempt = route::Attempt {
            intent,
            exclude,
            now,
        };
        route::choose(
            &self.rt.backends,
            settings,
            &self.user,
            &self.database,
            attempt,
            &mut self.ryw,
            &mut self.pool_memo,
        )
    }

    async fn checkout_routed(&mut self, first: Option<First>) -> Result<(), SessionError> {
        let intent = std::mem::replace(&mut self.next_intent, Intent::Write);
        if let Some(first) = first {
            return self.checkout_for(intent, Some(first)).await;
        }
        if std::mem::take(&mut self.cache.fill_on_primary) && intent == Intent::Read {
            // A cache fill prefers the primary; if it cannot serve, the read
            // runs as usual (and is not captured: see `start_fill`).
            if self.checkout_for(Intent::Write, None).await.is_ok() {
                return Ok(());
            }
        }
        self.checkout_for(intent, None).await
    }

    /// Checks out a server for `intent`, starting from `first` (a routing
    /// decision already made for it) when given.
    async fn checkout_for(
        &mut self,
        intent: Intent,
        mut first: Option<First>,
    ) -> Result<(), SessionError> {
        let settings = self.rt.settings.load_full();
        if intent == Intent::Read && first.is_none() {
            self.merge_shared_writes();
        }
        let mut exclude = Vec::new();
        loop {
            let First { choice, now } = match first.take() {
                Some(first) => first,
                None => {
                    // One clock reading serves routing, the pool and (when
                    // nothing had to wait) the transaction's start.
                    let now = Instant::now();
                    let choice = self
                        .route(&settings, intent, &exclude, now)
                        .map_err(no_server)?;
                    First { choice, now }
                }
            };
            match choice.pool.checkout_at(now).await {
                Ok((conn, handed_over)) => {
                    self.adopt_server(conn, handed_over);
                    self.backend = Some(choice.backend);
                    return Ok(());
                }
                Err(e) if is_server_down(&e) => {
                    choice.backend.record_failure(Instant::now());
                    exclude.push(choice.backend.id);
                    if intent == Intent::Write || exclude.len() >= READ_ATTEMPTS {
                        return Err(SessionError::Pool(e));
                    }
                    tracing::debug!(server = %choice.backend.addr, error = %e, "read retried on another server");
                }
                Err(e) => return Err(SessionError::Pool(e)),
            }
        }
    }

    /// Makes `conn` the session's server: routes cancels to it and brings
    /// its settings in line with the client's (a hidden `SET …` ahead of the
    /// client's messages).
    pub(crate) fn adopt_server(&mut self, mut conn: PooledConn, now: Instant) {
        self.cancel.point_at(&conn.addr, conn.pid, conn.key);
        if let Some(sql) = params::sync(&self.settings, &mut conn.session_settings) {
            pgpilot_wire::frontend::query(&mut self.server_out, &sql);
            self.expect.push(Expect::Query { hidden: true });
        }
        self.txn = Txn::new(now);
        self.clock.set(now);
        self.server_farewell = None;
        self.server = Some(conn);
    }

    /// The transaction ended (ReadyForQuery idle): a write in it is what
    /// the client's next reads must see.
    pub(crate) fn end_transaction(&mut self) {
        self.invalidate_written();
        if std::mem::take(&mut self.wrote) {
            let now = self.clock.now();
            self.ryw.last_write = Some(now);
            self.ryw.needed_lsn = None;
            if let Some(key) = self.wrote_key.take() {
                self.rt.shared_writes.record(&key, now);
            }
        }
    }

    /// Returns the server to the pool at the end of a transaction.
    pub(crate) fn release_server(&mut self) {
        let Some(conn) = self.server.take() else {
            return;
        };
        let now = self.clock.now();
        self.cancel.clear();
        self.flush_stats(&conn, now);
        self.backend = None;
        conn.release_at(now);
    }

    fn flush_stats(&mut self, conn: &PooledConn, now: Instant) {
        let stats = conn.pool().stats();
        let held = now.saturating_duration_since(self.txn.started).as_micros() as u64;
        PoolStats::add(&stats.xact_count, 1);
        PoolStats::add(&stats.xact_time_us, held);
        PoolStats::add(&stats.query_count, self.txn.queries);
        PoolStats::add(&stats.query_time_us, held);
        PoolStats::add(&stats.bytes_received, std::mem::take(&mut self.bytes_in));
        PoolStats::add(&stats.bytes_sent, std::mem::take(&mut self.bytes_out));
        self.txn.queries = 0;
    }

    /// The held server failed mid-request: count it against the server,
    /// drop the connection, and tell the client its transaction is gone.
    /// Returns false when the session cannot go on (pinned state was lost).
    pub(crate) fn server_lost(&mut self, err: &SessionError) -> bool {
        self.observe_lost();
        if let Some(b) = self.backend.take() {
            b.record_failure(Instant::now());
        }
        if let Some(mut conn) = self.server.take() {
            conn.broken = true;
            self.cancel.clear();
        }
        if self.holds_server() {
            return false;
        }
        self.rt.counters.server_failures.fetch_add(1, Relaxed);
        // Whether its COMMIT took effect is unknown.
        self.invalidate_written();
        self.abandon_captures();
        let idle = self.expect.is_empty();
        let awaited_ready = self.expect.drain_awaits_ready();
        self.server_out.clear();
        self.pending = Default::default();
        self.copy_in = false;
        self.wrote = false;
        self.cache.batch_open = false;
        let mut out = bytes::BytesMut::new();
        let message = match self.server_farewell.take() {
            Some(said) => format!(
                "pgpilot: {err} (the server said: {said}); the transaction was not completed"
            ),
            None => format!("pgpilot: {err}; the transaction was not completed"),
        };
        pgpilot_wire::backend::error_response(
            &mut out,
            "ERROR",
            pgpilot_wire::sqlstate::CONNECTION_FAILURE,
            &message,
        );
        self.client_status = pgpilot_wire::backend::TransactionStatus::Idle;
        if awaited_ready {
            pgpilot_wire::backend::ready_for_query(&mut out, self.client_status);
        } else if idle {
            // Nothing to answer now: an unsolicited error would confuse
            // the client's driver (tokio-postgres closes the connection).
            self.lost_transaction = Some(out.freeze());
            return true;
        } else {
            self.skip_until_sync = true;
        }
        self.client_out.extend_from_slice(&out);
        true
    }

    /// Answers the client's first message after its transaction was lost
    /// while it idled ([`Session::server_lost`]) with the error, as
    /// PostgreSQL fails a statement in an aborted transaction: a Query or
    /// FunctionCall gets the error and ReadyForQuery, an extended-protocol
    /// message the error and the rest of its batch is skipped up to Sync.
    /// Returns whether the message `tag` should still be handled.
    pub(crate) fn report_lost_transaction(&mut self, message_tag: u8) -> bool {
        use pgpilot_wire::tag::frontend as tag;
        let Some(error) = self.lost_transaction.take() else {
            return true;
        };
        self.emit(error);
        match message_tag {
            tag::QUERY | tag::FUNCTION_CALL => {
                let mut ready = bytes::BytesMut::new();
                pgpilot_wire::backend::ready_for_query(&mut ready, self.client_status);
                self.emit(ready.freeze());
                false
            }
            tag::SYNC | tag::TERMINATE => true,
            _ => {
                self.skip_until_sync = true;
                false
            }
        }
    }
}

fn no_server(e: NoServer) -> SessionError {
    let (code, message) = match e {
        NoServer::PrimaryDown => (
            pgpilot_wire::sqlstate::CONNECTION_FAILURE,
            "pgpilot: the primary is unavailable (circuit breaker open or no primary)",
        ),
        NoServer::NoReplica => (
            pgpilot_wire::sqlstate::CANNOT_CONNECT_NOW,
            "pgpilot: no replica can serve this read and fallback = \"error\"",
        ),
    };
    SessionError::Routing {
        code,
        message: message.to_owned(),
    }
}

/// Failures that say the server is unreachable, not that the request was bad.
fn is_server_down(e: &pgpilot_pool::Error) -> bool {
    matches!(
        e,
        pgpilot_pool::Error::Io { .. }
            | pgpilot_pool::Error::ConnectTimeout { .. }
            | pgpilot_pool::Error::Protocol { .. }
    ) || matches!(e, pgpilot_pool::Error::Server { fields, .. } if fields.code.starts_with("57P") || fields.code == "53300")
}
