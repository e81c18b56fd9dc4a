//! Liveness, readiness and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::storage::ComponentStatus;

/// `GET /health`: the process is up.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    summary = "Liveness",
    security(()),
    responses((status = 200, description = "The process is up", body = Object,
        example = json!({"status": "ok", "version": "0.1.0", "uptime_secs": 42})))
)]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started.elapsed().as_secs(),
    }))
}

/// `GET /ready`: every component can serve; 503 otherwise.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    summary = "Readiness of every component",
    security(()),
    responses(
        (status = 200, description = "Every component can serve (a degraded cache is listed, not fatal)", body = Object,
            example = json!({"status": "ready", "degraded": [], "components": [{"name": "storage", "kind": "local", "ready": true, "detail": {}}]})),
        (status = 503, description = "A component cannot serve", body = Object,
            example = json!({"status": "not_ready", "degraded": [], "components": [{"name": "postgres", "kind": "sink", "ready": false, "detail": {"circuit_breaker": "open"}}]})),
    )
)]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let mut components = vec![state.store.status(), state.storage_health.status()];
    // A failing cache never makes the Hub unready: queries are answered without it.
    let cache_health = state.cache.as_ref().map(|c| c.health());
    let cache_degraded = cache_health.as_ref().is_some_and(|h| h.degraded);
    components.push(ComponentStatus {
        name: "cache",
        kind: state.cache.as_ref().map_or("disabled", |c| c.kind()),
        ready: true,
        detail: json!({
            "status": if cache_degraded { "degraded" } else { "ok" },
            "circuit_breaker": cache_health.as_ref().and_then(|h| h.breaker),
            "target": cache_health.as_ref().and_then(|h| h.target.clone()),
            "last_error": cache_health.as_ref().and_then(|h| h.last_error.clone()),
        }),
    });
    if let Some(stream) = &state.stream {
        let listed = tokio::time::timeout(std::time::Duration::from_secs(1), stream.list()).await;
        let (ready, detail) = match listed {
            Ok(Ok(queries)) => {
                let failing: Vec<&str> = queries
                    .iter()
                    .filter(|q| q.last_error.is_some())
                    .map(|q| q.name.as_str())
                    .collect();
                (
                    true,
                    json!({ "continuous_queries": queries.len(), "with_errors": failing }),
                )
            }
            // Busy with a large micro-batch: still serving, just slow to answer.
            Err(_) => (true, json!({ "busy": true })),
            Ok(Err(e)) => (false, json!({ "error": e.to_string() })),
        };
        components.push(ComponentStatus {
            name: "stream",
            kind: "local",
            ready,
            detail,
        });
    }
    for source in &state.sources {
        let status = source.status();
        components.push(ComponentStatus {
            name: source.name(),
            kind: "source",
            ready: source.ready(),
            detail: json!({
                "assigned_partitions": status.get("assigned_partitions"),
                "lag": status.get("lag"),
            }),
        });
    }
    if let Some(sink) = &state.sink {
        let status = sink.status();
        components.push(ComponentStatus {
            name: sink.name(),
            kind: "sink",
            ready: sink.ready(),
            detail: json!({
                "circuit_breaker": status.get("circuit_breaker"),
                "last_error": status.get("last_error"),
            }),
        });
    }
    let ready = components.iter().all(|c| c.ready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "degraded": if cache_degraded { vec!["cache"] } else { Vec::new() },
            "components": components,
        })),
    )
}

/// `GET /api/v1/ingest/status`: where events come from and how far consumption is.
#[utoipa::path(
    get,
    path = "/api/v1/ingest/status",
    tag = "operations",
    summary = "Ingestion: mode, sources (Kafka partitions, lag), sink, storage",
    responses(
        (status = 200, description = "Where events come from and how far consumption is", body = Object,
            example = json!({"mode": "standalone", "http_ingest": "local_store", "sources": [], "sink": null, "storage": {}})),
        (status = 401, description = "No or invalid credentials", body = super::openapi::ErrorBody),
        (status = 403, description = "The role may not read", body = super::openapi::ErrorBody),
    )
)]
pub async fn ingest_status(State(state): State<AppState>) -> impl IntoResponse {
    let sources: Vec<serde_json::Value> = state.sources.iter().map(|s| s.status()).collect();
    Json(json!({
        "mode": state.ingest_mode,
        "http_ingest": if state.pipeline.ingest().wants_raw() { "kafka_producer" } else { "local_store" },
        "sources": sources,
        "sink": state.sink.as_ref().map(|s| s.status()),
        "storage": state.storage_health.status().detail,
    }))
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "Needs the `read` role unless `auth.metrics_public`.",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "No or invalid credentials", body = super::openapi::ErrorBody),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = state.metrics.render().map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}
