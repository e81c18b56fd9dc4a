//! Ingest over HTTP (single, array, NDJSON, invalid events mixed in) checked through SQL.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::harness::{Hub, generated};

/// Independent check of what the Hub must accept: the generator's invalid shapes are
/// truncated JSON, a bad timestamp, a string latency and a missing source_module.
fn expected_reason(line: &str) -> Option<&'static str> {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return Some("malformed_json");
    };
    if v.get("source_module").is_none() {
        return Some("missing_field");
    }
    let ts = v["timestamp"].as_str().unwrap_or_default();
    if chrono::DateTime::parse_from_rfc3339(ts).is_err() {
        return Some("invalid_timestamp");
    }
    if v["payload"].get("latency_ms").is_some_and(|l| !l.is_number()) {
        return Some("invalid_type");
    }
    None
}

fn per_model(lines: &[String]) -> BTreeMap<(String, String), i64> {
    let mut counts = BTreeMap::new();
    for line in lines.iter().filter(|l| expected_reason(l).is_none()) {
        let v: Value = serde_json::from_str(line).expect("valid");
        let p = &v["payload"];
        let key = (
            p["provider"].as_str().unwrap_or("").to_string(),
            p["model"].as_str().unwrap_or("").to_string(),
        );
        *counts.entry(key).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn mixed_batches_are_counted_exactly_and_rejects_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(&dir.path().join("data")).await;
    let lines = generated(7, 3000, 0.02);
    let mut all_sent: Vec<String> = Vec::new();

    // 1. NDJSON in three chunks.
    for chunk in lines[..2000].chunks(700) {
        let (status, body) = hub.post_ndjson(chunk.join("\n")).await;
        let expected_rejects: Vec<(usize, &str)> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, l)| expected_reason(l).map(|r| (i, r)))
            .collect();
        let got: Vec<(usize, String)> = body["rejected"]
            .as_array()
            .expect("rejected")
            .iter()
            .map(|r| {
                (
                    r["index"].as_u64().expect("index") as usize,
                    r["error_type"].as_str().expect("type").to_string(),
                )
            })
            .collect();
        assert_eq!(got.len(), expected_rejects.len(), "{body}");
        for ((gi, gt), (ei, et)) in got.iter().zip(&expected_rejects) {
            assert_eq!((gi, gt.as_str()), (ei, *et));
        }
        assert!(
            body["rejected"]
                .as_array()
                .expect("arr")
                .iter()
                .all(|r| !r["reason"].as_str().unwrap_or("").is_empty())
        );
        let expected_status = if expected_rejects.is_empty() { 200 } else { 207 };
        assert_eq!(status, expected_status, "{body}");
        assert_eq!(
            body["accepted"].as_u64().expect("accepted") as usize,
            chunk.len() - expected_rejects.len()
        );
        all_sent.extend(chunk.iter().cloned());
    }

    // 2. A JSON array.
    let array = &lines[2000..2900];
    let (status, body) = hub
        .post_json(
            "/api/v1/events/batch",
            format!(
                "[{}]",
                array
                    .iter()
                    .filter(|l| serde_json::from_str::<Value>(l).is_ok())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        )
        .await;
    let parsed: Vec<&String> = array
        .iter()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok())
        .collect();
    let array_rejects = parsed.iter().filter(|l| expected_reason(l).is_some()).count();
    assert!(array_rejects > 0, "the generated slice holds invalid events");
    assert_eq!(status, 207, "{body}");
    assert_eq!(body["rejected_count"], array_rejects, "{body}");
    assert_eq!(body["accepted"], parsed.len() - array_rejects, "{body}");
    all_sent.extend(
        array
            .iter()
            .filter(|l| serde_json::from_str::<Value>(l).is_ok())
            .cloned(),
    );

    // 3. Single events, one valid, one invalid.
    let valid: Vec<&String> = lines[2900..].iter().filter(|l| expected_reason(l).is_none()).collect();
    for line in &valid {
        let (status, body) = hub.post_json("/api/v1/events", (*line).clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], 1);
        all_sent.push((*line).clone());
    }
    let (status, body) = hub.post_json("/api/v1/events", r#"{"event_id":"x"}"#.to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["rejected"][0]["error_type"], "invalid_value");
    assert!(
        body["rejected"][0]["reason"]
            .as_str()
            .expect("reason")
            .contains("event_id"),
        "{body}"
    );

    // Every accepted event is counted once per provider/model.
    let expected = per_model(&all_sent);
    let rows = hub.rows("SELECT coalesce(provider, '') AS provider, coalesce(model, '') AS model, count(*) AS n FROM events GROUP BY 1, 2").await;
    let got: BTreeMap<(String, String), i64> = rows
        .iter()
        .map(|r| {
            (
                (
                    r["provider"].as_str().expect("p").to_string(),
                    r["model"].as_str().expect("m").to_string(),
                ),
                r["n"].as_i64().expect("n"),
            )
        })
        .collect();
    assert_eq!(got, expected);
    let total: i64 = expected.values().sum();
    assert_eq!(hub.count("").await, total);

    // Rejected events are counted in Prometheus by error type.
    let metrics = hub.metrics_text().await;
    assert!(
        metrics.contains(
            "events_errors_total{error_type=\"malformed_json\",event_type=\"unknown\",source_module=\"unknown\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("events_processed_total{event_type=\"telemetry\",source_module=\"llm-observatory\"}"));
    // Every event went through one reader; batches of generated events mostly through layouts
    // learned from their first events.
    let decoded = |reader: &str| {
        let prefix = format!("events_decoded_total{{reader=\"{reader}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map_or(0, |v| v.trim().parse::<u64>().expect("counter value"))
    };
    let (layout, scan, serde) = (decoded("layout"), decoded("scan"), decoded("serde"));
    let array_events = array
        .iter()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok())
        .count();
    let posted = (2000 + array_events + valid.len() + 1) as u64;
    assert_eq!(layout + scan + serde, posted, "{metrics}");
    assert!(layout > 2500, "layout {layout}, scan {scan}, serde {serde}");
    assert!(
        metrics.contains("http_requests_total{method=\"POST\",route=\"/api/v1/events/batch\",status_code=\"207\"}")
    );
    assert!(metrics.contains("http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v1/sql\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn whole_body_errors_and_size_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(
        &dir.path().join("data"),
        crate::harness::HubOptions {
            config_toml: Some("[http]\nmax_body_bytes = 4096\n".into()),
            ..Default::default()
        },
    )
    .await;
    let (status, body) = hub.post_ndjson("\n  \n".into()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_body");
    let (status, body) = hub.post_json("/api/v1/events/batch", "[{\"a\":1},".into()).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().expect("msg").contains("JSON array"),
        "{body}"
    );
    let big = generated(1, 20, 0.0).join("\n");
    assert!(big.len() > 4096);
    let (status, body) = hub.post_ndjson(big).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(hub.count("").await, 0, "nothing from rejected bodies was stored");
}
