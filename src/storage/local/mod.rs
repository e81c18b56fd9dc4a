//! The standalone event store: a write-ahead log for durability, recent events in memory,
//! older events in Parquet files, all under one data directory.
//!
//! ```text
//! <data_dir>/events/wal-<seq>.arrows      active and not-yet-flushed segments (Arrow IPC)
//! <data_dir>/events/events-<seq>.parquet  flushed segments, sorted by timestamp
//! ```
//! A segment is rotated when it reaches `segment_max_rows` or `segment_max_age`; a rotated
//! segment is written to Parquet, then dropped from memory and its WAL file deleted. If the
//! process dies between the two, recovery sees both files and deletes the WAL (the Parquet file
//! is only renamed into place once complete), so nothing is lost or counted twice.

mod parquet_files;
mod table;
pub(crate) mod wal;

pub use parquet_files::{ParquetCompression, footer_bounds};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use serde::{Deserialize, Serialize};

use super::health::{FaultKind, QuarantinedFile, StorageHealth};
use super::{ComponentStatus, EventStore, HeldAppend, ReplayFilter, StorageError};
use crate::event::events_schema;
use crate::metrics::Metrics;
use wal::{SegmentFs, WalWriter};

/// Folder (inside a store's directory) where damaged files are moved.
pub const QUARANTINE_DIR: &str = "quarantine";

/// Small batches (one per HTTP request) are coalesced into blocks of this many rows so that
/// queries scan few large batches.
const COALESCE_ROWS: usize = 8192;

/// Settings of the local store (the `[storage]` section).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalStoreConfig {
    /// Directory holding the WAL and Parquet files (env `DATA_DIR`).
    pub data_dir: PathBuf,
    /// Rotate the active WAL segment to Parquet once it holds this many events.
    pub segment_max_rows: usize,
    /// Rotate the active WAL segment to Parquet once its events take this many bytes in memory
    /// (Arrow), whichever of rows, bytes and age comes first: recent data in memory is bounded
    /// by bytes whatever the event size.
    pub segment_max_bytes: usize,
    /// Rotate the active WAL segment to Parquet once it is this many seconds old.
    pub segment_max_age_secs: u64,
    /// Events held in memory (the active segment and rotated ones waiting for their Parquet
    /// flush) at most this many bytes (Arrow), at least 2 × `segment_max_bytes`. Beyond it an
    /// append waits for the flush (backpressure: ingest slows to what the disk takes) and, if
    /// the flush does not catch up within 30 s, fails with 503 `memory_full` (env
    /// `STORAGE_MAX_MEMORY_BYTES`).
    pub max_memory_bytes: usize,
    /// `fdatasync` the WAL before acknowledging a write. Turning this off survives a crash of
    /// the process but not of the machine.
    pub fsync: bool,
    /// Writes are refused (503 `storage_unavailable`, kind `low_space`) before they start while
    /// the data file system has less free space than this, so the WAL rarely meets ENOSPC.
    pub min_free_bytes: u64,
    /// Below this much free space a warning is logged (once) and `/ready` shows it.
    pub warn_free_bytes: u64,
    /// Events whose time is more than this many days in the past are deleted, a Parquet file
    /// at a time once all its events are that old (0 = kept forever; env
    /// `STORAGE_RETENTION_DAYS`). Events still in memory wait for their flush.
    pub retention_days: u32,
    /// How often retention looks for files to delete.
    pub retention_check_secs: u64,
    /// Codec of the Parquet files a rotated segment is written to: `zstd` (level 1), `lz4`,
    /// `snappy` or `none` (see docs/storage.md for what each costs).
    pub parquet_compression: ParquetCompression,
}

impl Default for LocalStoreConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            segment_max_rows: 500_000,
            segment_max_bytes: 256 << 20,
            segment_max_age_secs: 300,
            max_memory_bytes: 512 << 20,
            fsync: true,
            min_free_bytes: 64 << 20,
            warn_free_bytes: 1 << 30,
            retention_days: 0,
            retention_check_secs: 60,
            parquet_compression: ParquetCompression::default(),
        }
    }
}

/// Events of one WAL segment held in memory.
#[derive(Debug)]
struct Segment {
    seq: u64,
    /// Coalesced blocks.
    blocks: Vec<RecordBatch>,
    /// Recent small batches not yet coalesced.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    rows: usize,
    /// Arrow memory of the segment's batches.
    bytes: usize,
    opened: Instant,
    /// Durable batches kept out of queries until their writer publishes or discards them
    /// (by tag): a Kafka batch waits here for the sink's transaction that claims it.
    held: Vec<(u64, RecordBatch)>,
}

impl Segment {
    fn new(seq: u64) -> Self {
        Self {
            seq,
            blocks: Vec::new(),
            pending: Vec::new(),
            pending_rows: 0,
            rows: 0,
            bytes: 0,
            opened: Instant::now(),
            held: Vec::new(),
        }
    }

    fn push(&mut self, schema: &SchemaRef, batch: RecordBatch) {
        self.rows += batch.num_rows();
        self.bytes += batch.get_array_memory_size();
        if batch.num_rows() >= COALESCE_ROWS {
            self.blocks.push(batch);
            return;
        }
        self.pending_rows += batch.num_rows();
        self.pending.push(batch);
        if self.pending_rows >= COALESCE_ROWS {
            match concat_batches(schema, &self.pending) {
                Ok(block) => {
                    self.blocks.push(block);
                    self.pending.clear();
                    self.pending_rows = 0;
                }
                Err(e) => tracing::warn!(error = %e, "coalescing batches failed; keeping them as they are"),
            }
        }
    }

    /// Whether the segment reached its row or byte bound (rotation is due, age aside).
    fn is_full(&self, config: &LocalStoreConfig) -> bool {
        self.rows >= config.segment_max_rows || self.bytes >= config.segment_max_bytes
    }

    fn batches(&self) -> impl Iterator<Item = &RecordBatch> {
        self.blocks.iter().chain(self.pending.iter())
    }
}

#[derive(Debug)]
struct Inner {
    /// In-memory segments, oldest first; the last one is the active segment.
    segments: Vec<Segment>,
    /// Flushed Parquet files, oldest first.
    files: Vec<PathBuf>,
    next_seq: u64,
    /// Latest event time (µs) of each flushed file, read from its footer once (retention).
    newest: std::collections::HashMap<PathBuf, Option<i64>>,
    /// Files retention took out of the list, deleted once no query can still read them.
    expired: Vec<(PathBuf, Instant)>,
}

impl Inner {
    /// Bytes of events held in memory (every segment not yet in Parquet).
    fn memory_bytes(&self) -> usize {
        self.segments.iter().map(|s| s.bytes).sum()
    }
}

/// A consistent view of the store for one query.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub batches: Vec<RecordBatch>,
    pub files: Vec<PathBuf>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    dir: PathBuf,
    schema: SchemaRef,
    config: LocalStoreConfig,
    /// The active WAL segment; `None` while no segment could be created (the disk is read-only
    /// or full). Held by the committer during a write and `fdatasync`, by rotation and by the
    /// recovery probe; taken before `inner` when both are needed, so queries (which take only
    /// `inner`) never wait for a sync.
    wal: Mutex<Option<WalWriter>>,
    inner: Mutex<Inner>,
    /// Serialises flushes so one segment is never written twice.
    flush_lock: tokio::sync::Mutex<()>,
    /// Column Parquet files are sorted by, if any.
    sort_column: Option<String>,
    /// How Parquet files are encoded.
    format: parquet_files::FileFormat,
    /// Only the events store reports storage gauges.
    metrics: Option<Metrics>,
    /// Where WAL segment files are created (the real file system, or a faulty one in tests).
    fs: Arc<dyn SegmentFs>,
    /// Process-wide storage health.
    health: StorageHealth,
    /// Identifies this opening of the store in [`DataVersion`]s.
    epoch: u64,
    /// Commits made visible since the store opened (bumped under the `inner` lock).
    appends: std::sync::atomic::AtomicU64,
    /// Bytes of the last write group that failed for lack of space (0 after a write succeeds):
    /// the store reports itself writable again only once that much is free, so a full disk
    /// does not flap between refused and ready each time a failed write's bytes are truncated.
    space_needed: std::sync::atomic::AtomicU64,
    /// Signalled after each segment written to Parquet (appends waiting for memory wake up).
    flushed: tokio::sync::Notify,
    /// Asks the maintenance task to rotate and flush now (a segment is full, or appends wait).
    maintain_now: tokio::sync::Notify,
}

impl Shared {
    /// Bytes of events held in memory (every segment not yet in Parquet).
    fn memory_bytes(&self) -> usize {
        self.lock().memory_bytes()
    }

    /// The memory budget of [`LocalStoreConfig::max_memory_bytes`].
    fn memory_budget(&self) -> usize {
        self.config
            .max_memory_bytes
            .max(self.config.segment_max_bytes.saturating_mul(2))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated in a way that
        // matters more than stopping service, so recover the guard.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_wal(&self) -> MutexGuard<'_, Option<WalWriter>> {
        self.wal.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the WAL writer with a new segment (rotation, or after a failed write sealed the
    /// active one). Creating it is also the recovery probe: it writes and syncs a header.
    fn open_next_segment(&self, wal: &mut Option<WalWriter>) -> Result<(), StorageError> {
        // `next_seq` only changes under the WAL lock, which the caller holds.
        let seq = self.lock().next_seq;
        let new_wal = WalWriter::create(self.fs.as_ref(), &self.dir, seq, &self.schema, self.config.fsync)?;
        // Every record of the old segment was synced when it was appended: nothing to close.
        *wal = Some(new_wal);
        let mut inner = self.lock();
        // The segment of a sealed WAL may be empty (a failed first append): drop it.
        if inner.segments.last().is_some_and(|s| s.rows == 0 && s.held.is_empty())
            && let Some(empty) = inner.segments.pop()
        {
            let _ = std::fs::remove_file(wal::segment_path(&self.dir, empty.seq));
        }
        inner.segments.push(Segment::new(seq));
        inner.next_seq = seq + 1;
        Ok(())
    }

    /// Free space of the data file system, and the refusal when it is below the minimum.
    fn check_free_space(&self) -> Result<(), StorageError> {
        let Some(free) = free_bytes(&self.dir) else {
            return Ok(());
        };
        self.health.free_space(free, self.config.warn_free_bytes);
        if free < self.config.min_free_bytes {
            return Err(StorageError::LowSpace {
                dir: self.dir.clone(),
                free,
                min: self.config.min_free_bytes,
            });
        }
        Ok(())
    }

    /// Opens a fresh WAL segment when there is none or a failed write sealed the active one.
    fn ensure_writable_segment(&self, wal: &mut Option<WalWriter>) -> Result<(), StorageError> {
        if wal.as_ref().is_none_or(WalWriter::is_sealed) {
            self.open_next_segment(wal)?;
        }
        Ok(())
    }

    /// Reports the outcome of a write (or a recovery probe) to the health registry.
    fn report<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        match &result {
            Ok(_) => self.health.write_ok(&self.dir),
            Err(e) => {
                if let Some(kind) = e.fault_kind() {
                    self.health.write_failed(&self.dir, kind, &e.to_string());
                }
            }
        }
        result
    }

    /// Commits one group of appends: every batch is staged as its own WAL record, then all are
    /// written with one write and made durable with one `fdatasync`; only then do they become
    /// visible in memory and are their writers answered. A failed write or sync fails the whole
    /// group (none of it was acknowledged, none of it stays in the file).
    fn commit_group(&self, group: Vec<PendingAppend>) {
        let outcome = self.report(self.check_free_space().and_then(|()| {
            self.check_space_needed()?;
            let mut wal = self.lock_wal();
            self.ensure_writable_segment(&mut wal)?;
            let writer = wal.as_mut().ok_or(StorageError::Closed)?;
            let seq = writer.seq();
            let staged: Vec<Result<u64, StorageError>> = group
                .iter()
                .map(|p| writer.stage_tagged(&p.batch, p.hold).map(|()| seq))
                .collect();
            writer.commit()?;
            // Still under the WAL lock: no rotation can slip between the sync and this push.
            let mut inner = self.lock();
            if let Some(active) = inner.segments.last_mut() {
                for (p, s) in group.iter().zip(&staged) {
                    if s.is_ok() {
                        match p.hold {
                            Some(tag) => active.held.push((tag, p.batch.clone())),
                            None => active.push(&self.schema, p.batch.clone()),
                        }
                    }
                }
            }
            // Still under `inner`: a snapshot taken after this sees the rows and the new version.
            self.appends.fetch_add(1, std::sync::atomic::Ordering::Release);
            let full = inner.segments.last().is_some_and(|a| a.is_full(&self.config));
            drop(inner);
            if full {
                // Rotate now, not at the next tick: a segment stays near its size bound.
                self.maintain_now.notify_one();
            }
            Ok(staged)
        }));
        if let Some(metrics) = &self.metrics {
            metrics.wal_commit_group_batches.observe(group.len() as f64);
        }
        match &outcome {
            Ok(_) => self.space_needed.store(0, std::sync::atomic::Ordering::Release),
            Err(e) if e.fault_kind() == Some(FaultKind::NoSpace) => {
                let bytes: usize = group
                    .iter()
                    .flat_map(|p| p.batch.columns())
                    .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
                    .sum();
                // The largest such write since the last success: a smaller one refused meanwhile
                // does not lower the bar (or the store would flap again).
                self.space_needed.fetch_max(
                    (bytes as u64).min(MAX_SPACE_NEEDED),
                    std::sync::atomic::Ordering::AcqRel,
                );
            }
            Err(_) => {}
        }
        match outcome {
            Ok(staged) => {
                for (p, s) in group.into_iter().zip(staged) {
                    let _ = p.done.send(s);
                }
            }
            Err(e) => {
                for p in group {
                    let _ = p.done.send(Err(e.duplicate()));
                }
            }
        }
    }

    /// While the store is failing: probes whether it can write again (free space above the
    /// minimum and above the write that last failed for lack of space, and a fresh WAL
    /// segment created and synced).
    fn try_recover(&self) {
        if self.health.fault(&self.dir).is_none() {
            return;
        }
        let _ = self.report(
            self.check_free_space()
                .and_then(|()| self.check_space_needed())
                .and_then(|()| self.ensure_writable_segment(&mut self.lock_wal())),
        );
    }

    /// Refuses while less is free than the write that last failed for lack of space; the
    /// store stays in its `no_space` state meanwhile.
    fn check_space_needed(&self) -> Result<(), StorageError> {
        let needed = self.space_needed.load(std::sync::atomic::Ordering::Acquire);
        if needed == 0 {
            return Ok(());
        }
        match free_bytes(&self.dir) {
            Some(free) if free < needed => Err(StorageError::io(format!("writing to {}", self.dir.display()))(
                std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!("{free} bytes free, the last write refused for lack of space needs {needed}"),
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Makes a held batch visible (`publish`) or drops it; false when no batch is held under
    /// `held`. A dropped batch stays in its WAL segment until that is flushed, and a replay
    /// drops it again (its tag was never claimed).
    fn release(&self, held: &HeldAppend, publish: bool) -> bool {
        let mut inner = self.lock();
        let Some(segment) = inner.segments.iter_mut().find(|s| s.seq == held.seq) else {
            return false;
        };
        let Some(i) = segment.held.iter().position(|(tag, _)| *tag == held.tag) else {
            return false;
        };
        let (_, batch) = segment.held.swap_remove(i);
        let rows = batch.num_rows() as i64;
        if publish {
            segment.push(&self.schema, batch);
            // Under `inner`, as for an append: a snapshot after this sees the rows and the version.
            self.appends.fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        if let Some(metrics) = &self.metrics {
            metrics.storage_rows_held.sub(rows);
            if publish {
                metrics.storage_rows_in_memory.add(rows);
            }
        }
        true
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            batches: inner.segments.iter().flat_map(|s| s.batches().cloned()).collect(),
            files: inner.files.clone(),
        }
    }
}

/// One append waiting for its group commit.
struct PendingAppend {
    batch: RecordBatch,
    /// Hold the batch under this tag (written to the WAL with it) instead of publishing it.
    hold: Option<u64>,
    /// Answered with the WAL segment the batch went to.
    done: tokio::sync::oneshot::Sender<Result<u64, StorageError>>,
}

/// The free space a failed write can ask for before the store reports itself writable again
/// (a larger write that failed does not keep smaller ones refused forever).
const MAX_SPACE_NEEDED: u64 = 16 << 20;

/// A group holds at most this many bytes of Arrow data (more waiting appends go to the next
/// group), so one commit's write stays bounded.
const MAX_GROUP_BYTES: usize = 64 << 20;

/// The group-commit loop of one store, on its own thread: takes every append that arrived
/// while the previous commit was syncing and commits them together. Under load a group grows
/// to what queued up during one `fdatasync` (no timer: a lone append is committed at once).
/// Ends when every [`LocalStore`] handle is dropped.
fn run_committer(shared: Arc<Shared>, rx: std::sync::mpsc::Receiver<PendingAppend>) {
    while let Ok(first) = rx.recv() {
        let mut bytes = first.batch.get_array_memory_size();
        let mut group = vec![first];
        while bytes < MAX_GROUP_BYTES {
            let Ok(next) = rx.try_recv() else { break };
            bytes += next.batch.get_array_memory_size();
            group.push(next);
        }
        shared.commit_group(group);
    }
}

/// The standalone event store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LocalStore {
    shared: Arc<Shared>,
    /// Appends go to the store's group-commit thread.
    committer: std::sync::mpsc::Sender<PendingAppend>,
}

impl LocalStore {
    /// Opens (or creates) the events store under `<data_dir>/events`, replaying any WAL
    /// segments.
    pub fn open(config: LocalStoreConfig, metrics: Metrics, health: StorageHealth) -> Result<Self, StorageError> {
        Self::open_filtered(config, metrics, health, None)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// How long events are kept (`retention_days`; zero: forever).
    pub fn retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.shared.config.retention_days) * 86_400)
    }

    /// The schema of what the store holds.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.shared.schema)
    }

    /// A consistent view of what the store holds now: the events in memory and the flushed
    /// files (a rotating segment is in exactly one of the two).
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// Opens (or creates) a store of any schema in `dir` (used for continuous-query outputs and
    /// the late-events table). `sort_column` orders rows inside Parquet files.
    pub fn open_table(
        dir: PathBuf,
        schema: SchemaRef,
        sort_column: Option<String>,
        config: LocalStoreConfig,
        metrics: Option<Metrics>,
        health: StorageHealth,
    ) -> Result<Self, StorageError> {
        Self::open_with_fs(dir, schema, sort_column, config, metrics, health, Arc::new(wal::RealFs))
    }

    /// [`Self::open`] for a store whose tagged (held) batches count only where `filter` says
    /// so: a batch written with a tag the filter refuses was never claimed by its writer's
    /// sink transaction and is left out (its source records are consumed again).
    pub fn open_filtered(
        config: LocalStoreConfig,
        metrics: Metrics,
        health: StorageHealth,
        filter: Option<ReplayFilter>,
    ) -> Result<Self, StorageError> {
        let dir = config.data_dir.join("events");
        Self::open_inner(
            dir,
            events_schema(),
            Some(crate::event::schema::col::TIMESTAMP.to_string()),
            config,
            Some(metrics),
            health,
            Arc::new(wal::RealFs),
            filter,
        )
    }

    /// [`Self::open_table`] creating WAL files through `fs`.
    pub(crate) fn open_with_fs(
        dir: PathBuf,
        schema: SchemaRef,
        sort_column: Option<String>,
        config: LocalStoreConfig,
        metrics: Option<Metrics>,
        health: StorageHealth,
        fs: Arc<dyn SegmentFs>,
    ) -> Result<Self, StorageError> {
        Self::open_inner(dir, schema, sort_column, config, metrics, health, fs, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn open_inner(
        dir: PathBuf,
        schema: SchemaRef,
        sort_column: Option<String>,
        config: LocalStoreConfig,
        metrics: Option<Metrics>,
        health: StorageHealth,
        fs: Arc<dyn SegmentFs>,
        filter: Option<ReplayFilter>,
    ) -> Result<Self, StorageError> {
        std::fs::create_dir_all(&dir).map_err(StorageError::io(format!("creating {}", dir.display())))?;
        remove_temp_files(&dir)?;
        report_quarantine(&dir, &health);

        // Damaged Parquet files are set aside; a segment whose WAL is still here is then read
        // from the WAL instead.
        let mut file_seqs = Vec::new();
        for seq in parquet_files::list_files(&dir)? {
            let path = parquet_files::file_path(&dir, seq);
            match parquet_files::verify(&path) {
                Ok(()) => file_seqs.push(seq),
                Err(reason) => {
                    let rows = parquet_files::footer_rows(&path);
                    let moved = quarantine(&dir, &path)?;
                    let _ = quarantine(&dir, &parquet_files::checksum_path(&path));
                    health.quarantined(QuarantinedFile {
                        path: moved,
                        store: dir.clone(),
                        rows,
                        reason,
                    });
                }
            }
        }
        remove_orphan_checksums(&dir)?;

        let mut segments = Vec::new();
        let mut replayed_rows = 0usize;
        for seq in wal::list_segments(&dir)? {
            let path = wal::segment_path(&dir, seq);
            if file_seqs.contains(&seq) {
                // Flushed before the crash; only the WAL deletion was missed.
                std::fs::remove_file(&path).map_err(StorageError::io(format!("removing {}", path.display())))?;
                continue;
            }
            let mut replay = wal::replay(&path)?;
            if let Some(filter) = &filter {
                let (mut kept, mut dropped) = (Vec::new(), 0usize);
                for (batch, tag) in std::mem::take(&mut replay.batches).into_iter().zip(&replay.tags) {
                    match tag {
                        Some(tag) if !filter(seq, *tag) => dropped += batch.num_rows(),
                        _ => kept.push(batch),
                    }
                }
                if dropped > 0 {
                    tracing::info!(path = %path.display(), dropped_rows = dropped,
                        "left out batches their writer's sink transaction never claimed (their records are consumed again)");
                }
                replay.batches = kept;
            }
            let rows: usize = replay.batches.iter().map(RecordBatch::num_rows).sum();
            if replay.is_damaged() {
                // Keep what could be read in a clean segment; the original goes to quarantine.
                let copy = quarantine_dir(&dir)?.join(path.file_name().unwrap_or_default());
                std::fs::copy(&path, &copy)
                    .map_err(StorageError::io(format!("copying {} to quarantine", path.display())))?;
                wal::rewrite(&dir, seq, &schema, &replay.batches)?;
                let reason = format!(
                    "damaged WAL segment: {} damaged region(s) skipped ({} bytes), damaged last record: {}; {} complete rows kept",
                    replay.damaged.len(),
                    replay.damaged.iter().map(|d| d.1).sum::<u64>(),
                    replay.damaged_tail,
                    rows
                );
                health.quarantined(QuarantinedFile {
                    path: copy,
                    store: dir.clone(),
                    rows: None,
                    reason,
                });
            } else if replay.torn_tail_bytes > 0 {
                tracing::warn!(path = %path.display(), torn_bytes = replay.torn_tail_bytes, recovered_rows = rows,
                    "WAL segment ends in a torn (never acknowledged) write; keeping every complete record");
            }
            let mut segment = Segment::new(seq);
            for batch in compact_replayed(&schema, replay.batches)? {
                replayed_rows += batch.num_rows();
                segment.push(&schema, batch);
            }
            segments.push(segment);
        }
        let max_seq = file_seqs.iter().chain(segments.iter().map(|s| &s.seq)).copied().max();
        let next_seq = max_seq.map_or(0, |s| s + 1);
        // A disk that cannot take writes (read-only, full) does not stop the store from
        // opening: it serves what it holds and refuses writes until a segment can be created.
        let wal = match WalWriter::create(fs.as_ref(), &dir, next_seq, &schema, config.fsync) {
            Ok(w) => Some(w),
            Err(e) => match e.fault_kind() {
                Some(kind) => {
                    health.write_failed(&dir, kind, &e.to_string());
                    None
                }
                None => return Err(e),
            },
        };
        segments.push(Segment::new(next_seq));
        tracing::info!(dir = %dir.display(), parquet_files = file_seqs.len(), replayed_rows, "local store opened");

        let files = file_seqs.iter().map(|s| parquet_files::file_path(&dir, *s)).collect();
        let shared = Arc::new(Shared {
            dir,
            format: parquet_files::FileFormat::new(&schema, config.parquet_compression),
            schema,
            config,
            wal: Mutex::new(wal),
            inner: Mutex::new(Inner {
                segments,
                files,
                next_seq: next_seq + 1,
                newest: std::collections::HashMap::new(),
                expired: Vec::new(),
            }),
            flush_lock: tokio::sync::Mutex::new(()),
            sort_column,
            metrics,
            fs,
            health,
            epoch: uuid::Uuid::new_v4().as_u64_pair().0,
            appends: std::sync::atomic::AtomicU64::new(0),
            space_needed: std::sync::atomic::AtomicU64::new(0),
            flushed: tokio::sync::Notify::new(),
            maintain_now: tokio::sync::Notify::new(),
        });
        let (committer, pending) = std::sync::mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("wal-commit".into())
            .spawn(move || run_committer(thread_shared, pending))
            .map_err(StorageError::io("starting the WAL commit thread"))?;
        let store = Self { shared, committer };
        store.update_gauges();
        Ok(store)
    }

    fn update_gauges(&self) {
        let Some(metrics) = &self.shared.metrics else { return };
        let inner = self.shared.lock();
        let rows: usize = inner.segments.iter().map(|s| s.rows).sum();
        metrics.storage_rows_in_memory.set(rows as i64);
        metrics
            .storage_bytes_in_memory
            .set(i64::try_from(inner.memory_bytes()).unwrap_or(i64::MAX));
        metrics.storage_parquet_files.set(inner.files.len() as i64);
    }

    /// Closes the active segment if it is due (or `force`), opening a new one. Returns whether
    /// a segment was rotated.
    fn rotate_if_due(&self, force: bool) -> Result<bool, StorageError> {
        let shared = &self.shared;
        let mut wal = shared.lock_wal();
        let due = {
            let inner = shared.lock();
            let Some(active) = inner.segments.last() else {
                return Ok(false);
            };
            active.rows > 0
                && (force
                    || active.is_full(&shared.config)
                    || active.opened.elapsed() >= Duration::from_secs(shared.config.segment_max_age_secs))
        };
        if !due {
            return Ok(false);
        }
        shared.open_next_segment(&mut wal)?;
        Ok(true)
    }

    /// Writes every rotated (non-active) segment to Parquet.
    async fn flush_rotated(&self) -> Result<usize, StorageError> {
        let _guard = self.shared.flush_lock.lock().await;
        let mut flushed = 0;
        loop {
            let todo = {
                let inner = self.shared.lock();
                let n = inner.segments.len();
                match inner.segments.first() {
                    // Held batches are neither in nor out yet: the segment waits for their
                    // writer (one sink transaction), so the file holds exactly what counts.
                    Some(s) if n > 1 && s.held.is_empty() => Some((s.seq, s.batches().cloned().collect::<Vec<_>>())),
                    _ => None,
                }
            };
            let Some((seq, batches)) = todo else { break };
            let shared = Arc::clone(&self.shared);
            let path = tokio::task::spawn_blocking(move || -> Result<Option<PathBuf>, StorageError> {
                if batches.is_empty() {
                    return Ok(None);
                }
                parquet_files::write_segment(
                    &shared.dir,
                    seq,
                    &shared.schema,
                    shared.sort_column.as_deref(),
                    &shared.format,
                    &batches,
                )
                .map(Some)
            })
            .await
            .map_err(StorageError::format("flush task"))?;
            let path = match path {
                Ok(p) => p,
                Err(e) => {
                    let kind = e.fault_kind().unwrap_or(FaultKind::Io);
                    self.shared.health.flush_failed(&self.shared.dir, kind, &e.to_string());
                    return Err(e);
                }
            };
            self.shared.health.flush_ok(&self.shared.dir);
            {
                let mut inner = self.shared.lock();
                inner.segments.retain(|s| s.seq != seq);
                if let Some(path) = path {
                    inner.files.push(path);
                }
            }
            self.shared.flushed.notify_waiters();
            let wal_path = wal::segment_path(&self.shared.dir, seq);
            std::fs::remove_file(&wal_path).map_err(StorageError::io(format!("removing {}", wal_path.display())))?;
            flushed += 1;
        }
        self.update_gauges();
        Ok(flushed)
    }

    /// One maintenance step: rotate if due, flush what was rotated.
    pub async fn maintain(&self) -> Result<(), StorageError> {
        self.shared.try_recover();
        // Over the memory budget the active segment goes to Parquet too, whatever its size.
        let over_budget = self.shared.memory_bytes() > self.shared.memory_budget();
        self.rotate_if_due(over_budget)?;
        let flushed = self.flush_rotated().await?;
        if flushed > 0 {
            tracing::debug!(flushed, "flushed WAL segments to Parquet");
        }
        Ok(())
    }

    /// Runs [`Self::maintain`] every second, and at once when a segment is full or appends wait
    /// for memory, until `shutdown` fires.
    pub async fn run_maintenance(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shared.maintain_now.notified() => {}
                _ = shutdown.changed() => break,
            }
            if let Err(e) = self.maintain().await {
                tracing::error!(error = %e, "storage maintenance failed; will retry");
            }
        }
    }
}

/// How long a file retention took out of the store stays on disk: longer than any query that
/// may have listed it runs.
pub const EXPIRED_FILE_GRACE: Duration = Duration::from_secs(600);

impl LocalStore {
    /// Takes out of the store every flushed file whose events are all older than `cutoff_us`
    /// (event time, µs) and deletes the files taken out more than `grace` ago. Returns how many
    /// files were taken out. Files without time statistics are kept.
    pub async fn expire_before(&self, cutoff_us: i64, grace: Duration) -> Result<usize, StorageError> {
        let Some(column) = self.shared.sort_column.clone() else {
            return Ok(0);
        };
        let unknown: Vec<PathBuf> = {
            let inner = self.shared.lock();
            inner
                .files
                .iter()
                .filter(|f| !inner.newest.contains_key(*f))
                .cloned()
                .collect()
        };
        let read = tokio::task::spawn_blocking(move || {
            unknown
                .into_iter()
                .map(|f| {
                    let newest = footer_bounds(&f, &column).ok().and_then(|(_, b)| b).map(|(_, hi)| hi);
                    (f, newest)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(StorageError::format("reading file statistics"))?;
        let (taken, due) = {
            let mut inner = self.shared.lock();
            inner.newest.extend(read);
            let old: Vec<PathBuf> = inner
                .files
                .iter()
                .filter(|f| inner.newest.get(*f).copied().flatten().is_some_and(|t| t < cutoff_us))
                .cloned()
                .collect();
            if !old.is_empty() {
                inner.files.retain(|f| !old.contains(f));
                for f in &old {
                    inner.newest.remove(f);
                }
                let now = Instant::now();
                inner.expired.extend(old.iter().map(|f| (f.clone(), now)));
                // Under `inner`: a snapshot after this misses the files and sees the new version.
                self.shared.appends.fetch_add(1, std::sync::atomic::Ordering::Release);
            }
            let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut inner.expired)
                .into_iter()
                .partition(|(_, at)| at.elapsed() >= grace);
            inner.expired = keep;
            (old.len(), due)
        };
        for (path, _) in due {
            for p in [parquet_files::checksum_path(&path), path.clone()] {
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io(format!("removing {}", p.display()))(e)),
                }
            }
            tracing::info!(path = %path.display(), "deleted a file past retention");
        }
        if taken > 0 {
            if let Some(m) = &self.shared.metrics {
                m.storage_files_expired_total.inc_by(taken as u64);
            }
            self.update_gauges();
        }
        Ok(taken)
    }

    /// Retention every `retention_check_secs` against the clock `now_us` (µs), until
    /// `shutdown` fires; does nothing when `retention_days` is 0.
    pub async fn run_retention(
        self,
        now_us: Arc<dyn Fn() -> i64 + Send + Sync>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let days = self.shared.config.retention_days;
        if days == 0 {
            return;
        }
        let keep_us = i64::from(days) * 86_400 * 1_000_000;
        let mut tick = tokio::time::interval(Duration::from_secs(self.shared.config.retention_check_secs.max(1)));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            match self.expire_before(now_us() - keep_us, EXPIRED_FILE_GRACE).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(files = n, retention_days = days, "events past retention taken out"),
                Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
            }
        }
    }
}

/// How long an append waits for the flush to free memory before it fails.
const MEMORY_WAIT: Duration = Duration::from_secs(30);

impl LocalStore {
    /// Backpressure: while the events in memory exceed the budget, waits for the flush to
    /// write some to Parquet (at most `wait`).
    async fn wait_for_memory(&self, wait: Duration) -> Result<(), StorageError> {
        let budget = self.shared.memory_budget();
        let deadline = tokio::time::Instant::now() + wait;
        let mut waited = false;
        loop {
            let flushed = self.shared.flushed.notified();
            tokio::pin!(flushed);
            // Registered before the check: a flush between the check and the wait is not missed.
            flushed.as_mut().enable();
            let bytes = self.shared.memory_bytes();
            if bytes <= budget {
                if waited && let Some(m) = &self.shared.metrics {
                    m.storage_backpressure_waits_total.inc();
                }
                return Ok(());
            }
            waited = true;
            self.shared.maintain_now.notify_one();
            if tokio::time::timeout_at(deadline, flushed).await.is_err() {
                return Err(StorageError::MemoryFull { bytes, max: budget });
            }
        }
    }
}

impl LocalStore {
    /// Hands `batch` to the group commit; answers with the WAL segment it went to once durable.
    async fn submit(&self, batch: RecordBatch, hold: Option<u64>) -> Result<u64, StorageError> {
        if batch.schema() != self.shared.schema {
            return Err(StorageError::SchemaMismatch);
        }
        let rows = batch.num_rows();
        let started = Instant::now();
        self.wait_for_memory(MEMORY_WAIT).await?;
        let (done, committed) = tokio::sync::oneshot::channel();
        self.committer
            .send(PendingAppend { batch, hold, done })
            .map_err(|_| StorageError::Closed)?;
        let seq = committed.await.map_err(|_| StorageError::Closed)??;
        if let Some(metrics) = &self.shared.metrics {
            metrics.wal_append_seconds.observe(started.elapsed().as_secs_f64());
            match hold {
                None => metrics.storage_rows_in_memory.add(rows as i64),
                Some(_) => metrics.storage_rows_held.add(rows as i64),
            }
        }
        Ok(seq)
    }
}

#[async_trait]
impl EventStore for LocalStore {
    async fn append(&self, batch: RecordBatch) -> Result<(), StorageError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.submit(batch, None).await.map(|_| ())
    }

    async fn append_held(&self, batch: RecordBatch, tag: u64) -> Result<HeldAppend, StorageError> {
        let seq = self.submit(batch, Some(tag)).await?;
        Ok(HeldAppend { seq, tag })
    }

    fn publish(&self, held: &HeldAppend) -> bool {
        self.shared.release(held, true)
    }

    fn discard(&self, held: &HeldAppend) -> bool {
        self.shared.release(held, false)
    }

    fn oldest_wal_seq(&self) -> Option<u64> {
        self.shared.lock().segments.first().map(|s| s.seq)
    }

    fn data_version(&self) -> super::DataVersion {
        super::DataVersion {
            epoch: self.shared.epoch,
            appends: self.shared.appends.load(std::sync::atomic::Ordering::Acquire),
        }
    }

    fn table_provider(&self) -> Arc<dyn TableProvider> {
        Arc::new(table::LocalEventsTable::new(Arc::clone(&self.shared)))
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.rotate_if_due(true)?;
        self.flush_rotated().await?;
        Ok(())
    }

    fn status(&self) -> ComponentStatus {
        // A commit in progress holds the WAL lock (so a writer exists); never wait for its sync.
        let has_wal = match self.shared.wal.try_lock() {
            Ok(wal) => wal.is_some(),
            Err(std::sync::TryLockError::WouldBlock) => true,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().is_some(),
        };
        let inner = self.shared.lock();
        let rows: usize = inner.segments.iter().map(|s| s.rows).sum();
        ComponentStatus {
            name: "storage",
            kind: "local",
            ready: has_wal && self.shared.health.fault(&self.shared.dir).is_none(),
            detail: serde_json::json!({
                "unavailable": self.shared.health.fault(&self.shared.dir),
                "data_dir": self.shared.dir.display().to_string(),
                "rows_in_memory": rows,
                "wal_segments": inner.segments.len(),
                "parquet_files": inner.files.len(),
            }),
        }
    }
}

/// Replayed batches copied into blocks of about [`COALESCE_ROWS`] rows: decoded, they are
/// slices of the whole segment file's buffer, which each would keep alive and count in full
/// (memory budget, result sizes).
fn compact_replayed(schema: &SchemaRef, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, StorageError> {
    // `concat_batches` of one batch returns it as it is (a slice): copy that one by `take`.
    let copy = |run: &[RecordBatch]| -> Result<RecordBatch, StorageError> {
        let copied = match run {
            [one] => datafusion::arrow::compute::take_record_batch(
                one,
                &datafusion::arrow::array::UInt32Array::from_iter_values(0..one.num_rows() as u32),
            ),
            many => concat_batches(schema, many),
        };
        copied.map_err(StorageError::format("compacting replayed batches"))
    };
    let mut out = Vec::new();
    let mut run: Vec<RecordBatch> = Vec::new();
    let mut rows = 0;
    for batch in batches {
        if batch.schema() != *schema {
            return Err(StorageError::SchemaMismatch);
        }
        rows += batch.num_rows();
        run.push(batch);
        if rows >= COALESCE_ROWS {
            out.push(copy(&run)?);
            run.clear();
            rows = 0;
        }
    }
    if !run.is_empty() {
        out.push(copy(&run)?);
    }
    Ok(out)
}

/// Lists `<prefix><seq><suffix>` files in `dir`, ascending by `seq`.
fn list_sequenced(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<u64>, StorageError> {
    let mut seqs = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(StorageError::io(format!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(StorageError::io(format!("listing {}", dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.parse().ok())
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

fn remove_temp_files(dir: &Path) -> Result<(), StorageError> {
    let entries = std::fs::read_dir(dir).map_err(StorageError::io(format!("listing {}", dir.display())))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(".tmp") {
            std::fs::remove_file(entry.path()).map_err(StorageError::io("removing temp file"))?;
        }
    }
    Ok(())
}

/// Moves `path` into the store's quarantine folder; returns where it went.
fn quarantine(dir: &Path, path: &Path) -> Result<PathBuf, StorageError> {
    let target = quarantine_dir(dir)?.join(path.file_name().unwrap_or_default());
    std::fs::rename(path, &target).map_err(StorageError::io(format!("moving {} to quarantine", path.display())))?;
    sync_dir(dir)?;
    Ok(target)
}

fn quarantine_dir(dir: &Path) -> Result<PathBuf, StorageError> {
    let q = dir.join(QUARANTINE_DIR);
    std::fs::create_dir_all(&q).map_err(StorageError::io(format!("creating {}", q.display())))?;
    Ok(q)
}

/// Reports the files quarantined by earlier runs, so `/ready` keeps naming them.
fn report_quarantine(dir: &Path, health: &StorageHealth) {
    let Ok(entries) = std::fs::read_dir(dir.join(QUARANTINE_DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "crc32") {
            continue;
        }
        let rows = path
            .extension()
            .is_some_and(|e| e == "parquet")
            .then(|| parquet_files::footer_rows(&path))
            .flatten();
        health.already_quarantined(QuarantinedFile {
            path,
            store: dir.to_path_buf(),
            rows,
            reason: "quarantined by an earlier run".into(),
        });
    }
}

/// Removes checksum files whose Parquet file never got renamed into place (a crash between the
/// two renames; the WAL still holds that segment).
fn remove_orphan_checksums(dir: &Path) -> Result<(), StorageError> {
    let entries = std::fs::read_dir(dir).map_err(StorageError::io(format!("listing {}", dir.display())))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(parquet) = path.to_str().and_then(|p| p.strip_suffix(".crc32")) else {
            continue;
        };
        if !Path::new(parquet).exists() {
            std::fs::remove_file(&path).map_err(StorageError::io(format!("removing {}", path.display())))?;
        }
    }
    Ok(())
}

/// Free bytes for unprivileged writers on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Makes directory entries (created or renamed files) durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StorageError::io(format!("syncing directory {}", dir.display())))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod group_commit_tests;
#[cfg(test)]
mod held_tests;
#[cfg(test)]
mod retention_tests;
