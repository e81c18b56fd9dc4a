//! Storage faults a test cannot provoke on a real file system on demand (EIO on write or fsync,
//! short writes, a failed truncate), injected under the real WAL code; and damaged files
//! (WAL garbage, Parquet bit rot, truncation) found at startup.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::prelude::SessionContext;

use super::wal::{RealFs, SegmentFile, SegmentFs};
use super::*;
use crate::event::decode_batch_body;
use crate::generate::{Generator, GeneratorConfig};
use crate::storage::health::FaultKind;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// The next write fails with EIO after writing this many bytes.
    Write { after: usize },
    /// The next fsync fails with EIO.
    Sync,
    /// The next truncate fails with EIO.
    Truncate,
}

/// Faults waiting for their operation, shared by every file the fs creates.
#[derive(Debug, Default, Clone)]
struct Script(Arc<Mutex<VecDeque<Fault>>>);

impl Script {
    fn arm(&self, f: Fault) {
        self.0.lock().expect("script").push_back(f);
    }

    fn take(&self, pick: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let mut q = self.0.lock().expect("script");
        let i = q.iter().position(pick)?;
        q.remove(i)
    }

    fn armed(&self) -> usize {
        self.0.lock().expect("script").len()
    }
}

#[derive(Debug)]
struct FaultyFs {
    script: Script,
}

impl SegmentFs for FaultyFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(FaultyFile {
            inner: RealFs.create(path)?,
            script: self.script.clone(),
        }))
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Box<dyn SegmentFile>,
    script: Script,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

impl SegmentFile for FaultyFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Some(Fault::Write { after }) = self.script.take(|f| matches!(f, Fault::Write { .. })) {
            self.inner.write_all(&buf[..after.min(buf.len())])?;
            return Err(eio());
        }
        self.inner.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if self.script.take(|f| *f == Fault::Sync).is_some() {
            return Err(eio());
        }
        self.inner.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        if self.script.take(|f| *f == Fault::Truncate).is_some() {
            return Err(eio());
        }
        self.inner.truncate(len)
    }
}

pub(super) fn batch(seed: u64, n: usize) -> RecordBatch {
    let mut g = Generator::new(GeneratorConfig {
        seed,
        ..GeneratorConfig::default()
    });
    let body: String = (0..n).map(|_| g.next_event(None) + "\n").collect();
    decode_batch_body(body.as_bytes(), 0).expect("decodes").batch
}

fn config(dir: &Path) -> LocalStoreConfig {
    LocalStoreConfig {
        data_dir: dir.to_path_buf(),
        min_free_bytes: 0,
        ..LocalStoreConfig::default()
    }
}

fn open_faulty(dir: &Path, script: &Script, health: &StorageHealth) -> LocalStore {
    LocalStore::open_with_fs(
        dir.join("events"),
        events_schema(),
        Some("timestamp".into()),
        config(dir),
        None,
        health.clone(),
        Arc::new(FaultyFs { script: script.clone() }),
    )
    .expect("open")
}

fn open(dir: &Path, health: &StorageHealth) -> LocalStore {
    open_faulty(dir, &Script::default(), health)
}

/// (rows, distinct event ids) through SQL.
async fn counts(store: &LocalStore) -> (i64, i64) {
    let ctx = SessionContext::new();
    ctx.register_table("events", store.table_provider()).expect("register");
    let batches = ctx
        .sql("SELECT count(*), count(DISTINCT event_id) FROM events")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    let c = |i: usize| batches[0].column(i).as_primitive::<Int64Type>().value(0);
    (c(0), c(1))
}

fn wal_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let events = dir.join("events");
    wal::list_segments(&events)
        .expect("list")
        .into_iter()
        .map(|s| wal::segment_path(&events, s))
        .collect()
}

/// Each fault: the failing append answers an error naming the I/O error, leaves nothing in
/// the WAL (no torn bytes before later records), the store takes the next append, and after a
/// crash exactly the acknowledged events come back.
#[tokio::test]
async fn a_failed_append_leaves_no_trace_and_the_next_one_is_durable() {
    for fault in [Fault::Write { after: 0 }, Fault::Write { after: 137 }, Fault::Sync] {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = Script::default();
        let health = StorageHealth::default();
        let store = open_faulty(dir.path(), &script, &health);
        store.append(batch(1, 300)).await.expect("append");
        store.append(batch(2, 300)).await.expect("append");
        script.arm(fault);
        let err = store
            .append(batch(3, 300))
            .await
            .expect_err("the injected fault fails the append");
        assert_eq!(err.fault_kind(), Some(FaultKind::Io), "{fault:?}: {err}");
        let failed = health
            .fault(&dir.path().join("events"))
            .expect("the store reports the fault");
        assert_eq!(failed.kind, FaultKind::Io);
        assert_eq!(script.armed(), 0);
        store
            .append(batch(4, 300))
            .await
            .expect("the next append goes to a fresh segment");
        assert!(health.faults().is_empty(), "a successful write clears the fault");
        assert_eq!(
            counts(&store).await,
            (900, 900),
            "{fault:?}: the failed batch is not visible"
        );
        drop(store); // a crash: nothing flushed

        for path in wal_files(dir.path()) {
            let replay = wal::replay(&path).expect("replay");
            assert_eq!(
                replay.torn_tail_bytes,
                0,
                "{fault:?}: {} was cut back to its last record",
                path.display()
            );
            assert!(!replay.is_damaged());
        }
        let store = open(dir.path(), &health);
        assert_eq!(
            counts(&store).await,
            (900, 900),
            "{fault:?}: exactly the acknowledged events"
        );
    }
}

/// When even cutting the failed record off fails (EIO on write, then on truncate), the sealed
/// segment keeps the unacknowledged record at its end: after a crash it is replayed (the
/// documented at-least-once case for a request answered 503), and no acknowledged record is
/// ever lost, because nothing is appended after it.
#[tokio::test]
async fn a_failed_undo_seals_the_segment_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = Script::default();
    let health = StorageHealth::default();
    let store = open_faulty(dir.path(), &script, &health);
    store.append(batch(1, 200)).await.expect("append");
    script.arm(Fault::Sync);
    script.arm(Fault::Truncate);
    store.append(batch(2, 200)).await.expect_err("fsync fails");
    store.append(batch(3, 200)).await.expect("fresh segment");
    assert_eq!(counts(&store).await, (400, 400));
    drop(store);
    let store = open(dir.path(), &health);
    assert_eq!(
        counts(&store).await,
        (600, 600),
        "acknowledged 400 back, plus the unacknowledged record that could not be cut off"
    );
}

#[tokio::test]
async fn a_failed_segment_creation_refuses_appends_until_it_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = Script::default();
    let health = StorageHealth::default();
    let store = open_faulty(dir.path(), &script, &health);
    store.append(batch(1, 100)).await.expect("append");
    script.arm(Fault::Write { after: 10 });
    store.append(batch(2, 100)).await.expect_err("write fails");
    // Creating the next segment writes its header: that fails too.
    script.arm(Fault::Write { after: 3 });
    store.append(batch(3, 100)).await.expect_err("no segment to write to");
    assert!(health.fault(&dir.path().join("events")).is_some());
    // Maintenance probes recovery by creating a segment.
    store.maintain().await.expect("maintain");
    assert!(health.faults().is_empty(), "the probe succeeded");
    store.append(batch(4, 100)).await.expect("append");
    drop(store);
    let store = open(dir.path(), &health);
    assert_eq!(counts(&store).await, (200, 200));
}

#[tokio::test]
async fn below_min_free_space_writes_are_refused_before_they_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let health = StorageHealth::default();
    let cfg = LocalStoreConfig {
        min_free_bytes: u64::MAX,
        ..config(dir.path())
    };
    let store = LocalStore::open(cfg, Metrics::new().expect("metrics"), health.clone()).expect("open");
    let err = store.append(batch(1, 50)).await.expect_err("refused");
    assert!(matches!(err, StorageError::LowSpace { .. }), "{err}");
    assert!(err.to_string().contains("storage.min_free_bytes"), "{err}");
    assert_eq!(
        health.fault(&dir.path().join("events")).map(|f| f.kind),
        Some(FaultKind::LowSpace)
    );
    let replay = wal::replay(&wal_files(dir.path())[0]).expect("replay");
    assert!(replay.batches.is_empty(), "nothing was written");
    assert!(!store.status().ready);
}

fn overwrite(path: &Path, at: u64, bytes: &[u8]) {
    use std::io::{Seek, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).expect("open");
    f.seek(io::SeekFrom::Start(at)).expect("seek");
    f.write_all(bytes).expect("write");
}

/// Garbage in the middle of a WAL segment: every complete record after it is kept, the damage
/// is reported, the original goes to quarantine and the segment is rewritten clean.
#[tokio::test]
async fn wal_garbage_in_the_middle_keeps_the_records_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let health = StorageHealth::default();
    let store = open(dir.path(), &health);
    for seed in 0..3 {
        store.append(batch(seed, 200)).await.expect("append");
    }
    drop(store);
    let path = wal_files(dir.path())[0].clone();
    let len = std::fs::metadata(&path).expect("meta").len();
    // The second of three similar-sized records sits in the middle of the file.
    overwrite(&path, len / 2, &[0xAB; 64]);
    let store = open(dir.path(), &health);
    assert_eq!(
        counts(&store).await,
        (400, 400),
        "records 1 and 3 kept, the damaged one lost"
    );
    let quarantined = health.quarantined_files();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(
        quarantined[0].reason.contains("damaged WAL segment"),
        "{}",
        quarantined[0].reason
    );
    assert!(quarantined[0].path.exists());
    drop(store);
    let health = StorageHealth::default();
    let store = open(dir.path(), &health);
    assert_eq!(counts(&store).await, (400, 400));
    let replay = wal::replay(&path).expect("replay");
    assert!(!replay.is_damaged(), "the segment was rewritten clean");
    assert_eq!(
        health.quarantined_files().len(),
        1,
        "the earlier quarantine is still reported"
    );
}

/// Bit rot in the middle of a Parquet file, at its footer, or a truncated file: the store
/// opens, sets the file aside with its row count (when the footer still tells), and serves
/// the rest.
#[tokio::test]
async fn damaged_parquet_files_are_quarantined_and_the_rest_served() {
    for damage in ["middle", "footer", "truncated"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let health = StorageHealth::default();
        let store = open(dir.path(), &health);
        store.append(batch(1, 3000)).await.expect("append");
        store.flush().await.expect("flush");
        store.append(batch(2, 500)).await.expect("append");
        store.flush().await.expect("flush");
        drop(store);
        let events = dir.path().join("events");
        let first = parquet_files::file_path(&events, 0);
        let len = std::fs::metadata(&first).expect("meta").len();
        match damage {
            "middle" => overwrite(&first, len / 2, &[0x5A; 8]),
            "footer" => overwrite(&first, len - 20, &[0x5A; 8]),
            _ => std::fs::OpenOptions::new()
                .write(true)
                .open(&first)
                .expect("open")
                .set_len(len / 3)
                .expect("truncate"),
        }
        let store = open(dir.path(), &health);
        assert_eq!(counts(&store).await, (500, 500), "{damage}: the other file is served");
        let q = health.quarantined_files();
        assert_eq!(q.len(), 1, "{damage}: {q:?}");
        assert!(
            q[0].path.starts_with(events.join(QUARANTINE_DIR)),
            "{damage}: {:?}",
            q[0].path
        );
        assert!(!first.exists());
        if damage == "middle" {
            assert_eq!(q[0].rows, Some(3000), "the footer still tells the rows");
        }
        assert!(q[0].reason.contains("checksum mismatch"), "{damage}: {}", q[0].reason);
        store.append(batch(3, 100)).await.expect("append");
        assert_eq!(counts(&store).await, (600, 600));
    }
}

/// Parquet files written before checksums existed are verified by decoding them.
#[tokio::test]
async fn parquet_files_without_checksums_are_verified_by_decoding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let health = StorageHealth::default();
    let store = open(dir.path(), &health);
    store.append(batch(1, 2000)).await.expect("append");
    store.flush().await.expect("flush");
    drop(store);
    let events = dir.path().join("events");
    let file = parquet_files::file_path(&events, 0);
    std::fs::remove_file(parquet_files::checksum_path(&file)).expect("remove checksum");
    let store = open(dir.path(), &health);
    assert_eq!(counts(&store).await, (2000, 2000), "an intact legacy file is kept");
    drop(store);
    std::fs::remove_file(parquet_files::checksum_path(&file)).ok();
    let len = std::fs::metadata(&file).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open")
        .set_len(len - 10)
        .expect("truncate");
    let store = open(dir.path(), &health);
    assert_eq!(counts(&store).await, (0, 0));
    assert_eq!(health.quarantined_files().len(), 1);
}

/// A failed Parquet flush (here: the target directory turned into a file's name clash) keeps
/// the WAL segment and leaves no temporary file; the next flush succeeds.
#[tokio::test]
async fn a_failed_flush_keeps_the_wal_and_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let health = StorageHealth::default();
    let store = open(dir.path(), &health);
    store.append(batch(1, 400)).await.expect("append");
    let events = dir.path().join("events");
    // Occupy the temporary file's name with a directory: creating it fails.
    let tmp = parquet_files::file_path(&events, 0).with_extension("parquet.tmp");
    std::fs::create_dir(&tmp).expect("mkdir");
    store.flush().await.expect_err("the flush fails");
    assert!(wal::segment_path(&events, 0).exists(), "the WAL segment is kept");
    assert!(!parquet_files::file_path(&events, 0).exists());
    std::fs::remove_dir(&tmp).expect("rmdir");
    store.flush().await.expect("the retry succeeds");
    assert!(!wal::segment_path(&events, 0).exists());
    assert_eq!(counts(&store).await, (400, 400));
    drop(store);
    let store = open(dir.path(), &health);
    assert_eq!(counts(&store).await, (400, 400));
}

/// Segments of the first WAL format (a plain Arrow IPC stream) still replay.
#[tokio::test]
async fn legacy_wal_segments_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events");
    std::fs::create_dir_all(&events).expect("mkdir");
    let file = std::fs::File::create(wal::segment_path(&events, 0)).expect("create");
    let mut w = datafusion::arrow::ipc::writer::StreamWriter::try_new(file, &events_schema()).expect("writer");
    w.write(&batch(9, 250)).expect("write");
    w.finish().expect("finish");
    drop(w);
    let store = open(dir.path(), &StorageHealth::default());
    assert_eq!(counts(&store).await, (250, 250));
}
