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
    /// ParseComplete. `stmt` is the pgpilot statement id for named statements.
    Parse { stmt: Option<u64>, hidden: bool },
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
    /// everything up to the next Sync: drop those entries. Returns the
    /// statement ids whose Parse was skipped, and whether a Sync is queued.
    pub fn skip_to_sync(&mut self) -> (Vec<u64>, bool) {
        let mut lost = Vec::new();
        while let Some(front) = self.items.front() {
            match front {
                Expect::Sync => return (lost, true),
                Expect::Parse { stmt: Some(id), .. } => lost.push(*id),
                _ => {}
            }
            self.items.pop_front();
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
            hidden: true,
        });
        q.push(Expect::Bind);
        q.push(Expect::Synthetic(Bytes::from_static(b"x")));
        q.push(Expect::Sync);
        q.push(Expect::Execute);
        let (lost, found) = q.skip_to_sync();
        assert_eq!(lost, vec![7]);
        assert!(found);
        assert_eq!(q.pop(), Some(Expect::Sync));
        assert_eq!(q.pop(), Some(Expect::Execute));
        let (_, found) = q.skip_to_sync();
        assert!(!found);
    }
}
