//! The servers behind the proxy: the primary and the replicas, each with
//! its role, health (circuit breaker), replication position and lag, drain
//! flag, and its pools (one per client database and user).
//!
//! Built from the settings at start-up; servers can be added, drained and
//! removed at run time (admin API, reload) without dropping clients. The
//! [`crate::monitor`] keeps health and positions current; [`crate::route`]
//! reads them to choose a server.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use pgpilot_config::{Settings, User};
use pgpilot_pool::login::LoginParams;
use pgpilot_pool::{Breaker, BreakerState, Pool, PoolKey, PoolSnapshot};

use crate::pools::limits;

/// Positions kept per server for read-your-writes: about a second of
/// samples at the default `lsn_poll_interval` (10 ms).
const POSITION_HISTORY: usize = 128;

/// What a server is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }

    fn from_u8(v: u8) -> Role {
        if v == 0 {
            Role::Primary
        } else {
            Role::Replica
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Role::Primary => 0,
            Role::Replica => 1,
        }
    }
}

/// Counters per server.
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Transactions routed here because they read only.
    pub reads_routed: AtomicU64,
    /// Transactions routed here because they (may) write.
    pub writes_routed: AtomicU64,
    /// Reads sent to the primary because read-your-writes could not be met elsewhere.
    pub ryw_fallbacks: AtomicU64,
    /// Reads sent here because no replica could serve them.
    pub read_fallbacks: AtomicU64,
    /// Health probes that failed.
    pub probe_failures: AtomicU64,
}

/// One server.
#[derive(Debug)]
pub struct Backend {
    /// Stable id for the admin API.
    pub id: u32,
    /// `host:port`.
    pub addr: String,
    role: AtomicU8,
    /// No new checkouts; existing transactions finish.
    draining: AtomicBool,
    /// Removed from the set; kept alive only by sessions still holding it.
    removed: AtomicBool,
    /// Last probe succeeded.
    healthy: AtomicBool,
    breaker: Mutex<Breaker>,
    /// Replay LSN (replica) or current WAL LSN (primary) of the last
    /// [`POSITION_HISTORY`] samples, each with when the query that produced
    /// it was sent, oldest first. One lock: read-your-writes must never pair
    /// a send time with another sample's position.
    positions: Mutex<VecDeque<(u64, Instant)>>,
    /// Bytes of WAL behind the primary, at the last sample.
    lag_bytes: AtomicU64,
    /// Replay delay in milliseconds, at the last sample (0 when caught up).
    lag_ms: AtomicU64,
    /// Database → user → pool (nested so look-ups need no allocation).
    pools: Mutex<HashMap<String, HashMap<String, Pool>>>,
    /// Bumped whenever pools may have been closed or re-pointed (reload,
    /// removal): a session's remembered pool handle is valid while it holds.
    pools_epoch: AtomicU64,
    pub counters: BackendCounters,
}

/// A health/position sample taken by the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub in_recovery: bool,
    pub lsn: u64,
    pub replay_delay_ms: u64,
    /// When the sampling query was sent.
    pub sent_at: Instant,
}

impl Backend {
    fn new(id: u32, addr: String, role: Role, settings: &Settings) -> Backend {
        let r = &settings.routing;
        Backend {
            id,
            addr,
            role: AtomicU8::new(role.to_u8()),
            draining: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            breaker: Mutex::new(Breaker::new(r.breaker_failures, r.ban_time)),
            positions: Mutex::new(VecDeque::with_capacity(POSITION_HISTORY)),
            lag_bytes: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            pools: Mutex::new(HashMap::new()),
            pools_epoch: AtomicU64::new(0),
            counters: BackendCounters::default(),
        }
    }

    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Relaxed))
    }

    pub fn set_role(&self, role: Role) {
        self.role.store(role.to_u8(), Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Whether new transactions may start here at `now`.
    pub fn accepts_traffic(&self, now: Instant) -> bool {
        !self.is_draining() && !self.is_removed() && self.breaker.lock().allows_traffic(now)
    }

    pub fn breaker_state(&self, now: Instant) -> BreakerState {
        self.breaker.lock().state(now)
    }

    /// The last sampled position and when its query was sent.
    pub fn position(&self) -> (u64, Option<Instant>) {
        self.positions
            .lock()
            .back()
            .map_or((0, None), |&(lsn, sent_at)| (lsn, Some(sent_at)))
    }

    /// The position of the earliest kept sample whose query was sent after
    /// `t`: it includes everything committed before `t` (on the primary: a
    /// client's write acknowledged before `t`), and is the smallest such
    /// position known. `None` until a sample sent after `t` arrives.
    pub fn position_after(&self, t: Instant) -> Option<u64> {
        let positions = self.positions.lock();
        let first_after = positions.partition_point(|&(_, sent_at)| sent_at <= t);
        positions.get(first_after).map(|&(lsn, _)| lsn)
    }

    pub fn lag(&self) -> (u64, u64) {
        (self.lag_bytes.load(Relaxed), self.lag_ms.load(Relaxed))
    }

    /// Records a successful probe.
    pub fn record_sample(&self, s: &Sample, primary_lsn: Option<u64>) {
        self.healthy.store(true, Relaxed);
        self.breaker.lock().success();
        let mut positions = self.positions.lock();
        if positions.len() == POSITION_HISTORY {
            positions.pop_front();
        }
        positions.push_back((s.lsn, s.sent_at));
        drop(positions);
        let behind = primary_lsn.map_or(0, |p| p.saturating_sub(s.lsn));
        self.lag_bytes
            .store(if s.in_recovery { behind } else { 0 }, Relaxed);
        let delay = if s.in_recovery && behind > 0 {
            s.replay_delay_ms
        } else {
            0
        };
        self.lag_ms.store(delay, Relaxed);
    }

    /// Records a failed probe or request; drops idle connections when the
    /// breaker opens (they are most likely dead too).
    pub fn record_failure(&self, now: Instant) {
        self.healthy.store(false, Relaxed);
        self.counters.probe_failures.fetch_add(1, Relaxed);
        let opened = self.breaker.lock().failure(now);
        if opened {
            tracing::warn!(server = %self.addr, role = self.role().as_str(), "circuit breaker opened");
            for pool in self.pools() {
                pool.drain_idle();
            }
        }
    }

    /// The pool for `user` on `database` here, created on first use.
    pub fn pool(&self, settings: &Settings, user: &User, database: &str) -> Pool {
        let mut pools = self.pools.lock();
        if let Some(pool) = pools
            .get(database)
            .and_then(|by_user| by_user.get(&user.name))
        {
            return pool.clone();
        }
        let key = PoolKey {
            database: database.to_owned(),
            user: user.name.clone(),
        };
        let pool = Pool::new(key, self.login(user, database), limits(&settings.pool));
        let by_user = pools.entry(database.to_owned()).or_default();
        by_user.insert(user.name.clone(), pool.clone());
        pool
    }

    /// Changes whenever a pool handle obtained from [`Backend::pool`] may
    /// have stopped being the one it would return now.
    pub fn pools_epoch(&self) -> u64 {
        self.pools_epoch.load(Relaxed)
    }

    fn login(&self, user: &User, database: &str) -> LoginParams {
        LoginParams {
            addr: self.addr.clone(),
            user: user.server_user.clone(),
            password: user.server_password.clone(),
            database: database.to_owned(),
        }
    }

    /// Every pool of this server.
    pub fn pools(&self) -> Vec<Pool> {
        self.pools
            .lock()
            .values()
            .flat_map(|by_user| by_user.values().cloned())
            .collect()
    }

    fn apply(&self, settings: &Settings) {
        // Bumped before and after: a session that reads an epoch bumped
        // mid-change looks its pool up again; one that read the old epoch
        // just before may use its remembered handle, as it could have used
        // one it had just looked up.
        self.pools_epoch.fetch_add(1, Relaxed);
        let r = &settings.routing;
        self.breaker
            .lock()
            .configure(r.breaker_failures, r.ban_time);
        for by_user in self.pools.lock().values_mut() {
            by_user.retain(|name, pool| match settings.user(name) {
                Some(user) => {
                    pool.set_limits(limits(&settings.pool));
                    pool.set_login(self.login(user, &pool.key().database));
                    true
                }
                None => {
                    pool.close();
                    false
                }
            });
        }
        self.pools_epoch.fetch_add(1, Relaxed);
    }

    fn retire(&self) {
        self.removed.store(true, Relaxed);
        self.pools_epoch.fetch_add(1, Relaxed);
        for pool in self.pools() {
            pool.close();
        }
        self.pools.lock().clear();
        self.pools_epoch.fetch_add(1, Relaxed);
    }
}

/// The server set.
#[derive(Default)]
pub struct Backends {
    list: RwLock<Vec<Arc<Backend>>>,
    next_id: AtomicU32,
}

impl Backends {
    /// The primary and replicas named in `settings`.
    pub fn from_settings(settings: &Settings) -> Backends {
        let b = Backends::default();
        b.add(
            settings,
            settings.upstream.primary.to_string(),
            Role::Primary,
        );
        for r in &settings.upstream.replicas {
            b.add(settings, r.to_string(), Role::Replica);
        }
        b
    }

    /// Adds a server; returns its id.
    pub fn add(&self, settings: &Settings, addr: String, role: Role) -> Arc<Backend> {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let backend = Arc::new(Backend::new(id, addr, role, settings));
        self.list.write().push(backend.clone());
        tracing::info!(server = %backend.addr, role = role.as_str(), id, "server added");
        backend
    }

    /// Stops new checkouts on server `id`; running transactions finish.
    pub fn drain(&self, id: u32) -> Option<Arc<Backend>> {
        let b = self.get(id)?;
        b.draining.store(true, Relaxed);
        Some(b)
    }

    /// Removes server `id`: no new checkouts, pools closed (lent
    /// connections close when their transaction ends).
    pub fn remove(&self, id: u32) -> Option<Arc<Backend>> {
        let mut list = self.list.write();
        let pos = list.iter().position(|b| b.id == id)?;
        let b = list.remove(pos);
        b.retire();
        Some(b)
    }

    pub fn get(&self, id: u32) -> Option<Arc<Backend>> {
        self.list.read().iter().find(|b| b.id == id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Backend>> {
        self.list.read().clone()
    }

    /// The current primary (the first server in that role).
    pub fn primary(&self) -> Option<Arc<Backend>> {
        self.list
            .read()
            .iter()
            .find(|b| b.role() == Role::Primary)
            .cloned()
    }

    /// Calls `f` on each server in the replica role, without copying the list.
    pub fn for_each_replica(&self, mut f: impl FnMut(&Arc<Backend>)) {
        for b in self
            .list
            .read()
            .iter()
            .filter(|b| b.role() == Role::Replica)
        {
            f(b);
        }
    }

    /// Servers in the replica role.
    pub fn replicas(&self) -> Vec<Arc<Backend>> {
        self.list
            .read()
            .iter()
            .filter(|b| b.role() == Role::Replica)
            .cloned()
            .collect()
    }

    pub fn has_replicas(&self) -> bool {
        self.list.read().iter().any(|b| b.role() == Role::Replica)
    }

    /// Applies reloaded settings: pool limits everywhere, servers added or
    /// removed to match `[upstream]` (the current primary is never removed
    /// by a reload that still names it, whatever its configured role).
    pub fn apply(&self, settings: &Settings) {
        let wanted: Vec<(String, Role)> =
            std::iter::once((settings.upstream.primary.to_string(), Role::Primary))
                .chain(
                    settings
                        .upstream
                        .replicas
                        .iter()
                        .map(|r| (r.to_string(), Role::Replica)),
                )
                .collect();
        for b in self.all() {
            if wanted.iter().any(|(a, _)| *a == b.addr) {
                b.apply(settings);
            } else {
                self.remove(b.id);
            }
        }
        for (addr, role) in wanted {
            if !self.all().iter().any(|b| b.addr == addr) {
                self.add(settings, addr, role);
            }
        }
    }

    /// Every pool of every server.
    pub fn all_pools(&self) -> Vec<Pool> {
        self.all().iter().flat_map(|b| b.pools()).collect()
    }

    /// Pool snapshots, for metrics.
    pub fn snapshots(&self) -> Vec<PoolSnapshot> {
        let mut v: Vec<PoolSnapshot> = self.all_pools().iter().map(Pool::snapshot).collect();
        v.sort_by(|a, b| (&a.server, &a.database, &a.user).cmp(&(&b.server, &b.database, &b.user)));
        v
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings() -> Settings {
        pgpilot_config::from_toml_str(
            "[upstream]\nprimary = \"127.0.0.1:5432\"\n[[users]]\nname = \"u\"\npassword = \"p\"\n",
        )
        .expect("settings")
    }

    fn sample(lsn: u64, sent_at: Instant) -> Sample {
        Sample {
            in_recovery: false,
            lsn,
            replay_delay_ms: 0,
            sent_at,
        }
    }

    #[test]
    fn position_after_is_the_earliest_sample_sent_later() {
        let b = Backend::new(1, "127.0.0.1:5432".into(), Role::Primary, &settings());
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(b.position(), (0, None));
        assert_eq!(b.position_after(t0), None, "no sample yet");
        for (ms, lsn) in [(10, 100), (20, 200), (30, 300)] {
            b.record_sample(&sample(lsn, at(ms)), None);
        }
        assert_eq!(b.position(), (300, Some(at(30))));
        assert_eq!(b.position_after(at(5)), Some(100));
        assert_eq!(b.position_after(at(10)), Some(200), "sent strictly after");
        assert_eq!(b.position_after(at(25)), Some(300));
        assert_eq!(b.position_after(at(30)), None, "not sampled since");
    }

    #[test]
    fn position_history_is_bounded() {
        let b = Backend::new(1, "127.0.0.1:5432".into(), Role::Primary, &settings());
        let t0 = Instant::now();
        for i in 0..(POSITION_HISTORY as u64 * 2) {
            b.record_sample(&sample(i, t0 + Duration::from_millis(i + 1)), None);
        }
        assert_eq!(b.positions.lock().len(), POSITION_HISTORY);
        // Older than the history: the oldest kept sample, still sent later.
        assert_eq!(b.position_after(t0), Some(POSITION_HISTORY as u64));
    }
}
