//! Server connections and the pools that lend them out.
//!
//! [`ServerConn`] is one logged-in PostgreSQL backend ([`login`] performs the
//! startup and authentication). A [`Pool`] per (database, user) keeps idle
//! connections, opens new ones up to `max_size`, queues clients when all are
//! busy and hands out [`PooledConn`] guards that return the connection on
//! `Drop`. The proxy's `checkout` stage is the only caller on the data path.

pub mod breaker;
mod error;
pub mod login;
mod pool;
mod prepared;
pub mod probe;
mod server;
mod stats;

pub use breaker::{Breaker, BreakerState};
pub use error::{Error, Result};
pub use pool::{Pool, PoolKey, PoolLimits, PooledConn};
pub use prepared::PreparedLru;
pub use server::ServerConn;
pub use stats::{PoolSnapshot, PoolStats};
