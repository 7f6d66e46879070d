//! The queue of responses a session is waiting for from its server, in
//! request order.
//!
//! Every message the session sends to a server that will be answered gets
//! an entry. *Hidden* entries are requests pgpilot made itself (a re-Parse of
//! a client's statement, a settings sync, an LRU Close): their answers are
//! swallowed. *Synthetic* entries are answers pgpilot gives itself (a
//! ParseComplete for a statement the server already has, a CloseComplete
//! for a client's Close): they are emitted when they reach the head of the
//! queue, so the client sees every answer in the order it asked.

use std::collections::VecDeque;

use bytes::Bytes;

/// One awaited response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// ParseComplete. `stmt` is the pgpilot statement id for named
    /// statements; `client_name` the name the client chose, when the Parse
    /// is the client's own (so a failed one can free the name again).
    Parse {
        stmt: Option<u64>,
        client_name: Option<Bytes>,
        hidden: bool,
    },
    /// BindComplete.
    Bind,
    /// RowDescription or NoData (after an optional ParameterDescription).
    Describe,
    /// CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// CloseComplete.
    Close { hidden: bool },
    /// ReadyForQuery answering a Sync.
    Sync,
    /// Everything up to ReadyForQuery answering a simple Query or FunctionCall.
    Query { hidden: bool },
    /// Bytes pgpilot sends the client itself when this entry is reached.
    Synthetic(Bytes),
}

impl Expect {
    /// Whether the server's answer to this entry is kept from the client.
    pub fn hidden(&self) -> bool {
        matches!(
            self,
            Expect::Parse { hidden: true, .. }
                | Expect::Close { hidden: true }
                | Expect::Query { hidden: true }
        )
    }
}

/// A named Parse the server did not carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostParse {
    /// The pgpilot statement the server does not have after all.
    pub stmt: u64,
    /// The client's name for it, when the Parse was the client's own.
    pub client_name: Option<Bytes>,
}

/// The awaited responses, oldest first.
#[derive(Debug, Default)]
pub struct ExpectQueue {
    items: VecDeque<Expect>,
}

impl ExpectQueue {
    pub fn push(&mut self, e: Expect) {
        self.items.push_back(e);
    }

    pub fn front(&self) -> Option<&Expect> {
        self.items.front()
    }

    pub fn pop(&mut self) -> Option<Expect> {
        self.items.pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether the head entry's answer is hidden.
    pub fn head_hidden(&self) -> bool {
        self.items.front().is_some_and(Expect::hidden)
    }

    /// Removes leading synthetic entries, returning their bytes in order.
    pub fn take_synthetic(&mut self, mut emit: impl FnMut(&[u8])) {
        while let Some(Expect::Synthetic(_)) = self.items.front() {
            if let Some(Expect::Synthetic(b)) = self.items.pop_front() {
                emit(&b);
            }
        }
    }

    /// After an ErrorResponse in an extended-protocol batch, the server skips
    /// everything up to the next Sync: drop those entries. Returns the named
    /// Parses that failed or were skipped, and whether a Sync is queued.
    pub fn skip_to_sync(&mut self) -> (Vec<LostParse>, bool) {
        let mut lost = Vec::new();
        while let Some(front) = self.items.pop_front() {
            match front {
                Expect::Sync => {
                    self.items.push_front(Expect::Sync);
                    return (lost, true);
                }
                Expect::Parse {
                    stmt: Some(stmt),
                    client_name,
                    ..
                } => lost.push(LostParse { stmt, client_name }),
                _ => {}
            }
        }
        (lost, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_entries_come_out_in_order() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Synthetic(Bytes::from_static(b"1")));
        q.push(Expect::Synthetic(Bytes::from_static(b"2")));
        q.push(Expect::Bind);
        let mut got = Vec::new();
        q.take_synthetic(|b| got.extend_from_slice(b));
        assert_eq!(got, b"12");
        assert_eq!(q.front(), Some(&Expect::Bind));
    }

    #[test]
    fn error_skips_to_sync_and_reports_lost_parses() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Parse {
            stmt: Some(7),
            client_name: None,
            hidden: true,
        });
        q.push(Expect::Parse {
            stmt: Some(8),
            client_name: Some(Bytes::from_static(b"s8")),
            hidden: false,
        });
        q.push(Expect::Bind);
        q.push(Expect::Synthetic(Bytes::from_static(b"x")));
        q.push(Expect::Sync);
        q.push(Expect::Execute);
        let (lost, found) = q.skip_to_sync();
        let lost: Vec<_> = lost
            .iter()
            .map(|l| (l.stmt, l.client_name.clone()))
            .collect();
        assert_eq!(lost, vec![(7, None), (8, Some(Bytes::from_static(b"s8")))]);
        assert!(found);
        assert_eq!(q.pop(), Some(Expect::Sync));
        assert_eq!(q.pop(), Some(Expect::Execute));
        let (_, found) = q.skip_to_sync();
        assert!(!found);
    }
}
