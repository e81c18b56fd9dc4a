//! The `events` store every read path uses in cluster mode: appends go to the local store,
//! scans read the local store, other instances' shipped files, and the other instances' recent
//! events (their tails, asked over HTTP at scan time).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;

use super::catalog::{Catalog, CatalogFile};
use super::compact::{CompactSettings, Compactor};
use super::file_cache::FileCache;
use super::history::History;
use super::prune::TimeRange;
use super::shipper::{Shipper, ShipperStatus};
use super::tail::{self, Member, TailError, TailRequest, TailServer};
use super::{ClusterConfig, ClusterError, EVENTS};
use crate::exports::destination::{self, ObjectStoreConfig};
use crate::metrics::Metrics;
use crate::sinks::postgres::PostgresConfig;
use crate::storage::local::LocalStore;
use crate::storage::{ComponentStatus, DataVersion, EventStore, StorageError};
use object_store::ObjectStore;

/// Local events plus shared history plus the other members' tails.
#[derive(Debug, Clone)]
pub struct ClusterStore {
    local: LocalStore,
    history: History,
    shipper: Arc<tokio::sync::Mutex<Shipper>>,
    shipped: Arc<Mutex<ShipperStatus>>,
    members: Arc<Members>,
    remote: String,
}

/// The other live members, and how asking them goes.
#[derive(Debug)]
struct Members {
    store_id: String,
    instance_id: String,
    secret: String,
    /// Set once the HTTP listener is bound ([`TailServer::advertise`]); no heartbeat before.
    url: Arc<OnceLock<String>>,
    alive: RwLock<Arc<Vec<Member>>>,
    client: reqwest::Client,
    tail_timeout: Duration,
    last_tail_error: Mutex<Option<String>>,
    membership_error: Mutex<Option<String>>,
    metrics: Metrics,
}

impl Members {
    fn alive(&self) -> Arc<Vec<Member>> {
        Arc::clone(&self.alive.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
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
    /// The local events store.
    pub local: LocalStore,
    /// The data directory (its store id).
    pub data_dir: &'a std::path::Path,
    /// This instance's name (for operators, in the catalog).
    pub instance_id: String,
    /// Where `cluster_*` metrics are counted.
    pub metrics: Metrics,
}

impl ClusterStore {
    /// Connects the catalog, opens shared storage, ships what was flushed before and reads the
    /// catalog once; then starts the shipper, the catalog refresh and the membership task
    /// (heartbeats begin once [`Self::advertise`] is called), which stop on `shutdown`.
    pub async fn open(
        deps: ClusterDeps<'_>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, ClusterError> {
        let config = deps.config;
        let remote = config
            .remote
            .clone()
            .ok_or_else(|| ClusterError::Config("cluster.remote is not set".into()))?;
        let secret = config
            .secret
            .clone()
            .ok_or_else(|| ClusterError::Config("cluster.secret is not set".into()))?;
        let store_id = super::store_id(deps.data_dir)?;
        let catalog = Catalog::connect(deps.postgres).await?;
        let (dest, store_url) = open_remote(&remote, deps.object_store)?;
        // A bucket is registered with the session at scan time; a local directory is read
        // through the `file://` store DataFusion registers itself.
        let bucket: Option<Arc<dyn ObjectStore>> = match (remote.starts_with("s3://"), config.cache_max_bytes) {
            (false, _) => None,
            (true, 0) => Some(Arc::clone(&dest.store)),
            (true, max) => {
                let dir = deps.data_dir.join("cluster").join("cache");
                let cache =
                    FileCache::new(Arc::clone(&dest.store), dir.clone(), max).map_err(ClusterError::local(&dir))?;
                Some(Arc::new(cache))
            }
        };
        let history = History::new(deps.local.schema(), store_url, bucket, dest.prefix.clone());
        if config.compact_interval_ms > 0 {
            let settings = CompactSettings {
                every: Duration::from_millis(config.compact_interval_ms),
                small_bytes: config.compact_small_bytes,
                min_files: config.compact_min_files,
                max_input_bytes: config.compact_max_input_bytes,
                grace: Duration::from_secs(config.compact_grace_secs),
            };
            let compactor = Compactor::new(catalog.clone(), &dest, deps.instance_id.clone(), settings);
            tokio::spawn(compactor.run(shutdown.clone()));
        }
        let mut shipper = Shipper::new(
            deps.local.dir().to_path_buf(),
            dest,
            catalog.clone(),
            store_id.clone(),
            deps.instance_id.clone(),
            deps.metrics.clone(),
        )
        .await?;
        if let Err(e) = shipper.ship_new().await {
            tracing::warn!(error = %e, "shipping flushed files to shared storage failed; retrying");
        }
        history.refresh(&catalog, EVENTS, &store_id).await?;
        let shipped = shipper.status_handle();
        let shipper = Arc::new(tokio::sync::Mutex::new(shipper));
        let every = Duration::from_millis(config.catalog_refresh_ms);
        tokio::spawn(Shipper::run(
            Arc::clone(&shipper),
            Duration::from_millis(config.ship_interval_ms),
            shutdown.clone(),
        ));
        tokio::spawn(
            history
                .clone()
                .run_refresh(catalog.clone(), EVENTS, store_id.clone(), every, shutdown.clone()),
        );
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.tail_timeout_ms.clamp(1, 2_000)))
            .build()
            .map_err(|e| ClusterError::Config(format!("HTTP client for the members: {e}")))?;
        let members = Arc::new(Members {
            store_id: store_id.clone(),
            instance_id: deps.instance_id,
            secret,
            url: Arc::default(),
            alive: RwLock::default(),
            client,
            tail_timeout: Duration::from_millis(config.tail_timeout_ms.max(1)),
            last_tail_error: Mutex::new(None),
            membership_error: Mutex::new(None),
            metrics: deps.metrics,
        });
        let store = Self {
            local: deps.local,
            history,
            shipper,
            shipped,
            members,
            remote: remote.clone(),
        };
        tokio::spawn(
            store
                .clone()
                .run_membership(catalog, every, config.member_timeout_ms, shutdown),
        );
        tracing::info!(%remote, %store_id, shared_files = store.history.files().len(), "shared history on");
        Ok(store)
    }

    /// What the tail route serves (its `advertise` starts the heartbeats).
    pub fn tail_server(&self, max_bytes: usize) -> TailServer {
        TailServer {
            local: self.local.clone(),
            store_id: self.members.store_id.clone(),
            secret: self.members.secret.clone(),
            max_bytes,
            advertised: Arc::clone(&self.members.url),
        }
    }

    /// Every `every`: this instance's heartbeat (with its data version), then the list of the
    /// others. On shutdown the row is deleted, so nobody waits for a stopped instance.
    async fn run_membership(
        self,
        catalog: Catalog,
        every: Duration,
        timeout_ms: u64,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let members = &self.members;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            let beat = async {
                if let Some(url) = members.url.get() {
                    let version = self.local.data_version();
                    let me = Member {
                        store_id: members.store_id.clone(),
                        instance_id: members.instance_id.clone(),
                        url: url.clone(),
                        epoch: version.epoch as i64,
                        appends: version.appends as i64,
                    };
                    catalog.heartbeat(&me).await?;
                }
                catalog.alive(&members.store_id, timeout_ms).await
            };
            let result = beat.await;
            members
                .metrics
                .cluster_shared_files
                .set(self.history.files().len() as i64);
            let mut error = members
                .membership_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match result {
                Ok(alive) => {
                    members.metrics.cluster_members.set(alive.len() as i64);
                    let mut current = members.alive.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if **current != alive {
                        tracing::info!(members = ?alive.iter().map(|m| m.instance_id.as_str()).collect::<Vec<_>>(), "cluster members changed");
                        *current = Arc::new(alive);
                    }
                    *error = None;
                }
                Err(e) => {
                    if error.is_none() {
                        tracing::warn!(error = %e, "cluster heartbeat failed; retrying");
                    }
                    *error = Some(crate::error::chain(&e));
                }
            }
        }
        if members.url.get().is_some()
            && let Err(e) = catalog.leave(&members.store_id).await
        {
            tracing::warn!(error = %e, "leaving the cluster failed; the others stop asking after cluster.member_timeout_ms");
        }
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
        // Every part only grows within an epoch, so the sum changes whenever one does; a member
        // restarting (a new epoch) or joining or leaving changes the epoch. Peers' counters are
        // as of their last heartbeat (≤ cluster.catalog_refresh_ms old).
        let local = self.local.data_version();
        let members = self.members.alive();
        let mut epoch = DefaultHasher::new();
        local.epoch.hash(&mut epoch);
        let mut appends = local.appends + self.history.generation();
        for m in members.iter() {
            (m.store_id.as_str(), m.epoch).hash(&mut epoch);
            appends += m.appends.max(0) as u64;
        }
        DataVersion {
            epoch: epoch.finish(),
            appends,
        }
    }

    fn table_provider(&self) -> Arc<dyn TableProvider> {
        Arc::new(ClusterEventsTable { store: self.clone() })
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
        let m = &self.members;
        let lock = |x: &Mutex<Option<String>>| x.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some(detail) = status.detail.as_object_mut() {
            detail.insert(
                "shared".into(),
                serde_json::json!({
                    "remote": crate::redact::url(&self.remote),
                    "files_of_other_instances": self.history.files().len(),
                    "catalog_error": self.history.last_error(),
                    "shipper": shipped,
                    "advertised_url": m.url.get(),
                    "members": m.alive().iter().map(|x| serde_json::json!({"instance": x.instance_id, "url": x.url})).collect::<Vec<_>>(),
                    "membership_error": lock(&m.membership_error),
                    "tail_errors": m.metrics.cluster_tail_errors_total.get(),
                    "last_tail_error": lock(&m.last_tail_error),
                }),
            );
        }
        status
    }
}

/// `events` in cluster mode.
#[derive(Debug)]
struct ClusterEventsTable {
    store: ClusterStore,
}

impl ClusterEventsTable {
    /// The members' tails for this scan, as plans of `schema` (projected); a member that does
    /// not answer is left out (logged and counted), a tail too large fails the scan.
    async fn tails(
        &self,
        files: &[CatalogFile],
        schema: &SchemaRef,
        columns: Option<Vec<String>>,
        range: TimeRange,
    ) -> DfResult<Vec<Arc<dyn ExecutionPlan>>> {
        let m = &self.store.members;
        let alive = m.alive();
        let asks = alive.iter().map(|member| {
            // Compacted files name the segments they hold: the owner skips those too.
            let req = TailRequest {
                store_id: member.store_id.clone(),
                columns: columns.clone(),
                min_time_us: range.lo,
                max_time_us: range.hi,
                known_files: files
                    .iter()
                    .filter(|f| f.store_id == member.store_id)
                    .flat_map(CatalogFile::segments)
                    .collect(),
            };
            async move { tail::fetch(&m.client, member, &m.secret, &req, m.tail_timeout).await }
        });
        let answers = futures::future::join_all(asks).await;
        let mut plans = Vec::with_capacity(answers.len());
        for answer in answers {
            let batches = match answer {
                Ok(batches) => batches,
                // Too large is the query's problem (narrow it), not the member's.
                Err(e @ TailError::Peer { status, .. }) if status != Some(413) => {
                    m.metrics.cluster_tail_errors_total.inc();
                    tracing::warn!(error = %e, "a member's recent events are left out of this answer");
                    *m.last_tail_error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
                    continue;
                }
                Err(e) => return Err(datafusion::error::DataFusionError::External(Box::new(e))),
            };
            let n = schema.fields().len();
            let projected: Vec<RecordBatch> = batches
                .into_iter()
                .map(|b| {
                    let columns = b.columns()[..n.min(b.num_columns())].to_vec();
                    let options = RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
                    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
                })
                .collect::<Result<_, _>>()?;
            if projected.is_empty() {
                continue;
            }
            let source = MemorySourceConfig::try_new(&[projected], Arc::clone(schema), None)?;
            plans.push(DataSourceExec::from_data_source(source) as Arc<dyn ExecutionPlan>);
        }
        Ok(plans)
    }
}

#[async_trait]
impl TableProvider for ClusterEventsTable {
    fn schema(&self) -> SchemaRef {
        self.store.local.schema()
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
        let schema = self.schema();
        let projected = match projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => Arc::clone(&schema),
        };
        // One list of shared files for the whole scan: read from shared storage, and told to
        // the owners so their tails hold exactly the rest.
        let files = self.store.history.files();
        let columns = projection.map(|p| p.iter().map(|i| schema.field(*i).name().clone()).collect());
        let tails = self
            .tails(&files, &projected, columns, TimeRange::from_filters(filters))
            .await?;
        let mut inputs = vec![
            EventStore::table_provider(&self.store.local)
                .scan(state, projection, filters, limit)
                .await?,
            self.store
                .history
                .scan(state, &files, projection, filters, limit)
                .await?,
        ];
        inputs.extend(tails);
        UnionExec::try_new(inputs)
    }
}
