//! Client → server: what the session does with each frontend message.
//!
//! Most messages are forwarded unchanged. Named prepared statements are
//! translated to their proxy-wide server names and prepared on demand on
//! whichever server the client holds; a client's Close of a statement is
//! answered locally. Every forwarded message that will be answered gets an
//! [`Expect`] entry, in order.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pgpilot_sql::SessionEffect;
use pgpilot_wire::backend;
use pgpilot_wire::frontend::{self, Bind, Named, Parse, Target};
use pgpilot_wire::sqlstate;
use pgpilot_wire::tag::{backend as btag, frontend as tag};
use pgpilot_wire::Frame;

use crate::cache::{QueryPath, Shape};
use crate::error::{Result, SessionError};
use crate::expect::Expect;
use crate::session::Session;
use crate::statements::{encode_parse, Statement};

impl Session {
    /// Handles one client message; `Ok(false)` when the client said Terminate.
    pub(crate) async fn on_client_frame(&mut self, frame: Frame) -> Result<bool> {
        if self.skip_until_sync && frame.tag != tag::SYNC {
            return Ok(true);
        }
        if !self.report_lost_transaction(frame.tag) {
            return Ok(true);
        }
        if self.cache.held.is_some() && self.offer_to_held(&frame).await? {
            return Ok(true);
        }
        if self.skip_until_sync && frame.tag != tag::SYNC {
            // Sending the held messages on failed (no server).
            return Ok(true);
        }
        // Messages that do not say otherwise need the primary.
        self.next_intent = crate::route::Intent::Write;
        let message_tag = frame.tag;
        match frame.tag {
            tag::QUERY => self.on_query(frame).await?,
            tag::PARSE => self.on_parse(frame).await?,
            tag::BIND => self.on_bind(frame).await?,
            tag::DESCRIBE => self.forward_describe(frame).await?,
            tag::CLOSE => self.on_close(frame).await?,
            tag::EXECUTE => self.forward_execute(&frame).await?,
            tag::SYNC => self.on_sync(frame).await?,
            tag::FLUSH => self.on_flush(&frame.raw),
            tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => self.on_copy(&frame.raw)?,
            tag::FUNCTION_CALL => {
                self.forward(&frame.raw, Some(Expect::Query { hidden: false }))
                    .await?
            }
            tag::TERMINATE => return Ok(false),
            _ => {
                return Err(SessionError::Unexpected(
                    "unknown or misplaced message type",
                ))
            }
        }
        self.note_batch_open(message_tag);
        Ok(true)
    }

    /// An extended-protocol message reached a server: until the next
    /// ReadyForQuery the cache must not answer (a SET or BEGIN in the
    /// batch may already have run; see `cache_usable`).
    fn note_batch_open(&mut self, message_tag: u8) {
        let extended = matches!(
            message_tag,
            tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE | tag::FLUSH
        );
        if extended && self.cache.held.is_none() && self.server.is_some() {
            self.cache.batch_open = true;
        }
    }

    pub(crate) async fn forward_execute(&mut self, frame: &Frame) -> Result<()> {
        self.forward(&frame.raw, Some(Expect::Execute)).await?;
        if !self.skip_until_sync {
            self.observe_sent(true);
        }
        Ok(())
    }

    /// Sends `raw` to the server (checking one out first) and awaits `expect`.
    async fn forward(&mut self, raw: &[u8], expect: Option<Expect>) -> Result<()> {
        if !self.server_ready().await {
            return Ok(());
        }
        self.server_out.extend_from_slice(raw);
        if let Some(e) = expect {
            self.await_response(e);
        }
        Ok(())
    }

    /// Ensures a server; on failure reports the error the way the current
    /// protocol flow expects and returns false.
    pub(crate) async fn server_ready(&mut self) -> bool {
        match self.ensure_server().await {
            Ok(()) => true,
            Err(err) => {
                tracing::debug!(pid = self.pid, error = %err, "checkout failed");
                let mut out = BytesMut::new();
                err.respond(&mut out);
                self.local_error(out.freeze());
                false
            }
        }
    }

    /// Queues a locally made ErrorResponse for an extended-protocol batch:
    /// the rest of the batch is skipped up to Sync, as a server would.
    fn local_error(&mut self, error: Bytes) {
        self.emit(error);
        self.skip_until_sync = true;
    }

    /// Sends `bytes` to the client now, or after the responses still awaited.
    pub(crate) fn emit(&mut self, bytes: Bytes) {
        if self.expect.is_empty() {
            self.client_out.extend_from_slice(&bytes);
        } else {
            self.expect.push(Expect::Synthetic(bytes));
        }
    }

    fn error_bytes(code: &str, message: &str) -> Bytes {
        let mut out = BytesMut::new();
        backend::error_response(&mut out, "ERROR", code, message);
        out.freeze()
    }

    fn empty_bytes(message_tag: u8) -> Bytes {
        Bytes::copy_from_slice(&[message_tag, 0, 0, 0, 4])
    }

    /// Records session effects of `sql`; pins take effect at once.
    fn note_effects(&mut self, sql: &[u8]) {
        for effect in self.session_effects(sql) {
            self.pending.note(effect);
        }
    }

    /// The analysis of `text`, `None` when it is not UTF-8 (another
    /// client_encoding: then nothing that follows — the result cache,
    /// insight, the read-your-writes scope — may use the previous text's
    /// analysis either). A client that sends the same text again (an
    /// unnamed statement re-parsed every transaction, a repeated simple
    /// query) gets the previous answer without a UTF-8 check, a lexer pass
    /// or a cache look-up.
    ///
    /// Returns the text as an owned copy, made only when the text changes:
    /// keeping a slice of the client's read buffer instead would pin that
    /// buffer and make every later read allocate a new one.
    pub(crate) fn analyze_text(
        &mut self,
        text: &[u8],
    ) -> Option<(std::sync::Arc<str>, pgpilot_sql::Analysis)> {
        if let Some((last, analysis)) = &self.last_analysis {
            if last.as_bytes() == text {
                return Some((last.clone(), analysis.clone()));
            }
        }
        let Ok(sql) = std::str::from_utf8(text) else {
            self.last_analysis = None;
            self.observer.last = None;
            self.ryw_key = self.ryw_scope_key("");
            return None;
        };
        let owned: std::sync::Arc<str> = std::sync::Arc::from(sql);
        let prev = self.last_analysis.as_ref().map(|(_, a)| a);
        let analysis = if self.cache_on() {
            // The result cache will want the exact key too: one lexical pass.
            let (analysis, exact) = self.rt.analyzer.analyze_with_exact_key(sql, prev);
            self.cache.last_exact = Some((owned.clone(), exact));
            analysis
        } else {
            self.rt.analyzer.analyze_after(sql, prev)
        };
        self.last_analysis = Some((owned.clone(), analysis.clone()));
        Some((owned, analysis))
    }

    /// Pins the client for what `text` does that cannot be replayed (at
    /// once: pinning early is harmless) and returns its other session effects.
    fn session_effects(&mut self, text: &[u8]) -> Vec<SessionEffect> {
        let Some((owned, analysis)) = self.analyze_text(text) else {
            return Vec::new();
        };
        self.ryw_key = self.ryw_scope_key(&owned);
        self.next_intent = self.intent_of(&analysis);
        self.observer.last = Some(crate::observe::Statement {
            key: analysis.key,
            sql: owned,
            bind: None,
        });
        let mut effects = Vec::new();
        for effect in analysis.effects.iter() {
            if let SessionEffect::Pin(reason) = effect {
                if self.pinned.is_none() {
                    self.pinned = Some(*reason);
                    self.rt.counters.pinned_clients.fetch_add(1, Relaxed);
                    tracing::debug!(
                        pid = self.pid,
                        reason = reason.as_str(),
                        "client pinned to its server"
                    );
                }
            } else {
                effects.push(effect.clone());
            }
        }
        effects
    }

    async fn on_query(&mut self, frame: Frame) -> Result<()> {
        let sql = frontend::query_text(frame.body()).map_err(SessionError::ClientProtocol)?;
        self.note_effects(sql);
        // Boxed, and only with the cache on: inline, the cache's future
        // would size every message handler's future, cache on or off.
        let path = match self.cache_on() {
            true => Box::pin(self.cache_query()).await,
            false => QueryPath::Run(None),
        };
        let fill = match path {
            QueryPath::Served => return Ok(()),
            QueryPath::Run(fill) => fill,
        };
        if let Err(e) = self.ensure_server().await {
            // A simple query gets its error and ReadyForQuery right away.
            let mut out = BytesMut::new();
            e.respond(&mut out);
            backend::ready_for_query(&mut out, self.client_status);
            self.emit(out.freeze());
            return Ok(());
        }
        let index = self.expect.next_index();
        self.server_out.extend_from_slice(&frame.raw);
        self.await_response(Expect::Query { hidden: false });
        if let Some(fill) = fill {
            self.start_fill(*fill, Shape::Simple, (index, index));
        }
        self.observe_sent(false);
        Ok(())
    }

    async fn on_parse(&mut self, frame: Frame) -> Result<()> {
        let parse = Parse::decode(frame.body()).map_err(SessionError::ClientProtocol)?;
        if parse.name.is_empty() && self.hold_parse(&frame, &parse) {
            return Ok(());
        }
        self.forward_parse(&frame, &parse).await
    }

    /// Sends the client's Parse (`frame`, decoded as `parse`) on.
    pub(crate) async fn forward_parse(&mut self, frame: &Frame, parse: &Parse<'_>) -> Result<()> {
        // Effects count when the statement runs: at each Bind of it.
        let effects = self.session_effects(parse.query);
        if parse.name.is_empty() {
            self.cache.unnamed_analysis = self.last_analysis.as_ref().map(|(_, a)| a.clone());
            // Its Bind in this batch needs no second look (see `forward_bind`).
            self.cache.unnamed_parsed = true;
            self.observer.unnamed = self.observer.last.take();
        }
        if parse.name.is_empty() || self.max_prepared == 0 {
            self.pending.parsed(parse.name, effects);
            return self
                .forward(
                    &frame.raw,
                    Some(Expect::Parse {
                        stmt: None,
                        client_name: None,
                        hidden: false,
                    }),
                )
                .await;
        }
        let stmt = self.rt.statements.intern(parse.query, parse.param_types);
        if !self.statements.insert(parse.name, stmt.clone()) {
            let msg = format!(
                "prepared statement \"{}\" already exists",
                String::from_utf8_lossy(parse.name)
            );
            self.local_error(Self::error_bytes(
                sqlstate::DUPLICATE_PREPARED_STATEMENT,
                &msg,
            ));
            return Ok(());
        }
        self.pending.parsed(parse.name, effects);
        if !self.server_ready().await {
            // The Parse never reached a server: the name stays free.
            self.statements.remove(parse.name);
            return Ok(());
        }
        if self.server_has(&stmt) {
            self.answer_parse_locally(&stmt, parse.name);
        } else {
            self.prepare_on_server(&stmt, Some(parse.name));
        }
        Ok(())
    }

    /// ParseComplete for the client's Parse of a statement the server has.
    fn answer_parse_locally(&mut self, stmt: &Statement, client_name: &[u8]) {
        if self.expect.is_empty() {
            self.client_out
                .extend_from_slice(&Self::empty_bytes(btag::PARSE_COMPLETE));
        } else {
            self.expect.push(Expect::LocalParse {
                stmt: stmt.id,
                client_name: Bytes::copy_from_slice(client_name),
            });
        }
    }

    /// Marks `stmt` used on the held server; true when it is prepared there.
    fn server_has(&mut self, stmt: &Statement) -> bool {
        self.server
            .as_mut()
            .is_some_and(|s| s.prepared.touch(stmt.id))
    }

    /// Sends a Parse of `stmt` under its server name, first closing the
    /// server's least recently used statement when over the limit.
    /// `client_name` is the client's name for it when this is the client's
    /// own Parse, `None` for a hidden re-Parse.
    fn prepare_on_server(&mut self, stmt: &Statement, client_name: Option<&[u8]>) {
        let hidden = client_name.is_none();
        let Some(server) = self.server.as_mut() else {
            return;
        };
        if let Some(victim) = server.prepared.insert(stmt.id, self.max_prepared) {
            let name = format!("PGPILOT_{victim}");
            frontend::named(
                &mut self.server_out,
                true,
                Target::Statement,
                name.as_bytes(),
            );
            self.expect.push(Expect::Close { hidden: true });
        }
        encode_parse(&mut self.server_out, stmt);
        self.expect.push(Expect::Parse {
            stmt: Some(stmt.id),
            client_name: client_name.map(Bytes::copy_from_slice),
            hidden,
        });
        if hidden {
            self.rt.counters.prepared_reparses.fetch_add(1, Relaxed);
        }
    }

    /// The client's statement `name`, prepared on the held server. `None`
    /// after reporting an error to the client.
    async fn statement_on_server(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        let Some(stmt) = self.statements.get(name).cloned() else {
            let msg = format!(
                "prepared statement \"{}\" does not exist",
                String::from_utf8_lossy(name)
            );
            self.local_error(Self::error_bytes(
                sqlstate::INVALID_SQL_STATEMENT_NAME,
                &msg,
            ));
            return None;
        };
        // Every execution counts for read-your-writes, not only the first.
        if let Some(text) = &stmt.sql {
            let sql: &str = text;
            let analysis = stmt
                .analysis
                .get_or_init(|| self.rt.analyzer.analyze(sql))
                .clone();
            self.ryw_key = self.ryw_scope_key(sql);
            self.next_intent = self.intent_of(&analysis);
            self.observer.last = Some(crate::observe::Statement {
                key: analysis.key,
                sql: text.clone(),
                bind: None,
            });
        }
        if !self.server_ready().await {
            return None;
        }
        if !self.server_has(&stmt) {
            self.prepare_on_server(&stmt, None);
        }
        Some(stmt)
    }

    async fn on_bind(&mut self, frame: Frame) -> Result<()> {
        let bind = Bind::decode(frame.body()).map_err(SessionError::ClientProtocol)?;
        if self.hold_bind(&frame, &bind) {
            return Ok(());
        }
        self.forward_bind(&frame, &bind).await
    }

    /// Sends the client's Bind (`frame`, decoded as `bind`) on.
    pub(crate) async fn forward_bind(&mut self, frame: &Frame, bind: &Bind<'_>) -> Result<()> {
        if bind.statement.is_empty() {
            // Every execution of the unnamed statement counts (writes,
            // read-your-writes, routing): one without a Parse of its own
            // in this batch is looked at here.
            if !std::mem::take(&mut self.cache.unnamed_parsed) {
                if let Some(analysis) = self.cache.unnamed_analysis.clone() {
                    self.next_intent = self.intent_of(&analysis);
                }
            }
            if !self.pay_owed_parse().await {
                return Ok(());
            }
        }
        if bind.statement.is_empty() || self.max_prepared == 0 {
            self.observer.portal = self.observer.unnamed.clone().map(|s| s.bound(frame));
            self.pending.bound(bind.statement);
            return self.forward(&frame.raw, Some(Expect::Bind)).await;
        }
        let Some(stmt) = self.statement_on_server(bind.statement).await else {
            return Ok(());
        };
        self.observer.portal = self.observer.last.take().map(|s| s.bound(frame));
        self.pending.bound(bind.statement);
        frontend::bind(
            &mut self.server_out,
            bind.portal,
            &stmt.server_name,
            bind.rest,
        );
        self.expect.push(Expect::Bind);
        Ok(())
    }

    pub(crate) async fn forward_describe(&mut self, frame: Frame) -> Result<()> {
        let named = Named::decode(frame.body()).map_err(SessionError::ClientProtocol)?;
        if named.target == Target::Statement
            && named.name.is_empty()
            && !self.pay_owed_parse().await
        {
            return Ok(());
        }
        if named.target == Target::Portal || named.name.is_empty() || self.max_prepared == 0 {
            return self.forward(&frame.raw, Some(Expect::Describe)).await;
        }
        let Some(stmt) = self.statement_on_server(named.name).await else {
            return Ok(());
        };
        frontend::named(
            &mut self.server_out,
            false,
            Target::Statement,
            &stmt.server_name,
        );
        self.expect.push(Expect::Describe);
        Ok(())
    }

    async fn on_close(&mut self, frame: Frame) -> Result<()> {
        let named = Named::decode(frame.body()).map_err(SessionError::ClientProtocol)?;
        if named.target == Target::Statement {
            self.pending.closed(named.name);
        }
        let local =
            named.target == Target::Statement && !named.name.is_empty() && self.max_prepared > 0;
        if local || self.server.is_none() {
            // The server copy stays (shared, LRU-bounded); a portal outside a
            // transaction no longer exists. PostgreSQL answers both with CloseComplete.
            self.statements.remove(named.name);
            self.emit(Self::empty_bytes(btag::CLOSE_COMPLETE));
            return Ok(());
        }
        self.forward(&frame.raw, Some(Expect::Close { hidden: false }))
            .await
    }

    async fn on_sync(&mut self, frame: Frame) -> Result<()> {
        self.skip_until_sync = false;
        // The next batch's Bind of the unnamed statement is looked at anew.
        self.cache.unnamed_parsed = false;
        if self.server.is_some() {
            self.server_out.extend_from_slice(&frame.raw);
            if !self.copy_in {
                // (In COPY FROM STDIN the server ignores it: no ReadyForQuery comes.)
                self.await_response(Expect::Sync);
            }
            return Ok(());
        }
        // Nothing since the last Sync reached a server.
        self.pending.discard_open();
        let mut out = BytesMut::with_capacity(6);
        backend::ready_for_query(&mut out, self.client_status);
        self.emit(out.freeze());
        Ok(())
    }

    fn on_flush(&mut self, raw: &[u8]) {
        if self.server.is_some() {
            self.server_out.extend_from_slice(raw);
        }
    }

    fn on_copy(&mut self, raw: &[u8]) -> Result<()> {
        if self.server.is_none() {
            // PostgreSQL ignores CopyData/Done/Fail outside COPY.
            return Ok(());
        }
        if raw.first() != Some(&tag::COPY_DATA) {
            if self.copy_in {
                self.copy_in = false;
            } else {
                // The server may not have entered COPY yet: mark where the data ended.
                self.expect.push(Expect::CopyEnd);
            }
        }
        self.server_out.extend_from_slice(raw);
        Ok(())
    }
}
