//! The HTTP API (axum).

mod alerts;
mod analytics;
mod auth;
mod cluster;
mod cq;
mod error;
mod events;
mod exports;
mod health;
mod keys;
pub mod limits;
mod metrics_api;
mod observe;
pub mod openapi;
mod requests;
mod series;
mod snapshots;
mod sql;
mod stream;
mod ui;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::cache::QueryCache;
use crate::ingest::Pipeline;
use crate::metrics::Metrics;
use crate::query::QueryEngine;
use crate::storage::EventStore;

/// Everything handlers need. Cheap to clone: axum clones the state for every extractor and
/// layer of every request, so it is one reference count, not a copy of each field.
#[derive(Clone, Debug)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    /// Shares `inner` with every handler.
    pub fn new(inner: AppStateInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct AppStateInner {
    /// Where accepted events go.
    /// Where posted events go.
    pub pipeline: Pipeline,
    /// Where events are stored (for readiness).
    pub store: Arc<dyn EventStore>,
    /// SQL execution.
    pub engine: QueryEngine,
    /// Parquet snapshot jobs.
    pub exports: crate::exports::Exports,
    /// Who a request is (API keys) and whether it must say.
    pub auth: crate::auth::Authenticator,
    /// Rate limits per caller.
    pub limits: Arc<limits::RateLimits>,
    /// One `access` log line per request.
    pub access_log: bool,
    /// Origins allowed by CORS.
    pub cors_allowed_origins: Vec<String>,
    /// Snapshot locations readable as `snapshots.<name>`.
    pub snapshots: crate::exports::snapshots::Snapshots,
    /// Result cache, when enabled.
    pub cache: Option<Arc<QueryCache>>,
    /// Most rows in a JSON SQL response.
    pub max_json_rows: usize,
    /// Body size limit (for error messages).
    pub max_body_bytes: usize,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Process start (for `/health`).
    pub started: Instant,
    /// Continuous queries, when enabled.
    pub stream: Option<crate::stream::StreamHandle>,
    /// Running sources (Kafka), for status and readiness.
    pub sources: Vec<Arc<dyn crate::sources::SourceStatus>>,
    /// The rollup sink (PostgreSQL), when configured.
    pub sink: Option<Arc<dyn crate::sinks::RollupSink>>,
    /// `standalone` (HTTP stores directly) or `kafka` (cluster mode).
    pub ingest_mode: &'static str,
    /// Storage faults and quarantined files of every local store.
    pub storage_health: crate::storage::health::StorageHealth,
    /// Live feeds of events, continuous-query rows and alerts.
    pub live: crate::live::LiveFeed,
    /// Alert rules and states, when continuous queries and alerts are enabled.
    pub alerts: Option<crate::alerts::Alerts>,
    /// Cluster mode: what this instance serves of its recent events to the others.
    pub cluster_tail: Option<crate::cluster::tail::TailServer>,
}

/// Every route with its OpenAPI operation (`#[utoipa::path]` on the handler): registering a
/// handler here documents it.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(events::post_one, events::list))
        .routes(routes!(events::post_batch))
        .routes(routes!(events::get_one))
        .routes(routes!(health::ingest_status))
        .routes(routes!(sql::run))
        .routes(routes!(exports::create, exports::list))
        .routes(routes!(exports::get_one, exports::cancel))
        .routes(routes!(snapshots::register, snapshots::list))
        .routes(routes!(snapshots::deregister))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::revoke))
        .routes(routes!(cq::create, cq::list))
        .routes(routes!(cq::get_one, cq::delete))
        .routes(routes!(cq::pause))
        .routes(routes!(cq::resume))
        .routes(routes!(stream::follow))
        .routes(routes!(alerts::create_rule, alerts::list_rules))
        .routes(routes!(alerts::delete_rule))
        .routes(routes!(alerts::current))
        .routes(routes!(metrics_api::list))
        .routes(routes!(metrics_api::latest))
        .routes(routes!(metrics_api::timeseries))
        .routes(routes!(analytics::anomalies::anomalies))
        .routes(routes!(analytics::correlations::correlations))
        .routes(routes!(analytics::traces::trace))
        .routes(routes!(analytics::predictions::predictions))
        .routes(routes!(analytics::predictions::predict))
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi::openapi_json))
}

/// The OpenAPI document of every route (`/openapi.json`).
pub fn api_doc() -> utoipa::openapi::OpenApi {
    api_routes().into_openapi()
}

/// Builds the router with every route and middleware.
pub fn router(state: AppState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    let api = api
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::guard))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), observe::track))
        .fallback(|| async { ApiError::not_found("no such route; see the README for the API") });
    let api = api
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), requests::track));
    let api = match cors(&state.cors_allowed_origins) {
        Some(layer) => api.layer(layer),
        None => api,
    };
    // Swagger UI and the live view are static (embedded assets) and public; the live view calls
    // the API from the browser with the user's key.
    api.with_state(state.clone())
        .merge(cluster::router(state))
        .merge(openapi::documentation())
        .merge(ui::router())
}

/// CORS for the configured origins (none: no CORS headers, browsers on other origins refused).
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    if origins.is_empty() {
        return None;
    }
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| match HeaderValue::from_str(o) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(origin = %o, "ignored CORS origin: not a valid header value");
                None
            }
        })
        .collect();
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(allowed)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static(requests::REQUEST_ID),
            ])
            .expose_headers([
                HeaderName::from_static(requests::REQUEST_ID),
                HeaderName::from_static("x-cache"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}
