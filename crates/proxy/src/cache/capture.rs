//! Recording a server's response for a cache fill.
//!
//! A capture covers a range of the session's awaited responses (absolute
//! [`crate::expect::ExpectQueue`] indexes): the one Query entry of a simple
//! query, or the Bind, Describe and Execute entries of an extended batch.
//! Each backend message is offered with the index of the entry it answers;
//! what the client sees from that range (BindComplete, RowDescription or
//! NoData, DataRows, CommandComplete) is copied. Anything that makes the
//! response session-specific or incomplete — an error, a notice, a
//! ParameterStatus, a suspended portal, COPY — abandons the fill, which
//! wakes its followers to run the query themselves.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::BytesMut;
use pgpilot_cache::{Fill, FillTicket};
use pgpilot_wire::tag::backend as tag;

use super::shared;
use super::Plan;
use crate::session::Session;

/// Which response shape is being recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A simple Query: complete at ReadyForQuery (idle).
    Simple,
    /// Bind … Execute: complete at the Execute's CommandComplete.
    Extended,
}

/// One fill in progress.
#[derive(Debug)]
pub(crate) struct Capture {
    ticket: FillTicket,
    plan: Plan,
    shape: Shape,
    first: u64,
    last: u64,
    /// [`crate::expect::ExpectQueue::reshuffles`] when the range was taken.
    reshuffles: u64,
    buf: BytesMut,
}

/// What a message does to the capture it belongs to.
enum Step {
    Keep,
    Skip,
    Finish,
    Abandon,
}

impl Session {
    /// Starts recording the responses to entries `first..=last` for `ticket`.
    pub(crate) fn start_capture(
        &mut self,
        ticket: FillTicket,
        plan: Plan,
        shape: Shape,
        range: (u64, u64),
    ) {
        self.cache.captures.push_back(Capture {
            ticket,
            plan,
            shape,
            first: range.0,
            last: range.1,
            reshuffles: self.expect.reshuffles(),
            buf: BytesMut::new(),
        });
    }

    /// Offers a backend message answering the entry at `index` (`hidden`:
    /// an answer to pgpilot's own request) to the capture covering it.
    pub(crate) fn capture_message(&mut self, index: u64, hidden: bool, msg_tag: u8, msg: &[u8]) {
        let reshuffles = self.expect.reshuffles();
        while let Some(c) = self.cache.captures.front() {
            if c.reshuffles != reshuffles || index > c.last {
                // Its range was skipped (an error up to Sync) or moved (COPY).
                self.cache.captures.pop_front();
                continue;
            }
            if index < c.first {
                return;
            }
            break;
        }
        let max = self.rt.cache.limits().max_result_size;
        let Some(c) = self.cache.captures.front_mut() else {
            return;
        };
        let step = step(c, index, hidden, msg_tag, msg);
        match step {
            Step::Keep if c.buf.len() + msg.len() > max => {
                self.cache.captures.pop_front();
            }
            Step::Keep => c.buf.extend_from_slice(msg),
            Step::Skip => {}
            Step::Finish => {
                if c.shape == Shape::Extended {
                    c.buf.extend_from_slice(msg);
                }
                if let Some(c) = self.cache.captures.pop_front() {
                    self.finish_capture(c);
                }
            }
            Step::Abandon => {
                self.cache.captures.pop_front();
            }
        }
    }

    /// Stores a captured result locally and then, with the TTL the local
    /// cache gave it, in the shared Redis level. A result the local cache
    /// refuses (too large, or it raced a write) is not shared either.
    fn finish_capture(&mut self, c: Capture) {
        let response = c.buf.freeze();
        let key = c.ticket.key();
        let fill = self.fill_for(&c.plan, response.clone());
        let Ok(ttl) = self.rt.cache.complete(c.ticket, fill, Instant::now()) else {
            return;
        };
        if let (Some(stamp), Some(conn)) = (c.plan.stamp, self.rt.peers.store_conn()) {
            let rt = self.rt.clone();
            tokio::spawn(async move {
                if shared::store(conn, key, &stamp, &response, ttl).await {
                    rt.peers.shared_stores.fetch_add(1, Relaxed);
                }
            });
        }
    }

    /// What the local cache stores for `plan`'s result `response`.
    pub(crate) fn fill_for(&self, plan: &Plan, response: bytes::Bytes) -> Fill {
        Fill {
            response,
            database: self.database.as_str().into(),
            user: self.user.name.as_str().into(),
            sql: plan.sql.clone(),
            shape: plan.shape,
            tables: plan
                .class
                .cache
                .reads
                .iter()
                .map(|t| t.name.clone())
                .collect(),
            tags: plan.tags.clone(),
            ttl: plan.ttl,
        }
    }

    /// The server is gone or the session ends: no capture can complete.
    pub(crate) fn abandon_captures(&mut self) {
        self.cache.captures.clear();
    }
}

fn step(c: &Capture, index: u64, hidden: bool, msg_tag: u8, msg: &[u8]) -> Step {
    match msg_tag {
        tag::ERROR_RESPONSE => return Step::Abandon,
        // Delivered live; not part of the result.
        tag::NOTIFICATION_RESPONSE => return Step::Skip,
        _ if hidden => return Step::Skip,
        _ => {}
    }
    match (c.shape, msg_tag) {
        (_, tag::DATA_ROW | tag::ROW_DESCRIPTION) => Step::Keep,
        (Shape::Extended, tag::BIND_COMPLETE | tag::NO_DATA) => Step::Keep,
        (Shape::Extended, tag::COMMAND_COMPLETE) if index == c.last => Step::Finish,
        (Shape::Simple, tag::COMMAND_COMPLETE) => Step::Keep,
        (Shape::Simple, tag::READY_FOR_QUERY) if msg.get(5) == Some(&b'I') => Step::Finish,
        _ => Step::Abandon,
    }
}
