//! One client's life after login: the event loop that moves bytes between
//! the client and whichever server it currently holds.
//!
//! The loop waits on readiness of both sockets and never blocks on one
//! direction while the other is full, so large pipelines and COPY cannot
//! deadlock. Frames are handled by [`crate::client`] (client → server) and
//! [`crate::server`] (server → client); this file owns the state they share,
//! server checkout ([`Session::ensure_server`]) and release.

use std::io::ErrorKind::WouldBlock;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use pgpilot_config::User;
use pgpilot_pool::{Pool, PoolStats, PooledConn};
use pgpilot_sql::{PinReason, SessionEffect};
use pgpilot_wire::backend::TransactionStatus;
use tokio::net::TcpStream;

use crate::backends::Backend;
use crate::cancel::CancelHandle;
use crate::effects::PendingEffects;
use crate::error::{Result, SessionError};
use crate::expect::{Expect, ExpectQueue};
use crate::handshake::Login;
use crate::observe::Observer;
use crate::params::Settings;
use crate::route::{Intent, ReadYourWrites, RouteOverride};
use crate::runtime::Runtime;
use crate::statements::ClientStatements;

/// Stop reading a side while this much is queued for the other.
const HIGH_WATER: usize = 1 << 20;
/// Read buffer headroom reserved before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Per-transaction bookkeeping.
#[derive(Debug)]
pub(crate) struct Txn {
    /// Session effects of statements the server has answered in this
    /// transaction (see [`PendingEffects`] for those still on their way).
    pub effects: Vec<SessionEffect>,
    /// An error or ROLLBACK happened: effects are void.
    pub failed: bool,
    /// A SAVEPOINT was created: a later ROLLBACK may have been partial.
    pub savepoint: bool,
    /// When the server was checked out.
    pub started: Instant,
    /// Queries completed.
    pub queries: u64,
}

impl Txn {
    pub(crate) fn new(started: Instant) -> Txn {
        Txn {
            effects: Vec::new(),
            failed: false,
            savepoint: false,
            started,
            queries: 0,
        }
    }
}

/// A logged-in client session.
pub struct Session {
    pub(crate) rt: Arc<Runtime>,
    pub(crate) client: TcpStream,
    /// Bytes from the client not yet handled.
    pub(crate) client_in: BytesMut,
    /// Bytes for the client not yet written.
    pub(crate) client_out: BytesMut,
    /// The client's pool on the primary (login, client counts).
    pub(crate) pool: Pool,
    /// The configured user the client logged in as.
    pub(crate) user: User,
    /// The database the client asked for.
    pub(crate) database: String,
    /// The server connection held for the current transaction, if any.
    pub(crate) server: Option<PooledConn>,
    /// The server `server` belongs to.
    pub(crate) backend: Option<Arc<Backend>>,
    /// The primary pool used last (see [`crate::route::PoolMemo`]).
    pub(crate) pool_memo: crate::route::PoolMemo,
    /// What the message being handled needs, for the next checkout.
    pub(crate) next_intent: Intent,
    /// `SET pgpilot.route = primary|replica|auto`.
    pub(crate) route_override: RouteOverride,
    /// The client's last write, for read-your-writes.
    pub(crate) ryw: ReadYourWrites,
    /// The current transaction sent something that may write.
    pub(crate) wrote: bool,
    /// The read-your-writes scope key of the statement being handled
    /// (a trace id or token; `None` for connection scope).
    pub(crate) ryw_key: Option<Box<str>>,
    /// The scope key under which the current transaction wrote.
    pub(crate) wrote_key: Option<Box<str>>,
    /// `SET pgpilot.ryw_token = '…'`, for `ryw_scope = "token"`.
    pub(crate) ryw_token: Option<Box<str>>,
    /// The client's `default_transaction_isolation` is serializable.
    pub(crate) serializable_default: bool,
    /// Query insight bookkeeping.
    pub(crate) observer: Observer,
    /// The last text analyzed and its analysis (see `analyze_text`).
    pub(crate) last_analysis: Option<(std::sync::Arc<str>, pgpilot_sql::Analysis)>,
    /// Bytes for the server not yet written.
    pub(crate) server_out: BytesMut,
    /// Responses awaited from the server, in order.
    pub(crate) expect: ExpectQueue,
    /// The client's named prepared statements.
    pub(crate) statements: ClientStatements,
    /// The client's current session settings (shared until changed).
    pub(crate) settings: Arc<Settings>,
    /// Session effects sent to the server and not yet answered.
    pub(crate) pending: PendingEffects,
    /// The settings from its startup packet (what RESET returns to).
    pub(crate) startup_settings: Arc<Settings>,
    /// Set once the client did something that ties it to its server.
    pub(crate) pinned: Option<PinReason>,
    /// Session pool mode: the server is held until disconnect.
    pub(crate) session_mode: bool,
    /// Drop client messages until the next Sync (after an extended-protocol error).
    pub(crate) skip_until_sync: bool,
    /// The held server's FATAL or PANIC message (`SQLSTATE message`), kept
    /// for the error reported when it closes the connection.
    pub(crate) server_farewell: Option<String>,
    /// The error owed to a client whose server failed while it idled
    /// inside a transaction: its next message gets it instead of running.
    pub(crate) lost_transaction: Option<bytes::Bytes>,
    /// The server is in COPY FROM STDIN and ignores the client's Syncs
    /// until its CopyDone or CopyFail (protocol §55.2.6).
    pub(crate) copy_in: bool,
    /// Transaction status last reported to the client.
    pub(crate) client_status: TransactionStatus,
    pub(crate) txn: Txn,
    /// Largest client message accepted.
    pub(crate) max_message: usize,
    /// Prepared statements kept per server connection.
    pub(crate) max_prepared: usize,
    pub(crate) pid: i32,
    pub(crate) cancel: CancelHandle,
    /// Result-cache state: held batch, fills in progress, writes to invalidate.
    pub(crate) cache: crate::cache::SessionCache,
    /// Bytes moved since the last stats flush.
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// Flips every turn of the event loop (see `next_event`).
    turn: bool,
    /// The clock reading of the event being handled.
    pub(crate) clock: crate::clock::EventClock,
}

/// What woke the loop.
enum Event {
    ClientReadable,
    ServerReadable,
    ClientWritable,
    ServerWritable,
}

impl Session {
    pub fn new(rt: Arc<Runtime>, client: TcpStream, login: Login) -> Session {
        let settings = rt.settings.load();
        let startup = rt.intern_settings(&login.request.settings);
        let mut session = Session {
            client,
            client_in: login.leftover,
            client_out: BytesMut::new(),
            pool: login.pool,
            user: login.user,
            database: login.request.database.clone(),
            server: login.server,
            backend: login.backend,
            pool_memo: Default::default(),
            next_intent: Intent::Write,
            route_override: RouteOverride::default(),
            ryw: ReadYourWrites::default(),
            wrote: false,
            ryw_key: None,
            wrote_key: None,
            ryw_token: None,
            serializable_default: false,
            observer: Observer::default(),
            last_analysis: None,
            server_out: BytesMut::new(),
            expect: ExpectQueue::default(),
            statements: ClientStatements::default(),
            settings: startup.clone(),
            startup_settings: startup,
            pending: PendingEffects::default(),
            pinned: None,
            session_mode: settings.pool.mode == pgpilot_config::PoolMode::Session,
            skip_until_sync: false,
            server_farewell: None,
            lost_transaction: None,
            copy_in: false,
            client_status: TransactionStatus::Idle,
            txn: Txn::new(Instant::now()),
            max_message: settings.max_message_size,
            max_prepared: settings.pool.max_prepared_statements,
            pid: login.pid,
            cancel: CancelHandle::new(login.cancel),
            cache: Default::default(),
            bytes_in: 0,
            bytes_out: 0,
            turn: false,
            clock: Default::default(),
            rt: rt.clone(),
        };
        session.pool.stats().clients.fetch_add(1, Relaxed);
        session.settings_changed();
        session
    }

    /// Serves the client until it leaves or a fatal error; always cleans up.
    pub async fn run(mut self) {
        // Session mode: the server from the login, which still needs the
        // client's startup settings.
        if let Some(server) = self.server.take() {
            self.adopt_server(server, Instant::now());
        }
        let result = self.serve().await;
        if let Err(e) = &result {
            self.report(e).await;
        }
        self.finish().await;
    }

    async fn serve(&mut self) -> Result<()> {
        self.handle_client_input().await?;
        loop {
            let flushed = self.try_flush();
            self.survive_server_failure(flushed)?;
            let event = self.next_event().await?;
            self.clock.reset();
            match event {
                None => return Ok(()),
                Some(Event::ClientReadable) => {
                    if !self.read_client()? {
                        return Ok(());
                    }
                    if !self.handle_client_input().await? {
                        return Ok(());
                    }
                }
                Some(Event::ServerReadable) => {
                    let r = self.read_server();
                    self.survive_server_failure(r)?;
                }
                Some(Event::ClientWritable) => self.write_client()?,
                Some(Event::ServerWritable) => {
                    let r = self.write_server();
                    self.survive_server_failure(r)?;
                }
            }
        }
    }

    /// A server I/O failure ends the client's transaction, not its session
    /// (unless it was pinned to that server).
    fn survive_server_failure(&mut self, r: Result<()>) -> Result<()> {
        match r {
            Err(e @ SessionError::ServerIo { .. }) if self.server_lost(&e) => {
                tracing::warn!(pid = self.pid, error = %e, "server failed mid-request");
                Ok(())
            }
            other => other,
        }
    }

    /// Waits for the next socket that can make progress.
    ///
    /// Polls each socket's readiness directly (one waker slot per socket
    /// and direction) rather than racing `readable()`/`writable()` futures
    /// in a `select!`: those register and unregister a waiter in tokio's
    /// per-socket list on every turn of the loop. The two reads are polled
    /// in alternating order so a busy side cannot starve the other.
    async fn next_event(&mut self) -> Result<Option<Event>> {
        self.turn = !self.turn;
        let server = self.server.as_ref().map(|s| &s.stream);
        let wants = Wants {
            read_client: self.server_out.len() < HIGH_WATER && self.client_out.len() < HIGH_WATER,
            read_server: server.is_some() && self.client_out.len() < HIGH_WATER,
            write_client: !self.client_out.is_empty(),
            write_server: server.is_some() && !self.server_out.is_empty(),
            server_first: self.turn,
        };
        if !wants.any() {
            return Ok(None);
        }
        let client = &self.client;
        let (event, result) = std::future::poll_fn(|cx| wants.poll(cx, client, server)).await;
        match event {
            Event::ClientReadable | Event::ClientWritable => {
                result.map_err(SessionError::ClientIo)?
            }
            Event::ServerReadable | Event::ServerWritable => {
                result.map_err(|e| self.server_io(e))?
            }
        }
        Ok(Some(event))
    }

    pub(crate) fn server_io(&self, source: std::io::Error) -> SessionError {
        let addr = self
            .server
            .as_ref()
            .map_or_else(String::new, |s| s.addr.to_string());
        SessionError::ServerIo { addr, source }
    }

    /// Reads what the client sent; false at end of stream.
    fn read_client(&mut self) -> Result<bool> {
        match crate::io::read_drained(&self.client, &mut self.client_in, READ_CHUNK) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.bytes_in += n as u64;
                Ok(true)
            }
            Err(e) if e.kind() == WouldBlock => Ok(true),
            Err(e) => Err(SessionError::ClientIo(e)),
        }
    }

    /// Handles every complete client message buffered; false on Terminate.
    async fn handle_client_input(&mut self) -> Result<bool> {
        while let Some(frame) = pgpilot_wire::Frame::split(&mut self.client_in, self.max_message)
            .map_err(SessionError::ClientProtocol)?
        {
            if !self.on_client_frame(frame).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn read_server(&mut self) -> Result<()> {
        let Some(server) = self.server.as_deref_mut() else {
            return Ok(());
        };
        match crate::io::read_drained(&server.stream, &mut server.read_buf, READ_CHUNK) {
            Ok(0) => Err(self.server_io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection unexpectedly",
            ))),
            Ok(_) => self.handle_server_input(),
            Err(e) if e.kind() == WouldBlock => Ok(()),
            Err(e) => Err(self.server_io(e)),
        }
    }

    fn write_client(&mut self) -> Result<()> {
        match self.client.try_write(&self.client_out) {
            Ok(n) => {
                self.bytes_out += n as u64;
                self.client_out.advance(n);
                Ok(())
            }
            Err(e) if e.kind() == WouldBlock => Ok(()),
            Err(e) => Err(SessionError::ClientIo(e)),
        }
    }

    fn write_server(&mut self) -> Result<()> {
        let Some(server) = self.server.as_ref() else {
            return Ok(());
        };
        match server.stream.try_write(&self.server_out) {
            Ok(n) => {
                self.server_out.advance(n);
                Ok(())
            }
            Err(e) if e.kind() == WouldBlock => Ok(()),
            Err(e) => Err(self.server_io(e)),
        }
    }

    /// Writes what can be written without waiting.
    fn try_flush(&mut self) -> Result<()> {
        if !self.server_out.is_empty() {
            self.write_server()?;
        }
        if !self.client_out.is_empty() {
            self.write_client()?;
        }
        Ok(())
    }

    /// Awaits `expect` from the server. A client's Query, FunctionCall or
    /// Sync also closes the batch of effects its ReadyForQuery will settle.
    pub(crate) fn await_response(&mut self, expect: Expect) {
        if matches!(expect, Expect::Query { hidden: false } | Expect::Sync) {
            self.pending.close_batch();
        }
        self.expect.push(expect);
    }

    /// Whether the server stays with this client after the transaction.
    pub(crate) fn holds_server(&self) -> bool {
        self.session_mode || self.pinned.is_some()
    }

    /// Tells the client about a fatal error, best effort.
    async fn report(&mut self, e: &SessionError) {
        use tokio::io::AsyncWriteExt;
        match e {
            SessionError::ClientIo(_) => return,
            SessionError::ClientProtocol(_) | SessionError::Unexpected(_) => {
                self.rt.counters.protocol_errors.fetch_add(1, Relaxed);
            }
            _ => {}
        }
        tracing::debug!(pid = self.pid, error = %e, "session ended with error");
        let mut out = std::mem::take(&mut self.client_out);
        e.respond(&mut out);
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            self.client.write_all(&out),
        )
        .await;
    }

    /// Returns or closes the server and unregisters the client.
    async fn finish(&mut self) {
        self.observe_end();
        self.abandon_captures();
        self.rt.cancels.unregister(self.pid);
        self.pool.stats().clients.fetch_sub(1, Relaxed);
        PoolStats::add(
            &self.pool.stats().bytes_received,
            std::mem::take(&mut self.bytes_in),
        );
        PoolStats::add(
            &self.pool.stats().bytes_sent,
            std::mem::take(&mut self.bytes_out),
        );
        let Some(mut conn) = self.server.take() else {
            return;
        };
        let clean = self.expect.is_empty()
            && self.client_status == TransactionStatus::Idle
            && self.server_out.is_empty();
        if !clean {
            conn.broken = true;
        } else if self.holds_server() {
            let reset = self.rt.settings.load().pool.server_reset_query.clone();
            crate::reset::reset_server(&mut conn, &reset).await;
        }
    }
}

/// Which socket directions the loop waits for.
struct Wants {
    read_client: bool,
    read_server: bool,
    write_client: bool,
    write_server: bool,
    /// Poll the server's readability before the client's.
    server_first: bool,
}

impl Wants {
    fn any(&self) -> bool {
        self.read_client || self.read_server || self.write_client || self.write_server
    }

    /// The first wanted direction that is ready, and its readiness result.
    fn poll(
        &self,
        cx: &mut Context<'_>,
        client: &TcpStream,
        server: Option<&TcpStream>,
    ) -> Poll<(Event, std::io::Result<()>)> {
        let read_client = |cx: &mut Context<'_>| {
            if !self.read_client {
                return Poll::Pending;
            }
            client
                .poll_read_ready(cx)
                .map(|r| (Event::ClientReadable, r))
        };
        let read_server = |cx: &mut Context<'_>| match server {
            Some(s) if self.read_server => {
                s.poll_read_ready(cx).map(|r| (Event::ServerReadable, r))
            }
            _ => Poll::Pending,
        };
        let ready = if self.server_first {
            ready_or(read_server(cx), || read_client(cx))
        } else {
            ready_or(read_client(cx), || read_server(cx))
        };
        if ready.is_ready() {
            return ready;
        }
        if self.write_client {
            if let Poll::Ready(r) = client.poll_write_ready(cx) {
                return Poll::Ready((Event::ClientWritable, r));
            }
        }
        match server {
            Some(s) if self.write_server => {
                s.poll_write_ready(cx).map(|r| (Event::ServerWritable, r))
            }
            _ => Poll::Pending,
        }
    }
}

/// `first` if ready, else what `second` gives.
fn ready_or<T>(first: Poll<T>, second: impl FnOnce() -> Poll<T>) -> Poll<T> {
    match first {
        Poll::Ready(v) => Poll::Ready(v),
        Poll::Pending => second(),
    }
}
