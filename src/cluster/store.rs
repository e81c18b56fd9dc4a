//! The `events` store every read path uses in cluster mode: appends go to the local store,
//! scans read every data directory's shipped files and, per live member (this one included),
//! what it holds beyond them ([`TailExec`], run when the plan runs).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
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

use super::catalog::{Catalog, CatalogFile, ManifestCatalog, Peers, PgCatalog};
use super::compact::{CompactSettings, Compactor};
use super::distributed::WorkerList;
use super::file_cache::FileCache;
use super::history::History;
use super::prune::TimeRange;
use super::shipper::{Shipper, ShipperStatus};
use super::tables::{SharedTable, SharedTables, SharingDeps};
use super::tail::{Member, TailRequest, TailServer, TailStores};
use super::tail_exec::{TailContext, TailExec};
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
    /// Where distributed plans may send tasks (this instance first).
    workers: WorkerList,
    /// The continuous-query tables shared across the cluster.
    tables: SharedTables,
}

/// The other live members, and how asking them goes.
#[derive(Debug)]
struct Members {
    store_id: String,
    instance_id: String,
    /// Set once the HTTP listener is bound ([`TailServer::advertise`]); no heartbeat before.
    url: Arc<OnceLock<String>>,
    /// This instance's distributed-execution worker and its key, when it runs one.
    worker_url: OnceLock<(url::Url, String)>,
    alive: RwLock<Arc<Vec<Member>>>,
    /// What this instance last said of itself (its heartbeat): answered to `cluster.peers`.
    announced: Arc<RwLock<Option<Member>>>,
    tails: Arc<TailContext>,
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
        let (dest, store_url) = open_remote(&remote, deps.object_store)?;
        let catalog = match deps.postgres.url {
            Some(_) => Catalog::Postgres(PgCatalog::connect(deps.postgres).await?),
            None => {
                tracing::info!(peers = ?config.peers, "no postgres.url: the catalog is kept as manifest objects in shared storage, the members are cluster.peers");
                Catalog::Manifest(
                    Arc::new(ManifestCatalog::new(
                        Arc::clone(&dest.store),
                        dest.prefix.clone(),
                        store_id.clone(),
                    )),
                    Peers::new(config.peers.clone(), secret.clone()),
                )
            }
        };
        // A bucket is registered with the session at scan time; a local directory is read
        // through the `file://` store DataFusion registers itself.
        let bucket: Option<Arc<dyn ObjectStore>> = match (remote.starts_with("s3://"), config.cache_max_bytes) {
            (false, _) => None,
            (true, 0) => Some(Arc::clone(&dest.store)),
            (true, max) => {
                let dir = deps.data_dir.join("cluster").join("cache");
                let own = crate::exports::destination::join(&dest.prefix, &format!("{EVENTS}/{store_id}"));
                let cache = FileCache::new(Arc::clone(&dest.store), dir.clone(), max)
                    .and_then(|c| c.with_own_files(own, deps.local.dir()))
                    .map_err(ClusterError::local(&dir))?;
                Some(Arc::new(cache))
            }
        };
        let history = History::new(
            deps.local.schema(),
            crate::event::schema::col::TIMESTAMP,
            store_url.clone(),
            bucket.clone(),
            dest.prefix.clone(),
        );
        let stores = TailStores::new(deps.local.clone());
        let tables = SharedTables::new(SharingDeps {
            catalog: catalog.clone(),
            dest: dest.clone(),
            store_url,
            bucket,
            store_id: store_id.clone(),
            instance_id: deps.instance_id.clone(),
            metrics: deps.metrics.clone(),
            stores: stores.clone(),
            events: history.clone(),
        });
        tokio::spawn(tables.clone().run(
            Duration::from_millis(config.ship_interval_ms),
            Duration::from_millis(config.catalog_refresh_ms),
            shutdown.clone(),
        ));
        if config.compact_interval_ms > 0 {
            let settings = CompactSettings {
                every: Duration::from_millis(config.compact_interval_ms),
                small_bytes: config.compact_small_bytes,
                min_files: config.compact_min_files,
                max_input_bytes: config.compact_max_input_bytes,
                grace: Duration::from_secs(config.compact_grace_secs),
                retention: deps.local.retention(),
                now_us: crate::event::time::now_micros,
            };
            let compactor =
                Compactor::new(catalog.clone(), &dest, deps.instance_id.clone(), settings).with_tables(tables.clone());
            tokio::spawn(compactor.run(shutdown.clone()));
        }
        let mut shipper = Shipper::new(
            deps.local.dir().to_path_buf(),
            EVENTS.to_string(),
            crate::event::schema::col::TIMESTAMP,
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
        history.refresh(&catalog, EVENTS).await?;
        let shipped = shipper.status_handle();
        let shipper = Arc::new(tokio::sync::Mutex::new(shipper));
        let every = Duration::from_millis(config.catalog_refresh_ms);
        tokio::spawn(Shipper::run(
            Arc::clone(&shipper),
            Duration::from_millis(config.ship_interval_ms),
            shutdown.clone(),
        ));
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.tail_timeout_ms.clamp(1, 2_000)))
            .build()
            .map_err(|e| ClusterError::Config(format!("HTTP client for the members: {e}")))?;
        let tails = Arc::new(TailContext {
            stores,
            store_id: store_id.clone(),
            secret,
            client,
            timeout: Duration::from_millis(config.tail_timeout_ms.max(1)),
            metrics: deps.metrics.clone(),
            last_error: Mutex::new(None),
            failures: std::sync::atomic::AtomicU64::new(0),
        });
        let members = Arc::new(Members {
            store_id: store_id.clone(),
            instance_id: deps.instance_id,
            url: Arc::default(),
            worker_url: OnceLock::new(),
            alive: RwLock::default(),
            announced: Arc::default(),
            tails,
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
            workers: WorkerList::default(),
            tables,
        };
        tokio::spawn(
            store
                .clone()
                .run_membership(catalog, every, config.member_timeout_ms, shutdown),
        );
        tracing::info!(%remote, %store_id, shared_files = store.history.files().len(), "shared history on");
        Ok(store)
    }

    /// What running a tail needs (for the distributed-execution worker's codec).
    pub fn tail_context(&self) -> Arc<TailContext> {
        Arc::clone(&self.members.tails)
    }

    /// The shared files.
    pub fn history(&self) -> History {
        self.history.clone()
    }

    /// The workers distributed plans may use, kept by the membership loop.
    pub fn workers(&self) -> WorkerList {
        self.workers.clone()
    }

    /// This instance runs a worker at `url`: it is in the list from now on and in the
    /// heartbeat, so the others send it tasks.
    pub fn set_worker_url(&self, url: url::Url, key: String) {
        if self.members.worker_url.set((url.clone(), key)).is_ok() {
            self.workers.set(vec![url]);
        }
    }

    /// What the tail route serves (its `advertise` starts the heartbeats).
    pub fn tail_server(&self, max_bytes: usize) -> TailServer {
        TailServer {
            stores: self.members.tails.stores.clone(),
            store_id: self.members.store_id.clone(),
            secret: self.members.tails.secret.clone(),
            max_bytes,
            advertised: Arc::clone(&self.members.url),
            announced: Arc::clone(&self.members.announced),
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
                        // A member whose tail this process could not read while running a
                        // distributed task for another instance changes its epoch, so that
                        // coordinator's cached (partial) answer is not served again after
                        // this heartbeat (its own failures it counts in its data version).
                        epoch: {
                            let mut h = DefaultHasher::new();
                            version.epoch.hash(&mut h);
                            members
                                .tails
                                .failures
                                .load(std::sync::atomic::Ordering::Acquire)
                                .hash(&mut h);
                            h.finish() as i64
                        },
                        // Its shared tables' rows too: the others' cached answers over
                        // those tables go stale when they change.
                        appends: (version.appends + self.tables.appends()) as i64,
                        worker_url: members.worker_url.get().map(|(u, _)| u.to_string()),
                        worker_key: members.worker_url.get().map(|(_, k)| k.clone()),
                    };
                    *members
                        .announced
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(me.clone());
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
                    if let Some((me, key)) = members.worker_url.get() {
                        self.workers
                            .set(std::iter::once(me.clone()).chain(workers_of(&alive, key)).collect());
                    }
                    let mut current = members.alive.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                    // Logged when who is in changes, not when their data versions do.
                    let who = |m: &[Member]| {
                        m.iter()
                            .map(|m| (m.store_id.clone(), m.url.clone(), m.worker_url.clone()))
                            .collect::<Vec<_>>()
                    };
                    if who(&current) != who(&alive) {
                        tracing::info!(members = ?alive.iter().map(|m| m.instance_id.as_str()).collect::<Vec<_>>(), "cluster members changed");
                    }
                    if **current != alive {
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

/// The workers among `alive` that take this instance's tasks: same key (secret and version),
/// a usable URL. The others are logged each time the list is made.
fn workers_of(alive: &[Member], key: &str) -> Vec<url::Url> {
    alive
        .iter()
        .filter_map(|m| {
            let url = m.worker_url.as_deref()?;
            if m.worker_key.as_deref() != Some(key) {
                tracing::debug!(instance = %m.instance_id, "a member runs another version or cluster.secret: it is sent no tasks");
                return None;
            }
            url::Url::parse(url)
                .map_err(|e| tracing::warn!(instance = %m.instance_id, url, error = %e, "a member advertises an unusable worker URL"))
                .ok()
        })
        .collect()
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
        self.version_of(self.local.data_version(), self.history.generation())
    }

    fn table_provider(&self) -> Arc<dyn TableProvider> {
        Arc::new(ClusterTable {
            store: self.clone(),
            table: EVENTS.to_string(),
            history: self.history.clone(),
            schema: self.local.schema(),
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
        self.status_now()
    }
}

impl ClusterStore {
    /// The data version of a table whose local part is at `local` and whose shared list has
    /// changed `generation` times.
    fn version_of(&self, local: DataVersion, generation: u64) -> DataVersion {
        // Every part only grows within an epoch, so the sum changes whenever one does; a member
        // restarting (a new epoch) or joining or leaving changes the epoch. Peers' counters are
        // as of their last heartbeat (≤ cluster.catalog_refresh_ms old).
        let members = self.members.alive();
        let mut epoch = DefaultHasher::new();
        local.epoch.hash(&mut epoch);
        // An answer that left a member out is cached under the version it started with; the
        // failure moves the version on, so the next identical query runs again instead of
        // being served that partial answer until the data changes.
        self.members
            .tails
            .failures
            .load(std::sync::atomic::Ordering::Acquire)
            .hash(&mut epoch);
        let mut appends = local.appends + generation;
        for m in members.iter() {
            (m.store_id.as_str(), m.epoch).hash(&mut epoch);
            appends += m.appends.max(0) as u64;
        }
        DataVersion {
            epoch: epoch.finish(),
            appends,
        }
    }

    fn status_now(&self) -> ComponentStatus {
        let mut status = self.local.status();
        let shipped = super::shipper::status_now(&self.shipped, &self.local);
        let m = &self.members;
        let files = self.history.files();
        let lock = |x: &Mutex<Option<String>>| x.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some(detail) = status.detail.as_object_mut() {
            detail.insert(
                "shared".into(),
                serde_json::json!({
                    "remote": crate::redact::url(&self.remote),
                    "shared_files": files.len(),
                    "files_of_other_instances": files.iter().filter(|f| f.store_id != m.store_id).count(),
                    "catalog_error": self.history.last_error(),
                    "shipper": shipped,
                    "advertised_url": m.url.get(),
                    "worker_url": m.worker_url.get().map(|(u, _)| u.as_str()),
                    "workers": datafusion_distributed::WorkerResolver::get_urls(&self.workers)
                        .unwrap_or_default()
                        .iter()
                        .map(url::Url::as_str)
                        .map(str::to_string)
                        .collect::<Vec<_>>(),
                    "members": m.alive().iter().map(|x| serde_json::json!({"instance": x.instance_id, "url": x.url})).collect::<Vec<_>>(),
                    "membership_error": lock(&m.membership_error),
                    "tail_errors": m.metrics.cluster_tail_errors_total.get(),
                    "last_tail_error": m.tails.last_error(),
                    "tables": self.tables.all().iter().map(|t| t.status()).collect::<Vec<_>>(),
                }),
            );
        }
        status
    }
}

/// A shared continuous-query table's rows on every instance: what the engine merges.
#[derive(Debug)]
struct SharedTableStore {
    cluster: ClusterStore,
    table: Arc<SharedTable>,
}

#[async_trait]
impl EventStore for SharedTableStore {
    async fn append(&self, batch: RecordBatch) -> Result<(), StorageError> {
        self.table.local.append(batch).await
    }

    fn data_version(&self) -> DataVersion {
        self.cluster
            .version_of(self.table.local.data_version(), self.table.history.generation())
    }

    fn table_provider(&self) -> Arc<dyn TableProvider> {
        Arc::new(ClusterTable {
            store: self.cluster.clone(),
            table: self.table.key.clone(),
            history: self.table.history.clone(),
            schema: self.table.local.schema(),
        })
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.table.local.flush().await
    }

    fn status(&self) -> ComponentStatus {
        self.table.local.status()
    }
}

#[async_trait]
impl crate::stream::shared::SharedOutputs for ClusterStore {
    async fn share(
        &self,
        name: &str,
        table: &str,
        store: &LocalStore,
        fresh: bool,
    ) -> Result<Arc<dyn EventStore>, String> {
        let table = self
            .tables
            .add(name, table, store, fresh)
            .await
            .map_err(|e| crate::error::chain(&e))?;
        Ok(Arc::new(SharedTableStore {
            cluster: self.clone(),
            table,
        }))
    }

    fn unshare(&self, name: &str) {
        self.tables.remove(name);
    }
}

/// A table in cluster mode (`events`, or a shared continuous query's rows): every data
/// directory's shipped files plus each member's tail.
#[derive(Debug)]
struct ClusterTable {
    store: ClusterStore,
    /// Its catalog name.
    table: String,
    history: History,
    schema: SchemaRef,
}

impl ClusterTable {
    /// One [`TailExec`] per member, this instance included: each holds what its member has
    /// beyond `files` (the list this scan reads from shared storage).
    fn tails(
        &self,
        files: &[CatalogFile],
        projection: Option<&Vec<usize>>,
        range: TimeRange,
    ) -> DfResult<Vec<Arc<dyn ExecutionPlan>>> {
        let m = &self.store.members;
        let schema = Arc::clone(&self.schema);
        let columns: Option<Vec<String>> =
            projection.map(|p| p.iter().map(|i| schema.field(*i).name().clone()).collect());
        let me = Member {
            store_id: m.store_id.clone(),
            instance_id: m.instance_id.clone(),
            url: m.url.get().cloned().unwrap_or_default(),
            epoch: 0,
            appends: 0,
            worker_url: None,
            worker_key: None,
        };
        let alive = m.alive();
        let members = std::iter::once(me).chain(alive.iter().cloned());
        members
            .map(|member| {
                // Compacted files name the segments they hold: the owner skips those too.
                let request = TailRequest {
                    table: self.table.clone(),
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
                let tail = TailExec::new(member, request, projection.cloned(), Arc::clone(&m.tails))?;
                Ok(Arc::new(tail) as Arc<dyn ExecutionPlan>)
            })
            .collect()
    }
}

#[async_trait]
impl TableProvider for ClusterTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
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
        // One list of shared files for the whole scan: read from shared storage, and told to
        // every owner (this instance too) so their tails hold exactly the rest.
        let files = self.history.files();
        let mut inputs = vec![self.history.scan(state, &files, projection, filters, limit).await?];
        // Tails are cut by time where the owner filters them (events); a continuous query's
        // tail is small and sent whole, its shared files pruned by `window_start` above.
        let range =
            super::tail::time_column(&self.table).map_or_else(TimeRange::default, |c| TimeRange::on(c, filters));
        inputs.extend(self.tails(&files, projection, range)?);
        UnionExec::try_new(inputs)
    }
}
