//! What the proxy needs to understand about SQL text, computed with the real
//! PostgreSQL parser (`pg_query`) and cached so the relay path rarely parses.
//!
//! [`Analyzer::analyze`] is the entry point. One lexical pass ([`lexer`])
//! yields a normalized key (literals removed), a conservative "could change
//! session state" flag and routing and cache hints. The read/write
//! [`classify`]ication, with the result-cache facts ([`cacheable`]), is
//! cached by normalized key, so `WHERE id = 1` and `WHERE id = 2` share one
//! parse; session effects ([`session`]) depend on literal values and are
//! parsed by exact text, only for the rare texts the lexer flags. A result
//! cache keys on [`exact_key`] (literals kept) and reads [`cache_hint`]
//! when [`Analysis::cache_hint`] says a comment asks for one.

pub mod cache;
pub mod cacheable;
pub mod classify;
pub mod lexer;
pub mod quote;
pub mod session;
mod walk;

use std::sync::Arc;

pub use cacheable::{refusal, CacheFacts, TableRef};
pub use classify::{Classification, Target, TxnControl};
pub use lexer::{cache_hint, exact_key, mentions_current_time, CacheHint, RouteHint};
pub use session::{PinReason, SessionEffect};

/// What one query string does: routing facts and session effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// Read/write classification, shared by all texts of the same shape.
    pub class: Arc<Classification>,
    /// Session effects in statement order; empty for ordinary statements.
    pub effects: Arc<Vec<SessionEffect>>,
    /// A `pgpilot:primary` / `pgpilot:replica` comment.
    pub hint: RouteHint,
    /// A `pgpilot:cache` / `pgpilot:nocache` comment: [`cache_hint`] reads
    /// its options.
    pub cache_hint: bool,
    /// The normalized key (same for texts differing only in literals).
    pub key: u128,
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
    classes: cache::AnalysisCache<u128, Arc<Classification>>,
    effects: cache::AnalysisCache<Box<str>, Arc<Vec<SessionEffect>>>,
    /// Shared empty effect list for the fast path.
    no_effects: Arc<Vec<SessionEffect>>,
}

impl Analyzer {
    /// `capacity` bounds the number of cached shapes and texts (each).
    pub fn new(capacity: usize) -> Analyzer {
        Analyzer {
            classes: cache::AnalysisCache::new(capacity),
            effects: cache::AnalysisCache::new(capacity),
            no_effects: Arc::new(Vec::new()),
        }
    }

    /// Analyzes `sql`. A query shape seen before costs one lexical pass and
    /// a cache lookup; no parse, no allocation beyond reference counts.
    pub fn analyze(&self, sql: &str) -> Analysis {
        self.analyze_scanned(sql, lexer::scan(sql), None)
    }

    /// [`Analyzer::analyze`], taking the classification from `prev` when
    /// `sql` has its shape (a session's next query often has its last
    /// one's shape): no shared cache lookup then.
    pub fn analyze_after(&self, sql: &str, prev: Option<&Analysis>) -> Analysis {
        self.analyze_scanned(sql, lexer::scan(sql), prev)
    }

    /// [`Analyzer::analyze_after`] and [`exact_key`] of `sql` from one
    /// lexical pass.
    pub fn analyze_with_exact_key(&self, sql: &str, prev: Option<&Analysis>) -> (Analysis, u128) {
        let (scan, exact) = lexer::scan_with_exact_key(sql);
        (self.analyze_scanned(sql, scan, prev), exact)
    }

    fn analyze_scanned(&self, sql: &str, scan: lexer::Scan, prev: Option<&Analysis>) -> Analysis {
        let known = prev.filter(|p| p.key == scan.key).map(|p| p.class.clone());
        let class = match known.or_else(|| self.classes.get(&scan.key)) {
            Some(c) => c,
            None => {
                let c = Arc::new(parse_classification(sql));
                self.classes.insert(scan.key, c.clone());
                c
            }
        };
        let effects = if scan.may_affect_session {
            self.effects_of(sql)
        } else {
            self.no_effects.clone()
        };
        Analysis {
            class,
            effects,
            hint: scan.hint,
            cache_hint: scan.cache_hint,
            key: scan.key,
        }
    }

    fn effects_of(&self, sql: &str) -> Arc<Vec<SessionEffect>> {
        if let Some(hit) = self.effects.get(sql) {
            return hit;
        }
        let effects = Arc::new(session::analyze(sql).effects);
        self.effects.insert(sql.into(), effects.clone());
        effects
    }

    /// Number of cached shapes (for metrics).
    pub fn cached(&self) -> usize {
        self.classes.len()
    }
}

/// Parses `sql` for routing; unparseable text goes to the primary and is
/// never cached.
fn parse_classification(sql: &str) -> Classification {
    match std::panic::catch_unwind(|| pg_query::parse(sql, 0)) {
        Ok(Ok(parsed)) => classify::classify(&parsed),
        _ => Classification {
            target: Target::Primary,
            reason: "unparseable",
            cache: CacheFacts::unparseable(),
            ..Classification::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_shape_shares_one_classification() {
        let a = Analyzer::new(100);
        let x = a.analyze("SELECT * FROM t WHERE id = 1");
        let y = a.analyze("select * from t where id = 2");
        assert!(Arc::ptr_eq(&x.class, &y.class));
        assert_eq!(x.class.target, Target::Replica);
        assert_eq!(a.cached(), 1);
    }

    #[test]
    fn the_previous_analysis_serves_only_its_own_shape() {
        let a = Analyzer::new(100);
        let read = a.analyze("SELECT * FROM t WHERE id = 1");
        // A class from elsewhere with the read's key: reused only if the
        // shape matches, which shows no shared lookup happened.
        let planted = Analysis {
            class: Arc::new(Classification::default()),
            ..read.clone()
        };
        let same = a.analyze_after("select * from t where id = 7", Some(&planted));
        assert!(Arc::ptr_eq(&same.class, &planted.class));
        let other = a.analyze_after("DELETE FROM t WHERE id = 7", Some(&planted));
        assert!(!Arc::ptr_eq(&other.class, &planted.class));
        assert_eq!(other.class.target, Target::Primary);
        let set = a.analyze_after("SET search_path TO b", Some(&planted));
        assert!(!set.effects.is_empty(), "effects come from the text itself");
    }

    #[test]
    fn set_effects_keep_their_literals() {
        let a = Analyzer::new(100);
        let x = a.analyze("SET search_path TO a");
        let y = a.analyze("SET search_path TO b");
        assert_eq!(x.class, y.class);
        assert_ne!(x.effects, y.effects);
        assert!(a.analyze("select 1").effects.is_empty());
    }

    #[test]
    fn unparseable_goes_to_primary() {
        let a = Analyzer::new(10);
        let x = a.analyze("SELEC broken");
        assert_eq!(x.class.target, Target::Primary);
        assert_eq!(x.class.cache, CacheFacts::unparseable());
    }

    #[test]
    fn shapes_sharing_cache_facts_agree_on_literals_they_depend_on() {
        let a = Analyzer::new(100);
        let fixed = a.analyze("SELECT * FROM t WHERE d < '2024-01-01'::date");
        let now = a.analyze("SELECT * FROM t WHERE d < 'now'::date");
        assert_eq!(fixed.class.cache.refusal, None);
        assert_eq!(now.class.cache.refusal, Some(refusal::CURRENT_TIME_LITERAL));
        let today = a.analyze("SELECT * FROM t WHERE d < 'TODAY'::date");
        assert!(Arc::ptr_eq(&now.class, &today.class));
    }

    #[test]
    fn cache_hints_are_flagged_for_the_proxy() {
        let a = Analyzer::new(10);
        let x = a.analyze("/* pgpilot:cache ttl=5s tags=a */ SELECT * FROM t");
        assert!(x.cache_hint);
        assert!(!a.analyze("SELECT * FROM t").cache_hint);
        let hint = cache_hint("/* pgpilot:cache ttl=5s tags=a */ SELECT * FROM t");
        assert_eq!(
            hint,
            Some(CacheHint {
                enabled: true,
                ttl: Some(std::time::Duration::from_secs(5)),
                tags: vec!["a".to_owned()],
            })
        );
    }
}
