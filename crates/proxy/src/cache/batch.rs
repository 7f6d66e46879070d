//! Answering reads from the cache, or running them with a fill.
//!
//! Simple protocol: a Query is looked up before checkout; a hit is its
//! stored response plus ReadyForQuery, with no server involved.
//!
//! Extended protocol: what is asked is known only at Execute (which
//! statement, which parameters, whether a Describe wants the
//! RowDescription), so an eligible batch's unnamed Parse, Bind and portal
//! Describe are *held*. At Execute (all rows) the cache answers or the held
//! messages are replayed to a server, ahead of the Execute, with the
//! response captured. Any other message first replays what is held, so the
//! server sees exactly the client's sequence.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use pgpilot_cache::{Begin, CacheKey, FillTicket, Lookup, Protocol};
use pgpilot_wire::frontend::{Bind, Execute, Named, Parse, Target};
use pgpilot_wire::tag::{backend as btag, frontend as tag};
use pgpilot_wire::Frame;

use super::capture::Shape;
use super::shared::{self, Shared};
use super::{Held, Plan};
use crate::backends::Role;
use crate::error::{Result, SessionError};
use crate::expect::Expect;
use crate::session::Session;

/// What the cache decided for one statement.
enum Decision {
    /// Answer with these bytes.
    Hit(Bytes),
    /// Run it and fill the entry (with the shared level's stamp, when the
    /// result is to be stored there too).
    Fill(FillTicket, Option<Vec<u64>>),
    /// Run it without filling.
    Run,
}

/// The outcome of offering a simple Query to the cache.
pub(crate) enum QueryPath {
    /// Answered from the cache.
    Served,
    /// Run it (with a fill when one is given).
    Run(Option<Box<(FillTicket, Plan)>>),
}

impl Session {
    /// Offers the simple Query just analyzed (`self.last_analysis`).
    pub(crate) async fn cache_query(&mut self) -> QueryPath {
        if !self.cache_on() {
            return QueryPath::Run(None);
        }
        let Some((sql, analysis)) = self.last_analysis.clone() else {
            return QueryPath::Run(None);
        };
        let Some(mut plan) = self.text_plan(&sql, &analysis) else {
            return QueryPath::Run(None);
        };
        let key = self.cache_key(&plan, Protocol::Simple, &[], &[]);
        let decision = self.decide(key, &plan).await;
        // A lookup may have waited (Redis, a coalesced fill).
        self.clock.reset();
        match decision {
            Decision::Hit(response) => {
                // Two emits, not a copy of the result into a new buffer first.
                self.emit(response);
                let mut ready = BytesMut::with_capacity(6);
                pgpilot_wire::backend::ready_for_query(&mut ready, self.client_status);
                self.emit(ready.freeze());
                QueryPath::Served
            }
            Decision::Fill(ticket, stamp) => {
                if self.server.is_none() {
                    self.cache.fill_on_primary = true;
                }
                plan.stamp = stamp;
                QueryPath::Run(Some(Box::new((ticket, plan))))
            }
            Decision::Run => QueryPath::Run(None),
        }
    }

    /// Starts capturing the responses to entries `first..=last` when the
    /// held server is the primary (see `SessionCache::fill_on_primary`).
    pub(crate) fn start_fill(&mut self, fill: (FillTicket, Plan), shape: Shape, range: (u64, u64)) {
        self.cache.fill_on_primary = false;
        let on_primary = self
            .backend
            .as_ref()
            .is_some_and(|b| b.role() == Role::Primary);
        if on_primary && range.1 >= range.0 && !self.skip_until_sync {
            self.start_capture(fill.0, fill.1, shape, range);
        }
    }

    /// Hit, fill or run: looks up `key`, and on a miss leads or follows
    /// the one query that fills it.
    async fn decide(&mut self, key: CacheKey, plan: &Plan) -> Decision {
        let shape = plan.shape;
        if !self.cache_fresh_enough() {
            return Decision::Run;
        }
        let cache = self.rt.cache.clone();
        let now = Instant::now();
        let stale = match cache.lookup(key, shape, now) {
            Lookup::Hit(e) if self.owns(&e) => return Decision::Hit(e.response.clone()),
            Lookup::Refresh(e) if self.owns(&e) => Some(e),
            Lookup::Hit(_) | Lookup::Refresh(_) => return Decision::Run,
            Lookup::Miss => None,
        };
        let waiter = match cache.begin(key, u64::from(self.pid as u32), now) {
            Begin::Lead(ticket) => return self.lead(ticket, key, plan).await,
            Begin::Own => None,
            Begin::Follow(w) => Some(w),
        };
        if let Some(e) = stale {
            // Someone else refreshes it: the current entry is still valid.
            cache.hit(&e);
            return Decision::Hit(e.response.clone());
        }
        let Some(waiter) = waiter else {
            return Decision::Run;
        };
        let limit = self.rt.settings.load().cache.coalesce_wait;
        let ended = Box::pin(waiter.wait(limit)).await;
        let found = match ended.then(|| cache.lookup(key, shape, Instant::now())) {
            Some(Lookup::Hit(e)) | Some(Lookup::Refresh(e)) if self.owns(&e) => {
                Some(e.response.clone())
            }
            _ => None,
        };
        cache.coalesce_outcome(found.is_some());
        found.map_or(Decision::Run, Decision::Hit)
    }

    /// Whether `entry` was filled for this session's user and database.
    /// The key already covers both; this guards against a key collision
    /// (the key hash is fast, not collision-resistant) ever serving one
    /// role's rows to another.
    fn owns(&self, entry: &pgpilot_cache::Entry) -> bool {
        *entry.user == *self.user.name && *entry.database == *self.database
    }

    /// This session fills `key`: first asks the shared level in Redis,
    /// when results are shared and it may be read now.
    async fn lead(&mut self, ticket: FillTicket, key: CacheKey, plan: &Plan) -> Decision {
        let conn = match self.rt.settings.load().cache.redis_results {
            true => self.rt.peers.shared_conn(),
            false => None,
        };
        let Some(conn) = conn else {
            return Decision::Fill(ticket, None);
        };
        let deps = shared::dependency_keys(plan, &self.database);
        // Boxed, as is the wait below: rare paths whose futures would
        // otherwise make every message handler's future as large.
        match Box::pin(shared::lookup(conn, key, &deps)).await {
            Shared::Hit(response) => {
                self.rt.peers.shared_hits.fetch_add(1, Relaxed);
                let fill = self.fill_for(plan, response.clone());
                let _ = self.rt.cache.complete(ticket, fill, Instant::now());
                Decision::Hit(response)
            }
            Shared::Miss(stamp) => {
                self.rt.peers.shared_misses.fetch_add(1, Relaxed);
                Decision::Fill(ticket, Some(stamp))
            }
            Shared::Unavailable => Decision::Fill(ticket, None),
        }
    }

    /// Holds an eligible unnamed Parse; false when it must go on now.
    pub(crate) fn hold_parse(&mut self, frame: &Frame, parse: &Parse<'_>) -> bool {
        let query = parse.query;
        self.cache.owed_parse = None;
        if self.cache.held.is_some() || !self.cache_usable() || !self.cache_on() {
            return false;
        }
        let Some((text, analysis)) = self.analyze_text(query) else {
            return false;
        };
        let Some(plan) = self.text_plan(&text, &analysis) else {
            return false;
        };
        let param_types = Bytes::copy_from_slice(parse.param_types);
        self.cache.held = Some(Box::new(Held {
            parse: Some(frame.clone()),
            bind: None,
            describe: None,
            portal: Bytes::new(),
            plan,
            param_types,
        }));
        true
    }

    /// Holds a Bind of an eligible named statement; false when it must go on now.
    pub(crate) fn hold_bind(&mut self, frame: &Frame, bind: &Bind<'_>) -> bool {
        if self.cache.held.is_some()
            || bind.statement.is_empty()
            || self.max_prepared == 0
            || !self.cache_usable()
            || !self.cache_on()
        {
            return false;
        }
        let Some(stmt) = self.statements.get(bind.statement).cloned() else {
            return false;
        };
        let Some(text) = stmt.sql.clone() else {
            return false;
        };
        let sql: &str = &text;
        let analysis = stmt
            .analysis
            .get_or_init(|| self.rt.analyzer.analyze(sql))
            .clone();
        let exact = || *stmt.exact.get_or_init(|| pgpilot_sql::exact_key(sql));
        let Some(plan) = self.cache_plan(&text, &analysis, exact) else {
            return false;
        };
        self.cache.held = Some(Box::new(Held {
            parse: None,
            bind: Some(frame.clone()),
            describe: None,
            portal: Bytes::copy_from_slice(bind.portal),
            plan,
            param_types: Bytes::copy_from_slice(&stmt.param_types),
        }));
        true
    }

    /// The cache plan of a text just analyzed (a simple Query's or an
    /// unnamed Parse's), its exact key memoized for a repeated text.
    fn text_plan(
        &mut self,
        sql: &std::sync::Arc<str>,
        analysis: &pgpilot_sql::Analysis,
    ) -> Option<Plan> {
        let computed = std::cell::Cell::new(None);
        let exact = || {
            let key = self.simple_exact(sql);
            computed.set(Some(key));
            key
        };
        let plan = self.cache_plan(sql, analysis, exact);
        if let Some(key) = computed.get() {
            self.cache.last_exact = Some((sql.clone(), key));
        }
        plan
    }

    /// The simple query `sql`'s exact key, memoized for a repeated text.
    fn simple_exact(&self, sql: &str) -> u128 {
        match &self.cache.last_exact {
            Some((text, key)) if text.as_ptr() == sql.as_ptr() && text.len() == sql.len() => *key,
            _ => pgpilot_sql::exact_key(sql),
        }
    }

    pub(crate) fn cache_on(&self) -> bool {
        self.rt.settings.load().cache.active()
    }

    /// Offers a client message to the held batch: true when it was taken
    /// (a Bind or Describe joining it, or the Execute that settles it).
    /// Otherwise the held messages have been sent on and the caller
    /// handles `frame` as usual.
    pub(crate) async fn offer_to_held(&mut self, frame: &Frame) -> Result<bool> {
        let Some(held) = self.cache.held.as_mut() else {
            return Ok(false);
        };
        let body = frame.body();
        match frame.tag {
            tag::BIND if held.bind.is_none() => {
                let b = Bind::decode(body).map_err(SessionError::ClientProtocol)?;
                if b.statement.is_empty() {
                    held.portal = Bytes::copy_from_slice(b.portal);
                    held.bind = Some(frame.clone());
                    return Ok(true);
                }
            }
            tag::DESCRIBE if held.bind.is_some() && held.describe.is_none() => {
                let d = Named::decode(body).map_err(SessionError::ClientProtocol)?;
                if d.target == Target::Portal && d.name == held.portal.as_ref() {
                    held.describe = Some(frame.clone());
                    return Ok(true);
                }
            }
            tag::EXECUTE if held.bind.is_some() => {
                let x = Execute::decode(body).map_err(SessionError::ClientProtocol)?;
                if x.portal == held.portal.as_ref() && x.max_rows == 0 {
                    // Boxed (as the replay below): large futures that would
                    // otherwise size every message handler's future.
                    Box::pin(self.settle_held(frame)).await?;
                    return Ok(true);
                }
            }
            // Leaving: what is held need not reach a server.
            tag::TERMINATE => {
                self.cache.held = None;
                return Ok(false);
            }
            _ => {}
        }
        Box::pin(self.replay_held(None, None)).await?;
        Ok(false)
    }

    /// The Execute of the held batch: answer from the cache or replay it.
    async fn settle_held(&mut self, execute: &Frame) -> Result<()> {
        let Some(held) = self.cache.held.take() else {
            return Ok(());
        };
        let Some(bind) = held.bind.as_ref().filter(|_| self.cache_usable()) else {
            self.cache.held = Some(held);
            return self.replay_held(Some(execute), None).await;
        };
        let mut plan = held.plan.clone();
        let decoded = Bind::decode(bind.body()).map_err(SessionError::ClientProtocol)?;
        if names_current_time(&decoded) {
            self.cache.held = Some(held);
            return self.replay_held(Some(execute), None).await;
        }
        let params = decoded.rest;
        let described = held.describe.is_some();
        let key = self.cache_key(
            &plan,
            Protocol::Extended { described },
            &held.param_types,
            params,
        );
        let decision = self.decide(key, &plan).await;
        self.clock.reset();
        match decision {
            Decision::Hit(response) => {
                if let Some(parse) = &held.parse {
                    self.emit(Bytes::from_static(&[btag::PARSE_COMPLETE, 0, 0, 0, 4]));
                    self.cache.owed_parse = Some(parse.raw.clone());
                }
                self.emit(response);
                Ok(())
            }
            Decision::Fill(ticket, stamp) => {
                plan.stamp = stamp;
                self.cache.held = Some(held);
                self.replay_held(Some(execute), Some((ticket, plan))).await
            }
            Decision::Run => {
                self.cache.held = Some(held);
                self.replay_held(Some(execute), None).await
            }
        }
    }

    /// Sends the held messages (and `execute`) on as the client sent them,
    /// capturing the response for `fill`.
    pub(crate) async fn replay_held(
        &mut self,
        execute: Option<&Frame>,
        fill: Option<(FillTicket, Plan)>,
    ) -> Result<()> {
        let Some(held) = self.cache.held.take() else {
            return Ok(());
        };
        if fill.is_some() && self.server.is_none() {
            self.cache.fill_on_primary = true;
        }
        self.cache.batch_open = true;
        if let Some(frame) = held.parse {
            let parse = Parse::decode(frame.body()).map_err(SessionError::ClientProtocol)?;
            self.forward_parse(&frame, &parse).await?;
        }
        let first = self.expect.next_index();
        // A failed checkout skips the rest of the batch, as PostgreSQL
        // would after an error: one ErrorResponse, not one per message.
        if let Some(frame) = held.bind.filter(|_| !self.skip_until_sync) {
            let bind = Bind::decode(frame.body()).map_err(SessionError::ClientProtocol)?;
            self.forward_bind(&frame, &bind).await?;
        }
        if let Some(describe) = held.describe.filter(|_| !self.skip_until_sync) {
            self.forward_describe(describe).await?;
        }
        if let Some(x) = execute.filter(|_| !self.skip_until_sync) {
            self.forward_execute(x).await?;
        }
        let next = self.expect.next_index();
        match fill {
            Some(fill) if next > first => self.start_fill(fill, Shape::Extended, (first, next - 1)),
            _ => self.cache.fill_on_primary = false,
        }
        Ok(())
    }

    /// Before the unnamed statement is used without a Parse of its own:
    /// gives the server the Parse a cache hit answered locally.
    pub(crate) async fn pay_owed_parse(&mut self) -> bool {
        let Some(parse) = self.cache.owed_parse.take() else {
            return true;
        };
        if !self.server_ready().await {
            return false;
        }
        self.server_out.extend_from_slice(&parse);
        self.expect.push(Expect::Parse {
            stmt: None,
            client_name: None,
            hidden: true,
        });
        self.rt.counters.prepared_reparses.fetch_add(1, Relaxed);
        true
    }
}

/// A parameter value such as `'now'` or `'today'` makes the result depend
/// on when it runs (when the parameter is a date/time type): not cached.
fn names_current_time(bind: &Bind<'_>) -> bool {
    match bind.params() {
        Ok(values) => values
            .iter()
            .flatten()
            .any(|v| pgpilot_sql::mentions_current_time(v)),
        Err(_) => true,
    }
}
