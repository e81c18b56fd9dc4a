//! Every data directory's shipped files of one table (this instance's own too): the list comes
//! from the catalog (refreshed by [`super::tables::SharedTables::run`], one round for every
//! table), the bytes from shared object storage. A query takes the list once, so it sees one
//! consistent set; files whose event-time bounds miss a `timestamp` filter are skipped without
//! being opened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::Result as DfResult;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use object_store::ObjectStore;
use object_store::path::Path;

use super::catalog::{Catalog, CatalogFile};
use super::prune::TimeRange;
use crate::exports::destination::join;

#[derive(Debug, Default)]
struct Listed {
    files: Arc<Vec<CatalogFile>>,
    /// Catalog generation they were read at.
    generation: Option<i64>,
}

#[derive(Debug)]
struct Inner {
    listed: RwLock<Listed>,
    /// Bumped whenever the list changes (part of the `events` data version).
    generation: AtomicU64,
    last_error: Mutex<Option<String>>,
    schema: SchemaRef,
    /// The column whose bounds the catalog records (`timestamp`, `window_start`).
    time_column: &'static str,
    store_url: ObjectStoreUrl,
    /// A store the session does not know by itself (a bucket), registered at scan time.
    bucket: Option<Arc<dyn ObjectStore>>,
    prefix: Path,
}

/// Other data directories' files in shared storage. Cheap to clone.
#[derive(Debug, Clone)]
pub struct History {
    inner: Arc<Inner>,
}

impl History {
    /// Files of `schema` under `prefix` of the store read as `store_url` (`bucket`: the store to
    /// register for it, unless the session knows it already, as it knows `file://`), their
    /// bounds in the catalog those of `time_column`.
    pub fn new(
        schema: SchemaRef,
        time_column: &'static str,
        store_url: ObjectStoreUrl,
        bucket: Option<Arc<dyn ObjectStore>>,
        prefix: Path,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                listed: RwLock::new(Listed::default()),
                generation: AtomicU64::new(0),
                last_error: Mutex::new(None),
                schema,
                time_column,
                store_url,
                bucket,
                prefix,
            }),
        }
    }

    /// Changes of the list since the start.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The files now listed.
    pub fn files(&self) -> Arc<Vec<CatalogFile>> {
        Arc::clone(
            &self
                .inner
                .listed
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .files,
        )
    }

    /// Keeps (or clears) the last refresh error, for `/ready`.
    pub fn set_error(&self, error: Option<String>) {
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    /// The last refresh error, if the last refresh failed.
    pub fn last_error(&self) -> Option<String> {
        self.inner
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the catalog when it changed; `Ok(true)` when the list did.
    pub async fn refresh(&self, catalog: &Catalog, table: &str) -> Result<bool, super::ClusterError> {
        let generation = catalog.generation().await?;
        self.refresh_at(catalog, table, generation).await
    }

    /// [`Self::refresh`] with the catalog's generation already read (one read serves every
    /// table refreshed in a round).
    pub async fn refresh_at(
        &self,
        catalog: &Catalog,
        table: &str,
        generation: i64,
    ) -> Result<bool, super::ClusterError> {
        let known = self
            .inner
            .listed
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .generation;
        if known == Some(generation) {
            return Ok(false);
        }
        // A change committed between the two reads is seen again at the next refresh.
        let files = catalog.all(table).await?;
        *self
            .inner
            .listed
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Listed {
            files: Arc::new(files),
            generation: Some(generation),
        };
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// Whether `scan` reads only shared files (which any member can read).
    pub fn holds(&self, scan: &datafusion::datasource::physical_plan::FileScanConfig) -> bool {
        let inner = &self.inner;
        scan.object_store_url == inner.store_url
            && scan
                .file_groups
                .iter()
                .flat_map(|g| g.files())
                .all(|f| f.object_meta.location.prefix_matches(&inner.prefix))
    }

    /// Makes the bucket readable in `runtime` (a scan's, or a worker's session).
    pub fn register_bucket(&self, runtime: &datafusion::execution::runtime_env::RuntimeEnv) {
        let inner = &self.inner;
        if let Some(bucket) = &inner.bucket
            && runtime.object_store(&inner.store_url).is_err()
        {
            runtime.register_object_store(inner.store_url.as_ref(), Arc::clone(bucket));
        }
    }

    /// A scan of `files` (taken from [`Self::files`] once per query, so the caller can ask the
    /// owners for exactly what the list lacks).
    pub async fn scan(
        &self,
        state: &dyn Session,
        files: &[CatalogFile],
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let inner = &self.inner;
        let range = TimeRange::on(inner.time_column, filters);
        let files: Vec<PartitionedFile> = files
            .iter()
            .filter(|f| range.overlaps(f.min_event_time_us, f.max_event_time_us))
            .map(|f| PartitionedFile::new(join(&inner.prefix, &f.path).to_string(), f.bytes.max(0) as u64))
            .collect();
        if !files.is_empty() {
            self.register_bucket(state.runtime_env());
        }
        let schema = TableSchema::from(Arc::clone(&inner.schema));
        crate::query::file_scan::parquet_files(state, inner.store_url.clone(), schema, files, projection, limit).await
    }
}
