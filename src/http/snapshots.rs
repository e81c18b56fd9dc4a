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
pub async fn register(
    State(state): State<AppState>,
    body: Result<Json<Registration>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(r) = body.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let info = state.snapshots.register(&r.name, &r.location).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// `GET /api/v1/snapshots`: every registered snapshot table.
pub async fn list(State(state): State<AppState>) -> Response {
    Json(serde_json::json!({ "snapshots": state.snapshots.list().await })).into_response()
}

/// `DELETE /api/v1/snapshots/{name}`: drops the table; the files stay.
pub async fn deregister(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    state.snapshots.deregister(&name)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
