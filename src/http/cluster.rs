//! The internal route instances read each other's recent events through (cluster mode). Not
//! part of the public API (not in `/openapi.json`, no API key): it is guarded by
//! `cluster.secret` in the `x-hub-cluster-secret` header and answered only in cluster mode.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::AppState;
use super::error::ApiError;
use crate::cluster::tail::{self, ARROW_STREAM, SECRET_HEADER, TAIL_PATH, TailError, TailRequest};

/// The route, present only when this instance is in a cluster.
pub fn router(state: AppState) -> Router {
    match state.cluster_tail.is_some() {
        true => Router::new().route(TAIL_PATH, post(tail)).with_state(state),
        false => Router::new(),
    }
}

async fn tail(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(server) = state.cluster_tail.clone() else {
        return ApiError::not_found("not in a cluster").into_response();
    };
    let given = headers.get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !server.admits(given) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("missing or wrong {SECRET_HEADER} (cluster.secret)"),
        )
        .into_response();
    }
    let req: TailRequest = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => return ApiError::bad_request("invalid_request", format!("tail request: {e}")).into_response(),
    };
    if req.store_id != server.store_id {
        return ApiError::new(
            StatusCode::CONFLICT,
            "other_instance",
            format!(
                "this instance holds data directory {}, not {} (it restarted with another one)",
                server.store_id, req.store_id
            ),
        )
        .into_response();
    }
    let served = tokio::task::spawn_blocking(move || tail::serve(&server.local, &req, server.max_bytes)).await;
    match served {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, ARROW_STREAM)], bytes).into_response(),
        Ok(Err(e @ TailError::Invalid(_))) => ApiError::bad_request("invalid_request", e.to_string()).into_response(),
        Ok(Err(e @ TailError::TooLarge { .. })) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "tail_too_large", e.to_string()).into_response()
        }
        Ok(Err(e)) => ApiError::internal(e).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}
