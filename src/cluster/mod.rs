//! Cluster mode (issue #22): **shared history**, **recent data everywhere** and **distributed
//! execution**. Each instance uploads the Parquet segments its local store flushes to shared
//! object storage (`cluster.remote`) and records them in a catalog in PostgreSQL; every
//! instance's `events` table is every data directory's shipped files plus, per live member, what
//! that member holds beyond them (its tail). So SQL on any instance (HTTP, the wire endpoint,
//! `GET /api/v1/events`, the result cache) answers over every event any member acknowledged.
//!
//! ```text
//! ingest → local WAL/memory → events-<seq>.parquet ──(shipper)──▶ <remote>/events/<store-id>/…
//!                                                         └──▶ hub_files (PostgreSQL)
//! query  → hub_files' list (refreshed each second) ∪ one TailExec per member
//!          (large scans split across the members' workers: `distributed`)
//! ```
//!
//! What a query sees (the bound): every event acknowledged before it started on every member
//! that answers (README "Scaling out"). Retention of shared history runs in the compaction
//! leader's pass. Continuous-query tables are shared the same way ([`tables`]) and merged when
//! read ([`crate::stream::merge`]).
//!
//! Files are keyed by the *store id* (a random id kept in `<data_dir>/cluster/store-id`), not
//! the instance name: an instance restarted under another name still skips its own files, and
//! a data directory that is lost leaves its shipped history readable by everyone.

#[cfg(feature = "postgres")]
pub mod catalog;
#[cfg(feature = "postgres")]
pub mod compact;
#[cfg(feature = "postgres")]
pub mod distributed;
pub mod file_cache;
#[cfg(feature = "postgres")]
pub mod history;
pub mod prune;
#[cfg(feature = "postgres")]
pub mod shipper;
#[cfg(feature = "postgres")]
pub mod store;
#[cfg(feature = "postgres")]
pub mod tables;
pub mod tail;
#[cfg(feature = "postgres")]
pub mod tail_exec;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Classify, ErrorClass};

#[cfg(feature = "postgres")]
pub use store::{ClusterDeps, ClusterStore};

/// Table name of events in the catalog.
pub const EVENTS: &str = "events";

/// The `[cluster]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Shared object storage for history: `s3://bucket/prefix/` (credentials, region and
    /// endpoint from the standard `AWS_*` environment) or `file:///shared/dir/`. Needs
    /// `postgres.url` (the catalog). Unset = this instance answers over its own events only.
    pub remote: Option<String>,
    /// How often the shipper looks for newly flushed local files, in ms.
    pub ship_interval_ms: u64,
    /// How often the catalog is read for other instances' files and members, and this
    /// instance's heartbeat written, in ms.
    pub catalog_refresh_ms: u64,
    /// Shared by every instance (env `CLUSTER_SECRET`, at least 16 characters): instances read
    /// each other's recent events with it (`POST /internal/v1/cluster/tail`). Required with
    /// `remote`.
    pub secret: Option<String>,
    /// This instance's HTTP API as the others reach it (env `CLUSTER_ADVERTISE_URL`); default
    /// `http://<http.host, or the host name when it is 0.0.0.0>:<bound port>`.
    pub advertise_url: Option<String>,
    /// Without `postgres.url`: the members' HTTP addresses (env `CLUSTER_PEERS`,
    /// comma-separated; this instance's own may be listed too). Each is asked every
    /// `catalog_refresh_ms` who it is; those answering within `member_timeout_ms` are the
    /// members. The catalog is then kept as manifest objects in `remote`.
    pub peers: Vec<String>,
    /// A member whose heartbeat is older than this (or, with `peers`, that does not answer
    /// within it) is not asked for its recent events, in ms.
    pub member_timeout_ms: u64,
    /// How long a query waits for a member's recent events, in ms; a member that does not
    /// answer in time is left out of that answer (logged, counted in `/ready`).
    pub tail_timeout_ms: u64,
    /// Largest answer an instance gives for its recent events, in bytes (Arrow IPC); a larger
    /// one fails the query with a message asking for a narrower time range.
    pub max_tail_bytes: usize,
    /// How often the cluster's maintenance leader (one instance, by a PostgreSQL advisory lock)
    /// compacts shared history, in ms; `0` = never.
    pub compact_interval_ms: u64,
    /// Shared files smaller than this are compacted.
    pub compact_small_bytes: u64,
    /// A data directory's small files are merged once there are this many.
    pub compact_min_files: usize,
    /// Bytes read by one merge at most (it runs in memory, about 10× this in Arrow).
    pub compact_max_input_bytes: u64,
    /// Replaced files are deleted from shared storage this long after the swap (longer than
    /// any query), in seconds.
    pub compact_grace_secs: u64,
    /// Local copies of other instances' files kept in `<data_dir>/cluster/cache/` (read through
    /// on first use, least recently used evicted), in bytes; `0` = every scan reads the bucket.
    /// Not used for a `file://` remote.
    pub cache_max_bytes: u64,
    /// Large scans are split across the members (env `CLUSTER_DISTRIBUTED`): every instance
    /// coordinates the queries it is asked and runs the others' stage tasks as a worker.
    pub distributed: bool,
    /// Where this instance's worker (gRPC, guarded by `secret`) listens (env
    /// `CLUSTER_WORKER_LISTEN`); default `<http.host>:0`, a free port, advertised in the
    /// heartbeat.
    pub worker_listen: Option<String>,
    /// The worker as the others reach it (env `CLUSTER_WORKER_ADVERTISE_URL`); default
    /// `http://<advertise_url's host>:<bound port>`.
    pub worker_advertise_url: Option<String>,
    /// A scan is split into one task per this many bytes of files (at most one task per
    /// member); smaller queries run on the instance asked.
    pub distributed_bytes_per_partition: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            remote: None,
            ship_interval_ms: 1_000,
            catalog_refresh_ms: 1_000,
            secret: None,
            advertise_url: None,
            peers: Vec::new(),
            member_timeout_ms: 5_000,
            tail_timeout_ms: 5_000,
            max_tail_bytes: 256 << 20,
            compact_interval_ms: 60_000,
            compact_small_bytes: 32 << 20,
            compact_min_files: 8,
            compact_max_input_bytes: 64 << 20,
            compact_grace_secs: 600,
            cache_max_bytes: 4 << 30,
            distributed: true,
            worker_listen: None,
            worker_advertise_url: None,
            distributed_bytes_per_partition: 16 << 20,
        }
    }
}

impl ClusterConfig {
    /// Whether shared history is on.
    pub fn enabled(&self) -> bool {
        self.remote.is_some()
    }

    /// Checks what can be checked without connecting; `has_postgres`: whether `postgres.url`
    /// is set (the catalog lives there).
    pub fn validate(&self, has_postgres: bool) -> Result<(), String> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        if !(remote.starts_with("s3://") || remote.starts_with("file:///")) {
            return Err(format!(
                "cluster.remote (CLUSTER_REMOTE) `{remote}` must be s3://bucket/prefix/ or file:///absolute/dir/"
            ));
        }
        if has_postgres && !self.peers.is_empty() {
            return Err(
                "cluster.peers (CLUSTER_PEERS) is for a cluster without postgres.url (DATABASE_URL): with a database \
                 the members find each other by their heartbeat rows; unset one of them"
                    .into(),
            );
        }
        if let Some(peer) = self
            .peers
            .iter()
            .find(|p| !(p.starts_with("http://") || p.starts_with("https://")))
        {
            return Err(format!(
                "cluster.peers (CLUSTER_PEERS): `{peer}` must be an http:// or https:// URL"
            ));
        }
        if self.secret.as_ref().is_none_or(|s| s.len() < 16) {
            return Err(
                "cluster.remote (CLUSTER_REMOTE) needs cluster.secret (CLUSTER_SECRET) of at least 16 characters: \
                 instances read each other's recent events with it"
                    .into(),
            );
        }
        if let Some(url) = &self.advertise_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "cluster.advertise_url (CLUSTER_ADVERTISE_URL) `{url}` must be an http:// or https:// URL"
            ));
        }
        if let Some(url) = &self.worker_advertise_url
            && !url.starts_with("http://")
        {
            return Err(format!(
                "cluster.worker_advertise_url (CLUSTER_WORKER_ADVERTISE_URL) `{url}` must be an http:// URL"
            ));
        }
        if self.distributed_bytes_per_partition == 0 {
            return Err("cluster.distributed_bytes_per_partition must be at least 1".into());
        }
        if self.ship_interval_ms == 0 || self.catalog_refresh_ms == 0 {
            return Err("cluster.ship_interval_ms and cluster.catalog_refresh_ms must be at least 1".into());
        }
        Ok(())
    }
}

/// Errors of shared history.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The configuration cannot work.
    #[error("cluster: {0}")]
    Config(String),
    /// The object store refused or did not answer.
    #[error("shared storage: {what}: {source}")]
    Remote {
        /// What was being done.
        what: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The catalog database refused or did not answer.
    #[cfg(feature = "postgres")]
    #[error("cluster catalog: {0}")]
    Catalog(#[source] crate::sinks::SinkError),
    /// A manifest of the catalog in shared storage is not one (or could not be encoded).
    #[error("shared storage: manifest {path}: {source}")]
    Manifest {
        /// Its key.
        path: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A local file could not be read.
    #[error("reading {path}: {source}")]
    Local {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ClusterError {
    #[cfg(feature = "postgres")]
    fn remote(what: impl Into<String>) -> impl FnOnce(object_store::Error) -> Self {
        let what = what.into();
        move |source| Self::Remote { what, source }
    }

    fn local<E: std::error::Error + Send + Sync + 'static>(path: &Path) -> impl FnOnce(E) -> Self + use<E> {
        let path = path.display().to_string();
        move |e| Self::Local {
            path,
            source: Box::new(e),
        }
    }
}

impl Classify for ClusterError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Config(_) => ErrorClass::User,
            Self::Remote { .. } | Self::Manifest { .. } => ErrorClass::External,
            #[cfg(feature = "postgres")]
            Self::Catalog(e) => e.class(),
            Self::Local { .. } => ErrorClass::Internal,
        }
    }
}

/// The random id of the data directory `data_dir` (created on first use).
pub fn store_id(data_dir: &Path) -> Result<String, ClusterError> {
    let dir = data_dir.join("cluster");
    let path = dir.join("store-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ClusterError::local(&path)(e)),
    }
    std::fs::create_dir_all(&dir).map_err(ClusterError::local(&dir))?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tmp = dir.join("store-id.tmp");
    std::fs::write(&tmp, &id)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(ClusterError::local(&path))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_setting() {
        let mut c = ClusterConfig::default();
        assert!(c.validate(false).is_ok(), "off by default");
        c.remote = Some("http://bucket".into());
        assert!(c.validate(true).unwrap_err().contains("CLUSTER_REMOTE"));
        c.remote = Some("s3://bucket/hub/".into());
        assert!(c.validate(true).unwrap_err().contains("CLUSTER_SECRET"));
        c.secret = Some("short".into());
        assert!(c.validate(true).unwrap_err().contains("CLUSTER_SECRET"));
        c.secret = Some("a-secret-of-24-characters".into());
        assert!(c.validate(true).is_ok());
        c.advertise_url = Some("10.0.0.1:3000".into());
        assert!(c.validate(true).unwrap_err().contains("CLUSTER_ADVERTISE_URL"));
        c.advertise_url = Some("http://10.0.0.1:3000".into());
        assert!(c.validate(true).is_ok());
        // Without a database the members are listed; with one, a list is a mistake.
        assert!(c.validate(false).is_ok());
        c.peers = vec!["http://h1:8080".into(), "h2:8080".into()];
        assert!(c.validate(false).unwrap_err().contains("`h2:8080`"));
        c.peers.pop();
        assert!(c.validate(false).is_ok());
        assert!(c.validate(true).unwrap_err().contains("CLUSTER_PEERS"));
        c.peers.clear();
        c.catalog_refresh_ms = 0;
        assert!(c.validate(true).is_err());
    }

    #[test]
    fn the_store_id_survives_a_restart_and_differs_between_directories() {
        let a = tempfile::tempdir().expect("tmp");
        let b = tempfile::tempdir().expect("tmp");
        let first = store_id(a.path()).expect("id");
        assert_eq!(first.len(), 32);
        assert_eq!(store_id(a.path()).expect("id"), first);
        assert_ne!(store_id(b.path()).expect("id"), first);
    }
}
