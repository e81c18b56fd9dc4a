//! Continuous queries end to end: registration (HTTP and SQL), validation errors, output
//! tables, late events, pause/resume/delete, restart with open windows.

use serde_json::json;

use crate::cq::{self, PER_MODEL, event, opts, register, register_ok, wait_rows};
use crate::harness::Hub;

#[tokio::test(flavor = "multi_thread")]
async fn register_query_and_read_its_output_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(&dir.path().join("data"), opts()).await;
    let body = register_ok(
        &hub,
        "per_model_1m",
        PER_MODEL,
        json!({"allowed_lateness_ms": 2000, "idle_timeout_ms": 600000}),
    )
    .await;
    assert_eq!(body["window"], "tumble 60s");
    let lines: Vec<String> = (0..30)
        .map(|i| {
            event(
                i,
                &format!("2026-01-01T00:00:{:02}Z", i * 2),
                if i % 3 == 0 { "a" } else { "b" },
            )
        })
        .collect();
    hub.post_ok(lines.join("\n")).await;
    // Next minute: moves the watermark past 00:01:00 (max 00:01:05 - 2 s).
    hub.post_ok(event(100, "2026-01-01T00:01:05Z", "a")).await;
    let rows = wait_rows(
        &hub,
        "SELECT model, n, tokens, window_start, window_end FROM per_model_1m ORDER BY model",
        2,
    )
    .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (
            rows[0]["model"].as_str(),
            rows[0]["n"].as_i64(),
            rows[0]["tokens"].as_i64()
        ),
        (Some("a"), Some(10), Some(100))
    );
    assert_eq!(
        (rows[1]["model"].as_str(), rows[1]["n"].as_i64()),
        (Some("b"), Some(20))
    );
    cq::assert_window(&rows[0], "2026-01-01T00:00:00", "2026-01-01T00:01:00");

    let list = cq::list(&hub).await;
    let q = &list[0];
    assert_eq!(q["name"], "per_model_1m");
    assert_eq!(q["status"], "running");
    assert_eq!(q["rows_emitted"], 2);
    assert_eq!(q["open_windows"], 1);
    assert!(q["watermark"].as_str().expect("wm").starts_with("2026-01-01T00:01:03"));

    // Registration through the SQL endpoint.
    let (status, body) = hub
        .sql("CREATE CONTINUOUS QUERY tokens_hop AS SELECT window_start, sum(input_tokens) AS t FROM events GROUP BY hop(timestamp, INTERVAL '1 minute', INTERVAL '5 minutes')")
        .await;
    assert_eq!(status, 201, "{body}");
    let one = cq::status(&hub, "tokens_hop").await;
    assert_eq!(one["window"], "hop slide 60s size 300s");
    let metrics = hub.metrics_text().await;
    assert!(
        metrics.contains("cq_rows_emitted_total{query=\"per_model_1m\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_definitions_are_rejected_at_registration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(&dir.path().join("data"), opts()).await;
    register_ok(&hub, "ok_1", PER_MODEL, json!({})).await;
    let cases = [
        ("ok_1", PER_MODEL, "already exists"),
        ("events", PER_MODEL, "reserved"),
        ("Bad-Name", PER_MODEL, "invalid name"),
        ("q1", "SELEC window_start FROM events", "parse"),
        (
            "q2",
            "SELECT window_start, count(*) FROM events GROUP BY tumble(timestamp, INTERVAL '1 minute'), no_such_col",
            "no_such_col",
        ),
        (
            "q3",
            "SELECT window_start, count(*) FROM events GROUP BY session(timestamp, INTERVAL '5 minutes')",
            "window_end",
        ),
        ("q4", "SELECT count(*) FROM events GROUP BY model", "window"),
        (
            "q5",
            "SELECT window_start, count(*) FROM events GROUP BY tumble(timestamp, 'soon')",
            "INTERVAL",
        ),
        (
            "q6",
            "SELECT window_start, count(*) FROM nowhere GROUP BY tumble(timestamp, INTERVAL '1 minute')",
            "nowhere",
        ),
        (
            "q7",
            "SELECT count(*) AS n FROM events GROUP BY tumble(timestamp, INTERVAL '1 minute')",
            "window_start",
        ),
        (
            "q8",
            "SELECT window_start, count(*) FROM events GROUP BY tumble(latency_ms, INTERVAL '1 minute')",
            "timestamp",
        ),
    ];
    for (name, sql, needle) in cases {
        let (status, body) = register(&hub, name, sql, json!({})).await;
        assert_eq!(status, 400, "{name}: {body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(needle), "{name}: expected {needle:?} in {message:?}");
    }
    let (status, body) = register(&hub, "x", PER_MODEL, json!({"lateness": 1})).await;
    assert_eq!(status, 422, "unknown option: {body}");
    assert_eq!(cq::list(&hub).await.len(), 1, "nothing half-registered");
}

#[tokio::test(flavor = "multi_thread")]
async fn late_events_are_kept_with_a_reason_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(&dir.path().join("data"), opts()).await;
    let options = json!({"allowed_lateness_ms": 1000, "idle_timeout_ms": 600000});
    register_ok(&hub, "per_model", PER_MODEL, options).await;
    let lines = [
        event(1, "2026-01-01T00:00:10Z", "a"),
        event(2, "2026-01-01T00:01:30Z", "a"),
    ];
    hub.post_ok(lines.join("\n")).await;
    // 00:00:20 is now beyond the lateness (watermark 00:01:29 > window end 00:01:00).
    hub.post_ok(event(3, "2026-01-01T00:00:20Z", "a")).await;
    let late = wait_rows(&hub, "SELECT query, event_id, reason FROM late_events", 1).await;
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["query"], "per_model");
    assert_eq!(late[0]["event_id"], uuid::Uuid::from_u128(3).to_string());
    assert!(
        late[0]["reason"]
            .as_str()
            .expect("r")
            .contains("after its window closed")
    );
    let rows = hub.rows("SELECT n FROM per_model").await;
    assert_eq!(
        rows,
        vec![json!({"n": 1})],
        "the late event did not change the closed window"
    );
    assert_eq!(hub.count("").await, 3, "the late event is still stored in events");
    let metrics = hub.metrics_text().await;
    assert!(metrics.contains("late_events_total{query=\"per_model\"} 1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_resume_catch_up_and_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(&dir.path().join("data"), opts()).await;
    let options = json!({"allowed_lateness_ms": 1000, "idle_timeout_ms": 600000});
    register_ok(&hub, "pq", PER_MODEL, options).await;
    hub.post_ok(event(1, "2026-01-01T00:00:10Z", "a")).await;
    let r = cq::action(&hub, "pq", "pause").await;
    assert_eq!(r["status"], "paused");
    assert_eq!(r["rows_in"], 1);
    // While paused: two more events of window 00:00, and one that would close it.
    let lines = [
        event(2, "2026-01-01T00:00:20Z", "a"),
        event(3, "2026-01-01T00:00:30Z", "b"),
    ];
    hub.post_ok(lines.join("\n")).await;
    hub.post_ok(event(4, "2026-01-01T00:01:30Z", "a")).await;
    // The engine takes commands in order: once it answers the list, it has processed both
    // batches (each was queued before its POST was answered).
    cq::list(&hub).await;
    let (status, body) = hub.sql("SELECT count(*) AS n FROM pq").await;
    assert_eq!(
        (status, body["rows"][0]["n"].as_i64()),
        (200, Some(0)),
        "nothing emitted while paused"
    );
    let r = cq::action(&hub, "pq", "resume").await;
    assert_eq!(r["status"], "running");
    assert_eq!(
        r["rows_in"], 4,
        "resume caught up with the events that arrived while paused"
    );
    let rows = wait_rows(&hub, "SELECT model, n FROM pq ORDER BY model", 2).await;
    assert_eq!(
        rows,
        vec![json!({"model": "a", "n": 2}), json!({"model": "b", "n": 1})],
        "the window closed with every event, none twice"
    );
    assert_eq!(cq::delete(&hub, "pq").await, 204);
    let (status, _) = hub.sql("SELECT * FROM pq").await;
    assert_eq!(status, 400, "the output table is gone");
    assert_eq!(cq::delete(&hub, "pq").await, 404);
    assert_eq!(
        register(&hub, "pq", PER_MODEL, json!({})).await.0,
        201,
        "the name can be reused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_and_open_windows_survive_kill9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut hub = Hub::start_with(&data, opts()).await;
    let options = json!({"allowed_lateness_ms": 1000, "idle_timeout_ms": 600000});
    register_ok(&hub, "per_model", PER_MODEL, options).await;
    let first: Vec<String> = (0..20)
        .map(|i| event(i, &format!("2026-01-01T00:00:{:02}Z", i * 2), "a"))
        .collect();
    hub.post_ok(first.join("\n")).await;
    // Window 00:01 gets 5 events, then window 00:00 closes.
    let second: Vec<String> = (20..25)
        .map(|i| event(i, &format!("2026-01-01T00:01:{:02}Z", i), "a"))
        .collect();
    hub.post_ok(second.join("\n")).await;
    let rows = wait_rows(&hub, "SELECT n FROM per_model", 1).await;
    assert_eq!(rows, vec![json!({"n": 20})]);
    hub.kill9();

    let hub = Hub::start_with(&data, opts()).await;
    assert_eq!(cq::list(&hub).await[0]["name"], "per_model", "the definition came back");
    // Five more events for window 00:01, then one that closes it.
    let third: Vec<String> = (25..30)
        .map(|i| event(i, &format!("2026-01-01T00:01:{:02}Z", i + 10), "a"))
        .collect();
    hub.post_ok(third.join("\n")).await;
    hub.post_ok(event(99, "2026-01-01T00:02:30Z", "a")).await;
    let rows = wait_rows(&hub, "SELECT n FROM per_model ORDER BY window_start", 2).await;
    assert_eq!(
        rows,
        vec![json!({"n": 20}), json!({"n": 10})],
        "the open window was rebuilt from the store, the closed one not emitted twice"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shipped_rollups_run_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(&dir.path().join("data")).await;
    let list = cq::list(&hub).await;
    let names: Vec<&str> = list.iter().filter_map(|q| q["name"].as_str()).collect();
    assert_eq!(names.len(), 18, "{names:?}");
    assert!(names.contains(&"llm_provider_model_1mo") && names.contains(&"llm_module_type_1w"));
    assert!(names.contains(&"llm_tenant_model_1m") && names.contains(&"llm_tenant_model_1h"));
    let lines: Vec<String> = (0..50)
        .map(|i| event(i, &format!("2026-01-01T00:00:{:02}Z", i), "m"))
        .collect();
    hub.post_ok(lines.join("\n")).await;
    hub.post_ok(event(500, "2026-01-01T00:06:00Z", "m")).await;
    let rows = wait_rows(
        &hub,
        "SELECT requests, p50_latency_ms, p99_latency_ms FROM llm_provider_model_1m",
        1,
    )
    .await;
    assert_eq!(rows[0]["requests"], 50);
    let p50 = rows[0]["p50_latency_ms"].as_f64().expect("p50");
    assert!(
        (p50 - 124.5).abs() / 124.5 < 0.02,
        "p50 of 100..149 within the sketch error: {p50}"
    );
    // The 00:06 window closes at 00:12, and the 5-minute rollup sees 1-minute rows past 00:05.
    hub.post_ok(event(501, "2026-01-01T00:12:00Z", "m")).await;
    let rows = wait_rows(
        &hub,
        "SELECT requests FROM llm_provider_model_5m ORDER BY window_start",
        1,
    )
    .await;
    assert_eq!(rows[0]["requests"], 50, "5-minute rollup merged from the 1-minute one");
}

/// Derived rollups advance with their upstream's watermark: the 1-hour row of 00:00–01:00
/// closes as soon as the event-time watermark passes 01:00 (every level 1m → 5m → 15m → 1h
/// closes in the same step), instead of waiting for the 15-minute row of 01:00–01:15.
#[tokio::test]
async fn derived_rollups_close_with_their_upstream_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(&dir.path().join("data")).await;
    // One event every 30 s from 00:00:00 to 00:59:30.
    let lines: Vec<String> = (0..120u32)
        .map(|i| {
            event(
                u128::from(i),
                &format!("2026-01-01T00:{:02}:{:02}Z", i / 2, (i % 2) * 30),
                "m",
            )
        })
        .collect();
    hub.post_ok(lines.join("\n")).await;
    // Watermark = 01:00:06 - 5 s allowed lateness = 01:00:01, past the hour's end.
    hub.post_ok(event(1000, "2026-01-01T01:00:06Z", "m")).await;
    let hour = wait_rows(&hub, "SELECT window_start, requests FROM llm_provider_model_1h", 1).await;
    assert_eq!(hour.len(), 1, "{hour:?}");
    assert_eq!(hour[0]["requests"], 120, "every event of the hour, once: {hour:?}");
    assert_eq!(hour[0]["window_start"], "2026-01-01T00:00:00Z");
    for (table, windows) in [
        ("llm_provider_model_15m", 4),
        ("llm_provider_model_5m", 12),
        ("llm_provider_model_1m", 60),
    ] {
        let rows = hub
            .rows(&format!("SELECT count(*) AS n, sum(requests) AS r FROM {table}"))
            .await;
        assert_eq!(rows[0]["n"], windows, "{table}: {rows:?}");
        assert_eq!(rows[0]["r"], 120, "{table}: {rows:?}");
    }
    // The 6-hour window of 00:00 is still open: its end is not behind the watermark.
    assert_eq!(hub.rows("SELECT * FROM llm_provider_model_6h").await.len(), 0);
}
