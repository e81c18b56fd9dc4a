//! The catalog of shared files and the member list: in PostgreSQL when `postgres.url` is
//! set ([`postgres`]: rows, an advisory lock for the one maintenance leader, heartbeat rows),
//! else as manifest objects in shared storage ([`manifest`]) with the static `cluster.peers`
//! list ([`peers`]).

pub mod manifest;
pub mod peers;
pub mod postgres;

use std::collections::HashSet;
use std::sync::Arc;

use super::ClusterError;
use super::tail::Member;
pub use manifest::ManifestCatalog;
pub use peers::Peers;
pub use postgres::PgCatalog;

/// One shared file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogFile {
    /// Object key below `cluster.remote`.
    pub path: String,
    /// Data directory it came from.
    pub store_id: String,
    /// Rows.
    pub rows: i64,
    /// Size in bytes.
    pub bytes: i64,
    /// Event-time bounds (µs), when the file has statistics.
    pub min_event_time_us: Option<i64>,
    /// See `min_event_time_us`.
    pub max_event_time_us: Option<i64>,
    /// For a compacted file, the flushed segments (file names) whose rows it holds; empty for a
    /// flushed segment.
    pub covers: Vec<String>,
}

impl CatalogFile {
    /// The flushed segments (file names) whose rows this file holds.
    pub fn segments(&self) -> Vec<String> {
        if self.covers.is_empty() {
            self.path.rsplit('/').next().map(str::to_string).into_iter().collect()
        } else {
            self.covers.clone()
        }
    }
}

/// Where the catalog and the member list live.
#[derive(Debug, Clone)]
pub enum Catalog {
    /// In PostgreSQL.
    Postgres(PgCatalog),
    /// Manifest objects, and the static peers.
    Manifest(Arc<ManifestCatalog>, Peers),
}

/// The right to run maintenance: PostgreSQL's cluster-wide lock (held as long as its
/// session), or, with manifests, each instance over its own data directory.
#[derive(Debug)]
pub enum Lease {
    /// The session holding the advisory lock.
    Postgres(sqlx::PgConnection),
    /// Maintenance of this instance's own files only.
    Own,
}

impl Lease {
    /// Whether the lease still holds (the lock's session answers).
    pub async fn holds(&mut self) -> bool {
        match self {
            Self::Postgres(conn) => sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok(),
            Self::Own => true,
        }
    }
}

impl Catalog {
    /// Flushed segments (file names) of `store_id` in the catalog, directly or inside a
    /// compacted file: what its shipper must not ship again.
    pub async fn shipped_segments(&self, table: &str, store_id: &str) -> Result<HashSet<String>, ClusterError> {
        match self {
            Self::Postgres(c) => c.shipped_segments(table, store_id).await,
            Self::Manifest(m, _) => m.shipped_segments(table, store_id).await,
        }
    }

    /// Records an uploaded segment (again is a no-op).
    pub async fn record(&self, table: &str, instance_id: &str, file: &CatalogFile) -> Result<(), ClusterError> {
        match self {
            Self::Postgres(c) => c.record(table, instance_id, file).await,
            Self::Manifest(m, _) => m.record(table, instance_id, file).await,
        }
    }

    /// A number that changes whenever the visible file set does.
    pub async fn generation(&self) -> Result<i64, ClusterError> {
        match self {
            Self::Postgres(c) => c.generation().await,
            Self::Manifest(m, _) => m.generation().await,
        }
    }

    /// Every visible file of `table`, of every data directory, oldest first.
    pub async fn all(&self, table: &str) -> Result<Vec<CatalogFile>, ClusterError> {
        match self {
            Self::Postgres(c) => c.all(table).await,
            Self::Manifest(m, _) => m.all(table).await,
        }
    }

    /// Visible files of `store_id` smaller than `small_bytes`, oldest first (compaction input).
    pub async fn small_files(
        &self,
        table: &str,
        store_id: &str,
        small_bytes: u64,
    ) -> Result<Vec<CatalogFile>, ClusterError> {
        match self {
            Self::Postgres(c) => c.small_files(table, store_id, small_bytes).await,
            Self::Manifest(m, _) => m.small_files(table, store_id, small_bytes).await,
        }
    }

    /// Data directories whose files this instance maintains (every one for the PostgreSQL
    /// leader, its own with manifests).
    pub async fn stores(&self, table: &str) -> Result<Vec<String>, ClusterError> {
        match self {
            Self::Postgres(c) => c.stores(table).await,
            Self::Manifest(m, _) => m.stores(table).await,
        }
    }

    /// Replaces `inputs` by the uploaded `merged` at once; `Ok(false)` (nothing changed) when
    /// one of them is no longer visible.
    pub async fn swap(
        &self,
        table: &str,
        instance_id: &str,
        merged: &CatalogFile,
        inputs: &[String],
    ) -> Result<bool, ClusterError> {
        match self {
            Self::Postgres(c) => c.swap(table, instance_id, merged, inputs).await,
            Self::Manifest(m, _) => m.swap(table, instance_id, merged, inputs).await,
        }
    }

    /// Takes out of the visible set the files (this instance maintains) of `table` whose
    /// events are all older than `cutoff_us` (retention).
    pub async fn expire_before(&self, table: &str, cutoff_us: i64) -> Result<u64, ClusterError> {
        match self {
            Self::Postgres(c) => c.expire_before(table, cutoff_us).await,
            Self::Manifest(m, _) => m.expire_before(table, cutoff_us).await,
        }
    }

    /// Files taken out more than `grace` ago (their objects can go).
    pub async fn expired(&self, grace: std::time::Duration) -> Result<Vec<String>, ClusterError> {
        match self {
            Self::Postgres(c) => c.expired(grace).await,
            Self::Manifest(m, _) => m.expired(grace).await,
        }
    }

    /// Forgets a taken-out file whose object is deleted.
    pub async fn forget(&self, path: &str) -> Result<(), ClusterError> {
        match self {
            Self::Postgres(c) => c.forget(path).await,
            Self::Manifest(m, _) => m.forget(path).await,
        }
    }

    /// The right to run maintenance, if this instance has it now.
    pub async fn try_lead(&self, key: i64) -> Result<Option<Lease>, ClusterError> {
        match self {
            Self::Postgres(c) => Ok(c.try_lead(key).await?.map(Lease::Postgres)),
            Self::Manifest(..) => Ok(Some(Lease::Own)),
        }
    }

    /// Says `member` (this instance) is alive, with its current data version.
    pub async fn heartbeat(&self, member: &Member) -> Result<(), ClusterError> {
        match self {
            Self::Postgres(c) => c.heartbeat(member).await,
            // Each peer asks this instance itself (it answers what the heartbeat announced).
            Self::Manifest(..) => Ok(()),
        }
    }

    /// The other members alive: heartbeat newer than `timeout_ms`, or answering within it.
    pub async fn alive(&self, store_id: &str, timeout_ms: u64) -> Result<Vec<Member>, ClusterError> {
        match self {
            Self::Postgres(c) => c.alive(store_id, timeout_ms).await,
            Self::Manifest(_, peers) => Ok(peers.alive(store_id, timeout_ms).await),
        }
    }

    /// This instance stops (clean shutdown): the others stop asking it at once (with peers,
    /// at their next round, when it no longer answers).
    pub async fn leave(&self, store_id: &str) -> Result<(), ClusterError> {
        match self {
            Self::Postgres(c) => c.leave(store_id).await,
            Self::Manifest(..) => Ok(()),
        }
    }
}
