//! Uploads the local store's flushed Parquet files to shared storage and records them in the
//! catalog. It only reads the store's directory: a file is complete once it has its final name
//! (the store writes `*.parquet.tmp` and renames), so the shipper needs no hook into the store.
//!
//! Order per file: upload (multipart), then record. A crash in between leaves an object nobody
//! lists; the next start uploads it again under the same key and records it. The local file
//! stays where it is: this instance keeps reading it locally.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use tokio::io::AsyncWriteExt;

use super::ClusterError;
use super::catalog::{Catalog, CatalogFile};
use crate::exports::destination::{Destination, join};
use crate::metrics::Metrics;

/// Upload parts of this size (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 << 20;

/// What the shipper has done, for `/ready`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ShipperStatus {
    /// Files of this data directory in shared storage (counted by
    /// [`ShipperStatus::pending_with`]).
    pub shipped_files: usize,
    /// Files flushed locally and not shipped yet, the files flushed since the last round
    /// included (counted by [`ShipperStatus::pending_with`]).
    pub pending_files: usize,
    /// The last error, when the last attempt failed.
    pub last_error: Option<String>,
    /// Names shipped, and names that failed, as of the last round.
    #[serde(skip)]
    shipped_names: Arc<HashSet<String>>,
    #[serde(skip)]
    failed_names: Vec<String>,
}

impl ShipperStatus {
    /// This status with its counts made now: `pending_files` is the files that failed in the
    /// last round plus every file of `local` (the store's flushed files) not shipped, so a file
    /// flushed since the last round is pending at once rather than invisible for up to a round.
    pub fn pending_with(mut self, local: &[PathBuf]) -> Self {
        let mut pending: HashSet<&str> = self.failed_names.iter().map(String::as_str).collect();
        for path in local {
            if let Some(name) = path.file_name().and_then(|n| n.to_str())
                && !self.shipped_names.contains(name)
            {
                pending.insert(name);
            }
        }
        self.pending_files = pending.len();
        self.shipped_files = self.shipped_names.len();
        self
    }
}

/// A store's shipper status as of now (see [`ShipperStatus::pending_with`]).
pub fn status_now(status: &Mutex<ShipperStatus>, local: &crate::storage::local::LocalStore) -> ShipperStatus {
    status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
        .pending_with(&local.snapshot().files)
}

/// Ships one store directory.
#[derive(Debug)]
pub struct Shipper {
    dir: PathBuf,
    /// The catalog's table (`events`, or a continuous query's), also the first part of keys.
    table: String,
    /// The column whose footer bounds are recorded (`timestamp`, `window_start`).
    time_column: &'static str,
    dest: Destination,
    catalog: Catalog,
    store_id: String,
    instance_id: String,
    /// File names already recorded.
    shipped: HashSet<String>,
    status: Arc<Mutex<ShipperStatus>>,
    metrics: Metrics,
}

/// `events-<seq>.parquet` files in `dir`, by name.
fn flushed_files(dir: &Path) -> Result<Vec<String>, ClusterError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ClusterError::local(dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry.map_err(ClusterError::local(dir))?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("events-") && name.ends_with(".parquet") {
            names.push(name.into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Rows and `timestamp` bounds of a Parquet file, from its footer (unknown bounds: never pruned).
fn footer_stats(path: &Path, column: &str) -> Result<(i64, Option<i64>, Option<i64>), ClusterError> {
    let (rows, bounds) = crate::storage::local::footer_bounds(path, column).map_err(ClusterError::local(path))?;
    Ok((rows, bounds.map(|b| b.0), bounds.map(|b| b.1)))
}

impl Shipper {
    /// A shipper of the store in `dir` (holding the catalog's `table`, its files' bounds those
    /// of `time_column`) to `dest`, starting from what the catalog says `store_id` recorded.
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        dir: PathBuf,
        table: String,
        time_column: &'static str,
        dest: Destination,
        catalog: Catalog,
        store_id: String,
        instance_id: String,
        metrics: Metrics,
    ) -> Result<Self, ClusterError> {
        let shipped = catalog.shipped_segments(&table, &store_id).await?;
        Ok(Self {
            dir,
            table,
            time_column,
            dest,
            catalog,
            store_id,
            instance_id,
            shipped,
            status: Arc::default(),
            metrics,
        })
    }

    /// Whether the catalog lists files of this directory (or this shipper shipped some).
    pub fn has_shipped(&self) -> bool {
        !self.shipped.is_empty()
    }

    /// Shared view of the status.
    pub fn status_handle(&self) -> Arc<Mutex<ShipperStatus>> {
        Arc::clone(&self.status)
    }

    /// Ships every flushed file not shipped yet; returns how many it shipped.
    pub async fn ship_new(&mut self) -> Result<usize, ClusterError> {
        let names = flushed_files(&self.dir)?;
        let pending: Vec<String> = names.into_iter().filter(|n| !self.shipped.contains(n)).collect();
        let mut shipped = 0;
        let mut result = Ok(());
        for name in &pending {
            let attempt = self.ship(name).await;
            if attempt.is_err() {
                self.metrics.cluster_ship_errors_total.inc();
            }
            match attempt {
                Ok(()) => {
                    self.shipped.insert(name.clone());
                    self.metrics.cluster_files_shipped_total.inc();
                    shipped += 1;
                }
                // A file that cannot be read does not hold back the others (it is tried again
                // next time and named in the status meanwhile).
                Err(e @ ClusterError::Local { .. }) => {
                    tracing::debug!(file = %name, error = %e, "a flushed file cannot be shipped");
                    result = Err(e);
                }
                // The store or the catalog is unavailable: the rest would fail the same way.
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let mut status = self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if shipped > 0 || status.shipped_names.len() != self.shipped.len() {
            status.shipped_names = Arc::new(self.shipped.clone());
        }
        status.failed_names = pending.into_iter().filter(|n| !self.shipped.contains(n)).collect();
        status.last_error = result.as_ref().err().map(|e| crate::error::chain(e));
        result.map(|()| shipped)
    }

    async fn ship(&self, name: &str) -> Result<(), ClusterError> {
        let local = self.dir.join(name);
        let stats_path = local.clone();
        let column = self.time_column;
        let (rows, lo, hi) = tokio::task::spawn_blocking(move || footer_stats(&stats_path, column))
            .await
            .map_err(ClusterError::local(&local))??;
        let relative = format!("{}/{}/{name}", self.table, self.store_id);
        let key: ObjectPath = join(&self.dest.prefix, &relative);
        let bytes = upload(&self.dest.store, &local, &key).await?;
        let file = CatalogFile {
            path: relative,
            store_id: self.store_id.clone(),
            rows,
            bytes: bytes as i64,
            min_event_time_us: lo,
            max_event_time_us: hi,
            covers: Vec::new(),
        };
        self.catalog.record(&self.table, &self.instance_id, &file).await?;
        tracing::debug!(file = %name, rows, "shipped to shared storage");
        Ok(())
    }

    /// Ships every `every` until `shutdown`, then once more (the store flushes on shutdown
    /// before this returns only if the caller ships again: see `ClusterStore::flush`).
    pub async fn run(
        this: Arc<tokio::sync::Mutex<Self>>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Logged when it changes, not on every attempt.
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            match this.lock().await.ship_new().await {
                Ok(_) => last_error = None,
                Err(e) => {
                    let message = crate::error::chain(&e);
                    if last_error.as_deref() != Some(message.as_str()) {
                        tracing::warn!(error = %message, "shipping flushed files to shared storage failed; retrying");
                    }
                    last_error = Some(message);
                }
            }
        }
    }
}

/// Streams `local` to `key`; returns its size.
async fn upload(store: &Arc<dyn ObjectStore>, local: &Path, key: &ObjectPath) -> Result<u64, ClusterError> {
    let mut file = tokio::fs::File::open(local).await.map_err(ClusterError::local(local))?;
    let mut writer = BufWriter::with_capacity(Arc::clone(store), key.clone(), PART_BYTES);
    let copied = tokio::io::copy(&mut file, &mut writer).await;
    let finished = match copied {
        Ok(n) => writer.shutdown().await.map(|()| n),
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
    };
    finished.map_err(|e| {
        ClusterError::remote(format!("uploading {key}"))(object_store::Error::Generic {
            store: "shared storage",
            source: Box::new(e),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_parquet_files_are_listed() {
        let dir = tempfile::tempdir().expect("tmp");
        for name in [
            "events-000000000002.parquet",
            "events-000000000001.parquet",
            "events-000000000003.parquet.tmp",
            "wal-000000000004.arrows",
            "events-000000000001.crc32",
        ] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        assert_eq!(
            flushed_files(dir.path()).expect("list"),
            vec!["events-000000000001.parquet", "events-000000000002.parquet"]
        );
        assert!(
            flushed_files(&dir.path().join("missing"))
                .expect("missing dir")
                .is_empty()
        );
    }

    #[test]
    fn a_file_flushed_since_the_last_round_is_pending_at_once() {
        let status = ShipperStatus {
            shipped_files: 1,
            pending_files: 1,
            last_error: Some("stray".into()),
            shipped_names: Arc::new(["events-1.parquet".to_string()].into_iter().collect()),
            failed_names: vec!["stray.parquet".into()],
        };
        let local = |names: &[&str]| {
            names
                .iter()
                .map(|n| PathBuf::from("/d/events").join(n))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            status.clone().pending_with(&local(&["events-1.parquet"])).pending_files,
            1
        );
        let now = status.pending_with(&local(&["events-1.parquet", "events-2.parquet"]));
        assert_eq!(now.pending_files, 2, "the stray file and the one flushed since");
    }
}
