//! The shared second level: results kept in Redis for every pgpilot
//! instance (`cache.redis_results`), behind each instance's own cache.
//!
//! Validity works like the local cache's, with Redis counters as the
//! versions: every invalidation an instance applies increments the
//! counters of what it names (see [`invalidation_keys`], done by
//! [`crate::peers`] together with the publish). A fill reads the counters
//! of everything its result depends on *before* its query is sent, and
//! stores them with the result; a lookup returns the result only while
//! every counter still has that value. One round trip either way (a
//! pipelined GET + MGET).
//!
//! An instance never reads the shared level while its own invalidations
//! are still on their way to Redis: its session might otherwise find a
//! result its own write made stale.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pgpilot_cache::{CacheKey, Invalidation};

use super::Plan;

/// Bound on one shared-level round trip; slower answers count as misses.
const TIMEOUT: Duration = Duration::from_millis(50);

/// The counter keys an invalidation increments.
pub fn invalidation_keys(what: &Invalidation) -> Vec<String> {
    match what {
        Invalidation::Tables { database, tables } => tables
            .iter()
            .map(|t| table_key(database, pgpilot_cache::deps::table_name(t)))
            .collect(),
        Invalidation::TablesEverywhere { tables } => tables
            .iter()
            .map(|t| table_key("*", pgpilot_cache::deps::table_name(t)))
            .collect(),
        Invalidation::Tags(tags) => tags.iter().map(|t| format!("pgpilot:v#{t}")).collect(),
        Invalidation::Database(db) => vec![format!("pgpilot:v:{db}")],
        Invalidation::All => vec!["pgpilot:v".to_owned()],
    }
}

fn table_key(database: &str, table: &str) -> String {
    format!("pgpilot:v:{database}:{table}")
}

/// Every counter a result of `plan` in `database` depends on.
pub(crate) fn dependency_keys(plan: &Plan, database: &str) -> Vec<String> {
    let mut keys = vec!["pgpilot:v".to_owned(), format!("pgpilot:v:{database}")];
    for t in &plan.class.cache.reads {
        keys.push(table_key(database, &t.name));
        keys.push(table_key("*", &t.name));
    }
    keys.extend(plan.tags.iter().map(|t| format!("pgpilot:v#{t}")));
    keys
}

fn result_key(key: CacheKey) -> String {
    format!("pgpilot:r:{key}")
}

/// What the shared level said.
pub enum Shared {
    /// A valid result.
    Hit(Bytes),
    /// Nothing valid; the counters to stamp this instance's fill with.
    Miss(Vec<u64>),
    /// No answer (Redis down or slow): neither hit nor stamp.
    Unavailable,
}

/// Looks `key` up; `deps` from [`dependency_keys`].
pub async fn lookup(
    mut conn: redis::aio::MultiplexedConnection,
    key: CacheKey,
    deps: &[String],
) -> Shared {
    let mut pipe = redis::pipe();
    pipe.cmd("GET").arg(result_key(key)).cmd("MGET").arg(deps);
    let answer = tokio::time::timeout(
        TIMEOUT,
        pipe.query_async::<(Option<Vec<u8>>, Vec<Option<u64>>)>(&mut conn),
    )
    .await;
    let Ok(Ok((stored, counters))) = answer else {
        return Shared::Unavailable;
    };
    let now: Vec<u64> = counters.into_iter().map(|c| c.unwrap_or(0)).collect();
    match stored.and_then(|v| decode(&v)) {
        Some((stamp, response)) if stamp == now => Shared::Hit(response),
        _ => Shared::Miss(now),
    }
}

/// Stores a fill stamped with the counters read before its query.
pub async fn store(
    mut conn: redis::aio::MultiplexedConnection,
    key: CacheKey,
    stamp: &[u64],
    response: &[u8],
    ttl: Duration,
) -> bool {
    let value = encode(stamp, response);
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut set = redis::cmd("SET");
    set.arg(result_key(key)).arg(value).arg("PX").arg(ms);
    matches!(
        tokio::time::timeout(TIMEOUT, set.query_async::<()>(&mut conn)).await,
        Ok(Ok(()))
    )
}

fn encode(stamp: &[u64], response: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(4 + stamp.len() * 8 + response.len());
    out.put_u32(u32::try_from(stamp.len()).unwrap_or(u32::MAX));
    for v in stamp {
        out.put_u64(*v);
    }
    out.put_slice(response);
    out.to_vec()
}

/// `None` for anything malformed (another version's format, corruption).
fn decode(value: &[u8]) -> Option<(Vec<u64>, Bytes)> {
    let mut b = value;
    if b.len() < 4 {
        return None;
    }
    let n = b.get_u32() as usize;
    if b.len() < n.checked_mul(8)? {
        return None;
    }
    let stamp = (0..n).map(|_| b.get_u64()).collect();
    Some((stamp, Bytes::copy_from_slice(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_garbage_is_none() {
        let v = encode(&[1, 2, 3], b"rows");
        assert_eq!(
            decode(&v),
            Some((vec![1, 2, 3], Bytes::from_static(b"rows")))
        );
        assert_eq!(decode(b"\0\0"), None);
        assert_eq!(decode(&[0, 0, 0, 9, 1, 2]), None);
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn an_invalidation_touches_keys_entries_depend_on() {
        let inv = invalidation_keys(&Invalidation::Tables {
            database: "app".into(),
            tables: vec!["public.t".into()],
        });
        assert_eq!(inv, vec!["pgpilot:v:app:t".to_owned()]);
        let everywhere = invalidation_keys(&Invalidation::TablesEverywhere {
            tables: vec!["t".into()],
        });
        assert_eq!(everywhere, vec!["pgpilot:v:*:t".to_owned()]);
        assert_eq!(
            invalidation_keys(&Invalidation::All),
            vec!["pgpilot:v".to_owned()]
        );
    }
}
