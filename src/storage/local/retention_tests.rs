//! Retention: files whose events are all past the cutoff leave the store, then the disk.

use std::time::Duration;

use datafusion::arrow::array::RecordBatch;

use super::tests::count;
use super::*;
use crate::event::decode_batch_body;
use crate::generate::{Generator, GeneratorConfig};

/// 2026-01-01T00:00:00Z and 2026-03-01T00:00:00Z in µs.
const JANUARY_US: i64 = 1_767_225_600_000_000;
const MARCH_US: i64 = 1_772_323_200_000_000;

fn batch_at(start_us: i64, n: usize) -> RecordBatch {
    let mut g = Generator::new(GeneratorConfig {
        seed: 7,
        start_us,
        events_per_sec: 100.0,
        disorder_ms: 0,
        ..GeneratorConfig::default()
    });
    let body: String = (0..n).map(|_| g.next_event(None) + "\n").collect();
    decode_batch_body(body.as_bytes(), 0).expect("decodes").batch
}

fn parquet_files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("list")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        })
        .count()
}

#[tokio::test]
async fn files_past_the_cutoff_leave_queries_at_once_and_the_disk_after_the_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LocalStoreConfig {
        data_dir: dir.path().to_path_buf(),
        retention_days: 30,
        ..LocalStoreConfig::default()
    };
    let store = LocalStore::open(
        config.clone(),
        Metrics::new().expect("metrics"),
        StorageHealth::default(),
    )
    .expect("open");
    assert_eq!(store.retention(), Duration::from_secs(30 * 86_400));
    store.append(batch_at(JANUARY_US, 200)).await.expect("append");
    store.flush().await.expect("flush");
    store.append(batch_at(MARCH_US, 300)).await.expect("append");
    store.flush().await.expect("flush");
    // Still in memory: never taken out before its flush.
    store.append(batch_at(JANUARY_US, 50)).await.expect("append");
    let events = store.dir().to_path_buf();
    assert_eq!(parquet_files_in(&events), 2);

    // A cutoff between the two files: January's goes, March's stays.
    let version = store.data_version();
    let cutoff = MARCH_US - 86_400_000_000;
    assert_eq!(
        store
            .expire_before(cutoff, Duration::from_secs(3600))
            .await
            .expect("expire"),
        1
    );
    assert_eq!(count(&store, "").await, 350);
    assert_ne!(
        store.data_version(),
        version,
        "cached answers are not served for the old set"
    );
    assert_eq!(
        parquet_files_in(&events),
        2,
        "kept on disk while a query may still read it"
    );
    assert_eq!(store.expire_before(cutoff, Duration::ZERO).await.expect("expire"), 0);
    assert_eq!(parquet_files_in(&events), 1, "deleted after the grace");
    drop(store);

    // A restart does not bring it back; the events that were in memory are flushed and go too.
    let store = LocalStore::open(config, Metrics::new().expect("metrics"), StorageHealth::default()).expect("reopen");
    assert_eq!(count(&store, "").await, 350);
    store.flush().await.expect("flush");
    assert_eq!(store.expire_before(cutoff, Duration::ZERO).await.expect("expire"), 1);
    assert_eq!(count(&store, "").await, 300);
    assert_eq!(parquet_files_in(&events), 1);
}
