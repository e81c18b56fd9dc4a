//! `/api/v1/alerts`: alert rules and the groups that are pending or firing.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::alerts::{AlertRule, AlertView, Alerts, AlertsError, RuleView};
use crate::auth::Principal;

impl From<AlertsError> for ApiError {
    fn from(e: AlertsError) -> Self {
        match e {
            AlertsError::Invalid(m) => ApiError::bad_request("invalid_rule", m),
            AlertsError::NotFound(_) => ApiError::not_found(e.to_string()),
            AlertsError::Exists(_) => ApiError::new(StatusCode::CONFLICT, "exists", e.to_string()),
            other => ApiError::internal(crate::error::chain(&other)),
        }
    }
}

fn alerts(state: &AppState) -> Result<&Alerts, ApiError> {
    state.alerts.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "disabled",
            "alerts are off (alerts.enabled = false, or continuous queries are off)",
        )
    })
}

/// `GET /api/v1/alerts/rules` body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuleList {
    /// Every rule.
    rules: Vec<RuleView>,
}

/// `GET /api/v1/alerts` body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertList {
    /// Every group that is pending or firing.
    alerts: Vec<AlertView>,
}

/// Creates a rule.
#[utoipa::path(
    post,
    path = "/api/v1/alerts/rules",
    tag = "alerts",
    summary = "Create an alert rule",
    description = "A rule breaches per group when its condition holds for a window its source (a continuous query) emitted: `query` (SQL returning `window_start`, the `group_by` columns and a numeric `value`), `anomaly` (`{metric, method, threshold}`) or `budget` (sum per calendar period against a limit, firing once per threshold). After breaching for `for` (event time) a group fires; when it stops breaching it resolves. Each transition is logged in `hub_alerts`, published on the `alerts` stream and posted to every `notify` webhook, signed (`X-Hub-Signature-256`). Needs the `admin` role.",
    request_body = AlertRule,
    responses(
        (status = 201, description = "Created; it evaluates windows emitted from now on", body = RuleView),
        (status = 400, description = "The rule cannot work as written (the message names the field)", body = super::openapi::ErrorBody),
        (status = 404, description = "Alerts are off", body = super::openapi::ErrorBody),
        (status = 409, description = "A rule of that name exists", body = super::openapi::ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = super::openapi::ErrorBody),
        (status = 422, description = "JSON that is not a rule", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn create_rule(
    State(state): State<AppState>,
    body: Result<Json<AlertRule>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(rule) = body.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let view = alerts(&state)?.create(rule).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Lists the rules.
#[utoipa::path(
    get,
    path = "/api/v1/alerts/rules",
    tag = "alerts",
    summary = "List alert rules",
    responses(
        (status = 200, description = "Every rule, with its source, groups and last evaluation", body = RuleList),
        (status = 404, description = "Alerts are off", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn list_rules(State(state): State<AppState>) -> Result<Json<RuleList>, ApiError> {
    Ok(Json(RuleList {
        rules: alerts(&state)?.rules().await,
    }))
}

/// Deletes a rule.
#[utoipa::path(
    delete,
    path = "/api/v1/alerts/rules/{name}",
    tag = "alerts",
    summary = "Delete an alert rule",
    description = "Its groups' states are dropped without notifications; its transitions stay in `hub_alerts`. Needs the `admin` role.",
    params(("name" = String, Path, description = "The rule's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such rule, or alerts are off", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn delete_rule(State(state): State<AppState>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    alerts(&state)?.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The groups that are pending or firing.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "alerts",
    summary = "Current alerts: every group that is pending or firing",
    description = "A tenant-bound key sees only groups whose `tenant` is its own. The history of every transition is the `hub_alerts` table.",
    responses(
        (status = 200, description = "The groups", body = AlertList),
        (status = 404, description = "Alerts are off", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn current(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
) -> Result<Json<AlertList>, ApiError> {
    let principal = super::auth::principal(principal);
    let mut alerts = alerts(&state)?.current().await;
    if let Some(tenant) = principal.tenant.as_deref() {
        alerts.retain(|a| a.group.get("tenant").is_some_and(|t| t == tenant));
    }
    Ok(Json(AlertList { alerts }))
}
