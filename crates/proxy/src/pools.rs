//! The proxy's pools, one per (database, user), created on first login.
//!
//! Server logins use the user's `server_user`/`server_password` against the
//! upstream primary; sizes and timeouts come from the live settings and are
//! pushed to every pool on reload.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use pgpilot_config::{PoolSettings, Settings, User};
use pgpilot_pool::login::LoginParams;
use pgpilot_pool::{Pool, PoolKey, PoolLimits, PoolSnapshot};

/// All pools of one proxy.
#[derive(Default)]
pub struct Pools {
    pools: Mutex<HashMap<PoolKey, Pool>>,
}

/// Pool limits from the `[pool]` settings.
pub fn limits(p: &PoolSettings) -> PoolLimits {
    PoolLimits {
        min_size: p.min_size,
        max_size: p.max_size.get(),
        connect_timeout: p.connect_timeout,
        checkout_timeout: p.checkout_timeout,
        idle_timeout: p.idle_timeout,
        max_lifetime: p.max_lifetime,
    }
}

fn login(settings: &Settings, user: &User, database: &str) -> LoginParams {
    LoginParams {
        addr: settings.upstream.primary.to_string(),
        user: user.server_user.clone(),
        password: user.server_password.clone(),
        database: database.to_owned(),
    }
}

impl Pools {
    /// The pool for `user` on `database`, created when first asked for.
    pub fn get(&self, settings: &Settings, user: &User, database: &str) -> Pool {
        let key = PoolKey {
            database: database.to_owned(),
            user: user.name.clone(),
        };
        let mut pools = self.pools.lock();
        pools
            .entry(key.clone())
            .or_insert_with(|| {
                Pool::new(key, login(settings, user, database), limits(&settings.pool))
            })
            .clone()
    }

    /// Pushes reloaded settings to every pool; pools of removed users close.
    pub fn apply(&self, settings: &Settings) {
        let mut pools = self.pools.lock();
        pools.retain(|key, pool| match settings.user(&key.user) {
            Some(user) => {
                pool.set_limits(limits(&settings.pool));
                pool.set_login(login(settings, user, &key.database));
                true
            }
            None => {
                pool.close();
                false
            }
        });
    }

    /// Every pool, for maintenance and metrics.
    pub fn all(&self) -> Vec<Pool> {
        self.pools.lock().values().cloned().collect()
    }

    pub fn snapshots(&self) -> Vec<PoolSnapshot> {
        let mut v: Vec<PoolSnapshot> = self.all().iter().map(Pool::snapshot).collect();
        v.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
        v
    }

    /// Runs pool upkeep every `period` until the task is dropped.
    pub async fn maintain_forever(&self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for pool in self.all() {
                pool.maintain().await;
            }
        }
    }
}
