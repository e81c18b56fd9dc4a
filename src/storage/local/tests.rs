//! Local store tests: durability, replay, torn tails, flush idempotence, query snapshots.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::prelude::SessionContext;

use super::*;
use crate::event::decode_batch_body;
use crate::generate::{Generator, GeneratorConfig};

pub(super) fn batch(seed: u64, n: usize) -> RecordBatch {
    let mut g = Generator::new(GeneratorConfig {
        seed,
        ..GeneratorConfig::default()
    });
    let body: String = (0..n).map(|_| g.next_event(None) + "\n").collect();
    let out = decode_batch_body(body.as_bytes(), 0).expect("decodes");
    assert!(out.rejected.is_empty());
    out.batch
}

fn config(dir: &std::path::Path) -> LocalStoreConfig {
    LocalStoreConfig {
        data_dir: dir.to_path_buf(),
        ..LocalStoreConfig::default()
    }
}

fn open(dir: &std::path::Path) -> LocalStore {
    LocalStore::open(config(dir), Metrics::new().expect("metrics"), StorageHealth::default()).expect("open")
}

pub(super) async fn count(store: &LocalStore, sql_where: &str) -> i64 {
    let ctx = SessionContext::new();
    ctx.register_table("events", store.table_provider()).expect("register");
    let df = ctx
        .sql(&format!("SELECT count(*) AS n FROM events {sql_where}"))
        .await
        .expect("plan");
    let batches = df.collect().await.expect("run");
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

async fn distinct_ids(store: &LocalStore) -> i64 {
    let ctx = SessionContext::new();
    ctx.register_table("events", store.table_provider()).expect("register");
    let df = ctx
        .sql("SELECT count(DISTINCT event_id) FROM events")
        .await
        .expect("plan");
    df.collect().await.expect("run")[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

#[tokio::test]
async fn appended_events_are_queryable_and_survive_reopen_without_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for seed in 0..5 {
        store.append(batch(seed, 300)).await.expect("append");
    }
    assert_eq!(count(&store, "").await, 1500);
    drop(store); // no flush: like a crash after the acknowledgements
    let store = open(dir.path());
    assert_eq!(
        count(&store, "").await,
        1500,
        "WAL replay restores every acknowledged event"
    );
}

#[tokio::test]
async fn flush_moves_segments_to_parquet_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.append(batch(1, 5000)).await.expect("append");
    store.flush().await.expect("flush");
    store.append(batch(2, 100)).await.expect("append after flush");
    let files = parquet_files::list_files(&dir.path().join("events")).expect("list");
    assert_eq!(files.len(), 1);
    assert_eq!(count(&store, "").await, 5100, "memory + parquet, no duplicates");
    assert_eq!(distinct_ids(&store).await, 5100);
    assert_eq!(
        count(&store, "WHERE model = 'gpt-4o' OR model <> 'gpt-4o' OR model IS NULL").await,
        5100
    );
    drop(store);
    let store = open(dir.path());
    assert_eq!(count(&store, "").await, 5100);
    // Flushing a store whose only data is in Parquet changes nothing.
    store.flush().await.expect("flush");
    assert_eq!(count(&store, "").await, 5100);
}

#[tokio::test]
async fn crash_between_parquet_rename_and_wal_delete_counts_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events_dir = dir.path().join("events");
    let store = open(dir.path());
    let b = batch(3, 700);
    store.append(b.clone()).await.expect("append");
    drop(store);
    // Simulate the crash: segment 0 is in Parquet but its WAL file is still there.
    parquet_files::write_segment(
        &events_dir,
        0,
        &events_schema(),
        Some("timestamp"),
        &parquet_files::FileFormat::default(),
        &[b],
    )
    .expect("write parquet");
    assert!(wal::segment_path(&events_dir, 0).exists());
    let store = open(dir.path());
    assert!(
        !wal::segment_path(&events_dir, 0).exists(),
        "flushed WAL segment removed on recovery"
    );
    assert_eq!(count(&store, "").await, 700);
}

#[tokio::test]
async fn torn_wal_tail_keeps_complete_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events_dir = dir.path().join("events");
    let store = open(dir.path());
    store.append(batch(4, 200)).await.expect("append");
    store.append(batch(5, 200)).await.expect("append");
    drop(store);
    let path = wal::segment_path(&events_dir, 0);
    let len = std::fs::metadata(&path).expect("meta").len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
    file.set_len(len - 100).expect("truncate");
    let store = open(dir.path());
    assert_eq!(
        count(&store, "").await,
        200,
        "the torn second batch is dropped, the first kept"
    );
    store
        .append(batch(6, 50))
        .await
        .expect("new writes go to a fresh segment");
    drop(store);
    let store = open(dir.path());
    assert_eq!(count(&store, "").await, 250);
}

#[tokio::test]
async fn rotation_by_size_and_time_filters_and_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LocalStoreConfig {
        segment_max_rows: 1000,
        ..config(dir.path())
    };
    let store = LocalStore::open(cfg, Metrics::new().expect("metrics"), StorageHealth::default()).expect("open");
    for seed in 0..4 {
        store.append(batch(seed + 10, 600)).await.expect("append");
        store.maintain().await.expect("maintain");
    }
    let files = parquet_files::list_files(&dir.path().join("events")).expect("list");
    assert!(files.len() >= 2, "segments rotated by size: {files:?}");
    assert_eq!(count(&store, "").await, 2400);
    let ctx = SessionContext::new();
    ctx.register_table("events", Arc::clone(&store.table_provider()))
        .expect("register");
    let rows: usize = ctx
        .sql("SELECT * FROM events LIMIT 7")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run")
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(rows, 7);
    let status = store.status();
    assert!(status.ready);
    assert_eq!(status.detail["parquet_files"], files.len());
}

#[tokio::test]
async fn rejects_batches_with_another_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let other = RecordBatch::try_from_iter([(
        "x",
        Arc::new(datafusion::arrow::array::Int64Array::from(vec![1])) as datafusion::arrow::array::ArrayRef,
    )])
    .expect("batch");
    assert!(matches!(store.append(other).await, Err(StorageError::SchemaMismatch)));
}

/// A store whose segments hold one batch of `rows` events and whose memory budget is two such
/// batches, with three appended: over the budget (nothing flushes: no maintenance task runs).
async fn over_the_memory_budget(dir: &std::path::Path, rows: usize) -> LocalStore {
    let size = batch(1, rows).get_array_memory_size();
    let store = LocalStore::open(
        LocalStoreConfig {
            segment_max_bytes: size,
            max_memory_bytes: 2 * size,
            ..config(dir)
        },
        Metrics::new().expect("metrics"),
        StorageHealth::default(),
    )
    .expect("open");
    for seed in 1..=3 {
        store.append(batch(seed, rows)).await.expect("under the budget");
    }
    store
}

/// Events in memory are bounded by bytes: an append over `max_memory_bytes` waits (and asks
/// the maintenance task to flush) until the flush frees memory, then goes through.
#[tokio::test]
async fn appends_over_the_memory_budget_wait_for_the_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = over_the_memory_budget(dir.path(), 200).await;
    assert!(store.shared.memory_bytes() > store.shared.memory_budget());
    // Full segments asked for maintenance already; drop that request, so the next one is the
    // waiting append's.
    let _ = futures::FutureExt::now_or_never(store.shared.maintain_now.notified());
    let asked = store.shared.maintain_now.notified();
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.append(batch(4, 200)).await }
    });
    asked.await;
    assert!(!waiting.is_finished(), "the append waits for memory");
    assert_eq!(count(&store, "").await, 600, "the waiting append is not visible");
    store.maintain().await.expect("rotate and flush");
    waiting
        .await
        .expect("task")
        .expect("the append goes through after the flush");
    assert_eq!(count(&store, "").await, 800);
    assert!(store.shared.memory_bytes() <= store.shared.memory_budget());
}

/// A flush that does not catch up fails the append after the wait, with a reason (503 over
/// HTTP), instead of holding it forever or growing memory.
#[tokio::test]
async fn waiting_for_memory_gives_up_with_a_reason_when_the_flush_never_frees_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = over_the_memory_budget(dir.path(), 100).await;
    // (`append` waits MEMORY_WAIT = 30 s; the same wait, bounded at 200 ms here.)
    let wait = Duration::from_millis(200);
    let started = Instant::now();
    let err = store.wait_for_memory(wait).await.expect_err("no flush ran");
    assert!(started.elapsed() >= wait);
    assert!(matches!(err, StorageError::MemoryFull { .. }), "{err}");
    assert!(err.to_string().contains("storage.max_memory_bytes"), "{err}");
    assert_eq!(count(&store, "").await, 300);
    store.maintain().await.expect("flush");
    store.wait_for_memory(wait).await.expect("memory freed");
}
