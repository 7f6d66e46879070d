//! Server → client: what the session does with each backend message.
//!
//! Messages are matched against the [`Expect`] queue: answers to the
//! client's own requests are forwarded (consecutive ones copied as one run),
//! answers to pgpilot's hidden requests are swallowed, and synthetic answers
//! are slotted in where they belong. ReadyForQuery closes a transaction:
//! session effects are committed and the server goes back to the pool.

use std::sync::Arc;

use bytes::Buf;
use pgpilot_sql::SessionEffect;
use pgpilot_wire::backend::{self, TransactionStatus};
use pgpilot_wire::tag::backend as tag;
use pgpilot_wire::FrameHeader;

use crate::error::{Result, SessionError};
use crate::expect::Expect;
use crate::session::Session;

/// Largest message accepted from a server (PostgreSQL's own limit is 1 GB).
const MAX_SERVER_MESSAGE: usize = (1 << 30) + (1 << 20);

/// What to do after a message.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The transaction ended and the server can go back to the pool.
    Release,
}

impl Session {
    /// Handles every complete message in the server's read buffer.
    pub(crate) fn handle_server_input(&mut self) -> Result<()> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        let mut buf = std::mem::take(&mut server.read_buf);
        let mut pos = 0;
        let mut flow = Flow::Continue;
        while flow == Flow::Continue {
            let header = FrameHeader::complete(&buf[pos..], MAX_SERVER_MESSAGE).map_err(|e| {
                SessionError::ServerProtocol {
                    addr: self.server_addr(),
                    reason: e.to_string(),
                }
            })?;
            let Some(h) = header else { break };
            flow = self.on_server_message(h.tag, &buf[pos..pos + h.total_len])?;
            pos += h.total_len;
        }
        buf.advance(pos);
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        server.read_buf = buf;
        if flow == Flow::Release {
            if !server.read_buf.is_empty() {
                // Unsolicited bytes after the transaction: never hand them to another client.
                server.broken = true;
            }
            self.release_server();
        }
        Ok(())
    }

    fn server_addr(&self) -> String {
        self.server
            .as_ref()
            .map_or_else(String::new, |s| s.addr.to_string())
    }

    fn desync(&self, what: &str) -> SessionError {
        SessionError::ServerProtocol {
            addr: self.server_addr(),
            reason: format!("unexpected {what}"),
        }
    }

    fn on_server_message(&mut self, message_tag: u8, msg: &[u8]) -> Result<Flow> {
        let hidden = self.expect.head_hidden();
        if !self.cache.captures.is_empty() {
            self.capture_message(self.expect.head_index(), hidden, message_tag, msg);
        }
        match message_tag {
            tag::DATA_ROW
            | tag::PARAMETER_STATUS
            | tag::NOTICE_RESPONSE
            | tag::NOTIFICATION_RESPONSE
            | tag::PARAMETER_DESCRIPTION
            | tag::COPY_DATA
            | tag::COPY_DONE
            | tag::COPY_OUT_RESPONSE
            | tag::COPY_BOTH_RESPONSE
            | tag::FUNCTION_CALL_RESPONSE => self.pass(hidden, msg),
            tag::COPY_IN_RESPONSE => self.on_copy_in_response(hidden, msg),
            tag::READY_FOR_QUERY => return self.on_ready(msg),
            tag::ERROR_RESPONSE => self.on_error(hidden, msg),
            tag::PARSE_COMPLETE => self.on_parse_complete(msg)?,
            tag::BIND_COMPLETE => {
                self.complete(msg, |e| matches!(e, Expect::Bind), "BindComplete")?
            }
            tag::CLOSE_COMPLETE => {
                self.complete(msg, |e| matches!(e, Expect::Close { .. }), "CloseComplete")?
            }
            tag::NO_DATA => self.complete(msg, |e| matches!(e, Expect::Describe), "NoData")?,
            tag::ROW_DESCRIPTION => self.on_row_description(hidden, msg)?,
            tag::COMMAND_COMPLETE | tag::EMPTY_QUERY_RESPONSE | tag::PORTAL_SUSPENDED => {
                self.on_command_complete(hidden, msg)?
            }
            _ => self.pass(hidden, msg),
        }
        Ok(Flow::Continue)
    }

    /// Forwards `msg` unless it answers a hidden request.
    fn pass(&mut self, hidden: bool, msg: &[u8]) {
        if !hidden {
            self.client_out.extend_from_slice(msg);
        }
    }

    /// Pops the head entry, which must satisfy `is`, forwards `msg` unless
    /// hidden, then emits any synthetic answers that are now due.
    fn complete(&mut self, msg: &[u8], is: impl Fn(&Expect) -> bool, what: &str) -> Result<()> {
        let head = self.expect.pop().ok_or_else(|| self.desync(what))?;
        if !is(&head) {
            return Err(self.desync(what));
        }
        self.pass(head.hidden(), msg);
        self.emit_due();
        Ok(())
    }

    fn emit_due(&mut self) {
        let out = &mut self.client_out;
        self.expect.take_synthetic(|b| out.extend_from_slice(b));
    }

    fn on_parse_complete(&mut self, msg: &[u8]) -> Result<()> {
        self.complete(msg, |e| matches!(e, Expect::Parse { .. }), "ParseComplete")
    }

    fn on_row_description(&mut self, hidden: bool, msg: &[u8]) -> Result<()> {
        if matches!(self.expect.front(), Some(Expect::Describe)) {
            return self.complete(msg, |_| true, "RowDescription");
        }
        self.pass(hidden, msg);
        Ok(())
    }

    fn on_command_complete(&mut self, hidden: bool, msg: &[u8]) -> Result<()> {
        self.txn.queries += 1;
        let mut command = None;
        if msg.first() == Some(&tag::COMMAND_COMPLETE) {
            command = backend::command_tag(&msg[5..]).ok();
            match command {
                // Also ROLLBACK TO SAVEPOINT, whose tag is ROLLBACK too.
                Some(b"ROLLBACK") => self.txn.failed = true,
                Some(b"SAVEPOINT") => self.txn.savepoint = true,
                _ => {}
            }
        }
        if !hidden {
            self.observe_complete(command);
        }
        if matches!(self.expect.front(), Some(Expect::Execute)) {
            return self.complete(msg, |_| true, "CommandComplete");
        }
        self.pass(hidden, msg);
        Ok(())
    }

    /// The server entered COPY FROM STDIN. Until the client's CopyDone or
    /// CopyFail it ignores Sync (protocol §55.2.6), so the Syncs the client
    /// sent behind an extended-protocol COPY's Execute (drivers send Bind,
    /// Execute, Sync before they know the statement is a COPY) are never
    /// answered; their effects are settled by the next ReadyForQuery.
    fn on_copy_in_response(&mut self, hidden: bool, msg: &[u8]) {
        self.pass(hidden, msg);
        let head_closed_a_batch =
            matches!(self.expect.front(), Some(Expect::Query { hidden: false }));
        let (client_copying, ignored_syncs) = self.expect.enter_copy_in();
        self.copy_in = client_copying;
        self.pending
            .merge_forward(usize::from(head_closed_a_batch), ignored_syncs);
    }

    fn on_error(&mut self, hidden: bool, msg: &[u8]) {
        if self.server_says_farewell(msg) {
            return;
        }
        // An error ends COPY FROM STDIN; Syncs count again.
        self.copy_in = false;
        // Entries up to the Sync are skipped: no fill in progress completes
        // (its followers stop waiting now rather than at their timeout).
        self.abandon_captures();
        if !hidden {
            let code = backend::ErrorFields::decode(&msg[5..])
                .map(|f| f.code)
                .unwrap_or_default();
            self.observe_error(&code);
        }
        if hidden {
            // pgpilot's own request failed: this connection's state is unknown.
            if let Some(s) = self.server.as_mut() {
                s.broken = true;
            }
            tracing::warn!(error = ?backend::ErrorFields::decode(&msg[5..]).ok(), "hidden request failed on server");
            if !matches!(self.expect.front(), Some(Expect::Query { .. })) {
                // A hidden Parse failed: the client's Bind/Describe will never run; tell it why.
                self.client_out.extend_from_slice(msg);
            }
        } else {
            self.client_out.extend_from_slice(msg);
        }
        self.txn.failed = true;
        if matches!(self.expect.front(), Some(Expect::Query { .. })) {
            return; // ReadyForQuery ends the simple query.
        }
        let (lost, sync_queued) = self.expect.skip_to_sync();
        for parse in lost {
            if let (true, Some(s)) = (parse.server_lost, self.server.as_mut()) {
                s.prepared.remove(parse.stmt);
            }
            // PostgreSQL did not create the client's statement: its name is free.
            if let Some(name) = parse.client_name {
                self.statements.remove_if(&name, parse.stmt);
            }
        }
        if !sync_queued {
            self.skip_until_sync = true;
        }
    }

    /// A FATAL or PANIC error: the server is closing the connection
    /// (shutdown, crash, terminated backend, idle timeout). Unless the
    /// client is pinned to this server, its session outlives the connection:
    /// the message is kept for the one error [`Session::server_lost`]
    /// reports when the connection closes, instead of reaching the client as
    /// a FATAL (on which drivers drop a connection that is still good)
    /// followed by that error. Returns whether it was such a message.
    fn server_says_farewell(&mut self, msg: &[u8]) -> bool {
        if self.holds_server() {
            return false;
        }
        let Ok(fields) = backend::ErrorFields::decode(&msg[5..]) else {
            return false;
        };
        if !matches!(fields.severity.as_str(), "FATAL" | "PANIC") {
            return false;
        }
        if let Some(s) = self.server.as_mut() {
            s.broken = true;
        }
        self.server_farewell = Some(format!("{} {}", fields.code, fields.message));
        true
    }

    fn on_ready(&mut self, msg: &[u8]) -> Result<Flow> {
        let status =
            TransactionStatus::decode(&msg[5..]).map_err(|e| SessionError::ServerProtocol {
                addr: self.server_addr(),
                reason: e.to_string(),
            })?;
        let head = self
            .expect
            .pop()
            .ok_or_else(|| self.desync("ReadyForQuery"))?;
        if !matches!(head, Expect::Sync | Expect::Query { .. }) {
            return Err(self.desync("ReadyForQuery"));
        }
        if head.hidden() {
            self.emit_due();
            return Ok(Flow::Continue);
        }
        self.cache.batch_open = false;
        self.client_out.extend_from_slice(msg);
        self.client_status = status;
        self.emit_due();
        self.observe_ready();
        let done = self.pending.answered();
        self.txn.effects.extend(done);
        match status {
            TransactionStatus::Failed => self.txn.failed = true,
            TransactionStatus::InTransaction => {}
            TransactionStatus::Idle => {
                self.commit_effects();
                self.end_transaction();
                if self.expect.is_empty() && !self.holds_server() {
                    return Ok(Flow::Release);
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// Applies the finished transaction's SET/RESET/DISCARD to the client's
    /// settings and to the server's record of what it has.
    fn commit_effects(&mut self) {
        let effects = std::mem::take(&mut self.txn.effects);
        let failed = std::mem::replace(&mut self.txn.failed, false);
        let savepoint = std::mem::replace(&mut self.txn.savepoint, false);
        if failed && savepoint && !effects.is_empty() {
            // ROLLBACK TO SAVEPOINT undoes only what came after the
            // savepoint: which of these settings the server kept is unknown,
            // so it must not serve another client. The client's own record
            // drops them all, as for a full rollback.
            if let Some(server) = self.server.as_mut() {
                server.broken = true;
            }
        }
        if failed || effects.is_empty() {
            return;
        }
        self.cache.session_key = None;
        let Some(server) = self.server.as_mut() else {
            return;
        };
        for effect in effects {
            match effect {
                SessionEffect::Set { name, statement } => {
                    Arc::make_mut(&mut server.session_settings)
                        .insert(name.clone(), statement.clone());
                    Arc::make_mut(&mut self.settings).insert(name, statement);
                }
                SessionEffect::Reset { name } => {
                    Arc::make_mut(&mut server.session_settings).remove(&name);
                    let settings = Arc::make_mut(&mut self.settings);
                    match self.startup_settings.get(&name) {
                        Some(s) => settings.insert(name, s.clone()),
                        None => settings.remove(&name),
                    };
                }
                SessionEffect::ResetAll | SessionEffect::DiscardAll => {
                    server.session_settings = Default::default();
                    self.settings = self.startup_settings.clone();
                    if effect == SessionEffect::DiscardAll {
                        server.prepared.clear();
                        self.statements.clear();
                    }
                }
                SessionEffect::Pin(_) => {}
            }
        }
        self.settings_changed();
        if self.holds_server() {
            self.resync_held_server();
        }
    }

    /// Works out what the client's settings decide (`pgpilot.*`, a
    /// serializable default) at login and after a transaction changed them,
    /// so no statement looks them up.
    pub(crate) fn settings_changed(&mut self) {
        self.serializable_default = self
            .settings
            .get("default_transaction_isolation")
            .is_some_and(|set| set.to_ascii_lowercase().contains("serializable"));
        self.ryw_token = self
            .settings
            .get("pgpilot.ryw_token")
            .and_then(|s| crate::route::setting_value(s))
            .map(Into::into);
        self.route_override = self
            .settings
            .get("pgpilot.route")
            .map(|s| crate::route::RouteOverride::from_statement(s))
            .unwrap_or_default();
    }

    /// A pinned client keeps its server, so settings RESET to startup values
    /// must be re-applied there now rather than at the next checkout.
    fn resync_held_server(&mut self) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        if let Some(sql) = crate::params::sync(&self.settings, &mut server.session_settings) {
            pgpilot_wire::frontend::query(&mut self.server_out, &sql);
            self.expect.push(Expect::Query { hidden: true });
        }
    }
}
