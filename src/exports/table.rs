//! A snapshot location read back as a table: exactly the files its manifests list (never a
//! `*.parquet` glob, so a half-committed re-run or a stray file is never read), with the hive
//! partition values from the manifest as columns.
//!
//! A location is one export's destination (`<location>/_manifest.json`) or a schedule's
//! (`<location>/<period>/_manifest.json`, one level down); the manifests are read at every scan,
//! so periods exported after the registration appear without registering again.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::table_schema::TableSchemaBuilder;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::destination::{self, Destination, ObjectStoreConfig, join};
use super::writer::NULL_PARTITION;
use super::{ExportError, MANIFEST, Manifest};

/// A committed file to read.
struct Listed {
    path: Path,
    bytes: u64,
    partition: Vec<ScalarValue>,
}

/// The table over one snapshot location.
#[derive(Debug)]
pub struct SnapshotTable {
    dest: Destination,
    store_url: ObjectStoreUrl,
    file_schema: SchemaRef,
    partition_by: Vec<String>,
    schema: SchemaRef,
}

impl SnapshotTable {
    /// Opens `location` (a `file://` or `s3://` URL), registering its store with `ctx` and
    /// reading the schema from the newest manifest's first file; also returns what the
    /// manifests it read list.
    pub async fn open(
        ctx: &SessionContext,
        location: &str,
        config: &ObjectStoreConfig,
    ) -> Result<(Self, Summary), ExportError> {
        let dest = destination::open_existing(location, config)?;
        let store_url = destination::store_url(location)?;
        if location.starts_with("s3://") {
            // Local files go through the `file://` store DataFusion registers itself.
            ctx.runtime_env()
                .register_object_store(store_url.as_ref(), Arc::clone(&dest.store));
        }
        let mut manifests = manifests(&dest).await?;
        let summary = Summary {
            manifests: manifests.len(),
            files: manifests.iter().map(|(_, m)| m.files.len()).sum(),
            rows: manifests.iter().map(|(_, m)| m.total_rows).sum(),
        };
        // Newest last: the schema of the latest snapshot is the table's (older files missing a
        // column read it as null).
        manifests.sort_by(|a, b| a.1.created_at.cmp(&b.1.created_at));
        let (base, newest) = manifests.pop().ok_or_else(|| {
            ExportError::Invalid(format!(
                "no `{MANIFEST}` at {location} or one level below: nothing was exported there"
            ))
        })?;
        let partition_by = partition_columns(&newest);
        let first = newest.files.first().ok_or_else(|| {
            ExportError::Invalid(format!(
                "the newest snapshot at {location} has no file to read a schema from"
            ))
        })?;
        let path = join(&base, &first.path);
        let meta = dest
            .store
            .head(&path)
            .await
            .map_err(|e| ExportError::store(&format!("reading {path}"), e))?;
        let state = ctx.state();
        let file_schema = ParquetFormat::default()
            .infer_schema(&state, &dest.store, &[meta])
            .await
            .map_err(|e| ExportError::encode(format!("reading the schema of {path}"), e))?;
        let mut fields: Vec<FieldRef> = file_schema.fields().iter().cloned().collect();
        fields.extend(partition_fields(&partition_by));
        let table = Self {
            dest,
            store_url,
            schema: Arc::new(Schema::new(fields)),
            file_schema,
            partition_by,
        };
        Ok((table, summary))
    }

    /// Partition columns (hive directories), in the order of the path.
    pub fn partition_by(&self) -> &[String] {
        &self.partition_by
    }

    /// Every committed file and its partition values.
    async fn files(&self) -> Result<Vec<Listed>, ExportError> {
        let mut out = Vec::new();
        for (base, manifest) in manifests(&self.dest).await? {
            for f in manifest.files {
                let partition = self
                    .partition_by
                    .iter()
                    .map(|name| match f.partition.get(name).map(String::as_str) {
                        None | Some(NULL_PARTITION) => ScalarValue::Utf8(None),
                        Some(v) => ScalarValue::Utf8(Some(v.to_string())),
                    })
                    .collect();
                out.push(Listed {
                    path: join(&base, &f.path),
                    bytes: f.bytes,
                    partition,
                });
            }
        }
        Ok(out)
    }
}

/// What a location's manifests list.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Manifests (one per export or scheduled period).
    pub manifests: usize,
    /// Files they list.
    pub files: usize,
    /// Rows they list.
    pub rows: u64,
}

fn partition_fields(names: &[String]) -> Vec<FieldRef> {
    names
        .iter()
        .map(|n| Arc::new(Field::new(n, DataType::Utf8, true)))
        .collect()
}

/// The manifest's partition columns in path order (from the request it records).
fn partition_columns(manifest: &Manifest) -> Vec<String> {
    manifest
        .request
        .get("partition_by")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The manifest at the location and those one directory below, each with its directory.
async fn manifests(dest: &Destination) -> Result<Vec<(Path, Manifest)>, ExportError> {
    let mut dirs = vec![dest.prefix.clone()];
    let listing = dest
        .store
        .list_with_delimiter(Some(&dest.prefix))
        .await
        .map_err(|e| ExportError::store("listing the snapshot location", e))?;
    dirs.extend(
        listing
            .common_prefixes
            .into_iter()
            .filter(|p| p.filename().is_some_and(|name| !name.starts_with("_tmp_"))),
    );
    let reads = futures::stream::iter(dirs)
        .map(|dir| async move {
            let path = dir.clone().join(MANIFEST);
            match dest.store.get(&path).await {
                Ok(got) => {
                    let bytes = got
                        .bytes()
                        .await
                        .map_err(|e| ExportError::store(&format!("reading {path}"), e))?;
                    let manifest: Manifest = serde_json::from_slice(&bytes)
                        .map_err(|e| ExportError::Invalid(format!("{path} is not a Hub manifest: {e}")))?;
                    Ok(Some((dir, manifest)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(ExportError::store(&format!("reading {path}"), e)),
            }
        })
        .buffered(8);
    let found: Vec<Result<Option<(Path, Manifest)>, ExportError>> = reads.collect().await;
    let mut out = Vec::new();
    for f in found {
        if let Some(m) = f? {
            out.push(m);
        }
    }
    Ok(out)
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Parquet prunes row groups with them; DataFusion re-applies them afterwards.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let files = self
            .files()
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let files = files
            .into_iter()
            .map(|f| PartitionedFile::new(f.path.to_string(), f.bytes).with_partition_values(f.partition))
            .collect();
        let schema = TableSchemaBuilder::new(Arc::clone(&self.file_schema))
            .with_table_partition_cols(partition_fields(&self.partition_by))
            .build();
        crate::query::file_scan::parquet_files(state, self.store_url.clone(), schema, files, projection, limit).await
    }
}
