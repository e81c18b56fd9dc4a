//! Every request: an id (`X-Request-Id` taken from the client when it is sane, else made up),
//! echoed in the response and carried by every log line of the request, and one access-log line
//! (target `access`) with the caller, status and duration.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::AppState;
use crate::auth::Principal;

/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";

/// A client's id is kept when it is 1–128 visible ASCII characters.
fn sane(id: &HeaderValue) -> Option<String> {
    let s = id.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic())).then(|| s.to_string())
}

/// The middleware.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(sane)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let span = tracing::info_span!("request", request_id = %id);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    if state.access_log {
        let caller = response
            .extensions()
            .get::<Principal>()
            .map_or("-", |p| p.name.as_str())
            .to_string();
        let _entered = span.enter();
        tracing::info!(
            target: "access",
            %method,
            path,
            status = response.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            caller,
            "request"
        );
    }
    response
}
