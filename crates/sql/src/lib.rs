//! What the proxy needs to understand about SQL text, computed with the real
//! PostgreSQL parser (`pg_query`) and cached so the relay path rarely parses.
//!
//! [`Analyzer::analyze`] is the entry point: a cheap lexical scan
//! ([`lexer`]) decides whether a statement could change session state at all;
//! only then is it parsed ([`session`] reads the effects off the parse tree),
//! and the result is cached by query text ([`cache`]).

pub mod cache;
pub mod lexer;
pub mod session;

use std::sync::Arc;

pub use session::{PinReason, SessionEffect};

/// What one query string (possibly several statements) does to the session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Analysis {
    /// Session effects in statement order; empty for ordinary statements.
    pub effects: Vec<SessionEffect>,
    /// The parser rejected the text (the server will too); no effects assumed.
    pub parse_error: Option<String>,
}

impl Analysis {
    /// True when running this text can change state that outlives its
    /// transaction.
    pub fn has_effects(&self) -> bool {
        !self.effects.is_empty()
    }
}

/// Parses and caches. One per proxy, shared by all sessions.
pub struct Analyzer {
    cache: cache::AnalysisCache,
    /// Shared empty result for the fast path (no allocation per query).
    none: Arc<Analysis>,
}

impl Analyzer {
    /// `capacity` bounds the number of cached query texts.
    pub fn new(capacity: usize) -> Analyzer {
        Analyzer {
            cache: cache::AnalysisCache::new(capacity),
            none: Arc::new(Analysis::default()),
        }
    }

    /// The session effects of `sql`. Cheap for statements that cannot have
    /// any (one lexical pass, no parse, no allocation).
    pub fn analyze(&self, sql: &str) -> Arc<Analysis> {
        if !lexer::may_affect_session(sql) {
            return self.none.clone();
        }
        if let Some(hit) = self.cache.get(sql) {
            return hit;
        }
        let analysis = Arc::new(session::analyze(sql));
        self.cache.insert(sql, analysis.clone());
        analysis
    }

    /// Number of cached texts (for metrics).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}
