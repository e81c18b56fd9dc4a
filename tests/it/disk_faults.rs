//! A full, read-only or damaged disk under the real binary: a size-limited tmpfs as the data
//! directory (the tests run as root, as CI does here), filled through HTTP, then space freed,
//! then `kill -9`: every acknowledged event comes back exactly once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Hub, HubOptions, generated, wait_for};

/// A tmpfs mounted for one test; unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size_mb: u64) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the test suite runs as root)"
        );
        Self {
            path: path.to_path_buf(),
        }
    }

    fn remount(&self, mode: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {mode}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn storage_toml(extra: &str) -> HubOptions {
    HubOptions {
        config_toml: Some(format!("[storage]\n{extra}\n")),
        ..Default::default()
    }
}

/// Posts a batch; returns (status, body, Retry-After).
async fn post(hub: &Hub, seed: u64, n: usize) -> (u16, Value, Option<String>) {
    let r = hub
        .client
        .post(hub.url("/api/v1/events/batch"))
        .header("content-type", "application/x-ndjson")
        .body(generated(seed, n, 0.0).join("\n"))
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, r.json().await.expect("json"), retry)
}

async fn ready(hub: &Hub) -> (u16, Value) {
    let r = hub.get("/ready").await;
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

async fn exact_counts(hub: &Hub) -> (i64, i64) {
    let rows = hub
        .rows("SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events")
        .await;
    (rows[0]["n"].as_i64().expect("n"), rows[0]["d"].as_i64().expect("d"))
}

/// Fill the disk (with and without Parquet rotations happening while it fills), free space,
/// ingest more, `kill -9`, restart: exactly the acknowledged events.
#[tokio::test(flavor = "multi_thread")]
async fn full_disk_then_freed_then_kill9_keeps_exactly_the_acknowledged_events() {
    for segment_max_rows in [10_000_000, 3000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let fs = Tmpfs::mount(&data, 24);
        // Ballast on the same file system, removed later to make room.
        std::fs::write(data.join("ballast"), vec![7u8; 6 << 20]).expect("ballast");
        let opts = storage_toml(&format!("min_free_bytes = 0\nsegment_max_rows = {segment_max_rows}"));
        let mut hub = Hub::start_with(&data, opts.clone()).await;

        let mut acknowledged = 0i64;
        let mut refused = None;
        for seed in 0..200 {
            let (status, body, retry) = post(&hub, seed, 1000).await;
            match status {
                200 => acknowledged += body["accepted"].as_i64().expect("accepted"),
                503 => {
                    refused = Some((body, retry));
                    break;
                }
                other => panic!("batch {seed}: unexpected {other}: {body}"),
            }
        }
        let (body, retry) = refused.expect("the 24 MB disk fills within 200 batches of 1000 events");
        assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
        assert!(
            body["error"]["message"].as_str().expect("message").contains("no_space"),
            "{body}"
        );
        assert_eq!(retry.as_deref(), Some("5"));
        assert!(acknowledged > 0, "some batches fit before the disk filled");

        let (status, body) = ready(&hub).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.to_string().contains("no_space"), "{body}");
        assert!(
            hub.metrics_text()
                .await
                .contains("storage_write_errors_total{kind=\"no_space\"}")
        );
        // Queries keep being answered from what is stored.
        assert_eq!(exact_counts(&hub).await, (acknowledged, acknowledged));

        std::fs::remove_file(data.join("ballast")).expect("free space");
        wait_for("/ready after space was freed", Duration::from_secs(30), || async {
            (ready(&hub).await.0 == 200).then_some(())
        })
        .await;
        let (status, body, _) = post(&hub, 10_000, 1000).await;
        assert_eq!(status, 200, "ingest works again: {body}");
        acknowledged += 1000;
        assert_eq!(exact_counts(&hub).await, (acknowledged, acknowledged));

        hub.kill9();
        let hub = Hub::start_with(&data, opts).await;
        assert_eq!(
            exact_counts(&hub).await,
            (acknowledged, acknowledged),
            "segment_max_rows {segment_max_rows}: every acknowledged event back exactly once"
        );
        drop(hub);
        drop(fs);
    }
}

/// Below `storage.min_free_bytes` ingest is refused before anything is written.
#[tokio::test(flavor = "multi_thread")]
async fn below_min_free_bytes_ingest_is_refused_before_writing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let _fs = Tmpfs::mount(&data, 32);
    // 32 MB disk, 40 MB minimum: always below.
    let hub = Hub::start_with(&data, storage_toml("min_free_bytes = 41943040")).await;
    let (status, body, retry) = post(&hub, 1, 100).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("low_space"),
        "{body}"
    );
    assert_eq!(retry.as_deref(), Some("5"));
    let (status, body) = ready(&hub).await;
    assert_eq!(status, 503);
    assert!(body.to_string().contains("storage.min_free_bytes"), "{body}");
    assert_eq!(exact_counts(&hub).await, (0, 0));
}

/// A read-only data directory. Linux refuses `mount -o remount,ro` while the Hub holds its WAL
/// open for writing (EBUSY), so a file system turns read-only under a running Hub only by the
/// kernel's own error handling; what an operator meets is a Hub (re)started on a read-only
/// mount. It starts, answers queries from what is stored, refuses ingest with `read_only`, and
/// takes writes again once the mount is read-write, without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn read_only_data_dir_serves_queries_refuses_ingest_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let fs = Tmpfs::mount(&data, 64);
    let opts = storage_toml("min_free_bytes = 0");
    let mut hub = Hub::start_with(&data, opts.clone()).await;
    for seed in 0..3 {
        assert_eq!(post(&hub, seed, 500).await.0, 200);
    }
    assert!(hub.terminate().success());
    fs.remount("ro");

    let mut hub = Hub::start_unready(&data, opts.clone()).await;
    wait_for("/ready to report read_only", Duration::from_secs(60), || async {
        let (status, body) = ready(&hub).await;
        (status == 503 && body.to_string().contains("read_only")).then_some(())
    })
    .await;
    assert_eq!(
        exact_counts(&hub).await,
        (1500, 1500),
        "queries answered from what is stored"
    );
    let (status, body, retry) = post(&hub, 3, 500).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("read_only"),
        "{body}"
    );
    assert_eq!(retry.as_deref(), Some("5"));

    fs.remount("rw");
    wait_for("/ready after remount rw", Duration::from_secs(30), || async {
        (ready(&hub).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(post(&hub, 4, 500).await.0, 200);
    hub.kill9();
    let hub = Hub::start_with(&data, opts).await;
    assert_eq!(exact_counts(&hub).await, (2000, 2000));
}

fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn overwrite_middle(path: &Path, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let len = std::fs::metadata(path).expect("meta").len();
    let mut f = std::fs::OpenOptions::new().write(true).open(path).expect("open");
    f.seek(SeekFrom::Start(len / 2)).expect("seek");
    f.write_all(bytes).expect("write");
}

/// 8 bytes overwritten in the middle of the events' Parquet file: the Hub starts, quarantines
/// the file, names it with its row count, warns on SQL answers, and serves and ingests the rest.
#[tokio::test(flavor = "multi_thread")]
async fn damaged_parquet_file_is_quarantined_and_the_hub_serves_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut hub = Hub::start(&data).await;
    for seed in 0..5 {
        assert_eq!(post(&hub, seed, 2000).await.0, 200);
    }
    assert!(hub.terminate().success());
    let events = data.join("events");
    let parquet = files_with(&events, ".parquet");
    assert_eq!(parquet.len(), 1, "{parquet:?}");
    overwrite_middle(&parquet[0], &[0u8; 8]);

    let hub = Hub::start(&data).await;
    let (status, body) = ready(&hub).await;
    assert_eq!(status, 200, "quarantine does not stop the service: {body}");
    let health = body["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["name"] == "storage_health")
        .expect("storage_health")
        .clone();
    let q = &health["detail"]["quarantined"][0];
    assert_eq!(q["rows"], 10_000, "{health}");
    assert!(q["path"].as_str().expect("path").contains("/quarantine/events-"), "{q}");
    let status_body = hub.get_json("/api/v1/ingest/status").await;
    assert_eq!(status_body["storage"]["quarantined"][0]["rows"], 10_000);
    assert!(hub.metrics_text().await.contains("storage_quarantined_files_total 1"));

    let r = hub.sql_as("application/json", "SELECT count(*) AS n FROM events").await;
    let warning = r
        .headers()
        .get("x-hub-warning")
        .and_then(|v| v.to_str().ok())
        .expect("answers carry a warning")
        .to_string();
    assert!(warning.contains("10000 rows"), "{warning}");
    assert_eq!(exact_counts(&hub).await, (0, 0));
    assert_eq!(post(&hub, 99, 700).await.0, 200);
    assert_eq!(exact_counts(&hub).await, (700, 700));
}

/// Garbage in the middle of a WAL segment (three records, the middle one damaged): the Hub
/// starts, keeps the records before and after it, and quarantines a copy of the segment.
#[tokio::test(flavor = "multi_thread")]
async fn wal_garbage_in_the_middle_keeps_the_records_around_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut hub = Hub::start(&data).await;
    for seed in 0..3 {
        assert_eq!(post(&hub, seed, 1000).await.0, 200);
    }
    hub.kill9();
    let events = data.join("events");
    let wal = files_with(&events, ".arrows")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).expect("meta").len())
        .expect("a WAL segment");
    overwrite_middle(&wal, &[0xEE; 64]);

    let hub = Hub::start(&data).await;
    assert_eq!(
        exact_counts(&hub).await,
        (2000, 2000),
        "the first and third batch are back"
    );
    let body = ready(&hub).await.1;
    assert!(body.to_string().contains("damaged WAL segment"), "{body}");
    assert_eq!(files_with(&events.join("quarantine"), ".arrows").len(), 1);
}

/// The same through Kafka (a real Tansu broker): the consumer stores until the disk is full,
/// then retries without committing; once the file system is made larger (`remount,size=`, which
/// Linux allows while files are open) it catches up; after every offset is committed, `kill -9`
/// and a restart find every record exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn full_disk_under_kafka_consumption_loses_nothing_and_counts_once() {
    use crate::kafka::{Broker, kafka_opts};

    let broker = Broker::start();
    let topic = "events-full-disk";
    broker.create_topic(topic, 2).await;
    let payloads: Vec<Vec<u8>> = generated(81, 40_000, 0.0).into_iter().map(String::into_bytes).collect();
    let total = payloads.len() as i64;
    broker.produce(topic, &payloads).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let fs = Tmpfs::mount(&data, 16);
    let opts = kafka_opts(
        &broker,
        topic,
        "g-full-disk",
        "batch_max_records = 1000\n[storage]\nmin_free_bytes = 0\nsegment_max_rows = 10000000\n",
    );
    let mut hub = Hub::start_with(&data, opts.clone()).await;
    wait_for(
        "the disk to fill during consumption",
        Duration::from_secs(120),
        || async {
            let (status, body) = ready(&hub).await;
            (status == 503 && body.to_string().contains("no_space")).then_some(())
        },
    )
    .await;
    let stalled = exact_counts(&hub).await;
    assert!(stalled.0 < total && stalled.0 == stalled.1, "{stalled:?} of {total}");

    let status = Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(&fs.path)
        .status()
        .expect("mount");
    assert!(status.success(), "remount larger");
    wait_for("every record stored", Duration::from_secs(120), || async {
        (exact_counts(&hub).await == (total, total)).then_some(())
    })
    .await;
    wait_for("every offset committed", Duration::from_secs(60), || async {
        let text = hub.metrics_text().await;
        let committed: i64 = text
            .lines()
            .filter(|l| l.starts_with("kafka_committed_offset{") && l.contains(topic))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as i64)
            .sum();
        (committed == total).then_some(())
    })
    .await;
    assert_eq!(ready(&hub).await.0, 200);
    hub.kill9();
    let hub = Hub::start_with(&data, opts).await;
    assert_eq!(exact_counts(&hub).await, (total, total), "every record exactly once");
}
