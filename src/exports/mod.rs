//! Parquet snapshots: a table's time range or a query's rows exported to a local directory or
//! an S3-compatible bucket, as background jobs with progress and a manifest you can check.
//!
//! Atomic and idempotent: files are written as `_tmp_<id>/…/part-NNNNN.parquet.inprogress`
//! (never matched by a `*.parquet` glob), renamed into place only when every file is complete,
//! then the files of the previous run of the same destination that were not overwritten are
//! deleted, and `_manifest.json` is written last. A failed or cancelled export deletes its
//! temporary files and leaves the previous snapshot as it was.

pub mod client;
pub mod destination;
pub mod records;
pub mod request;
pub mod schedule;
pub mod snapshots;
pub mod table;
pub mod writer;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;

pub use destination::ObjectStoreConfig;
pub use request::ExportRequest;
pub use schedule::ExportsConfig;
use writer::{FileEntry, Progress};

use crate::error::ErrorDetail;
use crate::error::{Classify, ErrorClass};
use crate::query::QueryEngine;
use crate::storage::versions::TableVersions;

/// Name of the manifest object, written last.
pub const MANIFEST: &str = "_manifest.json";

/// Most export records kept (finished ones are dropped oldest first).
const MAX_JOBS: usize = 1000;

/// Errors of an export.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExportError {
    /// The request is wrong (user's to fix).
    #[error("{0}")]
    Invalid(String),
    /// The destination cannot be written (missing bucket, credentials, permissions, disk); the
    /// store's error, when there is one, is the source.
    #[error("destination: {0}")]
    Destination(#[source] ErrorDetail),
    /// The query failed while running. The user sees DataFusion's message; its error is kept
    /// as the source.
    #[error("query: {}", .0.find_root().message())]
    Query(#[source] Arc<datafusion::error::DataFusionError>),
    /// Encoding Parquet failed; the encoder's error, when there is one, is the source.
    #[error("parquet: {0}")]
    Encode(#[source] ErrorDetail),
    /// No export with that id.
    #[error("no export {0}")]
    NotFound(String),
    /// Too many exports running at once.
    #[error("{0} exports are running; wait for one to finish")]
    Busy(usize),
}

impl ExportError {
    fn arrow(e: datafusion::arrow::error::ArrowError) -> Self {
        Self::Encode(ErrorDetail::of(e))
    }

    fn parquet(e: parquet::errors::ParquetError) -> Self {
        // Writes to the store surface as Parquet I/O errors: name the destination's cause.
        match e {
            parquet::errors::ParquetError::External(inner) => Self::Destination(ErrorDetail::boxed("", inner)),
            other => Self::Encode(ErrorDetail::of(other)),
        }
    }

    fn query(e: datafusion::error::DataFusionError) -> Self {
        Self::Query(Arc::new(e))
    }

    fn store(what: &str, e: object_store::Error) -> Self {
        Self::Destination(ErrorDetail::context(what, e))
    }

    /// [`ExportError::Destination`]: `e` after what was being done.
    fn destination(what: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Destination(ErrorDetail::context(what, e))
    }

    /// [`ExportError::Encode`]: `e` after what was being done.
    fn encode(what: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Encode(ErrorDetail::context(what, e))
    }
}

impl Classify for ExportError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Invalid(_) | Self::NotFound(_) | Self::Query(_) => ErrorClass::User,
            Self::Destination(_) | Self::Busy(_) => ErrorClass::External,
            Self::Encode(_) => ErrorClass::Internal,
        }
    }
}

/// What a finished export wrote (also stored as `_manifest.json`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Manifest {
    /// Export id.
    pub export_id: String,
    /// When it was committed (RFC 3339).
    pub created_at: String,
    /// Hub version.
    pub hub_version: String,
    /// The request.
    pub request: serde_json::Value,
    /// The statement that produced the rows.
    pub query: String,
    /// Data version of the Hub tables read, when it started (`epoch.appends`).
    pub data_versions: BTreeMap<String, String>,
    /// Rows in all files.
    pub total_rows: u64,
    /// Bytes in all files.
    pub total_bytes: u64,
    /// Every file.
    pub files: Vec<FileEntry>,
}

/// State of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportState {
    /// Writing.
    Running,
    /// Committed: files and manifest in place.
    Succeeded,
    /// Stopped by an error; nothing of it is visible.
    Failed,
    /// Cancelled by `DELETE`; nothing of it is visible.
    Cancelled,
}

/// An export as the API shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ExportStatus {
    /// Id.
    pub id: String,
    /// State.
    pub status: ExportState,
    /// Destination URL.
    pub destination: String,
    /// Rows written so far.
    pub rows: u64,
    /// Bytes written so far.
    pub bytes: u64,
    /// Files completed so far.
    pub files: u64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When done, what it wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

struct Job {
    status: ExportStatus,
    progress: Arc<Progress>,
    task: Option<tokio::task::AbortHandle>,
}

/// The export jobs of this instance.
#[derive(Clone)]
pub struct Exports {
    jobs: Arc<Mutex<HashMap<String, Job>>>,
    order: Arc<Mutex<Vec<String>>>,
    engine: QueryEngine,
    versions: TableVersions,
    max_running: usize,
    store: destination::ObjectStoreConfig,
    records: records::Records,
}

impl std::fmt::Debug for Exports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exports").finish_non_exhaustive()
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Exports {
    /// Exports run on `engine`'s session; at most `max_running` at once; their records are
    /// kept by `records`.
    pub fn new(
        engine: QueryEngine,
        versions: TableVersions,
        max_running: usize,
        store: destination::ObjectStoreConfig,
        records: records::Records,
    ) -> Self {
        Self {
            jobs: Arc::new(Mutex::new(HashMap::new())),
            order: Arc::new(Mutex::new(Vec::new())),
            engine,
            versions,
            max_running: max_running.max(1),
            store,
            records,
        }
    }

    /// Loads the records of earlier runs; an export that was running when the process stopped
    /// is marked failed and its temporary files are removed.
    pub async fn restore(&self) {
        for mut status in self.records.load() {
            if status.status == ExportState::Running {
                status.status = ExportState::Failed;
                status.error = Some("interrupted: the Hub stopped while this export ran; start it again".into());
                status.finished_at = Some(now_rfc3339());
                self.records.save(&status);
                tracing::warn!(export = %status.id, destination = %status.destination, "an export was interrupted by a stop; its temporary files are removed");
                if let Ok(dest) = destination::open(&status.destination, &self.store) {
                    remove_prefix(&dest, &format!("_tmp_{}", status.id)).await;
                }
            }
            let id = status.id.clone();
            let progress = Progress::default();
            progress.rows.store(status.rows, Ordering::Relaxed);
            progress.bytes.store(status.bytes, Ordering::Relaxed);
            progress.files.store(status.files, Ordering::Relaxed);
            self.lock().insert(
                id.clone(),
                Job {
                    status,
                    progress: Arc::new(progress),
                    task: None,
                },
            );
            self.order
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(id);
        }
        self.evict();
    }

    /// Drops the oldest finished records beyond [`MAX_JOBS`].
    fn evict(&self) {
        let mut jobs = self.lock();
        let mut order = self.order.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while order.len() > MAX_JOBS {
            let oldest = order.remove(0);
            if jobs
                .get(&oldest)
                .is_some_and(|j| j.status.status == ExportState::Running)
            {
                order.insert(0, oldest);
                break;
            }
            jobs.remove(&oldest);
            self.records.remove(&oldest);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Job>> {
        self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Validates `request` and starts it in the background.
    pub fn start(&self, request: ExportRequest) -> Result<ExportStatus, ExportError> {
        self.launch(request).map(|(status, _task)| status)
    }

    /// [`Self::start`], also returning the job's task (it ends when the job has recorded its
    /// outcome, or when it is cancelled).
    fn launch(&self, request: ExportRequest) -> Result<(ExportStatus, tokio::task::JoinHandle<()>), ExportError> {
        if let Some(sql) = &request.sql {
            self.engine
                .check(sql)
                .map_err(|e| ExportError::Invalid(e.to_string()))?;
        }
        let plan = request.plan(|t| self.versions.version(t).is_some())?;
        let dest = destination::open(&request.destination, &self.store)?;
        let running = self
            .lock()
            .values()
            .filter(|j| j.status.status == ExportState::Running)
            .count();
        if running >= self.max_running {
            return Err(ExportError::Busy(running));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let progress = Arc::new(Progress::default());
        let status = ExportStatus {
            id: id.clone(),
            status: ExportState::Running,
            destination: request.destination.clone(),
            rows: 0,
            bytes: 0,
            files: 0,
            error: None,
            manifest: None,
            started_at: now_rfc3339(),
            finished_at: None,
        };
        let data_versions: BTreeMap<String, String> = match &request.table {
            Some(t) => self
                .versions
                .version(t)
                .map(|v| BTreeMap::from([(t.clone(), v.to_string())]))
                .unwrap_or_default(),
            None => BTreeMap::new(),
        };
        {
            let mut jobs = self.lock();
            jobs.insert(
                id.clone(),
                Job {
                    status: status.clone(),
                    progress: Arc::clone(&progress),
                    task: None,
                },
            );
            self.order
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(id.clone());
        }
        self.records.save(&status);
        self.evict();
        let ctx = self.engine.context().clone();
        let this = self.clone();
        let job_id = id.clone();
        let task = tokio::spawn(async move {
            let temp = format!("_tmp_{job_id}");
            let outcome = async {
                let written = writer::write_all(&ctx, &plan, &dest, &temp, &progress).await?;
                commit(&dest, &job_id, &request, &plan.sql, data_versions, written).await
            }
            .await;
            if outcome.is_err() {
                remove_prefix(&dest, &temp).await;
            }
            this.finish(&job_id, outcome);
        });
        // Cancel: abort the task, then clean its temporary files.
        if let Some(job) = self.lock().get_mut(&id) {
            job.task = Some(task.abort_handle());
        }
        Ok((status, task))
    }

    fn finish(&self, id: &str, outcome: Result<Manifest, ExportError>) {
        let mut jobs = self.lock();
        let Some(job) = jobs.get_mut(id) else { return };
        if job.status.status != ExportState::Running {
            return;
        }
        refresh(job);
        job.status.finished_at = Some(now_rfc3339());
        match outcome {
            Ok(manifest) => {
                tracing::info!(export = id, rows = manifest.total_rows, files = manifest.files.len(), destination = %job.status.destination, "export succeeded");
                job.status.status = ExportState::Succeeded;
                job.status.manifest = Some(manifest);
            }
            Err(e) => {
                tracing::warn!(export = id, error = %crate::error::chain(&e), "export failed");
                job.status.status = ExportState::Failed;
                job.status.error = Some(e.to_string());
            }
        }
        job.task = None;
        self.records.save(&job.status);
    }

    /// One export.
    pub fn get(&self, id: &str) -> Result<ExportStatus, ExportError> {
        let mut jobs = self.lock();
        let job = jobs.get_mut(id).ok_or_else(|| ExportError::NotFound(id.to_string()))?;
        refresh(job);
        Ok(job.status.clone())
    }

    /// Every export, newest first.
    pub fn list(&self) -> Vec<ExportStatus> {
        let order = self
            .order
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut jobs = self.lock();
        order
            .iter()
            .rev()
            .filter_map(|id| {
                let job = jobs.get_mut(id)?;
                refresh(job);
                Some(job.status.clone())
            })
            .collect()
    }

    /// Cancels a running export (its temporary files are removed); finished ones are left as
    /// they are.
    pub fn cancel(&self, id: &str) -> Result<ExportStatus, ExportError> {
        let (dest, status) = {
            let mut jobs = self.lock();
            let job = jobs.get_mut(id).ok_or_else(|| ExportError::NotFound(id.to_string()))?;
            if job.status.status != ExportState::Running {
                return Ok(job.status.clone());
            }
            if let Some(task) = job.task.take() {
                task.abort();
            }
            refresh(job);
            job.status.status = ExportState::Cancelled;
            job.status.finished_at = Some(now_rfc3339());
            self.records.save(&job.status);
            (job.status.destination.clone(), job.status.clone())
        };
        let temp = format!("_tmp_{id}");
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Ok(dest) = destination::open(&dest, &store) {
                remove_prefix(&dest, &temp).await;
            }
        });
        Ok(status)
    }
}

fn refresh(job: &mut Job) {
    job.status.rows = job.progress.rows.load(Ordering::Relaxed);
    job.status.bytes = job.progress.bytes.load(Ordering::Relaxed);
    job.status.files = job.progress.files.load(Ordering::Relaxed);
}

/// Deletes every object under `prefix/relative` (best effort: a leftover temporary file is
/// never mistaken for data, its name ends in `.inprogress`). A local directory is removed
/// whole: the store's listing hides the staging files (`…#1`) of a write the process died in.
/// On S3 an upload cut short stays as invisible parts until the bucket's
/// `AbortIncompleteMultipartUpload` lifecycle rule removes them (docs/exports.md).
async fn remove_prefix(dest: &destination::Destination, relative: &str) {
    if let Some(dir) = &dest.local_dir {
        let path = dir.join(relative);
        if let Err(e) = tokio::fs::remove_dir_all(&path).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not delete a temporary export directory");
        }
        return;
    }
    let prefix = dest.path(relative);
    let locations = dest
        .store
        .list(Some(&prefix))
        .filter_map(|m| async move { m.ok().map(|m| m.location) });
    let locations: Vec<_> = locations.collect().await;
    for location in locations {
        if let Err(e) = dest.store.delete(&location).await {
            tracing::warn!(%location, error = %e, "could not delete a temporary export file");
        }
    }
}

/// Moves the files into place, drops the previous run's leftovers, writes the manifest.
async fn commit(
    dest: &destination::Destination,
    id: &str,
    request: &ExportRequest,
    query: &str,
    data_versions: BTreeMap<String, String>,
    written: Vec<writer::Written>,
) -> Result<Manifest, ExportError> {
    let manifest_path = dest.path(MANIFEST);
    let previous: Option<Manifest> = match dest.store.get(&manifest_path).await {
        Ok(got) => {
            let bytes = got
                .bytes()
                .await
                .map_err(|e| ExportError::store("reading the previous manifest", e))?;
            serde_json::from_slice(&bytes).ok()
        }
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(ExportError::store("reading the previous manifest", e)),
    };
    for w in &written {
        dest.store
            .rename(&w.temp, &dest.path(&w.entry.path))
            .await
            .map_err(|e| ExportError::store(&format!("moving {} into place", w.entry.path), e))?;
    }
    let files: Vec<FileEntry> = written.into_iter().map(|w| w.entry).collect();
    if let Some(previous) = previous {
        for old in previous.files {
            if !files.iter().any(|f| f.path == old.path)
                && let Err(e) = dest.store.delete(&dest.path(&old.path)).await
            {
                tracing::warn!(path = %old.path, error = %e, "could not delete a file of the previous snapshot");
            }
        }
    }
    remove_prefix(dest, &format!("_tmp_{id}")).await;
    let manifest = Manifest {
        export_id: id.to_string(),
        created_at: now_rfc3339(),
        hub_version: env!("CARGO_PKG_VERSION").to_string(),
        request: serde_json::to_value(request).unwrap_or_default(),
        query: query.to_string(),
        data_versions,
        total_rows: files.iter().map(|f| f.rows).sum(),
        total_bytes: files.iter().map(|f| f.bytes).sum(),
        files,
    };
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| ExportError::Encode(ErrorDetail::of(e)))?;
    dest.store
        .put(&manifest_path, PutPayload::from(body))
        .await
        .map_err(|e| ExportError::store("writing the manifest", e))?;
    Ok(manifest)
}

#[cfg(test)]
mod error_tests {
    use std::error::Error as _;

    use datafusion::error::DataFusionError;

    use super::*;
    use crate::error::chain;

    #[test]
    fn export_errors_keep_their_cause() {
        let e = ExportError::destination("creating /exports", std::io::Error::other("permission denied"));
        assert_eq!(e.to_string(), "destination: creating /exports: permission denied");
        assert!(e.source().and_then(|d| d.source()).is_some());
        assert_eq!(chain(&e), "destination: creating /exports: permission denied");
        assert_eq!(e.class(), ErrorClass::External);
        // Statuses clone their error: the clone keeps the cause.
        assert_eq!(chain(&e.clone()), chain(&e));
        // The user sees the root message of a failed query; the log sees the rest.
        let query = ExportError::query(DataFusionError::Context(
            "reading events".into(),
            Box::new(DataFusionError::Execution("division by zero".into())),
        ));
        assert_eq!(query.to_string(), "query: division by zero");
        assert!(chain(&query).contains("reading events"), "{}", chain(&query));
        assert_eq!(query.class(), ErrorClass::User);
        // A message-only error is unchanged.
        let cancelled = ExportError::Destination("cancelled".into());
        assert_eq!(chain(&cancelled), "destination: cancelled");
    }
}
