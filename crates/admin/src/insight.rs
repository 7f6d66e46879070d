//! Query insight over JSON: `/api/queries` (top fingerprints, one
//! fingerprint's detail and stored history), `/api/findings`,
//! `/api/endpoints` and `/api/slow`. Reads the [`Insight`] the proxy's
//! session feeds; never changes it.
//!
//! Two shapes are a contract outside tools rely on: `/api/queries` returns
//! [`QueryView`]s (`fingerprint`, `query`, `calls`, `total_ms`, `p50_ms`,
//! `p95_ms`, `p99_ms` at least) and `/api/findings` returns
//! [`FindingView`]s (`kind`, `rule`, `fingerprint`, `endpoint`, `message`,
//! `fix`). Query parameters are checked strictly: an unknown, repeated or
//! malformed one is a 400 `{"error": …}` rather than a silent default.
//!
//! The insight calls take the statistics lock and may scan every histogram,
//! so they run on a blocking thread, as does the SQLite history read.
//!
//! [`Insight`]: pgpilot_insight::Insight

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pgpilot_insight::plans::PlanInsight;
use pgpilot_insight::{
    EndpointOrder, EndpointView, FindingView, HistoryPoint, QueryInsight, QueryView, SlowEntry,
    TopBy,
};

use crate::AdminState;

/// Rows returned when a request gives no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 10_000;

/// The `order` values of `/api/queries`, for error messages.
const QUERY_ORDERS: &str = "total_time, p99, calls, mean or errors";
/// The `order` values of `/api/endpoints`, for error messages.
const ENDPOINT_ORDERS: &str = "total_time, mean, p99 or calls";

/// Why a request failed; answered as `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: a query parameter or the fingerprint in the path is malformed.
    BadRequest(String),
    /// 404: the fingerprint is not tracked.
    NotFound(String),
    /// 500: the history store failed, or the blocking task did.
    Internal(String),
    /// 503: no server could run an on-demand EXPLAIN.
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The query string as name/value pairs, or axum's rejection of it.
type RawParams = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// `order` and `limit` of a ranked list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListParams<O> {
    pub order: O,
    pub limit: usize,
}

/// `GET /api/queries?order=total_time|p99|calls|mean|errors&limit=N`: a JSON
/// array of [`QueryView`], highest first (default `total_time`, 100 rows).
pub async fn queries(
    State(state): State<Arc<AdminState>>,
    params: RawParams,
) -> ApiResult<Vec<QueryView>> {
    let ListParams { order, limit } = parse_top(&pairs(params)?)?;
    let insight = state.rt.insight.clone();
    blocking(move || insight.top(order, limit, Instant::now())).await
}

/// `GET /api/queries/{fingerprint}`: a [`QueryInsight`] (statistics,
/// histogram, minute and hour windows, endpoints, error codes, findings,
/// N+1 pairs), or 404 when the fingerprint is not tracked.
pub async fn query_detail(
    State(state): State<Arc<AdminState>>,
    Path(fingerprint): Path<String>,
    params: RawParams,
) -> ApiResult<QueryInsight> {
    Params::check(&pairs(params)?, &[])?;
    let fp = parse_fingerprint(&fingerprint)?;
    let insight = state.rt.insight.clone();
    blocking(move || insight.detail(fp, Instant::now()))
        .await?
        .0
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("fingerprint {fp:016x} is not tracked")))
}

/// `POST /api/queries/{fingerprint}/explain`: runs EXPLAIN for the
/// fingerprint now, on a side connection (a replica when one is healthy),
/// files the plan findings and returns them; 404 for an unknown
/// fingerprint, 400 when its text is not one preparable statement, 503
/// when no server could run it.
pub async fn explain_now(
    State(state): State<Arc<AdminState>>,
    Path(fingerprint): Path<String>,
) -> ApiResult<Vec<PlanInsight>> {
    use pgpilot_proxy::explain::{explain_fingerprint, ExplainError, ExplainSettings};
    let fp = parse_fingerprint(&fingerprint)?;
    let settings = ExplainSettings::from_settings(&state.rt.settings.load());
    match explain_fingerprint(&state.rt, fp, &settings).await {
        Ok(found) => Ok(Json(found)),
        Err(e @ ExplainError::UnknownFingerprint(_)) => Err(ApiError::NotFound(e.to_string())),
        Err(e @ ExplainError::NotExplainable(_)) => Err(ApiError::BadRequest(e.to_string())),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

/// `GET /api/queries/{fingerprint}/history?since=<unix seconds>`: the stored
/// minute and hour windows of a fingerprint since `since` (default: all
/// kept), oldest first; an empty array without a history store.
pub async fn query_history(
    State(state): State<Arc<AdminState>>,
    Path(fingerprint): Path<String>,
    params: RawParams,
) -> ApiResult<Vec<HistoryPoint>> {
    let since = parse_since(&pairs(params)?)?;
    let fp = parse_fingerprint(&fingerprint)?;
    let insight = state.rt.insight.clone();
    blocking(move || insight.history(fp, since))
        .await?
        .0
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// `GET /api/findings`: a JSON array of [`FindingView`] (lints, N+1 and
/// plan findings).
pub async fn findings(
    State(state): State<Arc<AdminState>>,
    params: RawParams,
) -> ApiResult<Vec<FindingView>> {
    Params::check(&pairs(params)?, &[])?;
    let insight = state.rt.insight.clone();
    blocking(move || insight.findings()).await
}

/// `GET /api/endpoints?order=total_time|mean|p99|calls&limit=N`: a JSON
/// array of [`EndpointView`] (default `total_time`, 100 rows).
pub async fn endpoints(
    State(state): State<Arc<AdminState>>,
    params: RawParams,
) -> ApiResult<Vec<EndpointView>> {
    let ListParams { order, limit } = parse_endpoints(&pairs(params)?)?;
    let insight = state.rt.insight.clone();
    blocking(move || insight.endpoints(order, limit)).await
}

/// `GET /api/slow?limit=N`: the slow log, newest first (default 100 rows).
pub async fn slow(
    State(state): State<Arc<AdminState>>,
    params: RawParams,
) -> ApiResult<Vec<SlowEntry>> {
    let limit = parse_slow(&pairs(params)?)?;
    let insight = state.rt.insight.clone();
    blocking(move || insight.slow_queries(limit)).await
}

/// Runs `f` on the blocking pool; a panic in it becomes a 500.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map(Json)
        .map_err(|e| ApiError::Internal(format!("query insight task failed: {e}")))
}

fn pairs(params: RawParams) -> Result<Vec<(String, String)>, ApiError> {
    params
        .map(|Query(pairs)| pairs)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// `order` and `limit` of `/api/queries`.
///
/// # Errors
/// [`ApiError::BadRequest`] for an unknown order, a bad limit, or any other
/// parameter.
pub fn parse_top(pairs: &[(String, String)]) -> Result<ListParams<TopBy>, ApiError> {
    let p = Params::check(pairs, &["order", "limit"])?;
    Ok(ListParams {
        order: p.order(QUERY_ORDERS)?.unwrap_or_default(),
        limit: p.limit()?,
    })
}

/// `order` and `limit` of `/api/endpoints`.
///
/// # Errors
/// As [`parse_top`].
pub fn parse_endpoints(pairs: &[(String, String)]) -> Result<ListParams<EndpointOrder>, ApiError> {
    let p = Params::check(pairs, &["order", "limit"])?;
    Ok(ListParams {
        order: p.order(ENDPOINT_ORDERS)?.unwrap_or_default(),
        limit: p.limit()?,
    })
}

/// `limit` of `/api/slow`.
///
/// # Errors
/// As [`parse_top`].
pub fn parse_slow(pairs: &[(String, String)]) -> Result<usize, ApiError> {
    Params::check(pairs, &["limit"])?.limit()
}

/// `since` of the history route: whole seconds since the Unix epoch;
/// absent means the epoch (everything kept).
///
/// # Errors
/// [`ApiError::BadRequest`] when it is not a whole number of seconds that
/// fits a timestamp, or for any other parameter.
pub fn parse_since(pairs: &[(String, String)]) -> Result<SystemTime, ApiError> {
    let p = Params::check(pairs, &["since"])?;
    let Some(text) = p.get("since") else {
        return Ok(UNIX_EPOCH);
    };
    text.parse::<u64>()
        .ok()
        .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "since must be a Unix time in whole seconds, not {text:?}"
            ))
        })
}

/// A fingerprint as the API prints it: 1 to 16 hex digits.
///
/// # Errors
/// [`ApiError::BadRequest`] for anything else.
pub fn parse_fingerprint(text: &str) -> Result<u64, ApiError> {
    let hex = !text.is_empty() && text.len() <= 16 && text.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| pgpilot_insight::parse_fingerprint_hex(text))
        .flatten()
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{text:?} is not a fingerprint (16 hex digits, as in /api/queries)"
            ))
        })
}

/// A request's parameters, checked against the names its route takes.
struct Params<'a>(&'a [(String, String)]);

impl<'a> Params<'a> {
    /// Refuses a name not in `allowed` and a name given twice.
    fn check(pairs: &'a [(String, String)], allowed: &[&str]) -> Result<Params<'a>, ApiError> {
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                let expected = match allowed {
                    [] => "this route takes no parameters".to_owned(),
                    names => format!("expected {}", names.join(", ")),
                };
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter {name:?}; {expected}"
                )));
            }
            if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(ApiError::BadRequest(format!(
                    "parameter {name:?} is given twice"
                )));
            }
        }
        Ok(Params(pairs))
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `order`, parsed by `O`'s `FromStr`; `choices` names the valid values.
    fn order<O: FromStr>(&self, choices: &str) -> Result<Option<O>, ApiError> {
        self.get("order")
            .map(|text| {
                text.parse().map_err(|_| {
                    ApiError::BadRequest(format!("order must be {choices}, not {text:?}"))
                })
            })
            .transpose()
    }

    /// `limit`: 1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
    fn limit(&self) -> Result<usize, ApiError> {
        let Some(text) = self.get("limit") else {
            return Ok(DEFAULT_LIMIT);
        };
        match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!(
                "limit must be an integer from 1 to {MAX_LIMIT}, not {text:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// The message of a 400, or a panic.
    fn bad<T: std::fmt::Debug>(result: Result<T, ApiError>) -> String {
        match result {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("expected 400, got {other:?}"),
        }
    }

    #[test]
    fn top_defaults_and_every_order() {
        assert_eq!(
            parse_top(&[]),
            Ok(ListParams {
                order: TopBy::TotalTime,
                limit: DEFAULT_LIMIT
            })
        );
        for (text, order) in [
            ("total_time", TopBy::TotalTime),
            ("p99", TopBy::P99),
            ("calls", TopBy::Calls),
            ("mean", TopBy::Mean),
            ("errors", TopBy::Errors),
        ] {
            let p = parse_top(&q(&[("order", text), ("limit", "7")]));
            assert_eq!(p, Ok(ListParams { order, limit: 7 }), "{text}");
        }
    }

    #[test]
    fn top_refuses_bad_orders_limits_and_names() {
        let m = bad(parse_top(&q(&[("order", "p95")])));
        assert!(m.contains("total_time, p99, calls, mean or errors") && m.contains("\"p95\""));
        for limit in ["0", "-1", "ten", "", "10001", "1.5"] {
            let m = bad(parse_top(&q(&[("limit", limit)])));
            assert!(m.contains("from 1 to 10000"), "{limit}: {m}");
        }
        assert_eq!(
            parse_top(&q(&[("limit", "10000")])).map(|p| p.limit),
            Ok(10_000)
        );
        let m = bad(parse_top(&q(&[("oder", "p99")])));
        assert!(
            m.contains("unknown parameter \"oder\"; expected order, limit"),
            "{m}"
        );
        let m = bad(parse_top(&q(&[("limit", "1"), ("limit", "2")])));
        assert!(m.contains("given twice"), "{m}");
    }

    #[test]
    fn endpoint_orders() {
        for (text, order) in [
            ("total_time", EndpointOrder::TotalTime),
            ("mean", EndpointOrder::Mean),
            ("p99", EndpointOrder::P99),
            ("calls", EndpointOrder::Calls),
        ] {
            let p = parse_endpoints(&q(&[("order", text)]));
            assert_eq!(p.map(|p| p.order), Ok(order), "{text}");
        }
        let m = bad(parse_endpoints(&q(&[("order", "errors")])));
        assert!(m.contains("total_time, mean, p99 or calls"), "{m}");
    }

    #[test]
    fn slow_takes_only_a_limit() {
        assert_eq!(parse_slow(&[]), Ok(DEFAULT_LIMIT));
        assert_eq!(parse_slow(&q(&[("limit", "3")])), Ok(3));
        let m = bad(parse_slow(&q(&[("order", "calls")])));
        assert!(m.contains("expected limit"), "{m}");
    }

    #[test]
    fn since_is_unix_seconds() {
        assert_eq!(parse_since(&[]), Ok(UNIX_EPOCH));
        assert_eq!(
            parse_since(&q(&[("since", "1700000000")])),
            Ok(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        for text in ["-1", "soon", "1.5", "", &u64::MAX.to_string()] {
            let m = bad(parse_since(&q(&[("since", text)])));
            assert!(m.contains("whole seconds"), "{text}: {m}");
        }
    }

    #[test]
    fn fingerprints_are_hex() {
        assert_eq!(parse_fingerprint("00000000000000ff"), Ok(255));
        assert_eq!(parse_fingerprint("FF"), Ok(255));
        assert_eq!(parse_fingerprint("ffffffffffffffff"), Ok(u64::MAX));
        for text in ["", "+ff", "0x1f", "g", "fffffffffffffffff", "é"] {
            let m = bad(parse_fingerprint(text));
            assert!(m.contains("is not a fingerprint"), "{text}: {m}");
        }
    }

    #[test]
    fn routes_without_parameters_say_so() {
        let m = bad(Params::check(&q(&[("kind", "lint")]), &[]).map(|_| ()));
        assert!(m.contains("takes no parameters"), "{m}");
    }
}
