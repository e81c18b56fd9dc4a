//! A Parquet scan of a known list of files (no directory listing): the snapshot tables read
//! exactly the files their manifests list, the cluster's shared history exactly the files its
//! catalog lists.

use std::sync::Arc;

use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;

/// Scans `files` of `schema` through the store registered as `store_url`, spread round-robin
/// over the session's target partitions; no files is an empty scan of the projected schema.
pub async fn parquet_files(
    state: &dyn Session,
    store_url: ObjectStoreUrl,
    schema: TableSchema,
    files: Vec<PartitionedFile>,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if files.is_empty() {
        let projected = match projection {
            Some(p) => Arc::new(schema.table_schema().project(p)?),
            None => Arc::clone(schema.table_schema()),
        };
        return Ok(Arc::new(EmptyExec::new(projected)));
    }
    let groups = state.config().target_partitions().max(1).min(files.len());
    let mut grouped: Vec<Vec<PartitionedFile>> = (0..groups).map(|_| Vec::new()).collect();
    for (i, f) in files.into_iter().enumerate() {
        grouped[i % groups].push(f);
    }
    let format = ParquetFormat::default();
    let config = FileScanConfigBuilder::new(store_url, format.file_source(schema))
        .with_file_groups(grouped.into_iter().map(FileGroup::new).collect())
        .with_projection_indices(projection.cloned())?
        .with_limit(limit)
        .build();
    format.create_physical_plan(state, config).await
}
