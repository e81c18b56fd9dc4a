//! The HTTP API described as OpenAPI 3.1, generated from the handlers' `#[utoipa::path]`
//! attributes and the request/response types' `ToSchema` derives; served at `/openapi.json`,
//! with Swagger UI (embedded, no CDN) at `/documentation`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The body of every error answer.
#[derive(Debug, serde::Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "invalid_parameter", "message": "`limit` must be between 1 and 1000"}}))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// A machine-readable code and a message naming the problem (never internals).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code: `invalid_body`, `invalid_parameter`, `unauthorized`, `forbidden`,
    /// `not_found`, `rate_limited`, `read_only`, `query_timeout`, `unavailable`, `internal`, ...
    pub code: String,
    /// Human-readable detail.
    pub message: String,
}

/// An event as posted (docs/event-schema.md); LLM fields are read from `payload`.
#[derive(Debug, serde::Serialize, ToSchema)]
#[schema(example = json!({
    "event_id": "0b5f5c1e-8d6a-4c1a-9b1e-2f3a4b5c6d7e",
    "timestamp": "2026-12-06T12:00:00Z",
    "source_module": "llm-observatory",
    "event_type": "telemetry",
    "severity": "info",
    "payload": {"provider": "openai", "model": "gpt-4o", "latency_ms": 812.5, "input_tokens": 420, "output_tokens": 96, "cost_usd": 0.0031, "status": "ok"}
}))]
pub struct EventIn {
    /// Unique id (UUID).
    #[schema(format = Uuid)]
    pub event_id: String,
    /// Event time (RFC 3339).
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// The emitting module; non-empty.
    pub source_module: String,
    /// `telemetry`, `cost`, `security`, ...; non-empty.
    pub event_type: String,
    /// Default `1.0.0`; the major version must be 1.
    pub schema_version: Option<String>,
    /// `debug`, `info` (default), `warning`, `error`, `critical`.
    pub severity: Option<String>,
    /// Deployment environment.
    pub environment: Option<String>,
    /// Trace id shared by the events of one trace.
    pub correlation_id: Option<String>,
    /// Parent event in a trace (UUID).
    #[schema(format = Uuid)]
    pub parent_event_id: Option<String>,
    /// String tags.
    pub tags: Option<std::collections::BTreeMap<String, String>>,
    /// LLM fields (`model`, `provider`, `latency_ms`, tokens, `cost_usd`, `status`, `tenant`, or
    /// their OpenTelemetry GenAI names) and anything else, stored verbatim.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// A 400 of an ingest route: every event rejected (with reasons), or a body that is not
/// events at all.
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(untagged)]
pub enum IngestRefused {
    /// Every event was rejected.
    Rejected(super::events::IngestResponse),
    /// The body is not JSON, not an array or NDJSON, or empty.
    Error(ErrorBody),
}

/// `GET /api/v1/continuous-queries`.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct CqList {
    /// Every query with its status.
    pub continuous_queries: Vec<crate::stream::query::CqStatus>,
}

/// `GET /api/v1/exports`.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ExportList {
    /// Newest first.
    pub exports: Vec<crate::exports::ExportStatus>,
}

/// `GET /api/v1/snapshots`.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct SnapshotList {
    /// Every registered snapshot table.
    pub snapshots: Vec<crate::exports::snapshots::SnapshotInfo>,
}

/// `GET /api/v1/keys`.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct KeyList {
    /// Every key (never the key or its hash).
    pub keys: Vec<super::keys::KeyView>,
}

/// `POST /api/v1/keys`: the record and the key itself, shown this once.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct KeyCreated {
    /// The key's record.
    #[serde(flatten)]
    pub view: super::keys::KeyView,
    /// The key (`lah_...`): send it as `Authorization: Bearer <key>` or `X-API-Key`.
    pub key: String,
}

/// What every authenticated route may answer besides its own responses.
#[derive(Debug, utoipa::IntoResponses)]
pub enum AuthErrors {
    /// No or invalid credentials (`WWW-Authenticate: Bearer`).
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The caller's role may not do this (the message names the role needed).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Over the caller's rate limit; see `Retry-After`.
    #[response(status = 429)]
    RateLimited(ErrorBody),
}

/// What a read route that runs SQL over the rollups may answer besides its own responses.
#[derive(Debug, utoipa::IntoResponses)]
pub enum QueryErrors {
    /// Took longer than `query.timeout_secs`.
    #[response(status = 408)]
    Timeout(ErrorBody),
    /// Memory or result-size limit reached.
    #[response(status = 422)]
    Resources(ErrorBody),
    /// The continuous-query engine is stopping.
    #[response(status = 503)]
    Stopping(ErrorBody),
}

/// Bearer keys / JWTs and the `X-API-Key` header, as the auth middleware accepts them.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key (`lah_...`) or a JWT"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "LLM Analytics Hub",
        description = "Streaming SQL analytics for LLM telemetry. Events in (single, batch, NDJSON), SQL out \
(JSON, CSV, Arrow), continuous queries over event-time windows, Parquet snapshots, API keys. \
With `auth.mode = required` every `/api/v1` route needs a key (`Authorization: Bearer` or `X-API-Key`) \
with the role the route names; `/health`, `/ready`, `/openapi.json`, `/documentation` and the live view `/ui` are public.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
    tags(
        (name = "events", description = "Ingest and read raw events"),
        (name = "sql", description = "Read-only SQL over every table"),
        (name = "continuous-queries", description = "Windowed queries kept up to date as events arrive"),
        (name = "metrics", description = "The continuous queries' rollup tables as metric families: latest values and time series"),
        (name = "analytics", description = "Anomalies, correlations, trace chains and forecasts over the metrics (the SQL functions of docs/functions.md)"),
        (name = "exports", description = "Parquet snapshots and snapshot tables"),
        (name = "keys", description = "API keys (admin)"),
        (name = "stream", description = "Live feeds over WebSocket and Server-Sent Events"),
        (name = "alerts", description = "Alert rules, current alerts and webhook notifications"),
        (name = "operations", description = "Health, readiness, status, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json"))
)]
pub async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| serde_json::to_value(super::api_doc()).unwrap_or_default());
    Json(doc).into_response()
}

/// Swagger UI at `/documentation`, reading `/openapi.json`.
pub fn documentation() -> axum::Router {
    swagger_ui_dist::generate_routes(swagger_ui_dist::ApiDefinition {
        uri_prefix: "/documentation",
        api_definition: swagger_ui_dist::OpenApiSource::Uri("/openapi.json"),
        title: Some("LLM Analytics Hub API"),
    })
    // The page links its assets relative to the request path: `/documentation/` would ask for
    // `/documentation//swagger-ui.css`.
    .layer(axum::middleware::from_fn(
        |request: axum::extract::Request, next: axum::middleware::Next| async move {
            if request.uri().path() == "/documentation/" {
                return axum::response::Redirect::permanent("/documentation").into_response();
            }
            next.run(request).await
        },
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_operation_is_described_with_its_responses() {
        let json = serde_json::to_value(super::super::api_doc()).expect("serialize");
        assert_eq!(json["openapi"], "3.1.0");
        let paths = json["paths"].as_object().expect("paths");
        let mut operations = 0;
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("path item") {
                operations += 1;
                let responses = op["responses"].as_object().expect("responses");
                assert!(!responses.is_empty(), "{method} {path}: no responses");
                assert!(op["summary"].is_string(), "{method} {path}: no summary");
                // Every authenticated route documents its 401.
                if path.starts_with("/api/v1/") {
                    assert!(responses.contains_key("401"), "{method} {path}: no 401");
                }
            }
        }
        // Every route of the router (39 operations): routes!() adds the handler and its
        // operation together, so this counts both.
        assert_eq!(operations, 39, "{:?}", paths.keys().collect::<Vec<_>>());
        for schema in [
            "EventIn",
            "IngestResponse",
            "SqlRequest",
            "SqlResponse",
            "CqStatus",
            "ExportRequest",
            "ErrorBody",
            "MetricsList",
            "Timeseries",
            "Anomalies",
            "Predictions",
            "PredictRequest",
        ] {
            assert!(
                json["components"]["schemas"][schema].is_object(),
                "schema {schema} missing"
            );
        }
    }
}
