//! The result cache's invalidation feed: a logical replication connection
//! to the primary that reports which tables each committed transaction
//! wrote, and a watermark LSN up to which every commit has been reported.
//!
//! One call of [`stream_once`] is one connection lifetime: log in with
//! `replication=database`, make sure the publication exists, create a
//! TEMPORARY pgoutput slot (dropped by the server when the connection ends,
//! so nothing leaks), START_REPLICATION, then decode until the connection
//! fails. The caller reconnects; every new stream starts with
//! [`WalEvent::Started`] because commits in between were missed.
//!
//! This file sets the stream up; [`copy_both`] runs it and [`decoder`]
//! turns its messages into events. Codec: `pgpilot_wire::replication`;
//! login and setup queries: `pgpilot_pool::{login, probe}`. Protocol:
//! PostgreSQL docs §55.4 "Streaming Replication Protocol", §55.9
//! "Logical Replication Message Formats".

mod copy_both;
mod decoder;

use std::time::Duration;

use bytes::BytesMut;
use pgpilot_pool::login::{self, LoginParams};
use pgpilot_pool::probe::{self, format_lsn, parse_lsn};
use pgpilot_pool::ServerConn;
use pgpilot_sql::quote;
use pgpilot_wire::backend::ErrorFields;
use pgpilot_wire::tag::backend as tag;
use pgpilot_wire::{frontend, Frame};
use tokio::io::AsyncWriteExt;

use copy_both::Stream;

/// Largest message buffered whole. Bigger XLogData carrying a row change
/// is read up to its relation OID and the rest skipped as it arrives, so a
/// huge row costs no memory; anything else bigger is a protocol error.
const MAX_BUFFERED_MESSAGE: usize = 64 << 20;

/// Longest slot name PostgreSQL accepts (NAMEDATALEN - 1).
const MAX_SLOT_NAME: usize = 63;

/// What [`stream_once`] connects to and how it paces itself.
#[derive(Debug, Clone)]
pub struct WalStreamParams {
    /// The primary and a role with the REPLICATION attribute (or superuser).
    pub login: LoginParams,
    /// Publication to stream; its tables are the ones reported.
    pub publication: String,
    /// Create the publication `FOR ALL TABLES` when it is missing (needs a
    /// superuser); otherwise a missing publication is an error.
    pub create_publication: bool,
    /// Slot names are `<slot_prefix>_<16 random hex digits>`; the prefix
    /// may hold lower-case letters, digits and `_`, at most 46 of them.
    pub slot_prefix: String,
    /// How often to send a Standby Status Update asking for a keepalive,
    /// which moves the watermark while the database is idle.
    pub status_interval: Duration,
    /// Bound on everything before streaming starts: login, publication
    /// check, slot creation (which waits for running transactions) and
    /// START_REPLICATION.
    pub connect_timeout: Duration,
}

/// What the stream reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalEvent {
    /// Streaming began at `lsn`; changes committed before may have been missed (the cache must flush).
    Started { lsn: u64 },
    /// A transaction committed; `tables` are the (schema, relname) pairs it inserted/updated/deleted/truncated; `end_lsn` its end position.
    ///
    /// `tables` is sorted and free of duplicates. It may be empty (servers
    /// before 15 send transactions that changed no published table).
    Commit {
        end_lsn: u64,
        tables: Vec<(String, String)>,
    },
    /// Every transaction that committed before `lsn` has been delivered.
    ///
    /// Never decreases within a stream; repeats are heartbeats.
    Watermark(u64),
}

/// Why a stream could not start or ended.
#[derive(Debug, thiserror::Error)]
pub enum WalStreamError {
    /// Login or a setup query failed below the protocol level (I/O,
    /// authentication, login timeout, bad framing).
    #[error("{step}: {source}")]
    Pool {
        step: &'static str,
        #[source]
        source: pgpilot_pool::Error,
    },
    /// The server answered `step` with an ErrorResponse, e.g. 42501 when
    /// a non-superuser asks for CREATE PUBLICATION, 42710 for a slot name
    /// in use, or 57P01 when the server shuts down.
    #[error("server {addr}: {step} failed: {code} {message}")]
    Server {
        addr: String,
        step: &'static str,
        code: String,
        message: String,
    },
    /// The publication does not exist and `create_publication` is off.
    #[error("server {addr}: publication {publication:?} does not exist")]
    PublicationMissing { addr: String, publication: String },
    /// `slot_prefix` would not make a valid slot name.
    #[error("slot prefix {prefix:?} must be at most 46 characters of a-z, 0-9 and _")]
    InvalidSlotPrefix { prefix: String },
    /// Setup did not reach streaming within `connect_timeout`.
    #[error("server {addr}: replication setup took longer than {timeout:?}")]
    SetupTimeout { addr: String, timeout: Duration },
    /// The connection failed or the server closed it mid-stream.
    #[error("server {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The server sent bytes that do not decode.
    #[error("server {addr}: protocol error: {source}")]
    Protocol {
        addr: String,
        #[source]
        source: pgpilot_wire::Error,
    },
    /// The server sent a well-formed message that makes no sense here.
    #[error("server {addr}: {fault}")]
    Unexpected { addr: String, fault: StreamFault },
}

/// A valid message at a place the protocol does not allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamFault {
    #[error("{step}: unexpected message {tag:?}")]
    Message { step: &'static str, tag: char },
    #[error("CREATE_REPLICATION_SLOT returned no consistent point")]
    NoConsistentPoint,
    #[error("Begin inside an open transaction")]
    NestedBegin,
    #[error("Commit without Begin")]
    CommitWithoutBegin,
    #[error("row change outside a transaction")]
    ChangeOutsideTransaction,
    #[error("change to relation {oid} before its Relation message")]
    UnknownRelation { oid: u32 },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, WalStreamError>;

/// Streams invalidation events from one replication connection into
/// `on_event` until the connection ends. `Ok(())` means the server ended
/// the stream cleanly (shutdown); errors cover everything else. Either way
/// the caller reconnects, and the next stream begins with `Started`.
pub async fn stream_once(
    params: &WalStreamParams,
    on_event: &mut (dyn FnMut(WalEvent) + Send),
) -> Result<()> {
    let slot = slot_name(&params.slot_prefix, rand::random())?;
    let timeout = params.connect_timeout;
    let (conn, lsn) = tokio::time::timeout(timeout, start(params, &slot))
        .await
        .map_err(|_| WalStreamError::SetupTimeout {
            addr: params.login.addr.clone(),
            timeout,
        })??;
    on_event(WalEvent::Started { lsn });
    Stream::new(conn, lsn)
        .run(params.status_interval, on_event)
        .await
}

/// `<prefix>_<suffix as 16 hex digits>`, checked against PostgreSQL's
/// rules for slot names.
fn slot_name(prefix: &str, suffix: u64) -> Result<String> {
    let valid = prefix
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let name = format!("{prefix}_{suffix:016x}");
    if valid && name.len() <= MAX_SLOT_NAME {
        Ok(name)
    } else {
        Err(WalStreamError::InvalidSlotPrefix {
            prefix: prefix.to_owned(),
        })
    }
}

/// Login through START_REPLICATION; the connection in CopyBoth mode and
/// the slot's consistent point.
async fn start(params: &WalStreamParams, slot: &str) -> Result<(ServerConn, u64)> {
    let startup = [
        ("replication", "database"),
        ("client_encoding", "UTF8"),
        ("application_name", "pgpilot-walstream"),
    ];
    let mut conn = login::connect_with(&params.login, &startup, params.connect_timeout)
        .await
        .map_err(|e| pool_error("login", e))?;
    ensure_publication(&mut conn, params).await?;
    let lsn = create_slot(&mut conn, slot).await?;
    start_replication(&mut conn, slot, lsn, &params.publication).await?;
    Ok((conn, lsn))
}

/// Checks that the publication exists, creating it if allowed. A
/// concurrent creator winning the race (42710) counts as success.
async fn ensure_publication(conn: &mut ServerConn, params: &WalStreamParams) -> Result<()> {
    let rows = probe::query(conn, "SELECT pubname FROM pg_catalog.pg_publication")
        .await
        .map_err(|e| pool_error("publication check", e))?;
    let wanted = params.publication.as_str();
    if rows
        .iter()
        .any(|r| r.first().and_then(Option::as_deref) == Some(wanted))
    {
        return Ok(());
    }
    if !params.create_publication {
        return Err(WalStreamError::PublicationMissing {
            addr: conn.addr.to_string(),
            publication: params.publication.clone(),
        });
    }
    let sql = format!("CREATE PUBLICATION {} FOR ALL TABLES", quote::ident(wanted));
    match probe::query(conn, &sql).await {
        Ok(_) => Ok(()),
        Err(pgpilot_pool::Error::Server { fields, .. }) if fields.code == "42710" => Ok(()),
        Err(e) => Err(pool_error("CREATE PUBLICATION", e)),
    }
}

/// Creates the temporary slot; its consistent point, where streaming starts.
async fn create_slot(conn: &mut ServerConn, slot: &str) -> Result<u64> {
    // NOEXPORT_SNAPSHOT: nobody imports it, and it is the spelling every
    // server since 10 accepts.
    let sql =
        format!("CREATE_REPLICATION_SLOT {slot} TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT");
    let rows = probe::query(conn, &sql)
        .await
        .map_err(|e| pool_error("CREATE_REPLICATION_SLOT", e))?;
    rows.first()
        .and_then(|r| r.get(1))
        .and_then(|v| v.as_deref())
        .and_then(parse_lsn)
        .ok_or_else(|| WalStreamError::Unexpected {
            addr: conn.addr.to_string(),
            fault: StreamFault::NoConsistentPoint,
        })
}

/// Sends START_REPLICATION and waits for CopyBothResponse.
async fn start_replication(
    conn: &mut ServerConn,
    slot: &str,
    lsn: u64,
    publication: &str,
) -> Result<()> {
    // pgoutput splits publication_names as a list of identifiers, so the
    // name is quoted as one, then as a replication-grammar string.
    let names = quote::ident(publication).replace('\'', "''");
    let sql = format!(
        "START_REPLICATION SLOT {slot} LOGICAL {} (proto_version '1', publication_names '{names}')",
        format_lsn(lsn)
    );
    let mut out = BytesMut::new();
    frontend::query(&mut out, &sql);
    conn.stream
        .write_all(&out)
        .await
        .map_err(|e| io_error(conn, e))?;
    loop {
        let frame = probe::read_frame(conn, MAX_BUFFERED_MESSAGE)
            .await
            .map_err(|e| pool_error("START_REPLICATION", e))?;
        match frame.tag {
            tag::COPY_BOTH_RESPONSE => return Ok(()),
            tag::ERROR_RESPONSE => return Err(server_error(conn, "START_REPLICATION", &frame)),
            tag::NOTICE_RESPONSE | tag::PARAMETER_STATUS => {}
            other => return Err(unexpected(conn, "START_REPLICATION", other)),
        }
    }
}

fn pool_error(step: &'static str, e: pgpilot_pool::Error) -> WalStreamError {
    match e {
        pgpilot_pool::Error::Server { addr, fields } => WalStreamError::Server {
            addr,
            step,
            code: fields.code,
            message: fields.message,
        },
        source => WalStreamError::Pool { step, source },
    }
}

fn server_error(conn: &ServerConn, step: &'static str, frame: &Frame) -> WalStreamError {
    server_error_body(conn, step, frame.body())
}

fn server_error_body(conn: &ServerConn, step: &'static str, body: &[u8]) -> WalStreamError {
    match ErrorFields::decode(body) {
        Ok(fields) => WalStreamError::Server {
            addr: conn.addr.to_string(),
            step,
            code: fields.code,
            message: fields.message,
        },
        Err(source) => protocol_error(conn, source),
    }
}

fn unexpected(conn: &ServerConn, step: &'static str, tag: u8) -> WalStreamError {
    WalStreamError::Unexpected {
        addr: conn.addr.to_string(),
        fault: StreamFault::Message {
            step,
            tag: char::from(tag),
        },
    }
}

fn protocol_error(conn: &ServerConn, source: pgpilot_wire::Error) -> WalStreamError {
    WalStreamError::Protocol {
        addr: conn.addr.to_string(),
        source,
    }
}

fn io_error(conn: &ServerConn, source: std::io::Error) -> WalStreamError {
    WalStreamError::Io {
        addr: conn.addr.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_follow_postgres_rules() {
        assert_eq!(
            slot_name("pgpilot", 0xab).unwrap(),
            "pgpilot_00000000000000ab"
        );
        assert!(slot_name(&"a".repeat(46), 1).is_ok());
        assert!(slot_name(&"a".repeat(47), 1).is_err());
        for bad in ["Upper", "dash-ed", "sp ace", "é"] {
            assert!(slot_name(bad, 1).is_err(), "{bad}");
        }
    }
}
