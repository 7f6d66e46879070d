//! `/api/pools`: every pool's snapshot as JSON, for the dashboard and for
//! scripts. Same figures as `/metrics`, with times in milliseconds.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use pgpilot_pool::PoolSnapshot;
use serde::Serialize;

use crate::AdminState;

/// One pool as the API shows it: all of [`PoolSnapshot`], times converted
/// from microseconds to (fractional) milliseconds and renamed `*_ms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolView {
    /// `host:port` of the server the pool logs into.
    pub server: String,
    pub database: String,
    pub user: String,
    /// Clients logged in and not waiting for a server.
    pub cl_active: u64,
    /// Clients waiting for a server connection.
    pub cl_waiting: u64,
    /// Server connections lent to clients.
    pub sv_active: u64,
    /// Server connections idle in the pool.
    pub sv_idle: u64,
    /// Server connections being opened.
    pub sv_login: u64,
    /// Age of the oldest waiting client.
    pub maxwait_ms: f64,
    /// Transactions completed.
    pub xact_count: u64,
    /// Queries completed.
    pub query_count: u64,
    /// Total time servers were held for transactions.
    pub xact_time_ms: f64,
    /// Total time from sending a query batch to its ReadyForQuery.
    pub query_time_ms: f64,
    /// Total time clients waited for a server connection.
    pub wait_time_ms: f64,
    /// Bytes received from clients.
    pub bytes_received: u64,
    /// Bytes sent to clients.
    pub bytes_sent: u64,
    /// Server logins that failed.
    pub connect_errors: u64,
    /// Checkouts that timed out.
    pub checkout_timeouts: u64,
    /// Configured connections kept open even when idle.
    pub min_size: u64,
    /// Configured most connections open at once.
    pub max_size: u64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl From<&PoolSnapshot> for PoolView {
    fn from(p: &PoolSnapshot) -> PoolView {
        PoolView {
            server: p.server.clone(),
            database: p.database.clone(),
            user: p.user.clone(),
            cl_active: p.cl_active,
            cl_waiting: p.cl_waiting,
            sv_active: p.sv_active,
            sv_idle: p.sv_idle,
            sv_login: p.sv_login,
            maxwait_ms: ms(p.maxwait_us),
            xact_count: p.xact_count,
            query_count: p.query_count,
            xact_time_ms: ms(p.xact_time_us),
            query_time_ms: ms(p.query_time_us),
            wait_time_ms: ms(p.wait_time_us),
            bytes_received: p.bytes_received,
            bytes_sent: p.bytes_sent,
            connect_errors: p.connect_errors,
            checkout_timeouts: p.checkout_timeouts,
            min_size: p.min_size,
            max_size: p.max_size,
        }
    }
}

/// `GET /api/pools`: a JSON array of [`PoolView`], sorted by database, user.
pub async fn handler(State(state): State<Arc<AdminState>>) -> Json<Vec<PoolView>> {
    Json(
        state
            .rt
            .backends
            .snapshots()
            .iter()
            .map(PoolView::from)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_keeps_counts_and_converts_times_to_ms() {
        let snap = PoolSnapshot {
            database: "app".into(),
            user: "u".into(),
            sv_idle: 4,
            maxwait_us: 2_500,
            xact_count: 9,
            xact_time_us: 1_000_000,
            max_size: 20,
            ..PoolSnapshot::default()
        };
        let json = serde_json::to_value(PoolView::from(&snap)).unwrap();
        assert_eq!(json["database"], "app");
        assert_eq!(json["user"], "u");
        assert_eq!(json["sv_idle"], 4);
        assert_eq!(json["maxwait_ms"], 2.5);
        assert_eq!(json["xact_count"], 9);
        assert_eq!(json["xact_time_ms"], 1000.0);
        assert_eq!(json["max_size"], 20);
        assert_eq!(
            json.as_object().map(|o| o.len()),
            Some(20),
            "every snapshot field is shown"
        );
    }
}
