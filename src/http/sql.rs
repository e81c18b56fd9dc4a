//! `POST /api/v1/sql`: read-only SQL over the Hub's tables.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::AppState;
use super::error::ApiError;
use std::time::Instant;

use crate::auth::{Access, Authenticator, Principal};
use crate::cache::{Answer, CacheStatus};
use crate::query::format::{self, ColumnInfo, ResultFormat};

/// Request body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"sql": "SELECT model, count(*) AS requests, approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95 FROM events GROUP BY model"}))]
pub struct SqlRequest {
    /// One read-only statement.
    sql: String,
}

/// JSON response body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SqlResponse {
    /// Name, Arrow type and nullability of each column.
    columns: Vec<ColumnInfo>,
    /// One object per row, keyed by column name.
    #[schema(value_type = Vec<Object>)]
    rows: Box<RawValue>,
    /// Rows returned.
    row_count: usize,
    /// More rows than `query.max_json_rows` matched (ask for CSV or Arrow for all).
    truncated: bool,
    /// Planning and execution time.
    execution_time_ms: f64,
}

fn outcome(e: &ApiError) -> &'static str {
    match e.status() {
        StatusCode::FORBIDDEN => "refused",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::TOO_MANY_REQUESTS => "busy",
        StatusCode::UNPROCESSABLE_ENTITY => "resources",
        s if s.is_client_error() => "user_error",
        _ => "error",
    }
}

/// Counts a failed query in `sql_queries_total{outcome}`.
fn counted(state: &AppState, err: ApiError) -> ApiError {
    state
        .metrics
        .sql_queries_total
        .with_label_values(&[outcome(&err)])
        .inc();
    err
}

/// A warning for answers computed while damaged files are set aside: they may miss the rows
/// those files held. Names the files (at most five) and their row counts.
fn quarantine_warning(state: &AppState) -> Option<HeaderValue> {
    let files = state.storage_health.quarantined_files();
    if files.is_empty() {
        return None;
    }
    let named: Vec<String> = files
        .iter()
        .take(5)
        .map(|f| {
            let rows = f
                .rows
                .map_or_else(|| "unknown rows".to_string(), |r| format!("{r} rows"));
            format!("{} ({rows})", f.path.display())
        })
        .collect();
    let text = format!(
        "{} damaged file(s) quarantined, their rows are missing from this answer: {}",
        files.len(),
        named.join(", ")
    );
    HeaderValue::from_str(&text.replace(|c: char| !c.is_ascii() || c.is_ascii_control(), "?")).ok()
}

/// Runs the statement and encodes the result in the format the `Accept` header asks for.
#[utoipa::path(
    post,
    path = "/api/v1/sql",
    tag = "sql",
    summary = "Run one read-only SQL statement",
    description = "SELECT, WITH, EXPLAIN, SHOW or DESCRIBE over `events`, `late_events`, the continuous queries' tables and `snapshots.*` (and `CREATE CONTINUOUS QUERY` for admins). The `Accept` header picks JSON (default), CSV or an Arrow IPC stream. Bounded by `query.timeout_secs`, memory and result-size limits. Needs the `read` role.",
    request_body = SqlRequest,
    responses(
        (status = 200, description = "The result", content(
            (SqlResponse = "application/json"),
            (String = "text/csv"),
            (Vec<u8> = "application/vnd.apache.arrow.stream"),
        )),
        (status = 201, description = "A continuous query was registered (`CREATE CONTINUOUS QUERY`)", body = crate::stream::query::CqStatus),
        (status = 400, description = "Not valid SQL, unknown table or column, or a body that is not `{\"sql\": ...}`", body = super::openapi::ErrorBody),
        (status = 401, description = "No or invalid credentials", body = super::openapi::ErrorBody),
        (status = 403, description = "Not a read-only statement, file access, or the role may not", body = super::openapi::ErrorBody),
        (status = 408, description = "Took longer than `query.timeout_secs`", body = super::openapi::ErrorBody),
        (status = 413, description = "Body larger than `http.max_body_bytes`", body = super::openapi::ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = super::openapi::ErrorBody),
        (status = 422, description = "Memory or result-size limit reached, too complex, or JSON that is not `{\"sql\": string}`", body = super::openapi::ErrorBody),
        (status = 429, description = "Too many concurrent queries or rate limited; see `Retry-After`", body = super::openapi::ErrorBody),
    )
)]
pub async fn run(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    headers: HeaderMap,
    body: Result<Json<SqlRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let principal = super::auth::principal(principal);
    let Json(req) = body.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let started = Instant::now();
    let result = answer(&state, &principal, &headers, &req).await;
    // The audit trail: who ran what, when (the log line's time), and how it ended.
    tracing::info!(
        target: "audit",
        caller = %principal.name,
        tenant = principal.tenant.as_deref().unwrap_or("-"),
        status = result.as_ref().map_or_else(|e| e.status().as_u16(), |r| r.status().as_u16()),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        sql = %req.sql,
        "sql"
    );
    result
}

async fn answer(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    req: &SqlRequest,
) -> Result<Response, ApiError> {
    if let Some(create) = crate::stream::create::parse_create(&req.sql) {
        Authenticator::authorize(principal, Access::Admin)?;
        let create = create.map_err(ApiError::from)?;
        return super::cq::create_from_sql(state, create).await;
    }
    let fmt = ResultFormat::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let max_rows = (fmt == ResultFormat::Json).then_some(state.max_json_rows);
    let started = Instant::now();
    state.engine.check(&req.sql).map_err(|e| counted(state, e.into()))?;
    let engine = state.engine.clone();
    let sql = req.sql.clone();
    let tenant = principal.tenant.clone();
    let run = async move { engine.run(&sql, max_rows, tenant.as_deref()).await.map(Answer::from) };
    let key = state.cache.as_ref().and_then(|cache| {
        let session = state.engine.context().state();
        let statement = crate::cache::key::parse_one(&req.sql, &session)?;
        let variant = format!("sql;max_rows={max_rows:?}");
        cache
            .keys()
            .for_statement(&statement, &session, &super::auth::scope(principal), &variant)
            .ok()
    });
    let (result, cache_status) = crate::cache::answer(state.cache.as_deref(), key.as_ref(), run)
        .await
        .map_err(|e| counted(state, e.into()))?;
    let outcome = if cache_status == Some(CacheStatus::Hit) {
        "cache_hit"
    } else {
        "ok"
    };
    state.metrics.sql_queries_total.with_label_values(&[outcome]).inc();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let body: Vec<u8> = match fmt {
        ResultFormat::Json => {
            let rows = format::json_rows(&result.batches).map_err(ApiError::internal)?;
            let rows = RawValue::from_string(String::from_utf8(rows).map_err(ApiError::internal)?)
                .map_err(ApiError::internal)?;
            let resp = SqlResponse {
                columns: format::columns(&result.schema),
                rows,
                row_count: result.row_count,
                truncated: result.truncated,
                execution_time_ms: elapsed_ms,
            };
            serde_json::to_vec(&resp).map_err(ApiError::internal)?
        }
        ResultFormat::Csv => format::csv(&result.schema, &result.batches).map_err(ApiError::internal)?,
        ResultFormat::ArrowStream => {
            format::arrow_stream(&result.schema, &result.batches).map_err(ApiError::internal)?
        }
    };
    if body.len() > state.engine.max_result_bytes() {
        // Refused before the first byte: the result is encoded in full before it is sent.
        let err = crate::query::QueryError::ResultTooLarge(state.engine.max_result_bytes());
        return Err(counted(state, err.into()));
    }
    let body = Bytes::from(body);
    let mut response = ([(header::CONTENT_TYPE, fmt.content_type())], body).into_response();
    let h = response.headers_mut();
    h.insert("x-row-count", HeaderValue::from(result.row_count));
    if let Ok(v) = HeaderValue::from_str(&format!("{elapsed_ms:.3}")) {
        h.insert("x-execution-time-ms", v);
    }
    if let Some(status) = cache_status {
        h.insert("x-cache", HeaderValue::from_static(status.header()));
    }
    if let Some(warning) = quarantine_warning(state) {
        h.insert("x-hub-warning", warning);
    }
    Ok(response)
}
