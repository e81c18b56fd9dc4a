//! `/api/v1/exports`: Parquet snapshots as background jobs.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::exports::{ExportError, ExportRequest};

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> Self {
        match &e {
            ExportError::Invalid(_) => Self::bad_request("invalid_export", e.to_string()),
            ExportError::Destination(_) => Self::bad_request("invalid_destination", e.to_string()),
            ExportError::NotFound(_) => Self::not_found(e.to_string()),
            ExportError::Busy(_) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_exports", e.to_string()).retry_after(5)
            }
            ExportError::Query(_) | ExportError::Encode(_) => Self::internal(e),
        }
    }
}

/// `POST /api/v1/exports`: 202 with the export's id; poll `GET /api/v1/exports/{id}`.
#[utoipa::path(
    post,
    path = "/api/v1/exports",
    tag = "exports",
    summary = "Start a Parquet snapshot",
    description = "Writes a table's time range (or a query's rows) as Parquet files with a manifest to a directory or S3, in the background. Nothing is visible at the destination until it succeeds.",
    request_body = crate::exports::ExportRequest,
    responses(
        (status = 202, description = "Started; `Location` names the export", body = crate::exports::ExportStatus,
            headers(("Location" = String, description = "`/api/v1/exports/{id}`"))),
        (status = 400, description = "Invalid request or destination", body = super::openapi::ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = super::openapi::ErrorBody),
        (status = 422, description = "JSON that does not match the body's schema (wrong type, unknown or missing field)", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    body: Result<Json<ExportRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let status = state.exports.start(request)?;
    let location = format!("/api/v1/exports/{}", status.id);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(status)).into_response())
}

/// `GET /api/v1/exports`: every export of this instance, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/exports",
    tag = "exports",
    summary = "List exports",
    responses(
        (status = 200, description = "Every export of this instance, newest first", body = super::openapi::ExportList),
        super::openapi::AuthErrors,
    )
)]
pub async fn list(State(state): State<AppState>) -> Response {
    Json(super::openapi::ExportList {
        exports: state.exports.list(),
    })
    .into_response()
}

/// `GET /api/v1/exports/{id}`: status, progress and, when done, the manifest.
#[utoipa::path(
    get,
    path = "/api/v1/exports/{id}",
    tag = "exports",
    summary = "One export: progress, and the manifest when done",
    params(("id" = String, Path, description = "The export's id")),
    responses(
        (status = 200, description = "Its status", body = crate::exports::ExportStatus),
        (status = 404, description = "No such export", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn get_one(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(state.exports.get(&id)?).into_response())
}

/// `DELETE /api/v1/exports/{id}`: cancels a running export (its temporary files are removed).
#[utoipa::path(
    delete,
    path = "/api/v1/exports/{id}",
    tag = "exports",
    summary = "Cancel a running export",
    params(("id" = String, Path, description = "The export's id")),
    responses(
        (status = 200, description = "Its status after the cancel", body = crate::exports::ExportStatus),
        (status = 404, description = "No such export", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(state.exports.cancel(&id)?).into_response())
}
