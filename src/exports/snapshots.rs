//! Snapshot locations registered as tables `snapshots.<name>`, so history outlives local
//! retention. Registrations are kept in `<data dir>/exports/snapshots.json` and restored at
//! start; every schedule registers its destination under its own name after its first period.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use super::ExportError;
use super::destination::ObjectStoreConfig;
use super::table::SnapshotTable;

/// Schema holding the snapshot tables.
pub const SCHEMA: &str = "snapshots";

/// Longest table name.
const MAX_NAME: usize = 63;

/// A registration as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[schema(example = json!({"name": "events_daily", "location": "s3://telemetry/hub/daily/"}))]
pub struct Registration {
    /// Table name inside `snapshots`.
    pub name: String,
    /// Where the snapshots are (`file:///…/` or `s3://bucket/prefix/`).
    pub location: String,
}

/// A registered table with what its manifests say.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SnapshotInfo {
    /// Name and location.
    #[serde(flatten)]
    pub registration: Registration,
    /// `snapshots.<name>`.
    pub table: String,
    /// Hive partition columns.
    pub partition_by: Vec<String>,
    /// Manifests found (one per export or scheduled period).
    pub manifests: usize,
    /// Files they list.
    pub files: usize,
    /// Rows they list.
    pub rows: u64,
}

/// The registered snapshot tables of this instance.
#[derive(Clone)]
pub struct Snapshots {
    ctx: SessionContext,
    schema: Arc<MemorySchemaProvider>,
    path: Option<PathBuf>,
    store: ObjectStoreConfig,
    registered: Arc<Mutex<BTreeMap<String, Registration>>>,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A name usable unquoted in SQL: lower-case letters, digits and `_`, not starting with a digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Snapshots {
    /// Adds the `snapshots` schema to `ctx`'s default catalog; registrations persist in `path`.
    pub fn new(ctx: &SessionContext, path: Option<PathBuf>, store: ObjectStoreConfig) -> Result<Self, ExportError> {
        let schema = Arc::new(MemorySchemaProvider::new());
        let catalog_name = ctx.state().config().options().catalog.default_catalog.clone();
        let catalog = ctx
            .catalog(&catalog_name)
            .ok_or_else(|| ExportError::Encode(format!("no default catalog `{catalog_name}`").into()))?;
        catalog
            .register_schema(SCHEMA, Arc::clone(&schema) as Arc<dyn SchemaProvider>)
            .map_err(|e| ExportError::encode(format!("registering the `{SCHEMA}` schema"), e))?;
        Ok(Self {
            ctx: ctx.clone(),
            schema,
            path,
            store,
            registered: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Registration>> {
        self.registered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers what `path` holds; a location that cannot be read now (store down, nothing
    /// exported yet) stays registered and is opened again on the next [`Self::restore`].
    pub async fn restore(&self) {
        let Some(path) = &self.path else { return };
        let saved: Vec<Registration> = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "snapshot registrations unreadable; none restored");
                    return;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "snapshot registrations unreadable; none restored");
                return;
            }
        };
        for r in saved {
            self.lock().insert(r.name.clone(), r.clone());
            if let Err(e) = self.attach(&r).await {
                tracing::warn!(table = %r.name, location = %r.location, error = %e, "snapshot table not readable yet");
            }
        }
    }

    async fn attach(&self, r: &Registration) -> Result<SnapshotInfo, ExportError> {
        let (table, summary) = SnapshotTable::open(&self.ctx, &r.location, &self.store).await?;
        let partition_by = table.partition_by().to_vec();
        self.schema
            .register_table(r.name.clone(), Arc::new(table))
            .map_err(|e| ExportError::encode(format!("registering snapshots.{}", r.name), e))?;
        Ok(SnapshotInfo {
            registration: r.clone(),
            table: format!("{SCHEMA}.{}", r.name),
            partition_by,
            manifests: summary.manifests,
            files: summary.files,
            rows: summary.rows,
        })
    }

    /// Registers (or moves) `snapshots.<name>` over `location`, which must hold at least one
    /// manifest.
    pub async fn register(&self, name: &str, location: &str) -> Result<SnapshotInfo, ExportError> {
        if !valid_name(name) {
            return Err(ExportError::Invalid(format!(
                "snapshot name `{name}`: use 1–{MAX_NAME} lower-case letters, digits or `_`, not starting with a digit"
            )));
        }
        let r = Registration {
            name: name.to_string(),
            location: location.to_string(),
        };
        let info = self.attach(&r).await?;
        self.lock().insert(r.name.clone(), r);
        self.save()?;
        tracing::info!(table = %info.table, location, files = info.files, "snapshot table registered");
        Ok(info)
    }

    /// Registers `name` over `location` unless it already is (schedules after each period).
    pub async fn ensure(&self, name: &str, location: &str) -> Result<(), ExportError> {
        let attached = self.schema.table_exist(name);
        let same = self.lock().get(name).is_some_and(|r| r.location == location);
        if attached && same {
            return Ok(());
        }
        self.register(name, location).await.map(|_| ())
    }

    /// Drops `snapshots.<name>` (its files stay where they are).
    pub fn deregister(&self, name: &str) -> Result<Registration, ExportError> {
        let removed = self
            .lock()
            .remove(name)
            .ok_or_else(|| ExportError::NotFound(format!("snapshot table `{name}`")))?;
        // A restored registration whose location was not readable has no table to drop.
        let _ = self.schema.deregister_table(name);
        self.save()?;
        Ok(removed)
    }

    /// Every registration with what its manifests hold now (`files`/`rows` 0 when unreadable).
    pub async fn list(&self) -> Vec<SnapshotInfo> {
        let registered: Vec<Registration> = self.lock().values().cloned().collect();
        let mut out = Vec::with_capacity(registered.len());
        for r in registered {
            match self.attach(&r).await {
                Ok(info) => out.push(info),
                Err(e) => {
                    tracing::warn!(table = %r.name, error = %e, "snapshot table not readable");
                    out.push(SnapshotInfo {
                        table: format!("{SCHEMA}.{}", r.name),
                        registration: r,
                        partition_by: Vec::new(),
                        manifests: 0,
                        files: 0,
                        rows: 0,
                    });
                }
            }
        }
        out
    }

    fn save(&self) -> Result<(), ExportError> {
        let Some(path) = &self.path else { return Ok(()) };
        let all: Vec<Registration> = self.lock().values().cloned().collect();
        crate::storage::json_file::write(path, &all, crate::storage::json_file::Access::Default)
            .map_err(|e| ExportError::destination(format!("saving {}", path.display()), e))
    }
}
