//! `/api/backends`: the servers behind the proxy — list them with role,
//! health, breaker state and lag; add one, drain one, remove one at run
//! time — and their per-server metric families for `/metrics`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pgpilot_proxy::backends::{Backend, Role};
use serde::{Deserialize, Serialize};

use crate::metrics::{Exposition, Kind, Value};
use crate::AdminState;

/// One server as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendView {
    pub id: u32,
    /// `host:port`.
    pub addr: String,
    /// `primary` or `replica`.
    pub role: &'static str,
    /// The last health probe succeeded.
    pub healthy: bool,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// No new transactions start here.
    pub draining: bool,
    /// Last sampled WAL position (replay LSN on a replica).
    pub lsn: String,
    /// WAL bytes behind the primary.
    pub lag_bytes: u64,
    /// Replay delay behind the primary, in seconds.
    pub lag_seconds: f64,
    pub reads_routed: u64,
    pub writes_routed: u64,
    pub ryw_fallbacks: u64,
    pub read_fallbacks: u64,
    pub probe_failures: u64,
}

impl BackendView {
    fn of(b: &Backend, now: Instant) -> BackendView {
        let (lag_bytes, lag_ms) = b.lag();
        let c = &b.counters;
        BackendView {
            id: b.id,
            addr: b.addr.clone(),
            role: b.role().as_str(),
            healthy: b.is_healthy(),
            breaker: b.breaker_state(now).as_str(),
            draining: b.is_draining(),
            lsn: pgpilot_pool::probe::format_lsn(b.position().0),
            lag_bytes,
            lag_seconds: lag_ms as f64 / 1000.0,
            reads_routed: c.reads_routed.load(Relaxed),
            writes_routed: c.writes_routed.load(Relaxed),
            ryw_fallbacks: c.ryw_fallbacks.load(Relaxed),
            read_fallbacks: c.read_fallbacks.load(Relaxed),
            probe_failures: c.probe_failures.load(Relaxed),
        }
    }
}

/// `GET /api/backends`.
pub async fn list(State(state): State<Arc<AdminState>>) -> Json<Vec<BackendView>> {
    Json(views(&state))
}

/// Body of `POST /api/backends`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBackend {
    /// `host:port`.
    pub addr: String,
    /// `replica` (default) or `primary`.
    #[serde(default)]
    pub role: Option<String>,
}

/// `POST /api/backends`: adds a server; 201 with its view.
pub async fn add(State(state): State<Arc<AdminState>>, Json(body): Json<NewBackend>) -> Response {
    let role = match body.role.as_deref() {
        None | Some("replica") => Role::Replica,
        Some("primary") => Role::Primary,
        Some(other) => {
            return bad_request(format!(
                "role must be \"primary\" or \"replica\", not {other:?}"
            ))
        }
    };
    if body.addr.parse::<std::net::SocketAddr>().is_err() && !body.addr.contains(':') {
        return bad_request(format!("addr must be host:port, not {:?}", body.addr));
    }
    if state.rt.backends.all().iter().any(|b| b.addr == body.addr) {
        return (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "error": "server already present" })),
        )
            .into_response();
    }
    let settings = state.rt.settings.load();
    let b = state.rt.backends.add(&settings, body.addr, role);
    (
        StatusCode::CREATED,
        Json(BackendView::of(&b, Instant::now())),
    )
        .into_response()
}

/// `POST /api/backends/{id}/drain`: no new transactions; running ones finish.
pub async fn drain(State(state): State<Arc<AdminState>>, Path(id): Path<u32>) -> Response {
    match state.rt.backends.drain(id) {
        Some(b) => Json(BackendView::of(&b, Instant::now())).into_response(),
        None => not_found(id),
    }
}

/// `DELETE /api/backends/{id}`: removes the server; lent connections close
/// when their transaction ends.
pub async fn remove(State(state): State<Arc<AdminState>>, Path(id): Path<u32>) -> Response {
    match state.rt.backends.remove(id) {
        Some(b) => Json(BackendView::of(&b, Instant::now())).into_response(),
        None => not_found(id),
    }
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

fn not_found(id: u32) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": format!("no server with id {id}") })),
    )
        .into_response()
}

/// A per-server metric family.
struct ServerFamily {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    value: fn(&BackendView) -> Value,
}

const SERVER_FAMILIES: &[ServerFamily] = &[
    ServerFamily {
        name: "pgpilot_server_up",
        kind: Kind::Gauge,
        help: "1 when the last health probe succeeded",
        value: |v| Value::Int(v.healthy as u64),
    },
    ServerFamily {
        name: "pgpilot_server_breaker_open",
        kind: Kind::Gauge,
        help: "1 while the circuit breaker keeps traffic away (open or half-open)",
        value: |v| Value::Int((v.breaker != "closed") as u64),
    },
    ServerFamily {
        name: "pgpilot_server_draining",
        kind: Kind::Gauge,
        help: "1 while the server takes no new transactions",
        value: |v| Value::Int(v.draining as u64),
    },
    ServerFamily {
        name: "pgpilot_server_lag_bytes",
        kind: Kind::Gauge,
        help: "WAL bytes the server is behind the primary",
        value: |v| Value::Int(v.lag_bytes),
    },
    ServerFamily {
        name: "pgpilot_server_lag_seconds",
        kind: Kind::Gauge,
        help: "Replay delay behind the primary",
        value: |v| Value::Float(v.lag_seconds),
    },
    ServerFamily {
        name: "pgpilot_server_reads_routed_total",
        kind: Kind::Counter,
        help: "Read transactions routed to the server",
        value: |v| Value::Int(v.reads_routed),
    },
    ServerFamily {
        name: "pgpilot_server_writes_routed_total",
        kind: Kind::Counter,
        help: "Write transactions routed to the server",
        value: |v| Value::Int(v.writes_routed),
    },
    ServerFamily {
        name: "pgpilot_server_ryw_fallbacks_total",
        kind: Kind::Counter,
        help: "Reads sent to the primary because no replica had replayed the client's own write",
        value: |v| Value::Int(v.ryw_fallbacks),
    },
    ServerFamily {
        name: "pgpilot_server_read_fallbacks_total",
        kind: Kind::Counter,
        help: "Reads sent to the primary because no replica could serve them",
        value: |v| Value::Int(v.read_fallbacks),
    },
    ServerFamily {
        name: "pgpilot_server_probe_failures_total",
        kind: Kind::Counter,
        help: "Failed health probes and requests",
        value: |v| Value::Int(v.probe_failures),
    },
];

/// Writes every per-server family (labels `server`, `role`).
pub fn render_metrics(exp: &mut Exposition, views: &[BackendView]) {
    for family in SERVER_FAMILIES {
        exp.family(family.name, family.kind, family.help);
        for v in views {
            exp.sample(
                family.name,
                &[("server", v.addr.as_str()), ("role", v.role)],
                (family.value)(v),
            );
        }
    }
}

/// Views of every server, for the API and `/metrics`.
pub fn views(state: &AdminState) -> Vec<BackendView> {
    let now = Instant::now();
    state
        .rt
        .backends
        .all()
        .iter()
        .map(|b| BackendView::of(b, now))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> BackendView {
        BackendView {
            id: 2,
            addr: "127.0.0.1:5433".into(),
            role: "replica",
            healthy: true,
            breaker: "closed",
            draining: false,
            lsn: "0/3000060".into(),
            lag_bytes: 128,
            lag_seconds: 0.25,
            reads_routed: 7,
            writes_routed: 0,
            ryw_fallbacks: 1,
            read_fallbacks: 0,
            probe_failures: 0,
        }
    }

    #[test]
    fn server_families_render_with_server_and_role_labels() {
        let mut exp = Exposition::default();
        render_metrics(&mut exp, &[view()]);
        let text = exp.finish();
        assert!(
            text.contains(
                "pgpilot_server_lag_bytes{server=\"127.0.0.1:5433\",role=\"replica\"} 128\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "pgpilot_server_lag_seconds{server=\"127.0.0.1:5433\",role=\"replica\"} 0.25\n"
        ));
        assert!(text.contains(
            "pgpilot_server_reads_routed_total{server=\"127.0.0.1:5433\",role=\"replica\"} 7\n"
        ));
        assert_eq!(text.matches("# TYPE pgpilot_server_up gauge").count(), 1);
    }
}
