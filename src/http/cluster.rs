//! The internal routes instances read each other's recent events through, and (with
//! `cluster.peers`) learn who the others are (cluster mode). Not
//! part of the public API (not in `/openapi.json`, no API key): it is guarded by
//! `cluster.secret` in the `x-hub-cluster-secret` header and answered only in cluster mode.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::AppState;
use super::error::ApiError;
use crate::cluster::tail::{
    self, ARROW_STREAM, MEMBER_PATH, SECRET_HEADER, TAIL_PATH, TailError, TailRequest, TailServer,
};

/// The route, present only when this instance is in a cluster.
pub fn router(state: AppState) -> Router {
    match state.cluster_tail.is_some() {
        true => Router::new()
            .route(TAIL_PATH, post(tail))
            .route(MEMBER_PATH, get(member))
            .with_state(state),
        false => Router::new(),
    }
}

/// The cluster's server when `headers` carry its secret, else the error refusing them.
fn admitted(state: &AppState, headers: &HeaderMap) -> Result<TailServer, ApiError> {
    let Some(server) = state.cluster_tail.clone() else {
        return Err(ApiError::not_found("not in a cluster"));
    };
    let given = headers.get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !server.admits(given) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("missing or wrong {SECRET_HEADER} (cluster.secret)"),
        ));
    }
    Ok(server)
}

/// Who this instance is (data directory, address, data version, worker), for `cluster.peers`.
async fn member(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let server = match admitted(&state, &headers) {
        Ok(s) => s,
        Err(refused) => return refused.into_response(),
    };
    match server.member() {
        Some(me) => axum::Json(me).into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "this instance has not joined the cluster yet",
        )
        .into_response(),
    }
}

async fn tail(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let server = match admitted(&state, &headers) {
        Ok(s) => s,
        Err(refused) => return refused.into_response(),
    };
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
    let Some(store) = server.stores.get(&req.table) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_table",
            format!("this instance shares no table `{}`", req.table),
        )
        .into_response();
    };
    let served = tokio::task::spawn_blocking(move || tail::serve(&store, &req, server.max_bytes)).await;
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
