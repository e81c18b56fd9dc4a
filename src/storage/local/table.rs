//! The `events` table over the local store: in-memory batches unioned with Parquet files,
//! from one snapshot taken at scan time.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;

use super::Shared;

/// Table provider reading a snapshot of the local store per scan.
#[derive(Debug)]
pub struct LocalEventsTable {
    shared: Arc<Shared>,
}

impl LocalEventsTable {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[async_trait]
impl TableProvider for LocalEventsTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.shared.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Parquet uses filters to prune row groups; DataFusion re-applies them afterwards.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = self.shared.snapshot();
        let schema = self.schema();
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::with_capacity(2);

        let target = state.config().target_partitions().max(1);
        let mut partitions = vec![Vec::new(); target.min(snapshot.batches.len()).max(1)];
        let n = partitions.len();
        for (i, batch) in snapshot.batches.into_iter().enumerate() {
            partitions[i % n].push(batch);
        }
        let memory =
            MemorySourceConfig::try_new(&partitions, Arc::clone(&schema), projection.cloned())?.with_limit(limit);
        inputs.push(datafusion::datasource::source::DataSourceExec::from_data_source(memory));

        if !snapshot.files.is_empty() {
            let urls = snapshot
                .files
                .iter()
                .map(|p| ListingTableUrl::parse(p.to_string_lossy()))
                .collect::<Result<Vec<_>>>()?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(Arc::clone(&schema));
            let files = ListingTable::try_new(config)?;
            inputs.push(files.scan(state, projection, filters, limit).await?);
        }
        UnionExec::try_new(inputs)
    }
}
