//! The manifest catalog over an in-memory object store: two instances (two data directories)
//! sharing one bucket.

use std::sync::Arc;
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::*;

const T: &str = "events";

fn file(store_id: &str, name: &str, bytes: i64, min: i64, max: i64) -> CatalogFile {
    CatalogFile {
        path: format!("events/{store_id}/{name}"),
        store_id: store_id.into(),
        rows: 10,
        bytes,
        min_event_time_us: Some(min),
        max_event_time_us: Some(max),
        covers: Vec::new(),
    }
}

fn catalogs() -> (Arc<dyn ObjectStore>, ManifestCatalog, ManifestCatalog) {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("history");
    let a = ManifestCatalog::new(Arc::clone(&store), prefix.clone(), "a".into());
    let b = ManifestCatalog::new(Arc::clone(&store), prefix, "b".into());
    (store, a, b)
}

fn paths(files: &[CatalogFile]) -> Vec<&str> {
    files.iter().map(|f| f.path.as_str()).collect()
}

#[tokio::test]
async fn each_instance_lists_every_directory_s_files_oldest_first() {
    let (_, a, b) = catalogs();
    a.record(T, "ia", &file("a", "1.parquet", 100, 20, 29))
        .await
        .expect("record");
    b.record(T, "ib", &file("b", "1.parquet", 100, 10, 19))
        .await
        .expect("record");
    // Again is a no-op.
    a.record(T, "ia", &file("a", "1.parquet", 100, 20, 29))
        .await
        .expect("again");
    for c in [&a, &b] {
        assert_eq!(
            paths(&c.all(T).await.expect("all")),
            ["events/b/1.parquet", "events/a/1.parquet"]
        );
    }
    assert_eq!(
        a.shipped_segments(T, "a").await.expect("own"),
        ["1.parquet".to_string()].into_iter().collect()
    );
    // A manifest records only its own directory's files.
    let err = a
        .record(T, "ia", &file("b", "2.parquet", 1, 0, 1))
        .await
        .expect_err("not own");
    assert!(err.to_string().contains("only this instance"), "{err}");
}

#[tokio::test]
async fn the_generation_moves_when_any_manifest_changes_and_only_then() {
    let (_, a, b) = catalogs();
    let g0 = a.generation().await.expect("g0");
    assert_eq!(a.generation().await.expect("same"), g0);
    b.record(T, "ib", &file("b", "1.parquet", 100, 10, 19))
        .await
        .expect("record");
    let g1 = a.generation().await.expect("g1");
    assert_ne!(g1, g0, "another instance's write is seen");
    a.record(T, "ia", &file("a", "1.parquet", 100, 10, 19))
        .await
        .expect("record");
    let g2 = a.generation().await.expect("g2");
    assert_ne!(g2, g1, "this instance's own write is seen");
    assert_eq!(a.generation().await.expect("again"), g2);
}

#[tokio::test]
async fn a_restarted_instance_reads_its_manifest_back() {
    let (store, a, _) = catalogs();
    a.record(T, "ia", &file("a", "1.parquet", 100, 10, 19))
        .await
        .expect("record");
    let again = ManifestCatalog::new(store, Path::from("history"), "a".into());
    assert_eq!(paths(&again.all(T).await.expect("all")), ["events/a/1.parquet"]);
    assert!(again.shipped_segments(T, "a").await.expect("own").contains("1.parquet"));
}

#[tokio::test]
async fn compaction_swaps_own_files_only_and_their_objects_go_after_the_grace() {
    let (_, a, b) = catalogs();
    for (i, name) in ["1.parquet", "2.parquet", "3.parquet"].iter().enumerate() {
        a.record(T, "ia", &file("a", name, 10, i as i64, i as i64))
            .await
            .expect("record");
    }
    b.record(T, "ib", &file("b", "1.parquet", 10, 0, 0))
        .await
        .expect("record");
    assert_eq!(a.stores(T).await.expect("stores"), ["a"]);
    assert!(a.small_files(T, "b", 100).await.expect("theirs").is_empty());
    let small = a.small_files(T, "a", 100).await.expect("small");
    assert_eq!(small.len(), 3);
    let mut merged = file("a", "merged.parquet", 30, 0, 2);
    merged.covers = vec!["1.parquet".into(), "2.parquet".into()];
    let inputs = vec!["events/a/1.parquet".to_string(), "events/a/2.parquet".to_string()];
    assert!(a.swap(T, "ia", &merged, &inputs).await.expect("swap"));
    // The same inputs again: no longer visible, nothing changes.
    assert!(!a.swap(T, "ia", &merged, &inputs).await.expect("stale swap"));
    let seen_by_b = b.all(T).await.expect("all");
    assert_eq!(
        paths(&seen_by_b),
        ["events/a/merged.parquet", "events/b/1.parquet", "events/a/3.parquet"]
    );
    // The merged file names the segments it holds: the shipper does not ship them again.
    let shipped = a.shipped_segments(T, "a").await.expect("shipped");
    assert!(shipped.contains("1.parquet") && shipped.contains("2.parquet") && shipped.contains("3.parquet"));
    // Taken-out files are due for deletion only after the grace; then forgotten.
    assert!(
        a.expired(Duration::from_secs(600))
            .await
            .expect("within grace")
            .is_empty()
    );
    let mut due = a.expired(Duration::ZERO).await.expect("due");
    due.sort();
    assert_eq!(due, inputs);
    for path in &due {
        a.forget(path).await.expect("forget");
    }
    assert!(a.expired(Duration::ZERO).await.expect("forgotten").is_empty());
    assert_eq!(paths(&a.all(T).await.expect("all")).len(), 3);
}

#[tokio::test]
async fn retention_takes_out_own_files_past_the_cutoff() {
    let (_, a, b) = catalogs();
    a.record(T, "ia", &file("a", "old.parquet", 10, 0, 99))
        .await
        .expect("record");
    a.record(T, "ia", &file("a", "new.parquet", 10, 100, 200))
        .await
        .expect("record");
    b.record(T, "ib", &file("b", "old.parquet", 10, 0, 99))
        .await
        .expect("record");
    assert_eq!(a.expire_before(T, 100).await.expect("expire"), 1);
    assert_eq!(a.expire_before(T, 100).await.expect("again"), 0);
    // b's old file is b's to expire.
    assert_eq!(
        paths(&b.all(T).await.expect("all")),
        ["events/b/old.parquet", "events/a/new.parquet"]
    );
}

#[tokio::test]
async fn a_damaged_manifest_is_named_in_the_error() {
    let (store, a, _) = catalogs();
    store
        .put(
            &Path::from("history/_catalog/events/zz.json"),
            object_store::PutPayload::from_static(b"not json"),
        )
        .await
        .expect("put");
    let err = a.all(T).await.expect_err("damaged");
    assert!(err.to_string().contains("_catalog/events/zz.json"), "{err}");
}
