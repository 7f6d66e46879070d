//! The invalidation feed's state machine, without I/O: pgoutput messages
//! in, [`WalEvent`]s out. It remembers relation names from Relation
//! messages, collects the tables a transaction writes between Begin and
//! Commit, and moves the watermark at commits and at keepalives that
//! arrive between transactions.
//!
//! Fed by [`super::copy_both`] with each CopyData body of the stream.

use std::collections::{BTreeSet, HashMap};

use pgpilot_pool::ServerConn;
use pgpilot_wire::replication::{LogicalMessage, ReplicationMessage};

use super::{protocol_error, StreamFault, WalEvent, WalStreamError};

/// The stream's state between messages; no I/O.
pub(super) struct Decoder {
    /// Relation OID → (schema, name), from Relation messages.
    relations: HashMap<u32, (String, String)>,
    /// Tables written by the transaction between Begin and Commit.
    open: Option<BTreeSet<(String, String)>>,
    /// Every commit before this position has been reported.
    pub(super) watermark: u64,
}

/// A decoding failure, before the server address is attached.
pub(super) enum DecodeError {
    Wire(pgpilot_wire::Error),
    Fault(StreamFault),
}

impl DecodeError {
    pub(super) fn into_error(self, conn: &ServerConn) -> WalStreamError {
        match self {
            DecodeError::Wire(source) => protocol_error(conn, source),
            DecodeError::Fault(fault) => WalStreamError::Unexpected {
                addr: conn.addr.to_string(),
                fault,
            },
        }
    }
}

impl From<pgpilot_wire::Error> for DecodeError {
    fn from(e: pgpilot_wire::Error) -> DecodeError {
        DecodeError::Wire(e)
    }
}

impl From<StreamFault> for DecodeError {
    fn from(f: StreamFault) -> DecodeError {
        DecodeError::Fault(f)
    }
}

impl Decoder {
    pub(super) fn new(start: u64) -> Decoder {
        Decoder {
            relations: HashMap::new(),
            open: None,
            watermark: start,
        }
    }

    /// Handles one CopyData body; true when the server wants a status
    /// update right away.
    pub(super) fn on_copy_data(
        &mut self,
        body: &[u8],
        emit: &mut (dyn FnMut(WalEvent) + Send),
    ) -> std::result::Result<bool, DecodeError> {
        match ReplicationMessage::decode(body)? {
            ReplicationMessage::XLogData(x) => {
                self.on_logical(LogicalMessage::decode(x.data)?, emit)?;
                Ok(false)
            }
            ReplicationMessage::PrimaryKeepalive(k) => {
                // A logical walsender's keepalive carries the end of the
                // last record it decoded and sent. Between transactions
                // every commit before it is on this socket already;
                // mid-transaction the open one's Commit is still to come.
                if self.open.is_none() {
                    self.advance(k.wal_end, emit);
                }
                Ok(k.reply_requested)
            }
        }
    }

    fn on_logical(
        &mut self,
        msg: LogicalMessage<'_>,
        emit: &mut (dyn FnMut(WalEvent) + Send),
    ) -> std::result::Result<(), StreamFault> {
        match msg {
            LogicalMessage::Begin(_) if self.open.is_some() => {
                return Err(StreamFault::NestedBegin)
            }
            LogicalMessage::Begin(_) => self.open = Some(BTreeSet::new()),
            LogicalMessage::Commit(c) => {
                let tables = self.open.take().ok_or(StreamFault::CommitWithoutBegin)?;
                emit(WalEvent::Commit {
                    end_lsn: c.end_lsn,
                    tables: tables.into_iter().collect(),
                });
                self.advance(c.end_lsn, emit);
            }
            LogicalMessage::Relation(r) => {
                let name = (r.namespace.to_owned(), r.name.to_owned());
                self.relations.insert(r.oid, name);
            }
            LogicalMessage::Insert { relation }
            | LogicalMessage::Update { relation }
            | LogicalMessage::Delete { relation } => self.touch(relation)?,
            LogicalMessage::Truncate(t) => t.relations().try_for_each(|oid| self.touch(oid))?,
            LogicalMessage::Other(_) => {}
        }
        Ok(())
    }

    /// Adds the relation `oid` to the open transaction's tables.
    fn touch(&mut self, oid: u32) -> std::result::Result<(), StreamFault> {
        let open = self
            .open
            .as_mut()
            .ok_or(StreamFault::ChangeOutsideTransaction)?;
        let name = self
            .relations
            .get(&oid)
            .ok_or(StreamFault::UnknownRelation { oid })?;
        if !open.contains(name) {
            open.insert(name.clone());
        }
        Ok(())
    }

    /// Moves the watermark to `lsn` unless it is already past it, and
    /// reports it either way.
    fn advance(&mut self, lsn: u64, emit: &mut (dyn FnMut(WalEvent) + Send)) {
        self.watermark = self.watermark.max(lsn);
        emit(WalEvent::Watermark(self.watermark));
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An XLogData CopyData body (zero positions and time) around `payload`.
    pub(in crate::walstream) fn xlog(payload: &[u8]) -> Vec<u8> {
        let mut v = vec![b'w'];
        v.extend_from_slice(&[0; 24]);
        v.extend_from_slice(payload);
        v
    }

    fn keepalive(wal_end: u64, reply: bool) -> Vec<u8> {
        let mut v = vec![b'k'];
        v.extend_from_slice(&wal_end.to_be_bytes());
        v.extend_from_slice(&0i64.to_be_bytes());
        v.push(u8::from(reply));
        v
    }

    fn begin() -> Vec<u8> {
        let mut v = vec![b'B'];
        v.extend_from_slice(&[0; 20]);
        xlog(&v)
    }

    fn commit(end_lsn: u64) -> Vec<u8> {
        let mut v = vec![b'C', 0];
        v.extend_from_slice(&0u64.to_be_bytes());
        v.extend_from_slice(&end_lsn.to_be_bytes());
        v.extend_from_slice(&0i64.to_be_bytes());
        xlog(&v)
    }

    fn relation(oid: u32, ns: &str, name: &str) -> Vec<u8> {
        let mut v = vec![b'R'];
        v.extend_from_slice(&oid.to_be_bytes());
        v.extend_from_slice(format!("{ns}\0{name}\0d").as_bytes());
        v.extend_from_slice(&0i16.to_be_bytes());
        xlog(&v)
    }

    fn change(kind: u8, oid: u32) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&oid.to_be_bytes());
        v.extend_from_slice(b"N\0\0");
        xlog(&v)
    }

    fn truncate(oids: &[u32]) -> Vec<u8> {
        let mut v = vec![b'T'];
        v.extend_from_slice(&(oids.len() as u32).to_be_bytes());
        v.push(0);
        for oid in oids {
            v.extend_from_slice(&oid.to_be_bytes());
        }
        xlog(&v)
    }

    /// Feeds `messages` to a fresh decoder; the events, or the first failure.
    fn run(messages: &[Vec<u8>]) -> std::result::Result<Vec<WalEvent>, String> {
        let mut decoder = Decoder::new(0x100);
        let mut events = Vec::new();
        for m in messages {
            decoder
                .on_copy_data(m, &mut |e| events.push(e))
                .map_err(|e| match e {
                    DecodeError::Wire(w) => w.to_string(),
                    DecodeError::Fault(f) => f.to_string(),
                })?;
        }
        Ok(events)
    }

    fn table(ns: &str, name: &str) -> (String, String) {
        (ns.to_owned(), name.to_owned())
    }

    #[test]
    fn commit_names_each_written_table_once() {
        let events = run(&[
            begin(),
            relation(1, "public", "b"),
            relation(2, "sales", "a"),
            change(b'I', 1),
            change(b'U', 2),
            change(b'D', 1),
            commit(0x200),
        ])
        .unwrap();
        assert_eq!(
            events,
            vec![
                WalEvent::Commit {
                    end_lsn: 0x200,
                    tables: vec![table("public", "b"), table("sales", "a")],
                },
                WalEvent::Watermark(0x200),
            ]
        );
    }

    #[test]
    fn relations_are_remembered_across_transactions_and_truncate_names_all() {
        let events = run(&[
            relation(1, "public", "a"),
            relation(2, "public", "b"),
            begin(),
            commit(0x180),
            begin(),
            truncate(&[2, 1]),
            commit(0x200),
        ])
        .unwrap();
        assert_eq!(
            events[0],
            WalEvent::Commit {
                end_lsn: 0x180,
                tables: vec![]
            }
        );
        assert_eq!(
            events[2],
            WalEvent::Commit {
                end_lsn: 0x200,
                tables: vec![table("public", "a"), table("public", "b")],
            }
        );
    }

    #[test]
    fn keepalive_moves_the_watermark_only_between_transactions() {
        let events = run(&[
            keepalive(0x150, false),
            begin(),
            keepalive(0x300, false),
            commit(0x200),
            keepalive(0x1f0, false),
            keepalive(0x250, true),
        ])
        .unwrap();
        assert_eq!(
            events,
            vec![
                WalEvent::Watermark(0x150),
                WalEvent::Commit {
                    end_lsn: 0x200,
                    tables: vec![]
                },
                WalEvent::Watermark(0x200),
                WalEvent::Watermark(0x200),
                WalEvent::Watermark(0x250),
            ]
        );
    }

    #[test]
    fn keepalive_asking_for_a_reply_is_reported() {
        let mut decoder = Decoder::new(0);
        let mut sink = |_| {};
        assert!(decoder.on_copy_data(&keepalive(1, true), &mut sink).ok() == Some(true));
        assert!(decoder.on_copy_data(&keepalive(1, false), &mut sink).ok() == Some(false));
    }

    #[test]
    fn out_of_order_messages_are_faults_not_panics() {
        let fault = |m: &[Vec<u8>]| run(m).unwrap_err();
        assert!(fault(&[begin(), change(b'I', 9)]).contains("relation 9"));
        assert!(fault(&[relation(1, "p", "t"), change(b'I', 1)]).contains("outside"));
        assert!(fault(&[commit(1)]).contains("without Begin"));
        assert!(fault(&[begin(), begin()]).contains("inside"));
        assert!(fault(&[xlog(b"")]).contains("empty"));
        assert!(fault(&[b"x".to_vec()]).contains("unknown"));
    }

    #[test]
    fn other_messages_are_ignored() {
        let events = run(&[begin(), xlog(b"Ysomething"), xlog(b"O"), commit(5)]).unwrap();
        assert_eq!(events.len(), 2);
    }
}
