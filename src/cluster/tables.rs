//! Cluster-wide continuous-query tables: each shared query's output store is shipped like the
//! events store (`<remote>/<table>/<store-id>/events-<seq>.parquet`, recorded in the catalog
//! under the table's catalog name), its list of shared files is refreshed like the events', and
//! its unshipped rows are served as a tail (`TailRequest::table`). The merge of every
//! instance's rows is planned by the engine ([`crate::stream::merge`]); this module only moves
//! rows. One task ships and refreshes every shared table, so the catalog is read once per round
//! however many queries there are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use datafusion::execution::object_store::ObjectStoreUrl;
use object_store::ObjectStore;

use super::ClusterError;
use super::catalog::Catalog;
use super::history::History;
use super::shipper::{Shipper, ShipperStatus};
use super::tail::TailStores;
use crate::exports::destination::Destination;
use crate::metrics::Metrics;
use crate::storage::EventStore;
use crate::storage::local::LocalStore;

/// The column of a continuous query's rows recorded as a shared file's time bounds.
pub const WINDOW_START: &str = "window_start";

/// One shared query's output.
#[derive(Debug)]
pub struct SharedTable {
    /// The query.
    pub name: String,
    /// Its catalog name.
    pub key: String,
    /// Its local store.
    pub local: LocalStore,
    /// Every instance's shipped files of it.
    pub history: History,
    shipper: tokio::sync::Mutex<Shipper>,
    status: Arc<Mutex<ShipperStatus>>,
}

impl SharedTable {
    /// What `/ready` says of it.
    pub fn status(&self) -> serde_json::Value {
        let shipper = super::shipper::status_now(&self.status, &self.local);
        let in_memory: usize = self.local.snapshot().batches.iter().map(|b| b.num_rows()).sum();
        serde_json::json!({
            "query": self.name,
            "table": self.key,
            "shared_files": self.history.files().len(),
            "rows_in_memory": in_memory,
            "shipper": shipper,
            "catalog_error": self.history.last_error(),
        })
    }
}

/// What opening a shared table needs from the cluster.
#[derive(Debug)]
pub struct SharingDeps {
    /// The catalog.
    pub catalog: Catalog,
    /// Shared storage.
    pub dest: Destination,
    /// Shared storage as DataFusion reads it.
    pub store_url: ObjectStoreUrl,
    /// The bucket (or its file cache) to register for scans, unless the session knows it.
    pub bucket: Option<Arc<dyn ObjectStore>>,
    /// This data directory's id.
    pub store_id: String,
    /// This instance's name.
    pub instance_id: String,
    /// Metrics.
    pub metrics: Metrics,
    /// Where tails are served from (the tail route and in-process tails share it).
    pub stores: TailStores,
    /// The events' shared files, refreshed in the same round.
    pub events: History,
}

/// The shared tables of this instance. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SharedTables {
    deps: Arc<SharingDeps>,
    tables: Arc<RwLock<HashMap<String, Arc<SharedTable>>>>,
}

impl SharedTables {
    /// None shared yet.
    pub fn new(deps: SharingDeps) -> Self {
        Self {
            deps: Arc::new(deps),
            tables: Arc::default(),
        }
    }

    /// Every shared table.
    pub fn all(&self) -> Vec<Arc<SharedTable>> {
        self.tables
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Rows appended to every shared table's local store (part of this instance's heartbeat,
    /// so the others' cached answers over these tables go stale when they change).
    pub fn appends(&self) -> u64 {
        self.all().iter().map(|t| t.local.data_version().appends).sum()
    }

    /// Starts sharing query `name`'s output `local` as catalog table `key`: ships what it
    /// flushed before, reads every instance's files once. A `fresh` store (the query was just
    /// registered) for which the catalog already lists files of this data directory is
    /// refused: a query deleted and created again with the same SQL numbers its files from 0
    /// again, and the old files listed under those names would shadow the new ones.
    pub async fn add(
        &self,
        name: &str,
        key: &str,
        local: &LocalStore,
        fresh: bool,
    ) -> Result<Arc<SharedTable>, ClusterError> {
        let d = &self.deps;
        let mut shipper = Shipper::new(
            local.dir().to_path_buf(),
            key.to_string(),
            WINDOW_START,
            d.dest.clone(),
            d.catalog.clone(),
            d.store_id.clone(),
            d.instance_id.clone(),
            d.metrics.clone(),
        )
        .await?;
        if fresh && shipper.has_shipped() {
            return Err(ClusterError::Config(format!(
                "`{name}` was created again with the SQL of a deleted query whose rows this instance \
                 shipped (catalog table {key}); they would shadow the new rows, so its table stays \
                 this instance's: delete it and create it under another name or with other SQL text"
            )));
        }
        if let Err(e) = shipper.ship_new().await {
            tracing::warn!(query = name, error = %e, "shipping a continuous query's flushed rows failed; retrying");
        }
        let history = History::new(
            local.schema(),
            WINDOW_START,
            d.store_url.clone(),
            d.bucket.clone(),
            d.dest.prefix.clone(),
        );
        history.refresh(&d.catalog, key).await?;
        let table = Arc::new(SharedTable {
            name: name.to_string(),
            key: key.to_string(),
            local: local.clone(),
            history,
            status: shipper.status_handle(),
            shipper: tokio::sync::Mutex::new(shipper),
        });
        d.stores.set(key, Some(local.clone()));
        self.tables
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_string(), Arc::clone(&table));
        tracing::info!(
            query = name,
            table = key,
            shared_files = table.history.files().len(),
            "continuous query shared across the cluster"
        );
        Ok(table)
    }

    /// Stops sharing query `name` (its shipped files stay in shared storage).
    pub fn remove(&self, name: &str) {
        let removed = self
            .tables
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
        if let Some(t) = removed {
            self.deps.stores.set(&t.key, None);
        }
    }

    /// Ships every table's newly flushed files.
    async fn ship(&self) {
        for table in self.all() {
            let result = table.shipper.lock().await.ship_new().await;
            if let Err(e) = result {
                tracing::debug!(query = %table.name, error = %e, "shipping a continuous query's rows failed; retrying");
            }
        }
    }

    /// Rereads the events' list and every table's when the catalog changed: one read of the
    /// catalog's generation per round (one LIST without PostgreSQL) however many tables.
    async fn refresh(&self) {
        let catalog = &self.deps.catalog;
        let lists = std::iter::once((super::EVENTS.to_string(), self.deps.events.clone()))
            .chain(self.all().iter().map(|t| (t.key.clone(), t.history.clone())))
            .collect::<Vec<_>>();
        let generation = catalog.generation().await;
        for (table, history) in lists {
            // Each list is reread only when the generation moved since it was read.
            let result = match &generation {
                Ok(g) => history.refresh_at(catalog, &table, *g).await,
                Err(e) => Err(ClusterError::Config(crate::error::chain(e))),
            };
            let error = result.err().map(|e| crate::error::chain(&e));
            if let Some(e) = &error
                && history.last_error().is_none()
                && table == super::EVENTS
            {
                tracing::warn!(error = %e, "reading the cluster catalog failed; retrying");
            }
            history.set_error(error);
        }
    }

    /// Ships every `ship_every` and refreshes (events too) every `refresh_every` until
    /// `shutdown`.
    pub async fn run(
        self,
        ship_every: Duration,
        refresh_every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ship = tokio::time::interval(ship_every);
        let mut refresh = tokio::time::interval(refresh_every);
        ship.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ship.tick() => self.ship().await,
                _ = refresh.tick() => self.refresh().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}
