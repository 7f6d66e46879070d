//! `/metrics`: pool and proxy figures in the Prometheus text exposition
//! format 0.0.4, written by hand.
//!
//! Per-pool families carry the labels `database`, `user` and `server` and are read
//! from pool snapshots; their HELP text names the PgBouncer `SHOW POOLS` /
//! `SHOW STATS` column they correspond to, so existing dashboards map over.
//! Proxy-wide families come from the runtime's counters. Format reference:
//! <https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format>

use std::fmt::{self, Write as _};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use pgpilot_pool::PoolSnapshot;
use pgpilot_proxy::Runtime;

use crate::AdminState;

/// The exposition format's media type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's TYPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// A sample value: exact integers for counts, floats for seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl Value {
    /// Microseconds as float seconds (Prometheus' base unit for time).
    pub fn seconds_from_us(us: u64) -> Value {
        Value::Float(us as f64 / 1e6)
    }
}

impl fmt::Display for Value {
    /// Integers as digits; floats in Rust's shortest round-trip form, with
    /// the format's spellings `NaN`, `+Inf`, `-Inf` for the special values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) if x.is_nan() => f.write_str("NaN"),
            Value::Float(x) if x.is_infinite() => {
                f.write_str(if x > 0.0 { "+Inf" } else { "-Inf" })
            }
            Value::Float(x) => write!(f, "{x}"),
        }
    }
}

/// A text exposition being written. The caller writes each family's
/// header once with [`Exposition::family`], then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Writes the `# HELP` and `# TYPE` lines of family `name`.
    /// `name` must be a valid metric name; `help` is escaped.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// Writes one sample line. Label names must be valid; label values
    /// are escaped.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label_value(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes HELP text: backslash and newline.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// One per-pool family: how to name, describe and read it.
struct PoolFamily {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    value: fn(&PoolSnapshot) -> Value,
}

/// Every per-pool family, in output order.
const POOL_FAMILIES: &[PoolFamily] = &[
    PoolFamily {
        name: "pgpilot_pool_cl_active",
        kind: Kind::Gauge,
        help: "Clients logged in and not waiting (PgBouncer cl_active)",
        value: |p| Value::Int(p.cl_active),
    },
    PoolFamily {
        name: "pgpilot_pool_cl_waiting",
        kind: Kind::Gauge,
        help: "Clients waiting for a server connection (PgBouncer cl_waiting)",
        value: |p| Value::Int(p.cl_waiting),
    },
    PoolFamily {
        name: "pgpilot_pool_sv_active",
        kind: Kind::Gauge,
        help: "Server connections lent to clients (PgBouncer sv_active)",
        value: |p| Value::Int(p.sv_active),
    },
    PoolFamily {
        name: "pgpilot_pool_sv_idle",
        kind: Kind::Gauge,
        help: "Server connections idle in the pool (PgBouncer sv_idle)",
        value: |p| Value::Int(p.sv_idle),
    },
    PoolFamily {
        name: "pgpilot_pool_sv_login",
        kind: Kind::Gauge,
        help: "Server connections being opened (PgBouncer sv_login)",
        value: |p| Value::Int(p.sv_login),
    },
    PoolFamily {
        name: "pgpilot_pool_maxwait_seconds",
        kind: Kind::Gauge,
        help: "Age of the oldest waiting client in seconds (PgBouncer maxwait + maxwait_us)",
        value: |p| Value::seconds_from_us(p.maxwait_us),
    },
    PoolFamily {
        name: "pgpilot_pool_min_size",
        kind: Kind::Gauge,
        help: "Configured minimum of server connections (PgBouncer min_pool_size)",
        value: |p| Value::Int(p.min_size),
    },
    PoolFamily {
        name: "pgpilot_pool_max_size",
        kind: Kind::Gauge,
        help: "Configured maximum of server connections (PgBouncer pool_size)",
        value: |p| Value::Int(p.max_size),
    },
    PoolFamily {
        name: "pgpilot_pool_transactions_total",
        kind: Kind::Counter,
        help: "Transactions completed (PgBouncer total_xact_count)",
        value: |p| Value::Int(p.xact_count),
    },
    PoolFamily {
        name: "pgpilot_pool_queries_total",
        kind: Kind::Counter,
        help: "Queries completed (PgBouncer total_query_count)",
        value: |p| Value::Int(p.query_count),
    },
    PoolFamily {
        name: "pgpilot_pool_xact_time_seconds_total",
        kind: Kind::Counter,
        help: "Seconds servers were held for transactions (PgBouncer total_xact_time)",
        value: |p| Value::seconds_from_us(p.xact_time_us),
    },
    PoolFamily {
        name: "pgpilot_pool_query_time_seconds_total",
        kind: Kind::Counter,
        help:
            "Seconds from sending a query batch to its ReadyForQuery (PgBouncer total_query_time)",
        value: |p| Value::seconds_from_us(p.query_time_us),
    },
    PoolFamily {
        name: "pgpilot_pool_wait_time_seconds_total",
        kind: Kind::Counter,
        help: "Seconds clients waited for a server connection (PgBouncer total_wait_time)",
        value: |p| Value::seconds_from_us(p.wait_time_us),
    },
    PoolFamily {
        name: "pgpilot_pool_received_bytes_total",
        kind: Kind::Counter,
        help: "Bytes received from clients (PgBouncer total_received)",
        value: |p| Value::Int(p.bytes_received),
    },
    PoolFamily {
        name: "pgpilot_pool_sent_bytes_total",
        kind: Kind::Counter,
        help: "Bytes sent to clients (PgBouncer total_sent)",
        value: |p| Value::Int(p.bytes_sent),
    },
    PoolFamily {
        name: "pgpilot_pool_connect_errors_total",
        kind: Kind::Counter,
        help: "Server logins that failed",
        value: |p| Value::Int(p.connect_errors),
    },
    PoolFamily {
        name: "pgpilot_pool_checkout_timeouts_total",
        kind: Kind::Counter,
        help: "Clients that gave up waiting for a server connection (checkout_timeout)",
        value: |p| Value::Int(p.checkout_timeouts),
    },
];

/// One proxy-wide family with its single unlabelled sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySample {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub value: Value,
}

/// Reads the proxy-wide figures of `rt`.
pub fn proxy_samples(rt: &Runtime) -> Vec<ProxySample> {
    let c = &rt.counters;
    let sample = |name, kind, help, value| ProxySample {
        name,
        kind,
        help,
        value,
    };
    let count = |n: u64| Value::Int(n);
    vec![
        sample(
            "pgpilot_clients",
            Kind::Gauge,
            "Client connections currently open, in any phase",
            count(c.clients.load(Relaxed) as u64),
        ),
        sample(
            "pgpilot_refused_connections_total",
            Kind::Counter,
            "Client connections refused because max_client_connections was reached",
            count(c.refused_connections.load(Relaxed)),
        ),
        sample(
            "pgpilot_auth_failures_total",
            Kind::Counter,
            "Client logins that failed authentication",
            count(c.auth_failures.load(Relaxed)),
        ),
        sample(
            "pgpilot_protocol_errors_total",
            Kind::Counter,
            "Client connections closed for protocol violations",
            count(c.protocol_errors.load(Relaxed)),
        ),
        sample(
            "pgpilot_pinned_clients_total",
            Kind::Counter,
            "Clients pinned to one server connection for session state",
            count(c.pinned_clients.load(Relaxed)),
        ),
        sample(
            "pgpilot_prepared_reparses_total",
            Kind::Counter,
            "Hidden Parse messages sent to give a server a client's prepared statement",
            count(c.prepared_reparses.load(Relaxed)),
        ),
        sample(
            "pgpilot_cancels_forwarded_total",
            Kind::Counter,
            "Cancel requests forwarded to a server",
            count(c.cancels_forwarded.load(Relaxed)),
        ),
        sample(
            "pgpilot_prepared_statements",
            Kind::Gauge,
            "Distinct prepared statements known to the proxy",
            count(rt.statements.len() as u64),
        ),
        sample(
            "pgpilot_parse_cache_entries",
            Kind::Gauge,
            "Query texts whose SQL analysis is cached",
            count(rt.analyzer.cached() as u64),
        ),
    ]
}

/// Writes one per-pool family: its header, then one sample per pool.
fn write_pool_family(exp: &mut Exposition, family: &PoolFamily, pools: &[PoolSnapshot]) {
    exp.family(family.name, family.kind, family.help);
    for pool in pools {
        let labels = [
            ("database", pool.database.as_str()),
            ("user", pool.user.as_str()),
            ("server", pool.server.as_str()),
        ];
        exp.sample(family.name, &labels, (family.value)(pool));
    }
}

/// The whole exposition: every per-pool family (headers even when there
/// are no pools yet), then the proxy-wide ones.
pub fn render(pools: &[PoolSnapshot], proxy: &[ProxySample]) -> String {
    let mut exp = Exposition::default();
    for family in POOL_FAMILIES {
        write_pool_family(&mut exp, family, pools);
    }
    for s in proxy {
        exp.family(s.name, s.kind, s.help);
        exp.sample(s.name, &[], s.value);
    }
    exp.finish()
}

/// `GET /metrics`.
pub async fn handler(State(state): State<Arc<AdminState>>) -> Response {
    let mut body = render(&state.rt.backends.snapshots(), &proxy_samples(&state.rt));
    let mut servers = Exposition::default();
    crate::backends::render_metrics(&mut servers, &crate::backends::views(&state));
    crate::cache::render_metrics(&mut servers, &state);
    body.push_str(&servers.finish());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
