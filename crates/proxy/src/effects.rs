//! Session effects (`SET`, `RESET`, `DISCARD ALL`) of a client's statements
//! on their way to the server, grouped by the ReadyForQuery that settles
//! them.
//!
//! [`crate::client`] notes effects as it forwards statements: a simple
//! Query's at once, an extended-protocol statement's at each Bind (not at
//! Parse: a `SET` prepared in one batch runs, or fails, in a later one). A
//! Query or Sync closes the batch. [`crate::server`] takes a batch when its
//! ReadyForQuery arrives: only then has the server run those statements,
//! and only errors reported before that ReadyForQuery can void them. A
//! pipelined `SET` behind a failing query is thus neither lost nor charged
//! to the failed transaction.

use std::collections::{HashMap, VecDeque};

use pgpilot_sql::SessionEffect;

/// Effects not yet settled by a ReadyForQuery.
#[derive(Debug, Default)]
pub struct PendingEffects {
    /// Noted for messages sent since the last Query or Sync.
    open: Vec<SessionEffect>,
    /// One batch per client Query, FunctionCall or Sync sent and not yet
    /// answered with ReadyForQuery, oldest first.
    sent: VecDeque<Vec<SessionEffect>>,
    /// Effects of the client's parsed statements that have any, by
    /// statement name (empty for the unnamed statement).
    by_statement: HashMap<Box<[u8]>, Vec<SessionEffect>>,
}

impl PendingEffects {
    /// Records an effect of a message that is being forwarded.
    pub fn note(&mut self, effect: SessionEffect) {
        self.open.push(effect);
    }

    /// The client parsed statement `name` with these effects.
    pub fn parsed(&mut self, name: &[u8], effects: Vec<SessionEffect>) {
        if effects.is_empty() {
            if !self.by_statement.is_empty() {
                self.by_statement.remove(name);
            }
        } else {
            self.by_statement.insert(name.into(), effects);
        }
    }

    /// Statement `name` was bound: it runs in the open batch.
    pub fn bound(&mut self, name: &[u8]) {
        if let Some(effects) = self.by_statement.get(name) {
            self.open.extend(effects.iter().cloned());
        }
    }

    /// Statement `name` was closed.
    pub fn closed(&mut self, name: &[u8]) {
        self.by_statement.remove(name);
    }

    /// A Query, FunctionCall or Sync was forwarded: its ReadyForQuery
    /// settles what was noted since the previous one.
    pub fn close_batch(&mut self) {
        self.sent.push_back(std::mem::take(&mut self.open));
    }

    /// The messages of the open batch never reached a server.
    pub fn discard_open(&mut self) {
        self.open.clear();
    }

    /// `count` unanswered batches from index `at` will get no ReadyForQuery
    /// of their own (their Syncs reached the server in COPY FROM STDIN,
    /// which ignores Sync): their effects join the batch after them, which
    /// the next ReadyForQuery settles.
    pub fn merge_forward(&mut self, at: usize, count: usize) {
        for _ in 0..count {
            let Some(mut merged) = self.sent.remove(at) else {
                return;
            };
            let next = self.sent.get_mut(at).unwrap_or(&mut self.open);
            merged.append(next);
            *next = merged;
        }
    }

    /// The oldest batch's ReadyForQuery arrived: its effects, which the
    /// server has now carried out unless the transaction failed.
    pub fn answered(&mut self) -> Vec<SessionEffect> {
        self.sent.pop_front().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str) -> SessionEffect {
        SessionEffect::Set {
            name: name.into(),
            statement: format!("SET {name} = 1"),
        }
    }

    #[test]
    fn batches_of_ignored_syncs_merge_forward() {
        let mut p = PendingEffects::default();
        p.close_batch(); // an earlier query, still unanswered
        p.note(set("a"));
        p.close_batch(); // Bind, Execute (a COPY), Sync: ignored
        p.note(set("b"));
        p.merge_forward(1, 1);
        p.close_batch(); // CopyDone, Sync
        assert_eq!(p.answered(), vec![]);
        assert_eq!(p.answered(), vec![set("a"), set("b")]);
        assert_eq!(p.answered(), vec![]);
    }

    #[test]
    fn batches_are_settled_in_order() {
        let mut p = PendingEffects::default();
        p.close_batch(); // a query without effects
        p.note(set("a"));
        p.close_batch();
        p.note(set("b"));
        assert_eq!(p.answered(), vec![]);
        assert_eq!(p.answered(), vec![set("a")]);
        assert_eq!(p.answered(), vec![], "b's batch is still open");
        p.discard_open();
        p.close_batch();
        assert_eq!(p.answered(), vec![]);
    }

    #[test]
    fn statements_count_when_bound() {
        let mut p = PendingEffects::default();
        p.parsed(b"s1", vec![set("a")]);
        p.parsed(b"", vec![set("b")]);
        p.close_batch(); // Parse + Sync: nothing ran yet
        assert_eq!(p.answered(), vec![]);
        p.bound(b"s1");
        p.bound(b"s1");
        p.close_batch();
        assert_eq!(p.answered(), vec![set("a"), set("a")]);
        p.parsed(b"", vec![]); // the unnamed statement was replaced
        p.closed(b"s1");
        p.bound(b"");
        p.bound(b"s1");
        p.close_batch();
        assert_eq!(p.answered(), vec![]);
    }
}
