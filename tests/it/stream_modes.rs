//! Session windows and updating emission end to end: registration (HTTP and SQL `WITH`),
//! intermediate rows visible before a window closes, one row per key in the query's table,
//! downstream queries fed final rows only, registration errors, restart.

use std::time::Duration;

use serde_json::json;

use crate::cq::{self, PER_MODEL, event, opts, register, register_ok, wait_rows};
use crate::harness::{Hub, wait_for};

fn user_event(id: u128, ts: &str, user: &str) -> String {
    json!({
        "event_id": uuid::Uuid::from_u128(id).to_string(), "timestamp": ts, "source_module": "llm-observatory",
        "event_type": "telemetry", "payload": {"model": "m", "user_id": user, "latency_ms": id as u64, "input_tokens": 10}
    })
    .to_string()
}

const SESSIONS: &str = "SELECT window_start, window_end, user_id, count(*) AS n, max(latency_ms) AS max_ms
    FROM events GROUP BY session(timestamp, INTERVAL '30 seconds'), user_id";

#[tokio::test(flavor = "multi_thread")]
async fn session_windows_close_per_user_and_merge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(&dir.path().join("data"), opts()).await;
    let (status, body) = hub
        .sql(&format!(
            "CREATE CONTINUOUS QUERY user_sessions WITH (allowed_lateness = '20 seconds', idle_timeout = '10 minutes') AS {SESSIONS}"
        ))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["window"], "session gap 30s");
    assert_eq!(body["options"]["allowed_lateness_ms"], 20000);
    let lines = [
        user_event(1, "2026-01-01T00:00:00Z", "u1"),
        user_event(2, "2026-01-01T00:00:40Z", "u1"),
        user_event(3, "2026-01-01T00:00:10Z", "u2"),
    ];
    hub.post_ok(lines.join("\n")).await;
    assert_eq!(cq::status(&hub, "user_sessions").await["open_windows"], 3);
    // 00:00:20 is within 30 s of both sessions of u1: they merge.
    hub.post_ok(user_event(4, "2026-01-01T00:00:20Z", "u1")).await;
    assert_eq!(cq::status(&hub, "user_sessions").await["open_windows"], 2);
    // Watermark 00:02:00 - 20 s closes both.
    hub.post_ok(user_event(5, "2026-01-01T00:02:00Z", "u3")).await;
    let rows = wait_rows(
        &hub,
        "SELECT user_id, n, max_ms, window_start, window_end FROM user_sessions ORDER BY user_id",
        2,
    )
    .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0]["user_id"].as_str(), rows[0]["n"].as_i64()),
        (Some("u1"), Some(3))
    );
    // ends at the last event + the gap
    cq::assert_window(&rows[0], "2026-01-01T00:00:00", "2026-01-01T00:01:10");
    assert_eq!(
        (rows[1]["user_id"].as_str(), rows[1]["n"].as_i64()),
        (Some("u2"), Some(1))
    );
    // Behind the watermark: late, kept with a reason.
    hub.post_ok(user_event(6, "2026-01-01T00:01:00Z", "u1")).await;
    let late = wait_rows(&hub, "SELECT query, reason FROM late_events", 1).await;
    assert_eq!(late[0]["query"], "user_sessions");
    assert!(late[0]["reason"].as_str().expect("r").contains("session"));
    // A session query cannot feed another query.
    let (status, body) = register(
        &hub,
        "sessions_per_hour",
        "SELECT window_start, count(*) AS sessions FROM user_sessions GROUP BY tumble(window_start, INTERVAL '1 hour')",
        json!({}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("m")
            .contains("session-window query")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn updating_rows_are_visible_before_close_and_deduplicated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(&dir.path().join("data"), opts()).await;
    let body = register_ok(
        &hub,
        "live",
        PER_MODEL,
        json!({"emit": "updating", "emit_interval_ms": 200, "allowed_lateness_ms": 10000, "idle_timeout_ms": 600000}),
    )
    .await;
    assert_eq!(body["options"]["emit"], "updating");
    assert_eq!(body["options"]["emit_interval_ms"], 200);
    // A final-mode query reading it: fed final rows only.
    register_ok(
        &hub,
        "live_5m",
        "SELECT window_start, window_end, sum(n) AS n FROM live GROUP BY tumble(window_start, INTERVAL '5 minutes')",
        json!({"allowed_lateness_ms": 0, "idle_timeout_ms": 600000}),
    )
    .await;
    let lines = [
        event(1, "2026-01-01T00:00:10Z", "a"),
        event(2, "2026-01-01T00:00:20Z", "a"),
        event(3, "2026-01-01T00:00:30Z", "b"),
    ];
    hub.post_ok(lines.join("\n")).await;
    let rows = wait_rows(&hub, "SELECT model, n, _final FROM live ORDER BY model", 2).await;
    assert_eq!(
        rows,
        vec![
            json!({"model": "a", "n": 2, "_final": false}),
            json!({"model": "b", "n": 1, "_final": false})
        ],
        "current results before the window closes"
    );
    // Late but inside the lateness: `a` is re-emitted with the new count.
    hub.post_ok(event(4, "2026-01-01T00:00:05Z", "a")).await;
    let a = hub
        .poll_rows("SELECT n FROM live WHERE model = 'a'", 50, |rows| rows[0]["n"] == 3)
        .await[0]["n"]
        .clone();
    assert_eq!(a, 3, "the late event updated the emitted key");
    let per_key = hub
        .rows("SELECT model, count(*) AS c FROM live GROUP BY model ORDER BY model")
        .await;
    assert_eq!(
        per_key,
        vec![json!({"model": "a", "c": 1}), json!({"model": "b", "c": 1})]
    );
    // Close the window: final rows, still one per key.
    hub.post_ok(event(5, "2026-01-01T00:01:15Z", "c")).await;
    let rows = hub
        .poll_rows(
            "SELECT model, n, _final FROM live WHERE window_start = '2026-01-01T00:00:00Z' ORDER BY model",
            50,
            |rows| rows.iter().all(|r| r["_final"] == true),
        )
        .await;
    assert_eq!(
        rows,
        vec![
            json!({"model": "a", "n": 3, "_final": true}),
            json!({"model": "b", "n": 1, "_final": true})
        ]
    );
    // Close the downstream 5-minute window: it counted each final row once.
    hub.post_ok(event(6, "2026-01-01T00:06:30Z", "c")).await;
    hub.post_ok(event(7, "2026-01-01T00:07:30Z", "c")).await;
    let rows = wait_rows(&hub, "SELECT n FROM live_5m ORDER BY window_start", 1).await;
    assert_eq!(
        rows[0]["n"], 5,
        "4 events of 00:00 + 1 of 00:01, no intermediate rows counted"
    );
    let q = cq::status(&hub, "live").await;
    assert!(q["rows_emitted"].as_u64().expect("n") > 3, "versions were written: {q}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_emit_and_session_options_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(&dir.path().join("data"), opts()).await;
    let cases = [
        (json!({"emit": "sometimes"}), "unknown emit mode"),
        (
            json!({"emit": "updating", "emit_interval_ms": 5}),
            "emit_interval_ms must be between",
        ),
        (
            json!({"emit": "updating", "emit_interval_ms": 999999999999u64}),
            "emit_interval_ms must be between",
        ),
        (json!({"emit_interval_ms": 1000}), "only applies"),
    ];
    for (options, needle) in cases {
        let (status, body) = register(&hub, "bad", PER_MODEL, options.clone()).await;
        assert_eq!(status, 400, "{options}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(needle), "{options}: {message}");
    }
    let sql_cases = [
        ("WITH (emit = 'updating', emit_interval = 'often')", "not a duration"),
        ("WITH (emit = 'eventually')", "unknown emit mode"),
        ("WITH (colour = 'blue')", "unknown option `colour`"),
    ];
    for (with, needle) in sql_cases {
        let (status, body) = hub
            .sql(&format!("CREATE CONTINUOUS QUERY bad {with} AS {PER_MODEL}"))
            .await;
        assert_eq!(status, 400, "{with}: {body}");
        assert!(
            body["error"]["message"].as_str().expect("m").contains(needle),
            "{with}: {body}"
        );
    }
    let (status, body) = register(
        &hub,
        "bad",
        "SELECT window_start, count(*) AS _final FROM events GROUP BY tumble(timestamp, INTERVAL '1 minute')",
        json!({"emit": "updating"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = hub
        .sql(&format!(
            "CREATE CONTINUOUS QUERY ok_updating WITH (emit = 'updating', emit_interval = '2 seconds') AS {PER_MODEL}"
        ))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["options"]["emit_interval_ms"], 2000);
    assert_eq!(cq::list(&hub).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn open_sessions_and_updating_rows_survive_kill9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut hub = Hub::start_with(&data, opts()).await;
    let options = json!({"allowed_lateness_ms": 1000, "idle_timeout_ms": 600000});
    register_ok(&hub, "sess", SESSIONS, options.clone()).await;
    let mut updating = options.clone();
    updating["emit"] = json!("updating");
    updating["emit_interval_ms"] = json!(100);
    register_ok(&hub, "upd", PER_MODEL, updating).await;
    let first = [
        user_event(1, "2026-01-01T00:00:00Z", "u1"),
        user_event(2, "2026-01-01T00:00:40Z", "u2"),
        user_event(3, "2026-01-01T00:01:00Z", "u2"),
    ];
    hub.post_ok(first.join("\n")).await;
    // u1's session [00:00:00] closed at 00:00:30 <= watermark 00:00:59.
    let rows = wait_rows(&hub, "SELECT user_id, n FROM sess", 1).await;
    assert_eq!(rows, vec![json!({"user_id": "u1", "n": 1})]);
    wait_rows(&hub, "SELECT n FROM upd WHERE NOT _final", 1).await;
    // Wait for the checkpoint of that watermark (00:00:59, written on the engine's tick), then
    // add to the open session of u2 and crash.
    let checkpoint = data.join("cq").join("sess").join("session-checkpoint.json");
    let watermark_us = 1_767_225_659_000_000i64;
    wait_for(
        "the session checkpoint at watermark 00:00:59",
        Duration::from_secs(30),
        || {
            let written = std::fs::read(&checkpoint)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|c| c["watermark_us"] == watermark_us);
            async move { written.then_some(()) }
        },
    )
    .await;
    hub.post_ok(user_event(4, "2026-01-01T00:01:20Z", "u2")).await;
    hub.kill9();

    let hub = Hub::start_with(&data, opts()).await;
    hub.post_ok(user_event(5, "2026-01-01T00:01:40Z", "u2")).await;
    hub.post_ok(user_event(6, "2026-01-01T00:05:00Z", "u9")).await;
    let rows = wait_rows(&hub, "SELECT user_id, n FROM sess ORDER BY user_id", 2).await;
    assert_eq!(
        rows,
        vec![json!({"user_id": "u1", "n": 1}), json!({"user_id": "u2", "n": 4})],
        "u2's open session was rebuilt across the crash; u1's not emitted twice"
    );
    let sql =
        "SELECT window_start, n, _final FROM upd WHERE window_start < '2026-01-01T00:02:00Z' ORDER BY window_start";
    let rows = hub
        .poll_rows(sql, 100, |rows| {
            rows.len() == 2 && rows.iter().all(|r| r["_final"] == true)
        })
        .await;
    let counts: Vec<i64> = rows.iter().filter_map(|r| r["n"].as_i64()).collect();
    assert_eq!(counts, vec![2, 3], "one row per window, counted once: {rows:?}");
    assert!(rows.iter().all(|r| r["_final"] == true), "{rows:?}");
}
