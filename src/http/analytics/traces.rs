//! `GET /api/v1/analytics/traces/{correlation_id}`: the causal chain of one trace, walked with
//! the `WITH RECURSIVE` pattern of docs/functions.md over `events`.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::super::AppState;
use super::super::error::ApiError;
use super::super::metrics_api::{Row, run_rows};
use super::super::series::{ParamError, string_lit};
use crate::auth::Principal;

/// Deepest level walked (the guard against cycles in the data).
pub const MAX_DEPTH: u32 = 64;
/// Most events returned for one trace.
pub const MAX_EVENTS: usize = 1_000;
/// Longest correlation id accepted.
const MAX_ID_LEN: usize = 256;

/// `GET /api/v1/analytics/traces/{correlation_id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "correlation_id": "0efff00d-60b7-4ec5-ae39-8442d104da97", "events_in_chain": 3, "depth": 1, "duration_ms": 1093.3,
    "errors": 0, "root_cause": null,
    "events": [{"event_id": "b471d8bd-9aa9-43a7-ab17-48370a179cec", "parent_event_id": null, "depth": 0, "timestamp": "2026-12-06T10:00:00.500Z",
                "source_module": "llm-observatory", "event_type": "telemetry", "model": null, "latency_ms": null, "status": null, "error_type": null}],
    "truncated": false
}))]
pub struct Trace {
    /// The trace.
    pub correlation_id: String,
    /// Events reached from the trace's roots (`parent_event_id` null).
    pub events_in_chain: i64,
    /// Deepest level (roots are 0).
    pub depth: Option<i64>,
    /// From the first event's start to the last one's end (`timestamp` + `latency_ms`), ms.
    pub duration_ms: Option<f64>,
    /// Events with `status = 'error'`.
    pub errors: i64,
    /// `event_id:error_type` of the deepest failing event (ties: earliest), if any failed.
    pub root_cause: Option<String>,
    /// The events, by depth then time: `event_id`, `parent_event_id`, `depth`, `timestamp`,
    /// `source_module`, `event_type`, `model`, `latency_ms`, `status`, `error_type`.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Row>,
    /// More than 1,000 events: the first 1,000 are returned (the summary counts them all).
    pub truncated: bool,
}

/// The recursive walk from the trace's roots (depth bounded by [`MAX_DEPTH`]).
pub fn tree_cte(correlation_id: &str) -> String {
    let id = string_lit(correlation_id);
    format!(
        "WITH RECURSIVE tree AS (\
         SELECT event_id, parent_event_id, correlation_id, timestamp, source_module, event_type, model, latency_ms, status, error_type, 0 AS depth \
         FROM events WHERE correlation_id = {id} AND parent_event_id IS NULL \
         UNION ALL \
         SELECT e.event_id, e.parent_event_id, e.correlation_id, e.timestamp, e.source_module, e.event_type, e.model, e.latency_ms, e.status, e.error_type, t.depth + 1 \
         FROM events e JOIN tree t ON e.parent_event_id = t.event_id WHERE t.depth < {MAX_DEPTH} AND e.correlation_id = {id})"
    )
}

/// The events of the chain.
pub fn events_sql(correlation_id: &str) -> String {
    format!(
        "{} SELECT event_id, parent_event_id, depth, timestamp, source_module, event_type, model, latency_ms, status, error_type \
         FROM tree ORDER BY depth, timestamp, event_id",
        tree_cte(correlation_id)
    )
}

/// The documented summary: depth, duration, errors and root cause (timestamps are µs).
pub fn summary_sql(correlation_id: &str) -> String {
    format!(
        "{}, ranked AS (SELECT *, row_number() OVER (PARTITION BY correlation_id \
         ORDER BY CASE WHEN status = 'error' THEN 0 ELSE 1 END, depth DESC, timestamp) AS rn FROM tree) \
         SELECT count(*) AS events_in_chain, max(depth) AS depth, \
         max(CAST(timestamp AS BIGINT) / 1e3 + latency_ms) - min(CAST(timestamp AS BIGINT) / 1e3) AS duration_ms, \
         sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors, \
         max(CASE WHEN rn = 1 AND status = 'error' THEN event_id || ':' || coalesce(error_type, '') END) AS root_cause \
         FROM ranked",
        tree_cte(correlation_id)
    )
}

/// Checks a correlation id: 1 to 256 characters, no control characters.
pub fn check_id(id: &str) -> Result<(), ParamError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(ParamError::new(
            "correlation_id",
            format!("must be 1 to {MAX_ID_LEN} characters without control characters"),
        ));
    }
    Ok(())
}

/// The causal chain of a trace.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/traces/{correlation_id}",
    tag = "analytics",
    summary = "Causal chain of a trace",
    description = "Walks the events of the trace from its roots (`parent_event_id` null) to their descendants through `parent_event_id` with `WITH RECURSIVE` (docs/functions.md#causal-chains-with-with-recursive), at most 64 levels deep, and summarises the chain: depth, duration, errors and the root cause (the deepest failing event). At most 1,000 events are returned. A tenant-bound key sees its tenant's events only. Needs the `read` role.",
    params(("correlation_id" = String, Path, description = "The trace id (`correlation_id` of its events)", min_length = 1, max_length = 256)),
    responses(
        (status = 200, description = "The chain", body = Trace),
        (status = 400, description = "Not a valid correlation id", body = super::super::openapi::ErrorBody),
        (status = 404, description = "No root event with this correlation id", body = super::super::openapi::ErrorBody),
        (status = 408, description = "Took longer than `query.timeout_secs`", body = super::super::openapi::ErrorBody),
        (status = 422, description = "Memory or result-size limit reached", body = super::super::openapi::ErrorBody),
        super::super::openapi::AuthErrors,
    )
)]
pub async fn trace(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    Path(correlation_id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = super::super::auth::principal(principal);
    check_id(&correlation_id)?;
    let (summary, _) = run_rows(&state, &principal, &summary_sql(&correlation_id), 1).await?;
    let summary = summary.into_iter().next().unwrap_or_default();
    let count = summary.get("events_in_chain").and_then(Value::as_i64).unwrap_or(0);
    if count == 0 {
        return Err(ApiError::not_found(format!(
            "no trace {correlation_id:?}: no event with this correlation_id and no parent"
        )));
    }
    let (events, truncated) = run_rows(&state, &principal, &events_sql(&correlation_id), MAX_EVENTS).await?;
    Ok(Json(Trace {
        correlation_id,
        events_in_chain: count,
        depth: summary.get("depth").and_then(Value::as_i64),
        duration_ms: summary.get("duration_ms").and_then(Value::as_f64),
        errors: summary.get("errors").and_then(Value::as_i64).unwrap_or(0),
        root_cause: summary.get("root_cause").and_then(Value::as_str).map(str::to_string),
        events,
        truncated,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_a_quoted_literal() {
        assert!(check_id("").is_err() && check_id(&"x".repeat(257)).is_err() && check_id("a\nb").is_err());
        assert!(check_id("0efff00d-60b7-4ec5-ae39-8442d104da97").is_ok());
        let sql = events_sql("a' OR 'x'='x");
        assert!(sql.contains("correlation_id = 'a'' OR ''x''=''x'"), "{sql}");
        assert!(sql.contains("t.depth < 64"), "{sql}");
    }
}
