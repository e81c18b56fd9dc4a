//! `POST /api/v1/events`, `POST /api/v1/events/batch`, `GET /api/v1/events`,
//! `GET /api/v1/events/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use datafusion::prelude::{Expr, col, lit};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::AppState;
use super::error::{ApiError, body_rejection};
use crate::auth::Principal;
use crate::cache::{Answer, CacheKey, CacheStatus};
use crate::event::schema::col as c;
use crate::event::time::{now_micros, rfc3339, timestamp_lit};
use crate::event::{BodyError, EVENTS_TABLE, Rejection};
use crate::ingest::{BodyShape, PipelineError};

/// Answer to an ingest request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"accepted": 2, "rejected_count": 1, "rejected": [{"index": 1, "error_type": "invalid_timestamp", "reason": "`timestamp` is not RFC 3339: premature end of input"}]}))]
pub struct IngestResponse {
    /// Events stored.
    accepted: usize,
    /// Events rejected.
    rejected_count: usize,
    /// Each rejected event with its index and reason.
    rejected: Vec<Rejection>,
}

fn body_error(e: BodyError) -> ApiError {
    match e {
        BodyError::Arrow(e) => ApiError::internal(e),
        other => ApiError::bad_request("invalid_body", other.to_string()),
    }
}

/// Runs a body through the ingestion pipeline and answers with what it accepted and rejected.
async fn accept(state: &AppState, body: Bytes, shape: BodyShape, tenant: Option<&str>) -> Result<Response, ApiError> {
    let out = state
        .pipeline
        .accept_body(body, shape, now_micros(), tenant)
        .await
        .map_err(|e| match e {
            PipelineError::Body(e) => body_error(e),
            PipelineError::Ingest(e) => ApiError::from(e),
            PipelineError::Task(e) => ApiError::internal(e),
        })?;
    let status = match (out.accepted, out.rejected.len()) {
        (_, 0) => StatusCode::OK,
        (0, _) => StatusCode::BAD_REQUEST,
        _ => StatusCode::MULTI_STATUS,
    };
    let body = IngestResponse {
        accepted: out.accepted,
        rejected_count: out.rejected.len(),
        rejected: out.rejected,
    };
    Ok((status, Json(body)).into_response())
}

/// `POST /api/v1/events`: one event as a JSON object.
#[utoipa::path(
    post,
    path = "/api/v1/events",
    tag = "events",
    summary = "Ingest one event",
    description = "One event as a JSON object. 200 once it is durable; 400 with the reason when it is rejected. Needs the `ingest` role.",
    request_body(content = super::openapi::EventIn, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored (durable)", body = IngestResponse),
        (status = 400, description = "Rejected, or not JSON", body = super::openapi::IngestRefused),
        (status = 413, description = "Body larger than `http.max_body_bytes`", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage cannot take writes now (disk or memory full, database down); see `Retry-After`", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn post_one(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = super::auth::principal(principal);
    let body = body.map_err(|r| body_rejection(&r, state.max_body_bytes))?;
    accept(&state, body, BodyShape::Single, principal.tenant.as_deref()).await
}

/// `POST /api/v1/events/batch`: a JSON array or NDJSON.
#[utoipa::path(
    post,
    path = "/api/v1/events/batch",
    tag = "events",
    summary = "Ingest a batch of events",
    description = "A JSON array of events, or NDJSON (one event per line). Each event is validated on its own: 200 when all are stored, 207 when some are rejected (each with its index and reason), 400 when none is. Needs the `ingest` role.",
    request_body(content(
        (Vec<super::openapi::EventIn> = "application/json"),
        (String = "application/x-ndjson"),
    )),
    responses(
        (status = 200, description = "All stored (durable)", body = IngestResponse),
        (status = 207, description = "Some stored, some rejected", body = IngestResponse),
        (status = 400, description = "None stored, or the body is not an array/NDJSON", body = super::openapi::IngestRefused),
        (status = 413, description = "Body larger than `http.max_body_bytes`", body = super::openapi::ErrorBody),
        (status = 503, description = "Storage cannot take writes now; see `Retry-After`", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn post_batch(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let principal = super::auth::principal(principal);
    let body = body.map_err(|r| body_rejection(&r, state.max_body_bytes))?;
    accept(&state, body, BodyShape::Batch, principal.tenant.as_deref()).await
}

/// Filters of `GET /api/v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Inclusive lower bound on `timestamp` (RFC 3339).
    start_time: Option<String>,
    /// Exclusive upper bound on `timestamp` (RFC 3339).
    end_time: Option<String>,
    /// Only events of this `source_module`.
    source_module: Option<String>,
    /// Only events of this `event_type`.
    event_type: Option<String>,
    /// Only events of this severity (`debug`, `info`, `warning`, `error`, `critical`).
    severity: Option<String>,
    /// Page size, 1..=1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

const MAX_PAGE: usize = 1000;

/// One stored event as returned by the API: the envelope, the payload as sent, and when the
/// Hub received it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    event_id: String,
    timestamp: String,
    ingest_time: String,
    source_module: String,
    event_type: String,
    schema_version: String,
    severity: String,
    environment: Option<String>,
    correlation_id: Option<String>,
    parent_event_id: Option<String>,
    /// The event's tags, as sent.
    #[schema(value_type = Option<Object>)]
    tags: Option<Box<RawValue>>,
    /// The payload, as sent.
    #[schema(value_type = Object)]
    payload: Box<RawValue>,
}

/// One page of `GET /api/v1/events`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventsPage {
    /// Newest first.
    events: Vec<EventView>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_micros())
        .map_err(|e| ApiError::bad_request("invalid_parameter", format!("`{name}` must be RFC 3339: {e}")))
}

fn encode_cursor(ts: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{ts}|{id}"))
}

fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (ts, id) = text.split_once('|')?;
    Some((ts.parse().ok()?, id.to_string()))
}

fn views(batches: &[RecordBatch]) -> Result<Vec<EventView>, ApiError> {
    let mut out = Vec::new();
    for b in batches {
        let s = |name: &str| -> Result<_, ApiError> {
            Ok(b.column_by_name(name)
                .ok_or_else(|| ApiError::internal(format!("missing column {name}")))?
                .as_string::<i32>()
                .clone())
        };
        let t = |name: &str| -> Result<_, ApiError> {
            Ok(b.column_by_name(name)
                .ok_or_else(|| ApiError::internal(format!("missing column {name}")))?
                .as_primitive::<TimestampMicrosecondType>()
                .clone())
        };
        let (ids, ts, its) = (s(c::EVENT_ID)?, t(c::TIMESTAMP)?, t(c::INGEST_TIME)?);
        let (modules, types, versions, sev) = (
            s(c::SOURCE_MODULE)?,
            s(c::EVENT_TYPE)?,
            s(c::SCHEMA_VERSION)?,
            s(c::SEVERITY)?,
        );
        let (envs, corr, parents, tags, payloads) = (
            s(c::ENVIRONMENT)?,
            s(c::CORRELATION_ID)?,
            s(c::PARENT_EVENT_ID)?,
            s(c::TAGS)?,
            s(c::PAYLOAD)?,
        );
        let opt = |a: &datafusion::arrow::array::StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
        for i in 0..b.num_rows() {
            let raw = |text: &str| RawValue::from_string(text.to_string()).map_err(ApiError::internal);
            out.push(EventView {
                event_id: ids.value(i).to_string(),
                timestamp: rfc3339(ts.value(i)),
                ingest_time: rfc3339(its.value(i)),
                source_module: modules.value(i).to_string(),
                event_type: types.value(i).to_string(),
                schema_version: versions.value(i).to_string(),
                severity: sev.value(i).to_string(),
                environment: opt(&envs, i),
                correlation_id: opt(&corr, i),
                parent_event_id: opt(&parents, i),
                tags: if tags.is_null(i) {
                    None
                } else {
                    Some(raw(tags.value(i))?)
                },
                payload: raw(payloads.value(i))?,
            });
        }
    }
    Ok(out)
}

/// `GET /api/v1/events`: newest first, filtered, paged with an opaque cursor.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    summary = "List events",
    description = "Newest first, filtered by time range, module, type and severity, paged with an opaque cursor. A tenant-bound key sees its tenant's events only. Needs the `read` role.",
    params(ListParams),
    responses(
        (status = 200, description = "One page", body = EventsPage),
        (status = 400, description = "A parameter is invalid (named in the message)", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let principal = super::auth::principal(principal);
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_parameter", e.body_text()))?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("`limit` must be between 1 and {MAX_PAGE}"),
        ));
    }
    let mut filter: Option<Expr> = None;
    let mut and = |e: Expr| {
        filter = Some(match filter.take() {
            Some(f) => f.and(e),
            None => e,
        })
    };
    if let Some(v) = &p.start_time {
        and(col(c::TIMESTAMP).gt_eq(timestamp_lit(parse_time("start_time", v)?)));
    }
    if let Some(v) = &p.end_time {
        and(col(c::TIMESTAMP).lt(timestamp_lit(parse_time("end_time", v)?)));
    }
    for (name, value) in [
        (c::SOURCE_MODULE, &p.source_module),
        (c::EVENT_TYPE, &p.event_type),
        (c::SEVERITY, &p.severity),
    ] {
        if let Some(v) = value {
            and(col(name).eq(lit(v.clone())));
        }
    }
    if let Some(cursor) = &p.cursor {
        let (ts, id) = decode_cursor(cursor).ok_or_else(|| {
            ApiError::bad_request("invalid_parameter", "`cursor` is not a cursor returned by this API")
        })?;
        and(col(c::TIMESTAMP).lt(timestamp_lit(ts)).or(col(c::TIMESTAMP)
            .eq(timestamp_lit(ts))
            .and(col(c::EVENT_ID).lt(lit(id)))));
    }
    let mut df = state
        .engine
        .context_for(principal.tenant.as_deref())
        .table(EVENTS_TABLE)
        .await
        .map_err(ApiError::internal)?;
    if let Some(f) = filter {
        df = df.filter(f).map_err(ApiError::internal)?;
    }
    let df = df
        .sort(vec![
            col(c::TIMESTAMP).sort(false, false),
            col(c::EVENT_ID).sort(false, false),
        ])
        .and_then(|df| df.limit(0, Some(limit + 1)))
        .map_err(ApiError::internal)?;
    let key = state.cache.as_ref().and_then(|cache| {
        cache.keys().for_route(
            "GET /api/v1/events",
            &format!("{p:?}"),
            &[EVENTS_TABLE],
            &super::auth::scope(&principal),
        )
    });
    let (answer, cache_status) = cached(&state, key.as_ref(), df).await?;
    let mut events = views(&answer.batches)?;
    let next_cursor = if events.len() > limit {
        events.truncate(limit);
        events.last().and_then(|e| {
            chrono::DateTime::parse_from_rfc3339(&e.timestamp)
                .ok()
                .map(|t| encode_cursor(t.timestamp_micros(), &e.event_id))
        })
    } else {
        None
    };
    Ok(with_cache_header(
        Json(EventsPage { events, next_cursor }).into_response(),
        cache_status,
    ))
}

/// Collects `df` through the result cache when there is one and `key` is set.
async fn cached(
    state: &AppState,
    key: Option<&CacheKey>,
    df: datafusion::dataframe::DataFrame,
) -> Result<(Arc<Answer>, Option<CacheStatus>), ApiError> {
    Ok(crate::cache::answer(state.cache.as_deref(), key, Answer::collect(df, None, None)).await?)
}

fn with_cache_header(mut response: Response, status: Option<CacheStatus>) -> Response {
    if let Some(status) = status {
        response
            .headers_mut()
            .insert("x-cache", axum::http::HeaderValue::from_static(status.header()));
    }
    response
}

/// `GET /api/v1/events/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/events/{id}",
    tag = "events",
    summary = "One event by id",
    params(("id" = String, Path, description = "The event's UUID", format = Uuid)),
    responses(
        (status = 200, description = "The event", body = EventView),
        (status = 400, description = "`id` is not a UUID", body = super::openapi::ErrorBody),
        (status = 404, description = "No such event (for this tenant)", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = super::auth::principal(principal);
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|e| ApiError::bad_request("invalid_parameter", format!("event id must be a UUID: {e}")))?
        .hyphenated()
        .to_string();
    let df = state
        .engine
        .context_for(principal.tenant.as_deref())
        .table(EVENTS_TABLE)
        .await
        .and_then(|df| df.filter(col(c::EVENT_ID).eq(lit(id.clone()))))
        .and_then(|df| df.limit(0, Some(1)))
        .map_err(ApiError::internal)?;
    let key = state.cache.as_ref().and_then(|cache| {
        cache.keys().for_route(
            "GET /api/v1/events/{id}",
            &id,
            &[EVENTS_TABLE],
            &super::auth::scope(&principal),
        )
    });
    let (answer, cache_status) = cached(&state, key.as_ref(), df).await?;
    let mut events = views(&answer.batches)?;
    match events.pop() {
        Some(e) => Ok(with_cache_header(Json(e).into_response(), cache_status)),
        None => Err(ApiError::not_found(format!("no event with id {id}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_garbage() {
        let cur = encode_cursor(1_700_000_000_000_000, "abc");
        assert_eq!(decode_cursor(&cur), Some((1_700_000_000_000_000, "abc".to_string())));
        assert_eq!(decode_cursor("!!!"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("nopipe")), None);
    }
}
