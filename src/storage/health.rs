//! Storage health shared by every local store of the process (events, continuous-query outputs,
//! late events): which stores cannot write right now and why, and which damaged files were set
//! aside. `/ready`, `/api/v1/ingest/status` and the SQL route read it; the stores write it.
//!
//! A state change (a store starts failing, or recovers) is logged once; every failed write is
//! counted in `storage_write_errors_total{kind}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::metrics::Metrics;

/// Why a store cannot write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The file system is full (ENOSPC, EDQUOT).
    NoSpace,
    /// Free space is below `storage.min_free_bytes`; writes are refused before they start.
    LowSpace,
    /// The file system is read-only or the directory is not writable.
    ReadOnly,
    /// Any other I/O error (EIO on write or fsync, ...).
    Io,
}

impl FaultKind {
    /// Classifies an I/O error.
    pub fn of(e: &std::io::Error) -> Self {
        // errno values of Linux: ENOSPC 28, EDQUOT 122, EROFS 30, EACCES 13, EPERM 1.
        match e.raw_os_error() {
            Some(28 | 122) => return Self::NoSpace,
            Some(30 | 13 | 1) => return Self::ReadOnly,
            _ => {}
        }
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Self::NoSpace,
            std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => Self::ReadOnly,
            _ => Self::Io,
        }
    }

    /// The label value used in metrics and error codes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSpace => "no_space",
            Self::LowSpace => "low_space",
            Self::ReadOnly => "read_only",
            Self::Io => "io_error",
        }
    }
}

/// A store that currently cannot write.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// The store's directory.
    pub dir: PathBuf,
    /// The cause.
    pub kind: FaultKind,
    /// What failed, for the operator.
    pub message: String,
    /// When the store started failing (RFC 3339).
    pub since: String,
}

/// A file set aside because it could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantinedFile {
    /// Where it is now.
    pub path: PathBuf,
    /// The store's directory it came from.
    pub store: PathBuf,
    /// Rows it held, when its footer (or the WAL records before the damage) could tell.
    pub rows: Option<u64>,
    /// Why it was set aside.
    pub reason: String,
}

#[derive(Debug, Default)]
struct State {
    faults: BTreeMap<PathBuf, Fault>,
    quarantined: Vec<QuarantinedFile>,
    flush_failing: BTreeMap<PathBuf, FaultKind>,
}

/// Process-wide storage health. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StorageHealth {
    state: Arc<Mutex<State>>,
    /// Whether any store is failing: lets the append path skip the lock when all is well.
    any_fault: Arc<std::sync::atomic::AtomicBool>,
    /// Whether free space is below the warning threshold (checked on every append: no lock).
    low_free: Arc<std::sync::atomic::AtomicBool>,
    metrics: Option<Metrics>,
}

impl StorageHealth {
    /// Health reporting into `metrics` (none in unit tests).
    pub fn new(metrics: Option<Metrics>) -> Self {
        Self {
            state: Arc::default(),
            any_fault: Arc::default(),
            low_free: Arc::default(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn count_error(&self, kind: FaultKind) {
        if let Some(m) = &self.metrics {
            m.storage_write_errors_total.with_label_values(&[kind.as_str()]).inc();
        }
    }

    /// A write of the store in `dir` failed (or was refused before it started).
    pub fn write_failed(&self, dir: &Path, kind: FaultKind, message: &str) {
        self.count_error(kind);
        let mut state = self.lock();
        let changed = state.faults.get(dir).is_none_or(|f| f.kind != kind);
        if changed {
            tracing::error!(dir = %dir.display(), kind = kind.as_str(), %message,
                "storage unavailable: writes are refused until it recovers");
            state.faults.insert(
                dir.to_path_buf(),
                Fault {
                    dir: dir.to_path_buf(),
                    kind,
                    message: message.to_string(),
                    since: chrono::Utc::now().to_rfc3339(),
                },
            );
        }
        self.any_fault.store(true, std::sync::atomic::Ordering::Release);
    }

    /// A write of the store in `dir` succeeded (or a recovery probe did).
    pub fn write_ok(&self, dir: &Path) {
        // Fast path: nothing failing anywhere, no lock.
        if !self.any_fault.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut state = self.lock();
        if let Some(f) = state.faults.remove(dir) {
            tracing::info!(dir = %dir.display(), was = f.kind.as_str(), since = %f.since, "storage recovered: writes accepted again");
        }
        self.any_fault
            .store(!state.faults.is_empty(), std::sync::atomic::Ordering::Release);
    }

    /// Whether the store in `dir` is failing.
    pub fn fault(&self, dir: &Path) -> Option<Fault> {
        self.lock().faults.get(dir).cloned()
    }

    /// Every failing store.
    pub fn faults(&self) -> Vec<Fault> {
        self.lock().faults.values().cloned().collect()
    }

    /// A Parquet flush of the store in `dir` failed (retried by maintenance; the WAL is kept).
    pub fn flush_failed(&self, dir: &Path, kind: FaultKind, message: &str) {
        self.count_error(kind);
        let mut state = self.lock();
        if state.flush_failing.insert(dir.to_path_buf(), kind) != Some(kind) {
            tracing::error!(dir = %dir.display(), kind = kind.as_str(), %message,
                "writing Parquet failed; the WAL segments are kept and the flush is retried");
        }
    }

    /// A Parquet flush of the store in `dir` succeeded.
    pub fn flush_ok(&self, dir: &Path) {
        let mut state = self.lock();
        if state.flush_failing.remove(dir).is_some() {
            tracing::info!(dir = %dir.display(), "writing Parquet works again");
        }
    }

    /// Records a file set aside.
    pub fn quarantined(&self, file: QuarantinedFile) {
        if let Some(m) = &self.metrics {
            m.storage_quarantined_files_total.inc();
        }
        tracing::error!(path = %file.path.display(), rows = ?file.rows, reason = %file.reason,
            "damaged file moved to quarantine; the rest of the data is served");
        self.lock().quarantined.push(file);
    }

    /// Files found in a quarantine folder at startup (already counted when they were moved).
    pub fn already_quarantined(&self, file: QuarantinedFile) {
        self.lock().quarantined.push(file);
    }

    /// Every file set aside.
    pub fn quarantined_files(&self) -> Vec<QuarantinedFile> {
        self.lock().quarantined.clone()
    }

    /// Reports the free space of the data file system; logs once when it falls below `warn`.
    pub fn free_space(&self, free: u64, warn: u64) {
        if let Some(m) = &self.metrics {
            m.storage_free_bytes.set(i64::try_from(free).unwrap_or(i64::MAX));
        }
        let low = free < warn;
        if low != self.low_free.swap(low, std::sync::atomic::Ordering::Relaxed) {
            if low {
                tracing::warn!(
                    free_bytes = free,
                    warn_free_bytes = warn,
                    "the data file system is running out of space"
                );
            } else {
                tracing::info!(
                    free_bytes = free,
                    "free space on the data file system is above the warning threshold again"
                );
            }
        }
    }

    /// The `/ready` view: ready unless a store cannot write.
    pub fn status(&self) -> super::ComponentStatus {
        let state = self.lock();
        let faults: Vec<&Fault> = state.faults.values().collect();
        super::ComponentStatus {
            name: "storage_health",
            kind: "local",
            ready: faults.is_empty(),
            detail: serde_json::json!({
                "unavailable": faults,
                "flush_failing": state.flush_failing.iter()
                    .map(|(d, k)| serde_json::json!({"dir": d, "kind": k})).collect::<Vec<_>>(),
                "quarantined": state.quarantined,
            }),
        }
    }
}
