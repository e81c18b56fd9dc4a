//! Write-ahead log segments: Arrow IPC streams, one file per segment, synced on every append.
//!
//! A segment `wal-<seq>.arrows` holds the batches appended while it was active. Once its
//! contents are in `events-<seq>.parquet` the segment is deleted. A torn tail (crash during a
//! write that was never acknowledged) is detected on replay and ignored.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use crate::storage::StorageError;

const PREFIX: &str = "wal-";
const SUFFIX: &str = ".arrows";

/// Path of segment `seq` in `dir`.
pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{seq:012}{SUFFIX}"))
}

/// Sequence numbers of the segments present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, StorageError> {
    super::list_sequenced(dir, PREFIX, SUFFIX)
}

/// The active segment being appended to.
pub struct WalWriter {
    seq: u64,
    writer: StreamWriter<BufWriter<File>>,
    sync: bool,
}

impl std::fmt::Debug for WalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalWriter").field("seq", &self.seq).finish()
    }
}

impl WalWriter {
    /// Creates segment `seq` (which must not exist yet).
    pub fn create(dir: &Path, seq: u64, schema: &SchemaRef, sync: bool) -> Result<Self, StorageError> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(StorageError::io(format!("creating WAL segment {}", path.display())))?;
        let writer =
            StreamWriter::try_new_buffered(file, schema).map_err(StorageError::format("writing WAL header"))?;
        let mut wal = Self { seq, writer, sync };
        wal.sync()?;
        super::sync_dir(dir)?;
        Ok(wal)
    }

    /// Appends a batch and makes it durable.
    pub fn append(&mut self, batch: &RecordBatch) -> Result<(), StorageError> {
        self.writer
            .write(batch)
            .map_err(StorageError::format("appending to WAL"))?;
        self.sync()
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.writer.flush().map_err(StorageError::format("flushing WAL"))?;
        if self.sync {
            self.writer
                .get_ref()
                .get_ref()
                .sync_data()
                .map_err(StorageError::io("syncing WAL"))?;
        }
        Ok(())
    }

    /// Writes the end-of-stream marker and closes the file.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.writer
            .finish()
            .map_err(StorageError::format("closing WAL segment"))?;
        self.sync()
    }
}

/// Reads every complete batch of a segment. A torn or corrupt tail ends the replay of that
/// segment with a warning: those bytes were never acknowledged.
pub fn replay(path: &Path) -> Result<Vec<RecordBatch>, StorageError> {
    let file = File::open(path).map_err(StorageError::io(format!("opening {}", path.display())))?;
    let reader = match StreamReader::try_new(BufReader::new(file), None) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "WAL segment has no readable header; skipping");
            return Ok(Vec::new());
        }
    };
    let mut batches = Vec::new();
    for batch in reader {
        match batch {
            Ok(b) => batches.push(b),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, recovered = batches.len(),
                    "WAL segment has a torn tail; keeping the complete batches before it");
                break;
            }
        }
    }
    Ok(batches)
}
