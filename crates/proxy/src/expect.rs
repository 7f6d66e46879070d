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

/// The ParseComplete message.
const PARSE_COMPLETE: &[u8] = &[pgpilot_wire::tag::backend::PARSE_COMPLETE, 0, 0, 0, 4];

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
    /// A ParseComplete pgpilot sends itself, like `Synthetic`, for the
    /// client's Parse of a statement the server already has. Kept apart so
    /// that when an earlier error makes the server skip to Sync, the
    /// client's name is freed as it would be had the server seen the Parse.
    LocalParse { stmt: u64, client_name: Bytes },
    /// Not a response: where the client ended its COPY data (CopyDone or
    /// CopyFail) before the server said it entered COPY FROM STDIN. Never
    /// at the head: it only matters behind the request that starts a COPY
    /// (see [`ExpectQueue::enter_copy_in`]) and is dropped once that
    /// request is answered without one.
    CopyEnd,
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
    /// The pgpilot statement.
    pub stmt: u64,
    /// The client's name for it, when the Parse was the client's own.
    pub client_name: Option<Bytes>,
    /// The Parse was sent and the server does not have the statement
    /// (false for a [`Expect::LocalParse`]: the server had it already).
    pub server_lost: bool,
}

/// The awaited responses, oldest first.
#[derive(Debug, Default)]
pub struct ExpectQueue {
    items: VecDeque<Expect>,
    /// Entries ever removed from the front: the absolute index of the head,
    /// by which the result cache tells which request a message answers.
    base: u64,
    /// Entries were removed from the middle (COPY): absolute indexes taken
    /// before this count changed no longer name the same entries.
    reshuffles: u64,
}

impl ExpectQueue {
    pub fn push(&mut self, e: Expect) {
        if matches!(e, Expect::CopyEnd) && self.items.is_empty() {
            return; // No request pending that could start a COPY.
        }
        self.items.push_back(e);
    }

    pub fn front(&self) -> Option<&Expect> {
        self.items.front()
    }

    pub fn pop(&mut self) -> Option<Expect> {
        let head = self.pop_front();
        self.drop_stale_copy_ends();
        head
    }

    fn pop_front(&mut self) -> Option<Expect> {
        let head = self.items.pop_front();
        if head.is_some() {
            self.base += 1;
        }
        head
    }

    /// The absolute index of the head entry (see [`Self::next_index`]).
    pub fn head_index(&self) -> u64 {
        self.base
    }

    /// The absolute index the next pushed entry gets.
    pub fn next_index(&self) -> u64 {
        self.base + self.items.len() as u64
    }

    /// Changes whenever entries are removed other than from the front.
    pub fn reshuffles(&self) -> u64 {
        self.reshuffles
    }

    /// Keeps [`Expect::CopyEnd`] off the head: the request it followed
    /// was answered without entering COPY.
    fn drop_stale_copy_ends(&mut self) {
        while matches!(self.items.front(), Some(Expect::CopyEnd)) {
            self.pop_front();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Forgets every entry (the server is gone); true when the client was
    /// waiting for a ReadyForQuery (a Query or Sync of its own was pending).
    pub fn drain_awaits_ready(&mut self) -> bool {
        let awaited = self
            .items
            .iter()
            .any(|e| matches!(e, Expect::Query { hidden: false } | Expect::Sync));
        self.base += self.items.len() as u64;
        self.items.clear();
        awaited
    }

    /// Whether the head entry's answer is hidden.
    pub fn head_hidden(&self) -> bool {
        self.items.front().is_some_and(Expect::hidden)
    }

    /// Removes leading synthetic entries, returning their bytes in order.
    pub fn take_synthetic(&mut self, mut emit: impl FnMut(&[u8])) {
        while let Some(Expect::Synthetic(_) | Expect::LocalParse { .. }) = self.items.front() {
            match self.pop() {
                Some(Expect::Synthetic(b)) => emit(&b),
                Some(Expect::LocalParse { .. }) => emit(PARSE_COMPLETE),
                _ => {}
            }
        }
    }

    /// The server entered COPY FROM STDIN for the head request. Until the
    /// client's CopyDone or CopyFail it ignores Sync (protocol §55.2.6), so
    /// the Syncs queued behind the head up to the client's
    /// [`Expect::CopyEnd`] will never be answered: removes them, and the
    /// marker. Returns whether the client has yet to end the COPY (no
    /// marker was queued) and how many Syncs were removed.
    pub fn enter_copy_in(&mut self) -> (bool, usize) {
        self.reshuffles += 1;
        let end = self.items.iter().position(|e| matches!(e, Expect::CopyEnd));
        let mut stop = end.unwrap_or(self.items.len());
        let mut removed = 0;
        let mut i = 1;
        while i < stop {
            if matches!(self.items[i], Expect::Sync) {
                self.items.remove(i);
                stop -= 1;
                removed += 1;
            } else {
                i += 1;
            }
        }
        if end.is_some() {
            self.items.remove(stop);
        }
        (end.is_none(), removed)
    }

    /// After an ErrorResponse in an extended-protocol batch, the server skips
    /// everything up to the next Sync: drop those entries. Returns the named
    /// Parses that failed or were skipped, and whether a Sync is queued.
    pub fn skip_to_sync(&mut self) -> (Vec<LostParse>, bool) {
        let mut lost = Vec::new();
        while let Some(front) = self.items.front() {
            if matches!(front, Expect::Sync) {
                return (lost, true);
            }
            let Some(front) = self.pop_front() else {
                break;
            };
            match front {
                Expect::Parse {
                    stmt: Some(stmt),
                    client_name,
                    ..
                } => lost.push(LostParse {
                    stmt,
                    client_name,
                    server_lost: true,
                }),
                Expect::LocalParse { stmt, client_name } => lost.push(LostParse {
                    stmt,
                    client_name: Some(client_name),
                    server_lost: false,
                }),
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
        q.push(Expect::LocalParse {
            stmt: 3,
            client_name: Bytes::from_static(b"s3"),
        });
        q.push(Expect::Synthetic(Bytes::from_static(b"2")));
        q.push(Expect::Bind);
        let mut got = Vec::new();
        q.take_synthetic(|b| got.extend_from_slice(b));
        assert_eq!(got, b"11\0\0\0\x042");
        assert_eq!(q.front(), Some(&Expect::Bind));
    }

    #[test]
    fn syncs_sent_during_copy_in_are_dropped() {
        // Bind, Execute, Sync; the server's CopyInResponse comes first.
        let mut q = ExpectQueue::default();
        q.push(Expect::Execute);
        q.push(Expect::Sync);
        assert_eq!(
            q.enter_copy_in(),
            (true, 1),
            "the client has not ended the COPY yet"
        );
        assert_eq!(q.pop(), Some(Expect::Execute));
        assert!(q.is_empty());

        // The client pipelined its data and CopyDone, then Sync.
        let mut q = ExpectQueue::default();
        q.push(Expect::Execute);
        q.push(Expect::Sync);
        q.push(Expect::CopyEnd);
        q.push(Expect::Sync);
        assert_eq!(q.enter_copy_in(), (false, 1));
        assert_eq!(q.pop(), Some(Expect::Execute));
        assert_eq!(q.pop(), Some(Expect::Sync));
        assert!(q.is_empty());
    }

    #[test]
    fn copy_end_behind_a_request_without_copy_is_dropped() {
        let mut q = ExpectQueue::default();
        q.push(Expect::CopyEnd);
        assert!(q.is_empty(), "nothing pending: no marker");
        q.push(Expect::Query { hidden: false });
        q.push(Expect::CopyEnd);
        q.push(Expect::Query { hidden: false });
        q.push(Expect::CopyEnd);
        assert_eq!(q.pop(), Some(Expect::Query { hidden: false }));
        assert_eq!(q.front(), Some(&Expect::Query { hidden: false }));
        assert_eq!(q.pop(), Some(Expect::Query { hidden: false }));
        assert!(q.is_empty());
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
        q.push(Expect::LocalParse {
            stmt: 9,
            client_name: Bytes::from_static(b"s9"),
        });
        q.push(Expect::Sync);
        q.push(Expect::Execute);
        let (lost, found) = q.skip_to_sync();
        let lost: Vec<_> = lost
            .iter()
            .map(|l| (l.stmt, l.client_name.clone(), l.server_lost))
            .collect();
        assert_eq!(
            lost,
            vec![
                (7, None, true),
                (8, Some(Bytes::from_static(b"s8")), true),
                (9, Some(Bytes::from_static(b"s9")), false)
            ]
        );
        assert!(found);
        assert_eq!(q.pop(), Some(Expect::Sync));
        assert_eq!(q.pop(), Some(Expect::Execute));
        let (_, found) = q.skip_to_sync();
        assert!(!found);
    }
}
