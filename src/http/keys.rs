//! `/api/v1/keys`: API keys managed by admins over HTTP (the same file as `analytics-hub keys`).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use crate::auth::keys::KeyRecord;
use crate::auth::{AuthError, Role};

/// `POST /api/v1/keys` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "grafana", "role": "read", "expires_in_secs": 7776000}))]
pub struct CreateKey {
    name: String,
    role: Role,
    #[serde(default)]
    tenant: Option<String>,
    /// Lifetime in seconds (none: no expiry).
    #[serde(default)]
    expires_in_secs: Option<u64>,
}

/// A key as listed (never the key or its hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    name: String,
    role: Role,
    tenant: Option<String>,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
}

impl From<KeyRecord> for KeyView {
    fn from(k: KeyRecord) -> Self {
        let t = crate::event::time::rfc3339;
        Self {
            name: k.name,
            role: k.role,
            tenant: k.tenant,
            created_at: t(k.created_us),
            expires_at: k.expires_us.map(t),
            revoked_at: k.revoked_us.map(t),
        }
    }
}

/// `POST /api/v1/keys`: 201 with the key, shown this once.
#[utoipa::path(
    post,
    path = "/api/v1/keys",
    tag = "keys",
    summary = "Create an API key (shown once)",
    request_body = CreateKey,
    responses(
        (status = 201, description = "The key (only its hash is kept)", body = super::openapi::KeyCreated),
        (status = 400, description = "Invalid name, role or tenant, or the name is taken", body = super::openapi::ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = super::openapi::ErrorBody),
        (status = 422, description = "JSON that does not match the body's schema (wrong type, unknown or missing field)", body = super::openapi::ErrorBody),
        (status = 503, description = "The key database (PostgreSQL) is unavailable", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let expires = std::time::Duration::from_secs(req.expires_in_secs.unwrap_or(0));
    let (key, record) = state
        .auth
        .create_key(&req.name, req.role, req.tenant.as_deref(), expires)
        .await?;
    let created = super::openapi::KeyCreated {
        view: KeyView::from(record),
        key,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /api/v1/keys`.
#[utoipa::path(
    get,
    path = "/api/v1/keys",
    tag = "keys",
    summary = "List API keys (never the keys themselves)",
    responses(
        (status = 200, description = "Every key, revoked ones included", body = super::openapi::KeyList),
        (status = 503, description = "The key database (PostgreSQL) is unavailable", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let keys: Vec<KeyView> = state.auth.list_keys().await?.into_iter().map(KeyView::from).collect();
    Ok(Json(super::openapi::KeyList { keys }).into_response())
}

/// `DELETE /api/v1/keys/{name}`: revokes it.
#[utoipa::path(
    delete,
    path = "/api/v1/keys/{name}",
    tag = "keys",
    summary = "Revoke an API key (effective at once)",
    params(("name" = String, Path, description = "The key's name")),
    responses(
        (status = 200, description = "The revoked key", body = KeyView),
        (status = 404, description = "No active key of that name", body = super::openapi::ErrorBody),
        (status = 503, description = "The key database (PostgreSQL) is unavailable", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn revoke(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    match state.auth.revoke_key(&name).await {
        Ok(record) => Ok(Json(KeyView::from(record)).into_response()),
        Err(AuthError::InvalidRequest(m)) => Err(ApiError::not_found(m)),
        Err(e) => Err(e.into()),
    }
}
