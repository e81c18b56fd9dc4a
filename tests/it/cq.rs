//! Continuous-query helpers shared by `stream` and `stream_modes`: test events, a Hub without
//! the shipped rollups, and the `/api/v1/continuous-queries` calls.

use serde_json::{Value, json};

use crate::harness::{Hub, HubOptions};

const CQ: &str = "/api/v1/continuous-queries";

pub fn event(id: u128, ts: &str, model: &str) -> String {
    json!({
        "event_id": uuid::Uuid::from_u128(id).to_string(), "timestamp": ts, "source_module": "llm-observatory",
        "event_type": "telemetry", "payload": {"provider": "openai", "model": model, "latency_ms": 100 + id as u64, "input_tokens": 10}
    })
    .to_string()
}

/// A Hub without the shipped rollups, so tests see only their own queries.
pub fn opts() -> HubOptions {
    HubOptions {
        config_toml: Some("[stream]\nshipped_queries = false\n".into()),
        ..Default::default()
    }
}

pub const PER_MODEL: &str = "SELECT window_start, window_end, model, count(*) AS n, sum(input_tokens) AS tokens FROM events GROUP BY tumble(timestamp, INTERVAL '1 minute'), model";

/// Registers a query over HTTP; returns (status, body).
pub async fn register(hub: &Hub, name: &str, sql: &str, options: Value) -> (u16, Value) {
    hub.post_json(CQ, json!({"name": name, "sql": sql, "options": options}).to_string())
        .await
}

/// Registers a query that must be accepted (201); returns the body.
pub async fn register_ok(hub: &Hub, name: &str, sql: &str, options: Value) -> Value {
    let (status, body) = register(hub, name, sql, options).await;
    assert_eq!(status, 201, "{name}: {body}");
    body
}

/// Polls `sql` (about 10 s) until it returns at least `want` rows; returns the last rows.
pub async fn wait_rows(hub: &Hub, sql: &str, want: usize) -> Vec<Value> {
    hub.poll_rows(sql, 101, |rows| rows.len() >= want).await
}

/// Every registered query (`GET /api/v1/continuous-queries`).
pub async fn list(hub: &Hub) -> Vec<Value> {
    let body = hub.get_json(CQ).await;
    body["continuous_queries"]
        .as_array()
        .expect("continuous_queries")
        .clone()
}

/// One query's status (`GET /api/v1/continuous-queries/{name}`).
pub async fn status(hub: &Hub, name: &str) -> Value {
    hub.get_json(&format!("{CQ}/{name}")).await
}

/// `POST /api/v1/continuous-queries/{name}/{action}` (`pause`, `resume`); returns the body.
pub async fn action(hub: &Hub, name: &str, action: &str) -> Value {
    hub.post_empty(&format!("{CQ}/{name}/{action}")).await
}

/// `DELETE /api/v1/continuous-queries/{name}`; returns the status.
pub async fn delete(hub: &Hub, name: &str) -> u16 {
    hub.delete(&format!("{CQ}/{name}")).await
}

/// Asserts that `row`'s window starts and ends at timestamps beginning with `start` and `end`.
pub fn assert_window(row: &Value, start: &str, end: &str) {
    let window_start = row["window_start"].as_str().expect("window_start");
    assert!(window_start.starts_with(start), "window_start, expected {start}: {row}");
    let window_end = row["window_end"].as_str().expect("window_end");
    assert!(window_end.starts_with(end), "window_end, expected {end}: {row}");
}
