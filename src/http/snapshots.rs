//! `/api/v1/snapshots`: snapshot locations registered as tables `snapshots.<name>`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::exports::snapshots::Registration;

/// `POST /api/v1/snapshots` `{"name", "location"}`: 201 with the table and what its manifests
/// hold; 400 when the location holds no manifest.
#[utoipa::path(
    post,
    path = "/api/v1/snapshots",
    tag = "exports",
    summary = "Register a snapshot location as table `snapshots.<name>`",
    request_body = Registration,
    responses(
        (status = 201, description = "Registered, with what its manifests hold", body = crate::exports::snapshots::SnapshotInfo),
        (status = 400, description = "Invalid name or location, or no manifest there", body = super::openapi::ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = super::openapi::ErrorBody),
        (status = 422, description = "JSON that does not match the body's schema (wrong type, unknown or missing field)", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn register(
    State(state): State<AppState>,
    body: Result<Json<Registration>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(r) = body.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let info = state.snapshots.register(&r.name, &r.location).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// `GET /api/v1/snapshots`: every registered snapshot table.
#[utoipa::path(
    get,
    path = "/api/v1/snapshots",
    tag = "exports",
    summary = "List snapshot tables",
    responses(
        (status = 200, description = "Every registered snapshot table", body = super::openapi::SnapshotList),
        super::openapi::AuthErrors,
    )
)]
pub async fn list(State(state): State<AppState>) -> Response {
    Json(super::openapi::SnapshotList {
        snapshots: state.snapshots.list().await,
    })
    .into_response()
}

/// `DELETE /api/v1/snapshots/{name}`: drops the table; the files stay.
#[utoipa::path(
    delete,
    path = "/api/v1/snapshots/{name}",
    tag = "exports",
    summary = "Drop a snapshot table (the files stay)",
    params(("name" = String, Path, description = "The table's name in `snapshots`")),
    responses(
        (status = 204, description = "Dropped"),
        (status = 404, description = "No such table", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn deregister(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    state.snapshots.deregister(&name)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
