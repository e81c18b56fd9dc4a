//! `/api/v1/continuous-queries`: register, list, inspect, delete, pause and resume.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::auth::Principal;
use crate::stream::catalog::OptionsInput;
use crate::stream::query::CqStatus;
use crate::stream::{CqError, StreamHandle};

/// Body of `POST /api/v1/continuous-queries`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "model_latency_1m", "sql": "SELECT model, tumble(timestamp, INTERVAL '1 minute') AS window_start, count(*) AS requests, approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_latency_ms FROM events GROUP BY model, tumble(timestamp, INTERVAL '1 minute')", "options": {"allowed_lateness_ms": 5000}}))]
pub struct CreateRequest {
    /// Query name; also its output table.
    name: String,
    /// The SELECT, grouped by `tumble(...)`, `hop(...)` or `session(...)`.
    sql: String,
    /// Lateness, future bound, idle timeout, emit mode and interval.
    #[serde(default)]
    options: OptionsInput,
}

impl From<CqError> for ApiError {
    fn from(e: CqError) -> Self {
        match &e {
            CqError::Invalid(_) => Self::bad_request("invalid_query", e.to_string()),
            CqError::Duplicate(_) => Self::bad_request("duplicate_name", e.to_string()),
            CqError::NotFound(_) => Self::not_found(e.to_string()),
            CqError::Stopped => Self::unavailable(e.to_string(), 5),
            CqError::Storage(_) | CqError::Execution(_) | CqError::Internal(_) => Self::internal(e),
        }
    }
}

fn handle(state: &AppState) -> Result<&StreamHandle, ApiError> {
    state.stream.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "disabled",
            "continuous queries are disabled (stream.enabled = false)",
        )
    })
}

/// Registers a query; 201 with its status.
#[utoipa::path(
    post,
    path = "/api/v1/continuous-queries",
    tag = "continuous-queries",
    summary = "Register a continuous query",
    description = "A SELECT grouped by `tumble`, `hop` or `session` over `events` or another query's output, kept up to date as events arrive; its rows are the table named after it. Needs the `admin` role.",
    request_body = CreateRequest,
    responses(
        (status = 201, description = "Registered", body = crate::stream::query::CqStatus),
        (status = 400, description = "Invalid query, options or body, or a duplicate name", body = super::openapi::ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = super::openapi::ErrorBody),
        (status = 422, description = "JSON that does not match the body's schema (wrong type, unknown or missing field)", body = super::openapi::ErrorBody),
        (status = 404, description = "Continuous queries are disabled", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let options = req.options.validate().map_err(CqError::Invalid)?;
    let status = handle(&state)?.register(req.name, req.sql, options).await?;
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

/// Registers a query from a `CREATE CONTINUOUS QUERY` statement sent to `/api/v1/sql`.
pub async fn create_from_sql(
    state: &AppState,
    create: crate::stream::create::CreateStatement,
) -> Result<Response, ApiError> {
    let options = create.options.validate().map_err(CqError::Invalid)?;
    let status = handle(state)?.register(create.name, create.select, options).await?;
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

/// Lists every query with its status.
#[utoipa::path(
    get,
    path = "/api/v1/continuous-queries",
    tag = "continuous-queries",
    summary = "List continuous queries",
    description = "Every query with its watermark, open windows, rows in and out, late events and last error. A tenant-bound key sees those it can read.",
    responses(
        (status = 200, description = "Every query", body = super::openapi::CqList),
        (status = 404, description = "Continuous queries are disabled", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
) -> Result<Response, ApiError> {
    let principal = super::auth::principal(principal);
    let queries = readable(&state, &principal, handle(&state)?.list().await?);
    Ok(Json(super::openapi::CqList {
        continuous_queries: queries,
    })
    .into_response())
}

/// The queries whose output `principal` can read: all of them, or for a tenant-bound caller
/// those with a `tenant` column (the others do not exist for it, as in SQL).
fn readable(state: &AppState, principal: &Principal, queries: Vec<CqStatus>) -> Vec<CqStatus> {
    let Some(tenant) = principal.tenant.as_deref() else {
        return queries;
    };
    let view = state.engine.context_for(Some(tenant));
    queries
        .into_iter()
        .filter(|q| view.table_exist(q.name.as_str()).unwrap_or(false))
        .collect()
}

/// One query's status.
#[utoipa::path(
    get,
    path = "/api/v1/continuous-queries/{name}",
    tag = "continuous-queries",
    summary = "One continuous query",
    params(("name" = String, Path, description = "The continuous query's name (its output table)")),
    responses(
        (status = 200, description = "Its status", body = crate::stream::query::CqStatus),
        (status = 400, description = "Not a valid query name", body = super::openapi::ErrorBody),
        (status = 404, description = "No such query", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let principal = super::auth::principal(principal);
    let queries = readable(&state, &principal, handle(&state)?.list().await?);
    match queries.into_iter().find(|q| q.name == name) {
        Some(q) => Ok(Json(q).into_response()),
        None => Err(CqError::NotFound(name).into()),
    }
}

/// Deletes a query and its output table; 204.
#[utoipa::path(
    delete,
    path = "/api/v1/continuous-queries/{name}",
    tag = "continuous-queries",
    summary = "Delete a continuous query and its output table",
    params(("name" = String, Path, description = "The continuous query's name (its output table)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Not a valid query name", body = super::openapi::ErrorBody),
        (status = 404, description = "No such query", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn delete(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    handle(&state)?.delete(name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Pauses a query: it stops processing input until resumed, then catches up.
#[utoipa::path(
    post,
    path = "/api/v1/continuous-queries/{name}/pause",
    tag = "continuous-queries",
    summary = "Pause a continuous query (it catches up when resumed)",
    params(("name" = String, Path, description = "The continuous query's name (its output table)")),
    responses(
        (status = 200, description = "Its status", body = crate::stream::query::CqStatus),
        (status = 400, description = "Not a valid query name", body = super::openapi::ErrorBody),
        (status = 404, description = "No such query", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn pause(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(handle(&state)?.set_paused(name, true).await?).into_response())
}

/// Resumes a paused query; it first processes the events that arrived while it was paused.
#[utoipa::path(
    post,
    path = "/api/v1/continuous-queries/{name}/resume",
    tag = "continuous-queries",
    summary = "Resume a paused continuous query",
    params(("name" = String, Path, description = "The continuous query's name (its output table)")),
    responses(
        (status = 200, description = "Its status", body = crate::stream::query::CqStatus),
        (status = 400, description = "Not a valid query name", body = super::openapi::ErrorBody),
        (status = 404, description = "No such query", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn resume(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(handle(&state)?.set_paused(name, false).await?).into_response())
}
