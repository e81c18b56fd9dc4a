//! Event listing, lookup, health and readiness, configuration errors, demo mode.

use std::collections::HashSet;
use std::time::Duration;

use crate::harness::{BIN, Hub, HubOptions, generated};

#[tokio::test(flavor = "multi_thread")]
async fn list_filter_page_and_lookup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(&dir.path().join("data")).await;
    let lines = generated(21, 400, 0.0);
    hub.post_ok(lines.join("\n")).await;

    // Page through everything of one module with a small page size.
    let expected = hub.count("WHERE source_module = 'llm-observatory'").await;
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut last_ts = String::from("9999");
    loop {
        let mut query = vec![("source_module", "llm-observatory"), ("limit", "37")];
        if let Some(c) = &cursor {
            query.push(("cursor", c.as_str()));
        }
        let body = list_events(&hub, &query).await;
        for e in body["events"].as_array().expect("events") {
            assert_eq!(e["source_module"], "llm-observatory");
            assert!(e["payload"].is_object(), "payload returned as JSON");
            let ts = e["timestamp"].as_str().expect("ts").to_string();
            assert!(ts <= last_ts, "newest first");
            last_ts = ts;
            assert!(
                seen.insert(e["event_id"].as_str().expect("id").to_string()),
                "no duplicates across pages"
            );
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len() as i64, expected);

    // Time range and severity filters.
    let body = list_events(
        &hub,
        &[
            ("start_time", "2026-01-01T00:00:01Z"),
            ("end_time", "2026-01-01T00:00:02Z"),
            ("limit", "1000"),
        ],
    )
    .await;
    let in_range = hub
        .count("WHERE timestamp >= '2026-01-01T00:00:01Z' AND timestamp < '2026-01-01T00:00:02Z'")
        .await;
    assert!(in_range > 0);
    assert_eq!(body["events"].as_array().expect("events").len() as i64, in_range);

    for (query, code) in [
        ("limit=0", 400),
        ("limit=5000", 400),
        ("start_time=yesterday", 400),
        ("cursor=zzz", 400),
        ("bogus=1", 400),
    ] {
        let r = hub.get(&format!("/api/v1/events?{query}")).await;
        assert_eq!(r.status().as_u16(), code, "{query}");
        let body: serde_json::Value = r.json().await.expect("json error body");
        assert!(body["error"]["message"].is_string(), "{query}: {body}");
    }

    // Lookup by id.
    let first: serde_json::Value = serde_json::from_str(&lines[0]).expect("json");
    let id = first["event_id"].as_str().expect("id");
    let r = hub.get(&format!("/api/v1/events/{}", id.to_uppercase())).await;
    assert_eq!(r.status(), 200);
    let got: serde_json::Value = r.json().await.expect("json");
    assert_eq!(got["event_id"], id);
    assert_eq!(got["payload"], first["payload"]);
    let r = hub.get("/api/v1/events/00000000-0000-4000-8000-000000000000").await;
    assert_eq!(r.status(), 404);
    assert_eq!(hub.get("/api/v1/events/not-a-uuid").await.status(), 400);
    assert_eq!(hub.get("/api/v1/nope").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_ready_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(&dir.path().join("data")).await;
    assert_eq!(hub.get_json("/health").await["status"], "ok");
    let ready = hub.get_json("/ready").await;
    assert_eq!(ready["status"], "ready");
    let storage = ready["components"]
        .as_array()
        .expect("c")
        .iter()
        .find(|c| c["name"] == "storage")
        .expect("storage")
        .clone();
    assert_eq!(storage["kind"], "local");
    assert_eq!(storage["ready"], true);
    let r = hub.get("/metrics").await;
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain")
    );
    let text = r.text().await.expect("text");
    assert!(text.contains("# TYPE http_requests_total counter"), "{text}");
    assert!(text.contains("storage_rows_in_memory"));
}

/// `GET /api/v1/events` with `query`; the JSON body.
async fn list_events(hub: &Hub, query: &[(&str, &str)]) -> serde_json::Value {
    hub.client
        .get(hub.url("/api/v1/events"))
        .query(query)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json")
}

#[test]
fn unknown_config_keys_stop_the_service_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hub.toml");
    std::fs::write(&path, "[http]\nprot = 3000\n").expect("write");
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("prot"), "{stderr}");
    let out = std::process::Command::new(BIN)
        .arg("config")
        .env("PORT", "eighty")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PORT"));
    let out = std::process::Command::new(BIN)
        .arg("config")
        .env("PORT", "8123")
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("port = 8123"));
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_mode_produces_queryable_traffic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(
        &dir.path().join("data"),
        HubOptions {
            args: vec!["--demo".into(), "--demo-rate".into(), "400".into()],
            ..Default::default()
        },
    )
    .await;
    crate::harness::wait_until("200 demo LLM events stored", Duration::from_secs(10), async || {
        hub.count("WHERE provider IS NOT NULL").await >= 200
    })
    .await;
    let rows = hub
        .rows("SELECT count(DISTINCT model) AS models, count(DISTINCT source_module) AS modules FROM events")
        .await;
    assert!(rows[0]["models"].as_i64().expect("m") >= 4);
}

#[test]
fn generate_is_deterministic_and_writes_ndjson() {
    let run = || {
        std::process::Command::new(BIN)
            .args(["generate", "--count", "300", "--seed", "5", "--disorder-ms", "1000"])
            .output()
            .expect("run generate")
    };
    let (a, b) = (run(), run());
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8(a.stdout).expect("utf8");
    assert_eq!(text.lines().count(), 300);
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
}

#[test]
fn shipped_example_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/hub.example.toml");
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("config")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("data_dir = \"/var/lib/llm-analytics-hub\""));
}

#[test]
fn bench_rollup_runs_on_any_ndjson_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("events.ndjson");
    let out = std::process::Command::new(BIN)
        .args(["generate", "--count", "3000", "--events-per-sec", "20", "--output"])
        .arg(&file)
        .output()
        .expect("generate");
    assert!(out.status.success());
    let out = std::process::Command::new(BIN)
        .args(["bench", "rollup", "--input"])
        .arg(&file)
        .output()
        .expect("bench");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("events:        3000 (0 rejected)"), "{text}");
    let rows: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("output rows:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("output rows line");
    // 3000 events at 20/s span 150 s: 3 one-minute windows x (6 models + the NULL group of
    // events without a model).
    assert!((7..=21).contains(&rows), "{text}");
    assert!(text.contains("throughput:") && text.contains("peak RSS:"));
}
