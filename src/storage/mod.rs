//! Storage seam: where accepted events are made durable and how SQL reads them back.
//!
//! The standalone default is [`local::LocalStore`] (write-ahead log + Parquet files under the
//! data directory). Cluster-mode stores plug in behind the same [`EventStore`] trait.

pub mod health;
pub mod json_file;
pub mod local;
pub mod versions;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::TableProvider;
use serde::Serialize;

use crate::error::{Classify, ErrorClass};

/// Errors of an event store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding or decoding Arrow/Parquet data failed.
    #[error("{context}: {source}")]
    Format {
        /// What the store was doing.
        context: String,
        /// The underlying error (shared, so a failed group commit can hand it to every waiter).
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },
    /// A write the store cannot take, or data it wrote that does not read back (no underlying
    /// error: the store found it).
    #[error("{context}: {message}")]
    Invalid {
        /// What the store was doing.
        context: String,
        /// What is wrong.
        message: String,
    },
    /// The batch does not have the `events` schema (a bug in the caller).
    #[error("batch schema does not match the events schema")]
    SchemaMismatch,
    /// The store is shutting down and accepts no more writes.
    #[error("store is closed")]
    Closed,
    /// More events wait in memory for their Parquet flush than `storage.max_memory_bytes`, and
    /// the flush did not catch up in time: the write was refused before it started.
    #[error(
        "{bytes} bytes of events wait in memory for their Parquet flush (storage.max_memory_bytes = {max}); the disk is not keeping up"
    )]
    MemoryFull {
        /// Bytes held.
        bytes: usize,
        /// The budget.
        max: usize,
    },
    /// Free space is below `storage.min_free_bytes`: the write was refused before it started.
    #[error("only {free} bytes free on the file system of {}, below storage.min_free_bytes = {min}", dir.display())]
    LowSpace {
        /// The store's directory.
        dir: std::path::PathBuf,
        /// Free bytes.
        free: u64,
        /// The configured minimum.
        min: u64,
    },
}

impl StorageError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    pub(crate) fn format<E: std::error::Error + Send + Sync + 'static>(
        context: impl Into<String>,
    ) -> impl FnOnce(E) -> Self {
        let context = context.into();
        move |e| Self::Format {
            context,
            source: std::sync::Arc::new(e),
        }
    }
}

impl StorageError {
    /// The same error for another waiter of a failed group commit (`io::Error` is not `Clone`;
    /// the OS error code, which classifies the fault, is kept).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::Io { context, source } => Self::Io {
                context: context.clone(),
                source: match source.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            Self::Format { context, source } => Self::Format {
                context: context.clone(),
                source: std::sync::Arc::clone(source),
            },
            Self::Invalid { context, message } => Self::Invalid {
                context: context.clone(),
                message: message.clone(),
            },
            Self::SchemaMismatch => Self::SchemaMismatch,
            Self::Closed => Self::Closed,
            Self::MemoryFull { bytes, max } => Self::MemoryFull {
                bytes: *bytes,
                max: *max,
            },
            Self::LowSpace { dir, free, min } => Self::LowSpace {
                dir: dir.clone(),
                free: *free,
                min: *min,
            },
        }
    }

    /// Why the disk cannot take writes, when that is what this error says.
    pub fn fault_kind(&self) -> Option<health::FaultKind> {
        match self {
            Self::Io { source, .. } => Some(health::FaultKind::of(source)),
            Self::LowSpace { .. } => Some(health::FaultKind::LowSpace),
            _ => None,
        }
    }
}

impl Classify for StorageError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Io { .. } | Self::Closed | Self::LowSpace { .. } | Self::MemoryFull { .. } => ErrorClass::External,
            Self::Format { .. } | Self::Invalid { .. } | Self::SchemaMismatch => ErrorClass::Internal,
        }
    }
}

/// Health of one component, as shown by `/ready`.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentStatus {
    /// Component name (`storage`, `ingest`, ...).
    pub name: &'static str,
    /// Which implementation runs (`local`, `kafka`, ...).
    pub kind: &'static str,
    /// Whether it can serve traffic now.
    pub ready: bool,
    /// Implementation-specific details.
    pub detail: serde_json::Value,
}

/// What a store holds, as far as a reader can tell: stores only grow, so the count of visible
/// commits since it opened, plus a random epoch for that opening, changes whenever a query
/// could see different rows. A restart starts a new epoch (entries keyed on the old one are
/// never served again; they age out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DataVersion {
    /// Random per opening of the store.
    pub epoch: u64,
    /// Commits made visible since then.
    pub appends: u64,
}

impl std::fmt::Display for DataVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}.{}", self.epoch, self.appends)
    }
}

/// A durable home for events, readable through DataFusion.
/// A batch made durable but held out of queries (see [`EventStore::append_held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldAppend {
    /// The WAL segment it is in.
    pub seq: u64,
    /// Its tag.
    pub tag: u64,
}

/// Decides at replay whether a tagged batch of WAL segment `seq` counts: `(seq, tag) -> keep`.
pub type ReplayFilter = std::sync::Arc<dyn Fn(u64, u64) -> bool + Send + Sync>;

#[async_trait]
pub trait EventStore: Send + Sync + std::fmt::Debug {
    /// Stores a batch with the `events` schema. When this returns `Ok`, the events survive a
    /// crash of the process and are visible to queries.
    async fn append(&self, batch: RecordBatch) -> Result<(), StorageError>;

    /// Makes `batch` durable like [`Self::append`] but keeps it out of queries (held under
    /// `tag`, which is written to the WAL with it) until [`Self::publish`] or [`Self::discard`].
    /// A store that cannot hold batches refuses.
    async fn append_held(&self, batch: RecordBatch, tag: u64) -> Result<HeldAppend, StorageError> {
        let _ = (batch, tag);
        Err(StorageError::Invalid {
            context: "holding a batch".into(),
            message: "this store cannot hold batches".into(),
        })
    }

    /// Makes a held batch visible; false when nothing is held under `held`.
    fn publish(&self, held: &HeldAppend) -> bool {
        let _ = held;
        false
    }

    /// Drops a held batch (a replay leaves it out too, unless its tag was claimed); false when
    /// nothing is held under `held`.
    fn discard(&self, held: &HeldAppend) -> bool {
        let _ = held;
        false
    }

    /// The oldest WAL segment still on disk (claims of older segments are no longer needed).
    fn oldest_wal_seq(&self) -> Option<u64> {
        None
    }

    /// Identifies what the store holds: a query answered at one version gives the same rows at
    /// the same version (result caches key on it).
    fn data_version(&self) -> DataVersion;

    /// A table provider over all stored events; each scan sees a consistent snapshot.
    fn table_provider(&self) -> Arc<dyn TableProvider>;

    /// Moves buffered data to long-term files (called on shutdown).
    async fn flush(&self) -> Result<(), StorageError>;

    /// Current health and size.
    fn status(&self) -> ComponentStatus;
}
