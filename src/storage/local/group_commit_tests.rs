//! Group commit: appends that queue while a commit is syncing share the next write and
//! `fdatasync`; each is answered only after its own records are durable, and a failed sync fails
//! exactly the group it covered.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;

use super::fault_tests::batch;
use super::wal::{RealFs, SegmentFile, SegmentFs};
use super::*;

/// Counts writes and syncs; while the gate is closed a sync blocks (so the test can queue
/// appends behind it); sync number `fail_at` fails with EIO.
#[derive(Debug, Default)]
struct Probe {
    closed: Mutex<bool>,
    opened: Condvar,
    /// Syncs waiting at the closed gate.
    waiting: AtomicUsize,
    waiting_cv: Condvar,
    waiting_lock: Mutex<()>,
    writes: AtomicUsize,
    syncs: AtomicUsize,
    /// The sync (counted from 1 over the probe's life) that fails with EIO; 0 = none.
    fail_at: AtomicUsize,
}

impl Probe {
    fn close(&self) {
        *self.closed.lock().expect("gate") = true;
    }

    fn open(&self) {
        *self.closed.lock().expect("gate") = false;
        self.opened.notify_all();
    }

    /// Blocks until a sync waits at the gate (the committer is busy).
    fn await_waiting_sync(&self) {
        let guard = self.waiting_lock.lock().expect("lock");
        let (_guard, timeout) = self
            .waiting_cv
            .wait_timeout_while(guard, Duration::from_secs(10), |()| {
                self.waiting.load(Ordering::Acquire) == 0
            })
            .expect("wait");
        assert!(!timeout.timed_out(), "no commit reached fdatasync within 10 s");
    }
}

#[derive(Debug)]
struct ProbedFs(Arc<Probe>);

impl SegmentFs for ProbedFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(ProbedFile {
            inner: RealFs.create(path)?,
            probe: Arc::clone(&self.0),
        }))
    }
}

#[derive(Debug)]
struct ProbedFile {
    inner: Box<dyn SegmentFile>,
    probe: Arc<Probe>,
}

impl SegmentFile for ProbedFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.probe.writes.fetch_add(1, Ordering::AcqRel);
        self.inner.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let p = &self.probe;
        let gate = p.closed.lock().expect("gate");
        if *gate {
            {
                let _l = p.waiting_lock.lock().expect("lock");
                p.waiting.fetch_add(1, Ordering::AcqRel);
                p.waiting_cv.notify_all();
            }
            let gate = p.opened.wait_while(gate, |closed| *closed).expect("gate");
            drop(gate);
            p.waiting.fetch_sub(1, Ordering::AcqRel);
        } else {
            drop(gate);
        }
        let n = p.syncs.fetch_add(1, Ordering::AcqRel) + 1;
        if n == p.fail_at.load(Ordering::Acquire) {
            return Err(io::Error::from_raw_os_error(5));
        }
        self.inner.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
}

fn open(dir: &Path, probe: &Arc<Probe>) -> LocalStore {
    LocalStore::open_with_fs(
        dir.join("events"),
        events_schema(),
        Some("timestamp".into()),
        LocalStoreConfig {
            data_dir: dir.to_path_buf(),
            min_free_bytes: 0,
            ..LocalStoreConfig::default()
        },
        None,
        StorageHealth::default(),
        Arc::new(ProbedFs(Arc::clone(probe))),
    )
    .expect("open")
}

fn rows_in_memory(store: &LocalStore) -> usize {
    store.shared.snapshot().batches.iter().map(RecordBatch::num_rows).sum()
}

/// Closes the gate and starts an append of `rows` rows; returns once its commit waits in
/// `fdatasync` (the committer is busy, so further appends queue behind it).
async fn append_blocked_in_sync(
    store: &LocalStore,
    probe: &Arc<Probe>,
    rows: usize,
) -> tokio::task::JoinHandle<Result<(), StorageError>> {
    probe.close();
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.append(batch(1, rows)).await }
    });
    let waiter = Arc::clone(probe);
    tokio::task::spawn_blocking(move || waiter.await_waiting_sync())
        .await
        .expect("join");
    first
}

type PendingAppendFuture<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send + 'a>>;

/// Sends `n` appends of `rows` rows each to the store's committer (each future is polled once,
/// which hands its batch over) and returns the pending futures.
fn queue_appends(store: &LocalStore, n: usize, rows: usize) -> Vec<PendingAppendFuture<'_>> {
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    (0..n)
        .map(|i| {
            let mut f = store.append(batch(100 + i as u64, rows));
            assert!(
                f.as_mut().poll(&mut cx).is_pending(),
                "append {i} finished before its commit"
            );
            f
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_queued_behind_a_sync_share_the_next_write_and_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = Arc::new(Probe::default());
    let store = open(dir.path(), &probe);
    let (writes0, syncs0) = (
        probe.writes.load(Ordering::Acquire),
        probe.syncs.load(Ordering::Acquire),
    );

    let first = append_blocked_in_sync(&store, &probe, 5).await;
    let queued = queue_appends(&store, 10, 3);
    // Nothing of the queued appends is visible (or acknowledged) before its sync.
    assert_eq!(rows_in_memory(&store), 0);
    probe.open();
    first.await.expect("join").expect("first append");
    for r in futures::future::join_all(queued).await {
        r.expect("queued append");
    }
    assert_eq!(
        probe.syncs.load(Ordering::Acquire) - syncs0,
        2,
        "one sync for the first, one for the group of 10"
    );
    assert_eq!(
        probe.writes.load(Ordering::Acquire) - writes0,
        2,
        "one write per commit"
    );
    assert_eq!(rows_in_memory(&store), 5 + 10 * 3);

    // After a crash every acknowledged record comes back from the WAL.
    drop(store);
    let reopened = open(dir.path(), &Arc::new(Probe::default()));
    assert_eq!(rows_in_memory(&reopened), 35);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_group_sync_fails_every_append_of_the_group_and_leaves_none_of_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = Arc::new(Probe::default());
    let store = open(dir.path(), &probe);
    let syncs0 = probe.syncs.load(Ordering::Acquire);

    // The first commit's sync is number syncs0 + 1 (blocked at the gate); the group queued
    // behind it syncs next, and that sync fails.
    probe.fail_at.store(syncs0 + 2, Ordering::Release);
    let first = append_blocked_in_sync(&store, &probe, 4).await;
    let queued = queue_appends(&store, 6, 2);
    probe.open();
    first.await.expect("join").expect("the first commit succeeds");
    for r in futures::future::join_all(queued).await {
        let e = r.expect_err("every append of the failed group fails");
        assert_eq!(e.fault_kind(), Some(crate::storage::health::FaultKind::Io), "{e}");
    }
    assert_eq!(rows_in_memory(&store), 4, "nothing of the failed group is visible");

    // The store takes the next append (on a fresh segment), and after a crash exactly the
    // acknowledged records come back.
    store.append(batch(9, 3)).await.expect("append after the failure");
    drop(store);
    let reopened = open(dir.path(), &Arc::new(Probe::default()));
    assert_eq!(rows_in_memory(&reopened), 4 + 3);
}
