//! The result cache on the data path: between routing and checkout, an
//! eligible read is answered from [`pgpilot_cache::ResultCache`] or run
//! with its response captured for the next reader.
//!
//! - [`policy`]: whether a statement may be cached now, and its key.
//! - [`batch`]: the simple Query path, and extended-protocol batches
//!   (Parse/Bind/Describe held until Execute says what is asked).
//! - [`capture`]: recording the server's response for a fill.
//! - [`invalidate`]: what the session's writes invalidate, at commit.
//!
//! Proxy-wide state lives here too: where the WAL invalidation streams
//! stand ([`WalState`]).

mod batch;
mod capture;
mod invalidate;
mod policy;
pub mod shared;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use pgpilot_wire::Frame;

pub(crate) use batch::QueryPath;
pub(crate) use capture::{Capture, Shape};
pub(crate) use policy::Plan;

/// Where one database's WAL invalidation stream stands.
#[derive(Debug, Default)]
pub struct WalDb {
    /// Every transaction that committed before this primary position has
    /// been applied to the cache.
    pub watermark: AtomicU64,
    /// The stream is connected and applying changes.
    pub connected: AtomicBool,
    /// Commits applied since start.
    pub commits: AtomicU64,
    /// Stream starts (each flushes the database's entries: changes may have
    /// been missed while it was down).
    pub starts: AtomicU64,
}

impl WalDb {
    pub fn watermark(&self) -> u64 {
        self.watermark.load(Ordering::Acquire)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

/// The WAL streams, by database.
#[derive(Debug, Default)]
pub struct WalState {
    dbs: parking_lot::RwLock<std::collections::HashMap<String, std::sync::Arc<WalDb>>>,
}

impl WalState {
    /// The stream state of `database`, if one was started.
    pub fn db(&self, database: &str) -> Option<std::sync::Arc<WalDb>> {
        self.dbs.read().get(database).cloned()
    }

    /// The state of `database`, created when first asked for.
    pub fn track(&self, database: &str) -> std::sync::Arc<WalDb> {
        self.dbs
            .write()
            .entry(database.to_owned())
            .or_default()
            .clone()
    }

    /// Every stream, by database name.
    pub fn all(&self) -> Vec<(String, std::sync::Arc<WalDb>)> {
        let mut v: Vec<_> = self
            .dbs
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Extended-protocol messages held back until the batch's Execute shows
/// whether the cache can answer it.
#[derive(Debug)]
pub(crate) struct Held {
    /// An unnamed Parse, when the batch began with one.
    pub parse: Option<Frame>,
    pub bind: Option<Frame>,
    /// A Describe of the bound portal.
    pub describe: Option<Frame>,
    /// The portal the Bind named.
    pub portal: Bytes,
    /// How the statement would be cached.
    pub plan: Plan,
    /// The statement's declared parameter types (part of the key: they
    /// change the result's types and encodings).
    pub param_types: Bytes,
}

/// What the current transaction may have written beyond named tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) enum Flush {
    #[default]
    None,
    /// Something opaque (a volatile function, unparseable text): the
    /// session's database.
    Database,
    /// Roles, grants, functions, views…: everything.
    All,
}

/// A session's result-cache state.
#[derive(Debug, Default)]
pub(crate) struct SessionCache {
    pub held: Option<Box<Held>>,
    /// Fills whose responses are being recorded, oldest first.
    pub captures: VecDeque<Capture>,
    /// An unnamed Parse answered from the cache that no server has seen:
    /// sent (hidden) before the unnamed statement is next used.
    pub owed_parse: Option<Bytes>,
    /// The classifications of the write statements the current
    /// transaction sent (see `invalidate`).
    pub written: Vec<std::sync::Arc<pgpilot_sql::Classification>>,
    /// The memo of the session's key part (user, database, settings);
    /// cleared when settings change.
    pub session_key: Option<u128>,
    /// The last simple-query text's literal-preserving hash (the text is
    /// the one the analysis memo hands back for a repeated query).
    pub last_exact: Option<(std::sync::Arc<str>, u128)>,
    /// The analysis of the client's unnamed statement (its last unnamed
    /// Parse), for Binds of it in later batches.
    pub unnamed_analysis: Option<pgpilot_sql::Analysis>,
    /// The unnamed statement was just parsed (its analysis already counted
    /// for the Bind that follows).
    pub unnamed_parsed: bool,
    /// An extended-protocol message went to a server since the last
    /// ReadyForQuery: a batch (possibly a transaction, a SET) is open.
    pub batch_open: bool,
    /// The next checkout is for a fill: it goes to the primary, because a
    /// replica may not yet have what the cache's invalidations assume.
    pub fill_on_primary: bool,
}
