//! Held batches (exactly-once Kafka ingest): durable but invisible until published, dropped at
//! replay unless their tag was claimed, never flushed while undecided.

use std::collections::HashSet;
use std::sync::Arc;

use super::tests::{batch, count};
use super::*;

fn open(dir: &std::path::Path, claimed: Option<&[u64]>) -> LocalStore {
    let config = LocalStoreConfig {
        data_dir: dir.to_path_buf(),
        ..LocalStoreConfig::default()
    };
    let filter: Option<ReplayFilter> = claimed.map(|tags| {
        let tags: HashSet<u64> = tags.iter().copied().collect();
        Arc::new(move |_seq, tag| tags.contains(&tag)) as ReplayFilter
    });
    LocalStore::open_filtered(
        config,
        Metrics::new().expect("metrics"),
        StorageHealth::default(),
        filter,
    )
    .expect("open")
}

#[tokio::test]
async fn a_held_batch_is_invisible_until_published_and_gone_when_discarded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Some(&[]));
    store.append(batch(1, 100)).await.expect("append");
    let kept = store.append_held(batch(2, 40), 7).await.expect("hold");
    let dropped = store.append_held(batch(3, 30), 8).await.expect("hold");
    assert_eq!(count(&store, "").await, 100, "held batches are not queried");
    let version = store.data_version();
    assert!(store.publish(&kept));
    assert_eq!(count(&store, "").await, 140);
    assert_ne!(store.data_version(), version, "publishing changes the data version");
    assert!(store.discard(&dropped));
    assert_eq!(count(&store, "").await, 140);
    assert!(!store.publish(&dropped), "a discarded batch cannot be published");
    assert!(!store.publish(&kept), "a batch is published once");
}

#[tokio::test]
async fn replay_keeps_only_claimed_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Some(&[]));
    store.append(batch(1, 100)).await.expect("append");
    let claimed = store.append_held(batch(2, 40), 11).await.expect("hold");
    store.publish(&claimed);
    // Held and never claimed: the crash came before the sink's transaction.
    store.append_held(batch(3, 30), 12).await.expect("hold");
    // Claimed, but the crash came before it was published.
    store.append_held(batch(4, 20), 13).await.expect("hold");
    assert_eq!(count(&store, "").await, 140);
    drop(store);

    let store = open(dir.path(), Some(&[11, 13]));
    assert_eq!(
        count(&store, "").await,
        160,
        "untagged + claimed batches, not the unclaimed one"
    );
    drop(store);
    // Without a filter (the sink no longer configured) every durable batch counts.
    let store = open(dir.path(), None);
    assert_eq!(count(&store, "").await, 190);
}

#[tokio::test]
async fn a_segment_with_an_undecided_batch_is_not_flushed_until_it_is_decided() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Some(&[]));
    store.append(batch(1, 100)).await.expect("append");
    let held = store.append_held(batch(2, 50), 21).await.expect("hold");
    assert_eq!(store.oldest_wal_seq(), Some(held.seq));
    store.flush().await.expect("flush");
    assert_eq!(
        store.oldest_wal_seq(),
        Some(held.seq),
        "the segment waits for its held batch"
    );
    assert!(wal::segment_path(&store.shared.dir, held.seq).exists());
    assert!(store.publish(&held));
    store.flush().await.expect("flush");
    assert!(
        !wal::segment_path(&store.shared.dir, held.seq).exists(),
        "flushed once decided"
    );
    assert!(store.oldest_wal_seq() > Some(held.seq));
    assert_eq!(count(&store, "").await, 150);
    drop(store);
    // Flushed: the Parquet file holds it, no claim is needed any more.
    let store = open(dir.path(), Some(&[]));
    assert_eq!(count(&store, "").await, 150);
}

#[test]
fn each_tag_names_only_the_batch_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = events_schema();
    let mut wal = WalWriter::create(&wal::RealFs, dir.path(), 0, &schema, true).expect("create");
    wal.stage_tagged(&batch(1, 10), Some(5)).expect("stage");
    wal.stage_tagged(&batch(2, 10), None).expect("stage");
    wal.stage_tagged(&batch(3, 10), Some(u64::MAX)).expect("stage");
    wal.commit().expect("commit");
    let replay = wal::replay(&wal::segment_path(dir.path(), 0)).expect("replay");
    assert_eq!(replay.batches.len(), 3);
    assert_eq!(replay.tags, vec![Some(5), None, Some(u64::MAX)]);
    assert!(!replay.is_damaged());
}

#[tokio::test]
async fn replayed_batches_do_not_each_count_the_whole_segment_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), None);
    for seed in 0..300 {
        store.append(batch(seed, 1)).await.expect("append");
    }
    let before = store.shared.memory_bytes();
    drop(store);
    let store = open(dir.path(), None);
    assert_eq!(count(&store, "").await, 300);
    let after = store.shared.memory_bytes();
    // Decoded in place, each of the 300 batches was a slice of the ~300 KB file and counted
    // it whole (~90 MB).
    assert!(after <= before, "replayed {after} bytes, appended {before}");
}
