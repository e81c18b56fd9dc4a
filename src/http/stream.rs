//! `GET /api/v1/stream`: a live feed over WebSocket or Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::auth::Principal;
use crate::live::{EVENTS_TOPIC, FollowError, Follower, Frame, RowFilter};

/// Parameters of `GET /api/v1/stream`. Every other parameter `column=value` is a filter: only
/// rows whose column equals the value are sent (text, integer and boolean columns).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// `events` (default: every stored event), `alerts` (alert transitions) or `cq:<name>`
    /// (the rows a continuous query emits).
    #[param(example = "cq:llm_provider_model_1m")]
    pub topic: Option<String>,
    /// Resume after this row: the token of the last row received (`<epoch>-<sequence>`), or
    /// `0` for every row still held. Without it (and without `Last-Event-ID`), rows from now on.
    pub after: Option<String>,
}

impl From<FollowError> for ApiError {
    fn from(e: FollowError) -> Self {
        match e {
            FollowError::UnknownTopic(_) => ApiError::not_found(e.to_string()),
            FollowError::BadToken(_) => ApiError::bad_request("invalid_parameter", format!("after: {e}")),
            FollowError::Filter(ref m) if m.contains("carry no tenant") => {
                ApiError::new(axum::http::StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            FollowError::Filter(_) => ApiError::bad_request("invalid_parameter", e.to_string()),
            FollowError::Busy(_) => ApiError::unavailable(e.to_string(), 5),
        }
    }
}

/// Follows a topic. With `Upgrade: websocket` each row is a text message
/// `{"type":"row","token":..,"row":{..}}`; otherwise a `text/event-stream` of `row` events whose
/// `id` is the resume token (browsers resend it as `Last-Event-ID`).
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "stream",
    summary = "Follow events, a continuous query's rows or alerts live (WebSocket or Server-Sent Events)",
    description = "Server-Sent Events by default: `event: row` with `id: <token>` and the row as JSON; `event: gap` first when a resume point is older than the rows held (`live.history_rows` per topic) or from before a restart; `event: close` with the reason before the server ends the stream (a client that falls `live.client_buffer_chunks` chunks behind is cut off and may resume with its last token). With `Upgrade: websocket`, the same as JSON text messages with a `type` field and a close frame with the reason. Any other query parameter `column=value` filters rows. A tenant-bound key sees only its tenant's rows and gets 403 for topics without a `tenant` column. Needs the `read` role.",
    params(StreamParams),
    responses(
        (status = 200, description = "The stream (`text/event-stream`)", content_type = "text/event-stream", body = String),
        (status = 101, description = "Switched to WebSocket"),
        (status = 400, description = "Unknown filter column, or a malformed `after` token", body = super::openapi::ErrorBody),
        (status = 404, description = "No such topic", body = super::openapi::ErrorBody),
        (status = 503, description = "`live.max_subscribers` streams are open; see `Retry-After`", body = super::openapi::ErrorBody),
        super::openapi::AuthErrors,
    )
)]
pub async fn follow(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let principal = super::auth::principal(principal);
    // The named parameters; every other one is a filter.
    let mut named = StreamParams {
        topic: None,
        after: None,
    };
    let mut filters = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "topic" => named.topic = Some(value),
            "after" => named.after = Some(value),
            _ => filters.push((name, value)),
        }
    }
    let topic = named.topic.unwrap_or_else(|| EVENTS_TOPIC.to_string());
    let after = named.after.or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    let schema = state
        .live
        .topic(&topic)
        .ok_or_else(|| FollowError::UnknownTopic(topic.clone()))?
        .schema()
        .clone();
    let filter = RowFilter::new(&schema, principal.tenant.as_deref(), filters).map_err(FollowError::Filter)?;
    let wants_ws = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if wants_ws {
        let upgrade = upgrade.map_err(|e| ApiError::bad_request("invalid_upgrade", e.body_text()))?;
        let follower = state.live.follow(&topic, after.as_deref(), filter)?;
        let timeout = Duration::from_secs(state.live.config().send_timeout_secs);
        return Ok(upgrade.on_upgrade(move |socket| websocket(socket, follower, timeout)));
    }
    let follower = state.live.follow(&topic, after.as_deref(), filter)?;
    Ok(sse(follower).into_response())
}

/// The frames as Server-Sent Events.
fn sse(follower: Follower) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let events = futures::stream::unfold(Some(follower), |state| async move {
        let mut follower = state?;
        let frame = follower.next().await?;
        let event = match frame {
            Frame::Row { token, json } => Event::default().event("row").id(token).data(json),
            Frame::Gap(gap) => Event::default()
                .event("gap")
                .data(serde_json::to_string(&gap).unwrap_or_default()),
            Frame::Closed(reason) => {
                let body = serde_json::json!({ "reason": reason, "token": follower.token() });
                return Some((Ok(Event::default().event("close").data(body.to_string())), None));
            }
        };
        Some((Ok(event), Some(follower)))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The frames as WebSocket messages; a client that does not take one within `timeout` (or
/// falls behind) is closed with a reason.
async fn websocket(mut socket: WebSocket, mut follower: Follower, timeout: Duration) {
    loop {
        let frame = tokio::select! {
            frame = follower.next() => frame,
            // The client closed (or sent something; this feed takes nothing from it).
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
        };
        let (message, close) = match frame {
            Some(Frame::Row { token, json }) => (format!(r#"{{"type":"row","token":"{token}","row":{json}}}"#), None),
            Some(Frame::Gap(gap)) => (
                serde_json::json!({"type": "gap", "after": gap.after, "oldest_held": gap.oldest_held, "restarted": gap.restarted}).to_string(),
                None,
            ),
            Some(Frame::Closed(reason)) => (
                serde_json::json!({"type": "close", "reason": reason, "token": follower.token()}).to_string(),
                Some(reason),
            ),
            None => return,
        };
        match tokio::time::timeout(timeout, socket.send(Message::Text(message.into()))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!(topic = %follower.topic(), "live stream client took no message for {timeout:?}; disconnected");
                return;
            }
        }
        if let Some(reason) = close {
            // A close reason is at most 123 bytes.
            let reason: String = reason.chars().take(120).collect();
            let frame = CloseFrame {
                code: close_code::AGAIN,
                reason: reason.into(),
            };
            let _ = tokio::time::timeout(timeout, socket.send(Message::Close(Some(frame)))).await;
            return;
        }
    }
}
