//! Request metrics middleware: `http_requests_total` and `http_request_duration_seconds`
//! labelled by method, matched route and status code.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// Records one request.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [method.as_str(), route.as_str(), status.as_str()];
    state.metrics.http_requests_total.with_label_values(&labels).inc();
    state
        .metrics
        .http_request_duration_seconds
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}
