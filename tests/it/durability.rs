//! Acknowledged events survive `kill -9`; SIGTERM drains and flushes.

use std::time::Duration;

use crate::harness::{Hub, HubOptions, generated, wait_for};

/// Parquet files in a store's directory.
fn parquet_files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("store dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_and_restart_keeps_every_acknowledged_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Small segments so the run mixes flushed Parquet files with a live WAL.
    let opts = HubOptions {
        config_toml: Some("[storage]\nsegment_max_rows = 700\n".into()),
        ..Default::default()
    };
    let mut hub = Hub::start_with(&data, opts.clone()).await;
    let lines = generated(31, 4000, 0.0);
    let mut acknowledged = 0;
    let parquet_files = || parquet_files_in(&data.join("events"));
    for (i, chunk) in lines.chunks(250).enumerate() {
        let (status, body) = hub.post_ndjson(chunk.join("\n")).await;
        assert_eq!(status, 200, "{body}");
        acknowledged += body["accepted"].as_i64().expect("accepted");
        if i == 7 {
            // The first 2000 events are rotated to Parquet; the rest stay in the WAL.
            wait_for("a flushed Parquet file", Duration::from_secs(30), || {
                let n = parquet_files();
                async move { (n >= 1).then_some(()) }
            })
            .await;
        }
    }
    assert_eq!(acknowledged, 4000);
    let before = hub.count("").await;
    assert_eq!(before, 4000);
    hub.kill9();

    let hub = Hub::start_with(&data, opts).await;
    assert_eq!(hub.count("").await, 4000, "every acknowledged event is back");
    let rows = hub.rows("SELECT count(DISTINCT event_id) AS n FROM events").await;
    assert_eq!(rows[0]["n"], 4000, "and none twice");
    assert!(parquet_files() >= 1, "some data came back from Parquet");
}

/// Group commit under concurrent single-event load: 32 clients post one event per request;
/// the Hub is killed with SIGKILL while requests are in flight. Every event that was
/// acknowledged (200) is back after the restart, and none twice.
#[tokio::test(flavor = "multi_thread")]
async fn kill9_under_concurrent_single_event_load_keeps_every_acknowledged_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut hub = Hub::start(&data).await;
    let lines = std::sync::Arc::new(generated(32, 6400, 0.0));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let client = reqwest::Client::new();
    let url = hub.url("/api/v1/events");
    let mut clients = Vec::new();
    for c in 0..32 {
        let (lines, acked, client, url) = (lines.clone(), acked.clone(), client.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            for line in lines.iter().skip(c).step_by(32) {
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(line.clone())
                    .send()
                    .await;
                // After the kill every request fails: stop.
                let Ok(r) = sent else { return };
                if r.status() != 200 {
                    return;
                }
                let id: serde_json::Value = serde_json::from_str(line).expect("json");
                acked
                    .lock()
                    .expect("acked")
                    .push(id["event_id"].as_str().expect("event_id").to_string());
            }
        }));
    }
    let acked_for_wait = acked.clone();
    wait_for("1000 acknowledged single events", Duration::from_secs(120), || {
        let n = acked_for_wait.lock().expect("acked").len();
        async move { (n >= 1000).then_some(()) }
    })
    .await;
    hub.kill9();
    for c in clients {
        c.await.expect("client task");
    }
    let acked = acked.lock().expect("acked").clone();
    assert!(
        acked.len() >= 1000 && acked.len() < 6400,
        "killed mid-load: {} acknowledged",
        acked.len()
    );

    let hub = Hub::start(&data).await;
    let rows = hub.rows("SELECT event_id FROM events").await;
    let stored: std::collections::HashSet<String> = rows
        .iter()
        .map(|r| r["event_id"].as_str().expect("event_id").to_string())
        .collect();
    assert_eq!(stored.len(), rows.len(), "no event stored twice");
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_flushes_and_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut hub = Hub::start(&data).await;
    let (status, _) = hub.post_ndjson(generated(41, 300, 0.0).join("\n")).await;
    assert_eq!(status, 200);
    let exit = hub.terminate();
    assert!(exit.success(), "clean exit: {exit:?}\n{}", hub.log_text());
    assert!(hub.log_text().contains("shutdown complete"));
    let names: Vec<String> = std::fs::read_dir(data.join("events"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".parquet")), "{names:?}");
    let hub = Hub::start(&data).await;
    assert_eq!(hub.count("").await, 300);
}

/// `storage.retention_days` on the real binary: a flushed file of January events (far past 30
/// days) leaves the answers and then the disk; recent events stay; a restart does not bring the
/// old ones back.
#[tokio::test(flavor = "multi_thread")]
async fn retention_takes_old_files_out_and_keeps_recent_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let opts = HubOptions {
        config_toml: Some("[storage]\nsegment_max_age_secs = 1\nretention_check_secs = 1\n".into()),
        env: vec![("STORAGE_RETENTION_DAYS".into(), "30".into())],
        ..Default::default()
    };
    let hub = Hub::start_with(&data, opts.clone()).await;
    // The generator's events start at 2026-01-01; the clock here is later than 2026-02-01.
    let (status, _) = hub.post_ndjson(generated(51, 400, 0.0).join("\n")).await;
    assert_eq!(status, 200);
    let parquet_files = || parquet_files_in(&data.join("events"));
    // Flushed alone, so its file holds only January events.
    wait_for(
        "the January events to be flushed",
        Duration::from_secs(30),
        async || (parquet_files() == 1).then_some(()),
    )
    .await;
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    assert!(
        now_us > 1_769_904_000_000_000,
        "this test needs a clock past 2026-02-01"
    );
    let recent: Vec<String> = generated(52, 150, 0.0)
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let mut v: serde_json::Value = serde_json::from_str(&line).expect("json");
            v["timestamp"] = serde_json::json!(llm_analytics_hub::event::time::rfc3339(
                now_us - 60_000_000 + i as i64 * 1000
            ));
            v.to_string()
        })
        .collect();
    let (status, body) = hub.post_ndjson(recent.join("\n")).await;
    assert_eq!(status, 200, "{body}");
    wait_for(
        "the January file to be taken out",
        Duration::from_secs(60),
        async || (hub.count("").await == 150).then_some(()),
    )
    .await;
    let expired = hub
        .metrics_text()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("storage_files_expired_total ").map(str::to_string))
        .expect("storage_files_expired_total");
    assert_eq!(expired.trim(), "1");
    // The file stays on disk for the 10-minute grace (a query may still read it); the recent
    // events' file is flushed next to it.
    wait_for("the recent events to be flushed", Duration::from_secs(30), async || {
        (parquet_files() == 2).then_some(())
    })
    .await;
    drop(hub);
    let hub = Hub::start_with(&data, opts).await;
    wait_for(
        "retention to run after the restart",
        Duration::from_secs(30),
        async || (hub.count("").await == 150).then_some(()),
    )
    .await;
}
