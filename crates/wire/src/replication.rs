//! Logical replication over the streaming replication protocol: the CopyData
//! bodies a walsender sends after START_REPLICATION (XLogData,
//! PrimaryKeepalive), the Standby Status Update a client answers with, and
//! the pgoutput (protocol version 1) messages inside XLogData payloads.
//!
//! The proxy's `walstream` client sits on top: it frames the CopyData
//! messages with [`crate::Frame`], decodes them here and turns commits into
//! cache invalidations. Nothing here touches a socket; every decoder checks
//! its bounds and returns [`Error::Malformed`] rather than panicking.
//!
//! Protocol reference: PostgreSQL 15 docs §55.4 "Streaming Replication
//! Protocol" and §55.9 "Logical Replication Message Formats".

use std::time::{Duration, SystemTime};

use bytes::{BufMut, BytesMut};

use crate::cstr::Reader;
use crate::error::{Error, Result};
use crate::frame::{begin_message, finish_message};

/// First byte of a CopyData body in a replication stream.
pub mod tag {
    /// XLogData: WAL (here: pgoutput messages) from the server.
    pub const XLOG_DATA: u8 = b'w';
    /// Primary keepalive message from the server.
    pub const PRIMARY_KEEPALIVE: u8 = b'k';
    /// Standby status update from the client.
    pub const STANDBY_STATUS_UPDATE: u8 = b'r';
}

/// First byte of a pgoutput message (§55.9).
pub mod pgoutput_tag {
    pub const BEGIN: u8 = b'B';
    pub const COMMIT: u8 = b'C';
    pub const ORIGIN: u8 = b'O';
    pub const RELATION: u8 = b'R';
    pub const TYPE: u8 = b'Y';
    pub const INSERT: u8 = b'I';
    pub const UPDATE: u8 = b'U';
    pub const DELETE: u8 = b'D';
    pub const TRUNCATE: u8 = b'T';
    pub const MESSAGE: u8 = b'M';
}

/// Size of an XLogData header: tag, start LSN, end LSN, send time.
pub const XLOG_DATA_HEADER_LEN: usize = 1 + 8 + 8 + 8;

/// Seconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01 00:00 UTC.
const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;

/// A CopyData body received in a START_REPLICATION stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationMessage<'a> {
    /// `'w'`: a chunk of the stream.
    XLogData(XLogData<'a>),
    /// `'k'`: the server's position and whether it wants an answer now.
    PrimaryKeepalive(PrimaryKeepalive),
}

impl<'a> ReplicationMessage<'a> {
    /// Decodes the body of one CopyData message (without the CopyData header).
    pub fn decode(body: &'a [u8]) -> Result<ReplicationMessage<'a>> {
        match body.first() {
            Some(&tag::XLOG_DATA) => XLogData::decode(body).map(ReplicationMessage::XLogData),
            Some(&tag::PRIMARY_KEEPALIVE) => {
                PrimaryKeepalive::decode(body).map(ReplicationMessage::PrimaryKeepalive)
            }
            Some(_) => Err(Error::malformed("CopyData", "unknown replication message")),
            None => Err(Error::malformed("CopyData", "empty replication message")),
        }
    }
}

/// XLogData (§55.4 "XLogData (B)"). For a logical slot the payload is one
/// output-plugin message and both LSNs are the position of the WAL record
/// it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XLogData<'a> {
    /// Starting point of the WAL data in this message.
    pub wal_start: u64,
    /// Current end of WAL on the server.
    pub wal_end: u64,
    /// Server clock at transmission, microseconds since 2000-01-01.
    pub send_time: i64,
    /// The WAL data: with pgoutput, a [`LogicalMessage`].
    pub data: &'a [u8],
}

impl<'a> XLogData<'a> {
    /// Decodes an XLogData body, tag included. A prefix of a longer message
    /// decodes too (the payload is then a prefix of the real one), which lets
    /// a caller look at the start of a huge message without buffering it.
    pub fn decode(body: &'a [u8]) -> Result<XLogData<'a>> {
        let mut r = Reader::new(body, "XLogData");
        expect_tag(&mut r, tag::XLOG_DATA)?;
        Ok(XLogData {
            wal_start: u64_be(&mut r)?,
            wal_end: u64_be(&mut r)?,
            send_time: i64_be(&mut r)?,
            data: r.rest(),
        })
    }
}

/// Primary keepalive message (§55.4 "Primary keepalive message (B)").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    /// Current end of WAL on the server; for a logical walsender, the end of
    /// the last record it has decoded and sent.
    pub wal_end: u64,
    /// Server clock at transmission, microseconds since 2000-01-01.
    pub send_time: i64,
    /// The server asks for a Standby Status Update as soon as possible.
    pub reply_requested: bool,
}

impl PrimaryKeepalive {
    /// Decodes a keepalive body, tag included.
    pub fn decode(body: &[u8]) -> Result<PrimaryKeepalive> {
        let mut r = Reader::new(body, "PrimaryKeepalive");
        expect_tag(&mut r, tag::PRIMARY_KEEPALIVE)?;
        let keepalive = PrimaryKeepalive {
            wal_end: u64_be(&mut r)?,
            send_time: i64_be(&mut r)?,
            reply_requested: r.u8()? != 0,
        };
        r.finish()?;
        Ok(keepalive)
    }
}

/// Standby status update (§55.4 "Standby status update (F)"): positions are
/// "last WAL byte + 1" the client has written, flushed and applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    pub written: u64,
    pub flushed: u64,
    pub applied: u64,
    /// Client clock, microseconds since 2000-01-01 ([`pg_timestamp`]).
    pub client_time: i64,
    /// Ask the server to answer with a keepalive right away.
    pub reply_requested: bool,
}

impl StandbyStatusUpdate {
    /// Appends the update wrapped in a CopyData message, ready to send.
    pub fn encode(&self, buf: &mut BytesMut) {
        let start = begin_message(buf, crate::tag::frontend::COPY_DATA);
        buf.put_u8(tag::STANDBY_STATUS_UPDATE);
        buf.put_u64(self.written);
        buf.put_u64(self.flushed);
        buf.put_u64(self.applied);
        buf.put_i64(self.client_time);
        buf.put_u8(u8::from(self.reply_requested));
        finish_message(buf, start);
    }

    /// Decodes a CopyData body holding a status update (tag included).
    pub fn decode(body: &[u8]) -> Result<StandbyStatusUpdate> {
        let mut r = Reader::new(body, "StandbyStatusUpdate");
        expect_tag(&mut r, tag::STANDBY_STATUS_UPDATE)?;
        let update = StandbyStatusUpdate {
            written: u64_be(&mut r)?,
            flushed: u64_be(&mut r)?,
            applied: u64_be(&mut r)?,
            client_time: i64_be(&mut r)?,
            reply_requested: r.u8()? != 0,
        };
        r.finish()?;
        Ok(update)
    }
}

/// `time` as the protocol's timestamp: microseconds since 2000-01-01 UTC,
/// negative before it, saturating far outside it.
pub fn pg_timestamp(time: SystemTime) -> i64 {
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
    match time.duration_since(epoch) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |m| -m),
    }
}

/// A pgoutput message (protocol version 1), decoded as far as the cache's
/// invalidation needs: which relation a change touched, where commits end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogicalMessage<'a> {
    Begin(Begin),
    Commit(Commit),
    Relation(Relation<'a>),
    /// Insert into the relation with this OID; the tuple is not decoded.
    Insert {
        relation: u32,
    },
    /// Update of the relation with this OID; the tuples are not decoded.
    Update {
        relation: u32,
    },
    /// Delete from the relation with this OID; the tuple is not decoded.
    Delete {
        relation: u32,
    },
    Truncate(Truncate<'a>),
    /// Origin, Type, Message and anything newer, by tag; not decoded.
    Other(u8),
}

impl<'a> LogicalMessage<'a> {
    /// Decodes an XLogData payload. Insert, Update, Delete and [`Other`]
    /// read only their first bytes, so a prefix of a long one decodes the
    /// same as the whole message.
    ///
    /// [`Other`]: LogicalMessage::Other
    pub fn decode(data: &'a [u8]) -> Result<LogicalMessage<'a>> {
        let Some((&first, rest)) = data.split_first() else {
            return Err(Error::malformed("pgoutput", "empty message"));
        };
        match first {
            pgoutput_tag::BEGIN => Begin::decode(rest).map(LogicalMessage::Begin),
            pgoutput_tag::COMMIT => Commit::decode(rest).map(LogicalMessage::Commit),
            pgoutput_tag::RELATION => Relation::decode(rest).map(LogicalMessage::Relation),
            pgoutput_tag::INSERT => {
                change_relation(rest, "Insert").map(|relation| LogicalMessage::Insert { relation })
            }
            pgoutput_tag::UPDATE => {
                change_relation(rest, "Update").map(|relation| LogicalMessage::Update { relation })
            }
            pgoutput_tag::DELETE => {
                change_relation(rest, "Delete").map(|relation| LogicalMessage::Delete { relation })
            }
            pgoutput_tag::TRUNCATE => Truncate::decode(rest).map(LogicalMessage::Truncate),
            other => Ok(LogicalMessage::Other(other)),
        }
    }

    /// Whether [`LogicalMessage::decode`] gives the same answer for any
    /// prefix of a message with this first byte that holds its relation OID
    /// (at least [`PREFIX_DECODABLE_LEN`] bytes).
    pub fn prefix_decodable(first: u8) -> bool {
        !matches!(
            first,
            pgoutput_tag::BEGIN
                | pgoutput_tag::COMMIT
                | pgoutput_tag::RELATION
                | pgoutput_tag::TRUNCATE
        )
    }
}

/// Bytes of a pgoutput message that [`LogicalMessage::decode`] reads of a
/// message for which [`LogicalMessage::prefix_decodable`] holds: tag and OID.
pub const PREFIX_DECODABLE_LEN: usize = 1 + 4;

/// Begin (§55.9 "Begin").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the transaction's commit record.
    pub final_lsn: u64,
    /// Commit time, microseconds since 2000-01-01.
    pub commit_time: i64,
    pub xid: u32,
}

impl Begin {
    fn decode(body: &[u8]) -> Result<Begin> {
        let mut r = Reader::new(body, "Begin");
        let begin = Begin {
            final_lsn: u64_be(&mut r)?,
            commit_time: i64_be(&mut r)?,
            xid: u32_be(&mut r)?,
        };
        r.finish()?;
        Ok(begin)
    }
}

/// Commit (§55.9 "Commit").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Unused by protocol version 1; kept as sent.
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: u64,
    /// End of the commit record: the position after this transaction.
    pub end_lsn: u64,
    /// Commit time, microseconds since 2000-01-01.
    pub commit_time: i64,
}

impl Commit {
    fn decode(body: &[u8]) -> Result<Commit> {
        let mut r = Reader::new(body, "Commit");
        let commit = Commit {
            flags: r.u8()?,
            commit_lsn: u64_be(&mut r)?,
            end_lsn: u64_be(&mut r)?,
            commit_time: i64_be(&mut r)?,
        };
        r.finish()?;
        Ok(commit)
    }
}

/// Relation (§55.9 "Relation"): sent before the first change to a relation
/// in a session and again after its definition changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relation<'a> {
    pub oid: u32,
    /// Schema name; the server sends an empty string for `pg_catalog`,
    /// which this decoder turns back into `"pg_catalog"`.
    pub namespace: &'a str,
    pub name: &'a str,
    /// `relreplident`: `d`efault, `n`othing, `f`ull or `i`ndex.
    pub replica_identity: u8,
    /// Column count and column descriptions, not decoded.
    pub columns: &'a [u8],
}

impl<'a> Relation<'a> {
    fn decode(body: &'a [u8]) -> Result<Relation<'a>> {
        let mut r = Reader::new(body, "Relation");
        let oid = u32_be(&mut r)?;
        let namespace = match r.str()? {
            "" => "pg_catalog",
            ns => ns,
        };
        Ok(Relation {
            oid,
            namespace,
            name: r.str()?,
            replica_identity: r.u8()?,
            columns: r.rest(),
        })
    }
}

/// Truncate (§55.9 "Truncate"): one statement truncating several relations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncate<'a> {
    /// Bit 1: CASCADE; bit 2: RESTART IDENTITY.
    pub options: u8,
    /// The relation OIDs, 4 bytes each; the count is already checked.
    oids: &'a [u8],
}

impl<'a> Truncate<'a> {
    fn decode(body: &'a [u8]) -> Result<Truncate<'a>> {
        let mut r = Reader::new(body, "Truncate");
        let count = u32_be(&mut r)?;
        let options = r.u8()?;
        let len = usize::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| Error::malformed("Truncate", "relation count too large"))?;
        let oids = r.take(len)?;
        r.finish()?;
        Ok(Truncate { options, oids })
    }

    /// The truncated relations' OIDs, in the order sent.
    pub fn relations(&self) -> impl Iterator<Item = u32> + 'a {
        self.oids
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// The relation OID at the start of an Insert, Update or Delete body.
fn change_relation(body: &[u8], message: &'static str) -> Result<u32> {
    u32_be(&mut Reader::new(body, message))
}

fn expect_tag(r: &mut Reader<'_>, expected: u8) -> Result<()> {
    if r.u8()? == expected {
        Ok(())
    } else {
        Err(Error::malformed("replication message", "unexpected tag"))
    }
}

fn u32_be(r: &mut Reader<'_>) -> Result<u32> {
    Ok(r.i32()? as u32)
}

fn u64_be(r: &mut Reader<'_>) -> Result<u64> {
    let b = r.take(8)?;
    Ok(u64::from_be_bytes([
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
    ]))
}

fn i64_be(r: &mut Reader<'_>) -> Result<i64> {
    u64_be(r).map(|v| v as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, HEADER_LEN};
    use proptest::prelude::*;

    /// An XLogData body (tag included) around `payload`.
    fn xlog(start: u64, end: u64, time: i64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![b'w'];
        v.extend_from_slice(&start.to_be_bytes());
        v.extend_from_slice(&end.to_be_bytes());
        v.extend_from_slice(&time.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn relation_fixture() -> Vec<u8> {
        let mut v = vec![b'R'];
        v.extend_from_slice(&16_385u32.to_be_bytes());
        v.extend_from_slice(b"public\0orders\0d");
        v.extend_from_slice(&1i16.to_be_bytes());
        v.extend_from_slice(b"\x01id\0");
        v.extend_from_slice(&23u32.to_be_bytes());
        v.extend_from_slice(&(-1i32).to_be_bytes());
        v
    }

    #[test]
    fn xlog_data_fields_and_payload() {
        let body = xlog(0x16_B374_D848, 0x16_B374_D900, 42, b"B-payload");
        let m = ReplicationMessage::decode(&body).unwrap();
        let ReplicationMessage::XLogData(x) = m else {
            panic!("expected XLogData, got {m:?}");
        };
        assert_eq!(x.wal_start, 0x16_B374_D848);
        assert_eq!(x.wal_end, 0x16_B374_D900);
        assert_eq!(x.send_time, 42);
        assert_eq!(x.data, b"B-payload");
        assert!(XLogData::decode(&body[..XLOG_DATA_HEADER_LEN - 1]).is_err());
    }

    #[test]
    fn primary_keepalive_fields() {
        let mut body = vec![b'k'];
        body.extend_from_slice(&0x1_0000_0001u64.to_be_bytes());
        body.extend_from_slice(&(-5i64).to_be_bytes());
        body.push(1);
        let m = ReplicationMessage::decode(&body).unwrap();
        assert_eq!(
            m,
            ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                wal_end: 0x1_0000_0001,
                send_time: -5,
                reply_requested: true,
            })
        );
        body.push(0);
        assert!(ReplicationMessage::decode(&body).is_err(), "trailing byte");
        assert!(
            ReplicationMessage::decode(&body[..10]).is_err(),
            "truncated"
        );
        assert!(ReplicationMessage::decode(b"").is_err());
        assert!(ReplicationMessage::decode(b"x").is_err());
    }

    #[test]
    fn standby_status_update_is_a_copy_data_frame() {
        let update = StandbyStatusUpdate {
            written: 0x10,
            flushed: 0x20,
            applied: 0x30,
            client_time: 700,
            reply_requested: true,
        };
        let mut buf = BytesMut::new();
        update.encode(&mut buf);
        let mut expected = vec![b'd', 0, 0, 0, 38, b'r'];
        for v in [0x10u64, 0x20, 0x30, 700] {
            expected.extend_from_slice(&v.to_be_bytes());
        }
        expected.push(1);
        assert_eq!(&buf[..], &expected[..]);
        let frame = Frame::split(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(frame.raw.len(), HEADER_LEN + 34);
        assert_eq!(StandbyStatusUpdate::decode(frame.body()).unwrap(), update);
    }

    #[test]
    fn pg_timestamp_counts_from_2000() {
        let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
        assert_eq!(pg_timestamp(epoch), 0);
        assert_eq!(pg_timestamp(epoch + Duration::from_micros(1_500)), 1_500);
        assert_eq!(pg_timestamp(SystemTime::UNIX_EPOCH), -946_684_800_000_000);
    }

    #[test]
    fn begin_and_commit() {
        let mut begin = vec![b'B'];
        begin.extend_from_slice(&0x0300u64.to_be_bytes());
        begin.extend_from_slice(&9i64.to_be_bytes());
        begin.extend_from_slice(&731u32.to_be_bytes());
        assert_eq!(
            LogicalMessage::decode(&begin).unwrap(),
            LogicalMessage::Begin(Begin {
                final_lsn: 0x0300,
                commit_time: 9,
                xid: 731
            })
        );
        let mut commit = vec![b'C', 0];
        for v in [0x0300u64, 0x0338, 9] {
            commit.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(
            LogicalMessage::decode(&commit).unwrap(),
            LogicalMessage::Commit(Commit {
                flags: 0,
                commit_lsn: 0x0300,
                end_lsn: 0x0338,
                commit_time: 9
            })
        );
        assert!(LogicalMessage::decode(&commit[..commit.len() - 1]).is_err());
        begin.push(0);
        assert!(LogicalMessage::decode(&begin).is_err(), "trailing byte");
    }

    #[test]
    fn relation_names_and_identity() {
        let body = relation_fixture();
        let LogicalMessage::Relation(r) = LogicalMessage::decode(&body).unwrap() else {
            panic!("expected Relation");
        };
        assert_eq!((r.oid, r.namespace, r.name), (16_385, "public", "orders"));
        assert_eq!(r.replica_identity, b'd');
        assert_eq!(&r.columns[..2], &1i16.to_be_bytes());
        assert!(
            LogicalMessage::decode(&body[..12]).is_err(),
            "cut in a name"
        );
    }

    #[test]
    fn relation_in_pg_catalog_has_empty_namespace() {
        let mut body = vec![b'R'];
        body.extend_from_slice(&1259u32.to_be_bytes());
        body.extend_from_slice(b"\0pg_class\0n\0\0");
        let LogicalMessage::Relation(r) = LogicalMessage::decode(&body).unwrap() else {
            panic!("expected Relation");
        };
        assert_eq!((r.namespace, r.name), ("pg_catalog", "pg_class"));
    }

    #[test]
    fn relation_with_invalid_utf8_is_malformed() {
        let mut body = vec![b'R', 0, 0, 0, 1];
        body.extend_from_slice(b"p\xff\0t\0d");
        assert!(LogicalMessage::decode(&body).is_err());
    }

    #[test]
    fn changes_name_their_relation() {
        let mut insert = vec![b'I'];
        insert.extend_from_slice(&16_385u32.to_be_bytes());
        insert.extend_from_slice(b"N\0\x01t\0\0\0\x011");
        assert_eq!(
            LogicalMessage::decode(&insert).unwrap(),
            LogicalMessage::Insert { relation: 16_385 }
        );
        let mut update = insert.clone();
        update[0] = b'U';
        assert_eq!(
            LogicalMessage::decode(&update).unwrap(),
            LogicalMessage::Update { relation: 16_385 }
        );
        let mut delete = insert.clone();
        delete[0] = b'D';
        assert_eq!(
            LogicalMessage::decode(&delete[..PREFIX_DECODABLE_LEN]).unwrap(),
            LogicalMessage::Delete { relation: 16_385 }
        );
        assert!(LogicalMessage::decode(&insert[..4]).is_err());
        assert!(LogicalMessage::prefix_decodable(b'I'));
        assert!(!LogicalMessage::prefix_decodable(b'R'));
    }

    #[test]
    fn truncate_lists_relations() {
        let mut body = vec![b'T'];
        body.extend_from_slice(&2u32.to_be_bytes());
        body.push(1);
        body.extend_from_slice(&16_385u32.to_be_bytes());
        body.extend_from_slice(&16_390u32.to_be_bytes());
        let LogicalMessage::Truncate(t) = LogicalMessage::decode(&body).unwrap() else {
            panic!("expected Truncate");
        };
        assert_eq!(t.options, 1);
        assert_eq!(t.relations().collect::<Vec<_>>(), vec![16_385, 16_390]);
        assert!(LogicalMessage::decode(&body[..body.len() - 1]).is_err());
        let mut huge = vec![b'T'];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.push(0);
        assert!(LogicalMessage::decode(&huge).is_err());
    }

    #[test]
    fn other_messages_keep_their_tag() {
        for t in [b'O', b'Y', b'M', b'S'] {
            assert_eq!(
                LogicalMessage::decode(&[t, 1, 2]).unwrap(),
                LogicalMessage::Other(t)
            );
        }
        assert!(LogicalMessage::decode(b"").is_err());
    }

    #[test]
    fn payload_of_a_framed_xlog_data() {
        let body = xlog(1, 2, 3, &relation_fixture());
        let x = XLogData::decode(&body).unwrap();
        assert!(matches!(
            LogicalMessage::decode(x.data),
            Ok(LogicalMessage::Relation(Relation { oid: 16_385, .. }))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(ReplicationMessage::XLogData(x)) = ReplicationMessage::decode(&data) {
                let _ = LogicalMessage::decode(x.data);
            }
            let _ = StandbyStatusUpdate::decode(&data);
            if let Ok(LogicalMessage::Truncate(t)) = LogicalMessage::decode(&data) {
                let _ = t.relations().count();
            }
            let _ = format!("{:?}", LogicalMessage::decode(&data));
        }

        #[test]
        fn tagged_bytes_never_panic(
            t in prop::sample::select(vec![b'B', b'C', b'R', b'I', b'U', b'D', b'T', b'O']),
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut body = vec![t];
            body.extend_from_slice(&data);
            let _ = format!("{:?}", LogicalMessage::decode(&body));
            let _ = ReplicationMessage::decode(&xlog(0, 0, 0, &body));
        }

        #[test]
        fn status_update_round_trip(w: u64, f: u64, a: u64, t: i64, r: bool) {
            let update = StandbyStatusUpdate { written: w, flushed: f, applied: a, client_time: t, reply_requested: r };
            let mut buf = BytesMut::new();
            update.encode(&mut buf);
            let frame = Frame::split(&mut buf, 1024).unwrap().unwrap();
            prop_assert_eq!(StandbyStatusUpdate::decode(frame.body()).unwrap(), update);
        }
    }
}
