//! The `events` store every read path uses in cluster mode: appends go to the local store,
//! scans read the local store and other instances' shipped files.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;

use super::catalog::Catalog;
use super::history::History;
use super::shipper::{Shipper, ShipperStatus};
use super::{ClusterConfig, ClusterError, EVENTS};
use crate::exports::destination::{self, ObjectStoreConfig};
use crate::sinks::postgres::PostgresConfig;
use crate::storage::{ComponentStatus, DataVersion, EventStore, StorageError};

/// Local events plus shared history.
#[derive(Debug, Clone)]
pub struct ClusterStore {
    local: Arc<dyn EventStore>,
    history: History,
    shipper: Arc<tokio::sync::Mutex<Shipper>>,
    shipped: Arc<Mutex<ShipperStatus>>,
    remote: String,
}

/// What [`ClusterStore::open`] needs.
#[derive(Debug)]
pub struct ClusterDeps<'a> {
    /// The `[cluster]` section.
    pub config: &'a ClusterConfig,
    /// Where the catalog lives.
    pub postgres: &'a PostgresConfig,
    /// Retries and timeouts of object-store requests.
    pub object_store: &'a ObjectStoreConfig,
    /// The local events store and its directory (`<data_dir>/events`).
    pub local: Arc<dyn EventStore>,
    /// See `local`.
    pub local_dir: std::path::PathBuf,
    /// The data directory (its store id).
    pub data_dir: &'a std::path::Path,
    /// This instance's name (for operators, in the catalog).
    pub instance_id: String,
}

impl ClusterStore {
    /// Connects the catalog, opens shared storage, ships what was flushed before and reads the
    /// catalog once; then starts the shipper and the catalog refresh, which stop on `shutdown`.
    pub async fn open(
        deps: ClusterDeps<'_>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, ClusterError> {
        let remote = deps
            .config
            .remote
            .clone()
            .ok_or_else(|| ClusterError::Config("cluster.remote is not set".into()))?;
        let store_id = super::store_id(deps.data_dir)?;
        let catalog = Catalog::connect(deps.postgres).await?;
        let (dest, store_url) = open_remote(&remote, deps.object_store)?;
        // A bucket is registered with the session at scan time; a local directory is read
        // through the `file://` store DataFusion registers itself.
        let bucket = remote.starts_with("s3://").then(|| Arc::clone(&dest.store));
        let history = History::new(
            deps.local.table_provider().schema(),
            store_url,
            bucket,
            dest.prefix.clone(),
        );
        let mut shipper = Shipper::new(
            deps.local_dir,
            dest,
            catalog.clone(),
            store_id.clone(),
            deps.instance_id,
        )
        .await?;
        if let Err(e) = shipper.ship_new().await {
            tracing::warn!(error = %e, "shipping flushed files to shared storage failed; retrying");
        }
        history.refresh(&catalog, EVENTS, &store_id).await?;
        let shipped = shipper.status_handle();
        let shipper = Arc::new(tokio::sync::Mutex::new(shipper));
        tokio::spawn(Shipper::run(
            Arc::clone(&shipper),
            Duration::from_millis(deps.config.ship_interval_ms),
            shutdown.clone(),
        ));
        tokio::spawn(history.clone().run_refresh(
            catalog,
            EVENTS,
            store_id.clone(),
            Duration::from_millis(deps.config.catalog_refresh_ms),
            shutdown,
        ));
        tracing::info!(%remote, %store_id, shared_files = history.files().len(), "shared history on");
        Ok(Self {
            local: deps.local,
            history,
            shipper,
            shipped,
            remote,
        })
    }
}

/// Opens `remote` for writing and returns the URL DataFusion reads it through. A `file://`
/// directory is opened from the root (so keys are the absolute paths DataFusion's own `file://`
/// store resolves).
fn open_remote(
    remote: &str,
    config: &ObjectStoreConfig,
) -> Result<
    (
        destination::Destination,
        datafusion::execution::object_store::ObjectStoreUrl,
    ),
    ClusterError,
> {
    let invalid = |e: crate::exports::ExportError| ClusterError::Config(format!("cluster.remote `{remote}`: {e}"));
    if let Some(dir) = remote.strip_prefix("file://") {
        std::fs::create_dir_all(dir).map_err(ClusterError::local(std::path::Path::new(dir)))?;
    }
    let dest = destination::open_existing(remote, config).map_err(invalid)?;
    let url = destination::store_url(remote).map_err(invalid)?;
    Ok((dest, url))
}

#[async_trait]
impl EventStore for ClusterStore {
    async fn append(&self, batch: RecordBatch) -> Result<(), StorageError> {
        self.local.append(batch).await
    }

    fn data_version(&self) -> DataVersion {
        // Both parts only grow, so their sum changes whenever either does.
        let local = self.local.data_version();
        DataVersion {
            epoch: local.epoch,
            appends: local.appends + self.history.generation(),
        }
    }

    fn table_provider(&self) -> Arc<dyn TableProvider> {
        Arc::new(ClusterEventsTable {
            local: self.local.table_provider(),
            shared: self.history.table(),
        })
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.local.flush().await?;
        // What the flush wrote is shipped now, so other instances see it while this one is down.
        if let Err(e) = self.shipper.lock().await.ship_new().await {
            tracing::warn!(error = %e, "shipping the last files failed; they are shipped at the next start");
        }
        Ok(())
    }

    fn status(&self) -> ComponentStatus {
        let mut status = self.local.status();
        let shipped = self
            .shipped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let catalog_error = self.history.last_error();
        if let Some(detail) = status.detail.as_object_mut() {
            detail.insert(
                "shared".into(),
                serde_json::json!({
                    "remote": crate::redact::url(&self.remote),
                    "files_of_other_instances": self.history.files().len(),
                    "catalog_error": catalog_error,
                    "shipper": shipped,
                }),
            );
        }
        status
    }
}

/// `events` in cluster mode: this instance's store unioned with other instances' files.
#[derive(Debug)]
struct ClusterEventsTable {
    local: Arc<dyn TableProvider>,
    shared: Arc<dyn TableProvider>,
}

#[async_trait]
impl TableProvider for ClusterEventsTable {
    fn schema(&self) -> SchemaRef {
        self.local.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let local = self.local.scan(state, projection, filters, limit).await?;
        let shared = self.shared.scan(state, projection, filters, limit).await?;
        UnionExec::try_new(vec![local, shared])
    }
}
