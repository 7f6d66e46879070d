//! A pool of server connections for one (database, user): checkout with a
//! bounded wait, return on guard drop, idle/lifetime expiry and `min_size`
//! upkeep. All mutable state sits behind one mutex, held only for
//! bookkeeping, never across an await.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::login::{self, LoginParams};
use crate::server::ServerConn;
use crate::stats::{PoolSnapshot, PoolStats};

/// ParameterStatus name/value pairs a server reported at login.
pub type ServerParams = Arc<Vec<(String, String)>>;

/// Which pool: the client's database and user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub database: String,
    pub user: String,
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.database, self.user)
    }
}

/// Sizes and timeouts; replaced at run time on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLimits {
    /// Connections kept open even when idle.
    pub min_size: usize,
    /// Most connections open at once.
    pub max_size: usize,
    /// Bound on TCP connect + login.
    pub connect_timeout: Duration,
    /// Bound on a client's wait for a connection.
    pub checkout_timeout: Duration,
    /// Idle connections above `min_size` close after this.
    pub idle_timeout: Duration,
    /// Connections close (when idle) after this age.
    pub max_lifetime: Duration,
}

/// A server connection as the pool keeps it: boxed once when opened, so a
/// checkout, a return or a hand-over to a waiter moves a pointer rather
/// than the whole connection, and its state stays at one address.
type Conn = Box<ServerConn>;

/// What a waiting client is handed.
enum Grant {
    /// An idle connection.
    Conn(Conn),
    /// A slot counted in `total`: the waiter opens the connection itself.
    Permit,
}

/// A client in line. Its sender carries `None` when its checkout timed out.
struct Waiter {
    tx: oneshot::Sender<Option<Grant>>,
    since: Instant,
}

/// What `try_grant` gives a client that must wait: its place in line, and
/// whether it must start the pool's timeout sweeper.
struct InLine {
    rx: oneshot::Receiver<Option<Grant>>,
    start_sweeper: bool,
}

#[derive(Default)]
struct State {
    /// Idle connections, most recently used last.
    idle: Vec<Conn>,
    /// Idle + lent + being opened.
    total: usize,
    /// Being opened.
    connecting: usize,
    /// Clients waiting, oldest first.
    waiters: VecDeque<Waiter>,
    /// No more checkouts.
    closed: bool,
    /// A task is timing out waiters (see [`Pool::sweep_waiters`]).
    sweeping: bool,
}

struct Inner {
    key: PoolKey,
    login: RwLock<LoginParams>,
    limits: RwLock<PoolLimits>,
    state: Mutex<State>,
    stats: PoolStats,
    /// ParameterStatus values of the first successful login, shown to
    /// clients at their own login without a checkout.
    server_params: RwLock<Option<ServerParams>>,
}

/// A cheaply clonable handle to one pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

/// A lent connection; goes back to its pool when dropped (closed instead
/// when marked `broken`).
pub struct PooledConn {
    conn: Option<Conn>,
    pool: Pool,
}

impl Pool {
    pub fn new(key: PoolKey, login: LoginParams, limits: PoolLimits) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                key,
                login: RwLock::new(login),
                limits: RwLock::new(limits),
                state: Mutex::new(State::default()),
                stats: PoolStats::default(),
                server_params: RwLock::new(None),
            }),
        }
    }

    pub fn key(&self) -> &PoolKey {
        &self.inner.key
    }

    /// The server's ParameterStatus values, once any connection logged in.
    pub fn server_params(&self) -> Option<ServerParams> {
        self.inner.server_params.read().clone()
    }

    /// Seeds the parameters shown at login (from a sibling pool on another
    /// server) when this pool has not logged in yet.
    pub fn set_server_params(&self, params: ServerParams) {
        let mut p = self.inner.server_params.write();
        if p.is_none() {
            *p = Some(params);
        }
    }

    pub fn stats(&self) -> &PoolStats {
        &self.inner.stats
    }

    pub fn limits(&self) -> PoolLimits {
        self.inner.limits.read().clone()
    }

    /// Applies new limits; excess connections close as they come back.
    pub fn set_limits(&self, limits: PoolLimits) {
        *self.inner.limits.write() = limits;
        self.grant_free_slots();
    }

    /// Points future logins at another server (failover, reload).
    pub fn set_login(&self, login: LoginParams) {
        *self.inner.login.write() = login;
    }

    /// Lends a connection, waiting up to the checkout timeout.
    pub async fn checkout(&self) -> Result<PooledConn> {
        Ok(self.checkout_at(Instant::now()).await?.0)
    }

    /// [`Pool::checkout`] with the caller's clock reading `now`, returning
    /// also when the connection was handed over: `now` itself for an idle
    /// connection handed over at once (no further clock reading).
    pub async fn checkout_at(&self, now: Instant) -> Result<(PooledConn, Instant)> {
        let mut waited = false;
        loop {
            let grant = match self.try_grant(now) {
                Ok(grant) => grant,
                Err(line) => {
                    waited = true;
                    if line.start_sweeper {
                        tokio::spawn(self.clone().sweep_waiters());
                    }
                    self.wait(line.rx, now).await?
                }
            };
            let opened = matches!(grant, Grant::Permit);
            if let Some(conn) = self.realize(grant).await? {
                let mut handed_over = now;
                if waited || opened {
                    handed_over = Instant::now();
                    let wait_us = handed_over.saturating_duration_since(now).as_micros() as u64;
                    PoolStats::add(&self.inner.stats.wait_time_us, wait_us);
                }
                let conn = PooledConn {
                    conn: Some(conn),
                    pool: self.clone(),
                };
                return Ok((conn, handed_over));
            }
        }
    }

    /// An idle, live connection lent at once, or `None` (the pool is
    /// closed, has none idle, or the one it had was dead): then
    /// [`Pool::checkout_at`] opens one or waits. Needs no future, so the
    /// common case of a checkout costs no allocation.
    pub fn try_idle(&self, now: Instant) -> Option<PooledConn> {
        let (max_lifetime, _) = self.lifetime_and_size();
        let conn = {
            let mut st = self.inner.state.lock();
            if st.closed {
                return None;
            }
            pop_live(&mut st, now, max_lifetime)?
        };
        Some(PooledConn {
            conn: Some(self.alive_or_discard(conn)?),
            pool: self.clone(),
        })
    }

    /// `conn` if its backend is still there, else closed (slot freed).
    /// Probed on every lending: a backend killed a moment ago must not
    /// reach a client. The probe is free while nothing arrived (tokio
    /// answers WouldBlock from its readiness flags).
    fn alive_or_discard(&self, conn: Conn) -> Option<Conn> {
        if conn.is_alive() {
            return Some(conn);
        }
        self.discard(conn);
        None
    }

    /// Under the lock: an idle connection, a permit to open one, or a place in line.
    fn try_grant(&self, now: Instant) -> std::result::Result<Grant, InLine> {
        let (max_lifetime, max_size) = self.lifetime_and_size();
        let mut st = self.inner.state.lock();
        if st.closed {
            let (_tx, rx) = oneshot::channel();
            return Err(InLine {
                rx,
                start_sweeper: false,
            });
        }
        if let Some(conn) = pop_live(&mut st, now, max_lifetime) {
            return Ok(Grant::Conn(conn));
        }
        if st.total < max_size {
            st.total += 1;
            st.connecting += 1;
            return Ok(Grant::Permit);
        }
        let (tx, rx) = oneshot::channel();
        // Timed from joining the line (not from `now`, which a retrying
        // caller may have read long before), so the line stays in
        // deadline order.
        st.waiters.push_back(Waiter {
            tx,
            since: Instant::now(),
        });
        let start_sweeper = !std::mem::replace(&mut st.sweeping, true);
        Err(InLine { rx, start_sweeper })
    }

    /// The two limits every checkout and return checks, read without
    /// copying the whole [`PoolLimits`].
    fn lifetime_and_size(&self) -> (Duration, usize) {
        let limits = self.inner.limits.read();
        (limits.max_lifetime, limits.max_size)
    }

    /// Times out waiters: one task and one timer per pool while anyone
    /// waits, rather than a timer per waiting checkout. Waiters are in
    /// the order they joined the line, each timed from then, and share one
    /// timeout, so the front one is always the next to expire.
    async fn sweep_waiters(self) {
        loop {
            let timeout = self.inner.limits.read().checkout_timeout;
            let next = {
                let mut st = self.inner.state.lock();
                let now = Instant::now();
                while st
                    .waiters
                    .front()
                    .is_some_and(|w| now.saturating_duration_since(w.since) >= timeout)
                {
                    if let Some(w) = st.waiters.pop_front() {
                        let _ = w.tx.send(None);
                    }
                }
                match st.waiters.front() {
                    // A timeout too large to add never expires: look again later.
                    Some(w) => w
                        .since
                        .checked_add(timeout)
                        .unwrap_or(now + Duration::from_secs(3600)),
                    None => {
                        st.sweeping = false;
                        return;
                    }
                }
            };
            tokio::time::sleep_until(next.into()).await;
        }
    }

    /// Waits for a grant; the sweeper sends `None` when the wait timed out.
    async fn wait(&self, rx: oneshot::Receiver<Option<Grant>>, start: Instant) -> Result<Grant> {
        match rx.await {
            Ok(Some(grant)) => Ok(grant),
            Err(_) => Err(Error::Closed {
                pool: self.inner.key.to_string(),
            }),
            Ok(None) => {
                PoolStats::add(&self.inner.stats.checkout_timeouts, 1);
                Err(Error::CheckoutTimeout {
                    pool: self.inner.key.to_string(),
                    waited: start.elapsed(),
                    max_size: self.inner.limits.read().max_size,
                })
            }
        }
    }

    /// Turns a grant into a usable connection; `None` when an idle one
    /// turned out dead (the caller tries again).
    async fn realize(&self, grant: Grant) -> Result<Option<Conn>> {
        match grant {
            Grant::Conn(conn) => Ok(self.alive_or_discard(conn)),
            // Boxed: the login future is large and rarely needed; inline,
            // it would make every checkout future (and every future that
            // awaits one, up to the session's per-message handler) as big.
            Grant::Permit => Box::pin(self.open()).await.map(Some),
        }
    }

    /// Opens a connection for a slot already counted in `total`.
    async fn open(&self) -> Result<Conn> {
        let login = self.inner.login.read().clone();
        let timeout = self.inner.limits.read().connect_timeout;
        let result = login::connect(&login, timeout).await.map(Box::new);
        self.inner.state.lock().connecting -= 1;
        if let Ok(conn) = &result {
            let mut params = self.inner.server_params.write();
            if params.is_none() {
                *params = Some(Arc::new(conn.startup_params.clone()));
            }
        }
        if result.is_err() {
            PoolStats::add(&self.inner.stats.connect_errors, 1);
            self.free_slot();
        }
        result
    }

    /// Closes `conn` and frees its slot.
    fn discard(&self, conn: Conn) {
        drop(conn);
        self.free_slot();
    }

    /// A counted slot is no longer used: pass it to a waiter or shrink `total`.
    fn free_slot(&self) {
        let mut st = self.inner.state.lock();
        let max = self.inner.limits.read().max_size;
        if st.total <= max && hand_to_waiter(&mut st, Grant::Permit).is_none() {
            st.connecting += 1;
            return;
        }
        st.total -= 1;
    }

    /// Gives waiters permits for slots freed by a larger `max_size`.
    fn grant_free_slots(&self) {
        let max = self.inner.limits.read().max_size;
        let mut st = self.inner.state.lock();
        while st.total < max && !st.waiters.is_empty() {
            if hand_to_waiter(&mut st, Grant::Permit).is_none() {
                st.total += 1;
                st.connecting += 1;
            }
        }
    }

    fn release(&self, conn: Conn) {
        self.release_at(conn, Instant::now());
    }

    /// Takes `conn` back at `now`: to the oldest waiter, else to the idle list.
    fn release_at(&self, mut conn: Conn, now: Instant) {
        let (max_lifetime, max_size) = self.lifetime_and_size();
        let expired = now.saturating_duration_since(conn.created) >= max_lifetime;
        let mut st = self.inner.state.lock();
        if conn.broken || expired || st.closed || st.total > max_size {
            drop(st);
            self.discard(conn);
            return;
        }
        conn.last_used = now;
        if let Some(Grant::Conn(c)) = hand_to_waiter(&mut st, Grant::Conn(conn)) {
            st.idle.push(c);
        }
    }

    /// Closes idle connections past `idle_timeout` (above `min_size`) or
    /// `max_lifetime`, and opens connections up to `min_size`. Call about
    /// once a second.
    pub async fn maintain(&self) {
        let limits = self.limits();
        let to_open = {
            let mut st = self.inner.state.lock();
            expire_idle(&mut st, &limits);
            let want = limits
                .min_size
                .min(limits.max_size)
                .saturating_sub(st.total);
            st.total += want;
            st.connecting += want;
            want
        };
        for _ in 0..to_open {
            match self.open().await {
                Ok(conn) => self.release(conn),
                Err(e) => {
                    tracing::warn!(pool = %self.inner.key, error = %e, "min_size connection failed")
                }
            }
        }
    }

    /// Stops lending; closes idle connections; lent ones close on return.
    pub fn close(&self) {
        let mut st = self.inner.state.lock();
        st.closed = true;
        let n = st.idle.len();
        st.idle.clear();
        st.total -= n;
        st.waiters.clear();
    }

    /// Closes every idle connection (e.g. after the server restarted).
    pub fn drain_idle(&self) {
        let mut st = self.inner.state.lock();
        let n = st.idle.len();
        st.idle.clear();
        st.total -= n;
    }

    /// Load as balancers weigh it: (lent + 2 × waiting) / max_size.
    pub fn load(&self) -> f64 {
        let max = self.inner.limits.read().max_size.max(1) as f64;
        let st = self.inner.state.lock();
        let lent = st.total - st.idle.len();
        (lent as f64 + 2.0 * st.waiters.len() as f64) / max
    }

    /// Current figures for metrics.
    pub fn snapshot(&self) -> PoolSnapshot {
        let limits = self.limits();
        let mut snap = PoolSnapshot {
            server: self.inner.login.read().addr.clone(),
            database: self.inner.key.database.clone(),
            user: self.inner.key.user.clone(),
            min_size: limits.min_size as u64,
            max_size: limits.max_size as u64,
            ..PoolSnapshot::default()
        };
        {
            let st = self.inner.state.lock();
            snap.cl_waiting = st.waiters.len() as u64;
            snap.sv_idle = st.idle.len() as u64;
            snap.sv_login = st.connecting as u64;
            snap.sv_active = (st.total - st.idle.len() - st.connecting) as u64;
            snap.maxwait_us = st
                .waiters
                .front()
                .map_or(0, |w| w.since.elapsed().as_micros() as u64);
        }
        let clients = self.inner.stats.clients.load(Relaxed).max(0) as u64;
        snap.cl_active = clients.saturating_sub(snap.cl_waiting);
        self.inner.stats.fill(&mut snap);
        snap
    }
}

/// Sends `grant` to the oldest live waiter; gives it back when none takes it.
fn hand_to_waiter(st: &mut State, grant: Grant) -> Option<Grant> {
    let mut grant = Some(grant);
    while let Some(w) = st.waiters.pop_front() {
        match w.tx.send(grant) {
            Ok(()) => return None,
            Err(g) => grant = g,
        }
    }
    grant
}

/// The most recently returned idle connection younger than `max_lifetime`;
/// older ones popped on the way are closed.
fn pop_live(st: &mut State, now: Instant, max_lifetime: Duration) -> Option<Conn> {
    while let Some(conn) = st.idle.pop() {
        if now.saturating_duration_since(conn.created) < max_lifetime {
            return Some(conn);
        }
        st.total -= 1;
    }
    None
}

fn expire_idle(st: &mut State, limits: &PoolLimits) {
    let min = limits.min_size;
    let mut keep = Vec::with_capacity(st.idle.len());
    // Oldest-used first, so the freshest survive.
    for conn in st.idle.drain(..) {
        let too_old = conn.created.elapsed() >= limits.max_lifetime;
        let idle_long = conn.last_used.elapsed() >= limits.idle_timeout;
        let above_min = st.total > min;
        if too_old || (idle_long && above_min) {
            st.total -= 1;
        } else {
            keep.push(conn);
        }
    }
    st.idle = keep;
}

impl PooledConn {
    /// The pool this connection belongs to.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Gives the connection back with the caller's clock reading `now`
    /// (dropping it does the same, reading the clock itself).
    pub fn release_at(mut self, now: Instant) {
        if let Some(conn) = self.conn.take() {
            self.pool.release_at(conn, now);
        }
    }
}

impl Deref for PooledConn {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        self.conn
            .as_ref()
            .expect("PooledConn holds a connection until dropped")
    }
}

impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn
            .as_mut()
            .expect("PooledConn holds a connection until dropped")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.release(conn);
        }
    }
}
