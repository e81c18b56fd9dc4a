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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[derive(Debug, Serialize)]
struct KeyView {
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
    let mut view = serde_json::to_value(KeyView::from(record)).map_err(ApiError::internal)?;
    view["key"] = serde_json::Value::String(key);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /api/v1/keys`.
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let keys: Vec<KeyView> = state.auth.list_keys().await?.into_iter().map(KeyView::from).collect();
    Ok(Json(serde_json::json!({ "keys": keys })).into_response())
}

/// `DELETE /api/v1/keys/{name}`: revokes it.
pub async fn revoke(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    match state.auth.revoke_key(&name).await {
        Ok(record) => Ok(Json(KeyView::from(record)).into_response()),
        Err(AuthError::InvalidRequest(m)) => Err(ApiError::not_found(m)),
        Err(e) => Err(e.into()),
    }
}
