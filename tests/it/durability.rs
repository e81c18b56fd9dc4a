//! Acknowledged events survive `kill -9`; SIGTERM drains and flushes.

use crate::harness::{Hub, HubOptions, generated};

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
    for chunk in lines.chunks(250) {
        let (status, body) = hub.post_ndjson(chunk.join("\n")).await;
        assert_eq!(status, 200, "{body}");
        acknowledged += body["accepted"].as_i64().expect("accepted");
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    assert_eq!(acknowledged, 4000);
    let before = hub.count("").await;
    assert_eq!(before, 4000);
    hub.kill9();

    let hub = Hub::start_with(&data, opts).await;
    assert_eq!(hub.count("").await, 4000, "every acknowledged event is back");
    let rows = hub.rows("SELECT count(DISTINCT event_id) AS n FROM events").await;
    assert_eq!(rows[0]["n"], 4000, "and none twice");
    let parquet = std::fs::read_dir(data.join("events"))
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        })
        .count();
    assert!(parquet >= 1, "some data came back from Parquet");
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
