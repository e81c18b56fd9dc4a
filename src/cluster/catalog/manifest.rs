//! The catalog of shared files without PostgreSQL: one manifest object per data directory and
//! table, `<cluster.remote>/_catalog/<table>/<store_id>.json`, listing that directory's files
//! in shared storage.
//!
//! - **One writer per manifest.** Only the instance holding a data directory writes its
//!   manifest (a data directory is held by one process), so no two writers race and a plain
//!   `PUT` of the whole object (atomic in S3 and on a file system) is the commit. A file is
//!   visible to the others once the manifest naming it is written, after its upload.
//! - **Readers** list `_catalog/<table>/` (one LIST, a few small objects) and read again only
//!   the manifests whose ETag changed; the listing's ETags are the generation.
//! - **Maintenance per data directory.** With no cluster-wide lock, each instance compacts,
//!   expires (retention) and deletes only its own directory's files; each file is still
//!   handled once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::CatalogFile;
use crate::cluster::ClusterError;
use crate::exports::destination::join;

/// Folder of the manifests below `cluster.remote`.
pub const MANIFESTS: &str = "_catalog";
const FORMAT: u32 = 1;

/// One data directory's files of one table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    store_id: String,
    /// The instance that last wrote it (for operators).
    instance_id: String,
    files: Vec<Entry>,
}

/// One file of a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    path: String,
    rows: i64,
    bytes: i64,
    min_event_time_us: Option<i64>,
    max_event_time_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    covers: Vec<String>,
    /// When it was taken out (compacted or expired), in ms since the epoch; its object is
    /// deleted after the grace, then the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    removed_at_ms: Option<i64>,
}

impl Entry {
    fn of(file: &CatalogFile) -> Self {
        Self {
            path: file.path.clone(),
            rows: file.rows,
            bytes: file.bytes,
            min_event_time_us: file.min_event_time_us,
            max_event_time_us: file.max_event_time_us,
            covers: file.covers.clone(),
            removed_at_ms: None,
        }
    }

    fn file(&self, store_id: &str) -> CatalogFile {
        CatalogFile {
            path: self.path.clone(),
            store_id: store_id.to_string(),
            rows: self.rows,
            bytes: self.bytes,
            min_event_time_us: self.min_event_time_us,
            max_event_time_us: self.max_event_time_us,
            covers: self.covers.clone(),
        }
    }
}

impl Manifest {
    fn visible(&self) -> Vec<CatalogFile> {
        self.files
            .iter()
            .filter(|e| e.removed_at_ms.is_none())
            .map(|e| e.file(&self.store_id))
            .collect()
    }
}

/// Another directory's manifest as last read: its ETag and visible files.
type Cached = (Option<String>, Arc<Vec<CatalogFile>>);
/// A listing of manifests: (object key, ETag or modification time and size), sorted.
type Listing = Vec<(String, String)>;

/// The manifests of shared storage; this instance writes its own data directory's.
#[derive(Debug)]
pub struct ManifestCatalog {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    store_id: String,
    /// This instance's manifests by table (read once, then kept; written through).
    own: tokio::sync::Mutex<HashMap<String, Manifest>>,
    /// Bumped at each change of this instance's manifests.
    revision: AtomicI64,
    /// Others' manifests by object key.
    others: Mutex<HashMap<String, Cached>>,
    /// The listing [`Self::generation`] last took: [`Self::all`] reads each table's manifests
    /// from it, so a refresh round costs one LIST however many tables are shared.
    last_listing: Mutex<Option<Arc<Listing>>>,
    now_ms: fn() -> i64,
}

fn remote(what: String) -> impl FnOnce(object_store::Error) -> ClusterError {
    move |source| ClusterError::Remote { what, source }
}

fn now_ms() -> i64 {
    crate::event::time::now_micros() / 1000
}

impl ManifestCatalog {
    /// The manifests below `prefix` in `store`; this instance holds `store_id`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, store_id: String) -> Self {
        Self {
            store,
            prefix,
            store_id,
            own: tokio::sync::Mutex::default(),
            revision: AtomicI64::new(0),
            others: Mutex::default(),
            last_listing: Mutex::default(),
            now_ms,
        }
    }

    fn key(&self, table: &str, store_id: &str) -> Path {
        join(&self.prefix, &format!("{MANIFESTS}/{table}/{store_id}.json"))
    }

    async fn read(&self, key: &Path) -> Result<Option<(Option<String>, Manifest)>, ClusterError> {
        let got = match self.store.get(key).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(remote(format!("reading {key}"))(e)),
        };
        let etag = got.meta.e_tag.clone();
        let bytes = got.bytes().await.map_err(remote(format!("reading {key}")))?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|source| ClusterError::Manifest {
            path: key.to_string(),
            source,
        })?;
        Ok(Some((etag, manifest)))
    }

    /// Runs `change` on this instance's manifest of `table` and writes it when `change` says
    /// it changed; the kept copy changes only once the write succeeded.
    async fn update<T>(&self, table: &str, change: impl FnOnce(&mut Manifest) -> (bool, T)) -> Result<T, ClusterError> {
        let mut own = self.own.lock().await;
        if !own.contains_key(table) {
            let key = self.key(table, &self.store_id);
            let manifest = self.read(&key).await?.map(|(_, m)| m).unwrap_or_default();
            own.insert(table.to_string(), manifest);
        }
        let mut next = own.get(table).cloned().unwrap_or_default();
        let (changed, out) = change(&mut next);
        if changed {
            next.format = FORMAT;
            next.store_id.clone_from(&self.store_id);
            let key = self.key(table, &self.store_id);
            let body = serde_json::to_vec(&next).map_err(|source| ClusterError::Manifest {
                path: key.to_string(),
                source,
            })?;
            self.store
                .put(&key, PutPayload::from(body))
                .await
                .map_err(remote(format!("writing {key}")))?;
            own.insert(table.to_string(), next);
            self.revision.fetch_add(1, Ordering::AcqRel);
        }
        Ok(out)
    }

    /// This instance's visible files of `table`.
    async fn own_visible(&self, table: &str) -> Result<Vec<CatalogFile>, ClusterError> {
        self.update(table, |m| (false, m.visible())).await
    }

    /// Segments of `store_id` in the catalog (directly or inside a compacted file).
    pub async fn shipped_segments(
        &self,
        table: &str,
        store_id: &str,
    ) -> Result<std::collections::HashSet<String>, ClusterError> {
        let files = if store_id == self.store_id {
            self.own_visible(table).await?
        } else {
            let key = self.key(table, store_id);
            self.read(&key).await?.map(|(_, m)| m.visible()).unwrap_or_default()
        };
        Ok(files.iter().flat_map(CatalogFile::segments).collect())
    }

    /// Records an uploaded file of this instance (again is a no-op).
    pub async fn record(&self, table: &str, instance_id: &str, file: &CatalogFile) -> Result<(), ClusterError> {
        if file.store_id != self.store_id {
            return Err(ClusterError::Config(format!(
                "a manifest catalog records only this instance's files, not {}",
                file.store_id
            )));
        }
        self.update(table, |m| {
            if m.files.iter().any(|e| e.path == file.path) {
                return (false, ());
            }
            m.instance_id = instance_id.to_string();
            m.files.push(Entry::of(file));
            (true, ())
        })
        .await
    }

    /// The manifests' objects below `_catalog/` (or one table's), as (key, ETag or
    /// modification time and size).
    async fn listing(&self, table: Option<&str>) -> Result<Vec<(String, String)>, ClusterError> {
        let dir = match table {
            Some(t) => join(&self.prefix, &format!("{MANIFESTS}/{t}")),
            None => join(&self.prefix, MANIFESTS),
        };
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(remote(format!("listing {dir}")))?;
        let mut out: Vec<(String, String)> = objects
            .into_iter()
            .filter(|o| o.location.as_ref().ends_with(".json"))
            .map(|o| {
                let version = o
                    .e_tag
                    .clone()
                    .unwrap_or_else(|| format!("{}/{}", o.last_modified.timestamp_micros(), o.size));
                (o.location.to_string(), version)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// A number that changes whenever any manifest does (their keys and ETags, and this
    /// instance's own writes, hashed).
    pub async fn generation(&self) -> Result<i64, ClusterError> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let listing = Arc::new(self.listing(None).await?);
        listing.hash(&mut h);
        self.revision.load(Ordering::Acquire).hash(&mut h);
        *self
            .last_listing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(listing);
        Ok(h.finish() as i64)
    }

    /// `table`'s manifests in the listing the last [`Self::generation`] took (listed now if
    /// there is none yet).
    async fn table_listing(&self, table: &str) -> Result<Vec<(String, String)>, ClusterError> {
        let last = self
            .last_listing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(last) = last else {
            return self.listing(Some(table)).await;
        };
        let dir = format!("{}/", join(&self.prefix, &format!("{MANIFESTS}/{table}")));
        Ok(last.iter().filter(|(k, _)| k.starts_with(&dir)).cloned().collect())
    }

    /// Every visible file of `table`, of every data directory, oldest first.
    pub async fn all(&self, table: &str) -> Result<Vec<CatalogFile>, ClusterError> {
        let mut files = self.own_visible(table).await?;
        let own_key = self.key(table, &self.store_id).to_string();
        let dir = format!("{}/", join(&self.prefix, &format!("{MANIFESTS}/{table}")));
        let mut seen = HashMap::new();
        for (key, version) in self.table_listing(table).await? {
            if key == own_key {
                continue;
            }
            let cached = self
                .others
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&key)
                .filter(|(etag, _)| etag.as_deref() == Some(version.as_str()))
                .map(|(_, f)| Arc::clone(f));
            let theirs = match cached {
                Some(f) => f,
                None => {
                    let Some((etag, manifest)) = self.read(&Path::from(key.as_str())).await? else {
                        continue; // deleted since the listing
                    };
                    let f = Arc::new(manifest.visible());
                    self.others
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(key.clone(), (etag.or(Some(version)), Arc::clone(&f)));
                    f
                }
            };
            files.extend(theirs.iter().cloned());
            seen.insert(key, ());
        }
        self.others
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|k, _| !k.starts_with(&dir) || seen.contains_key(k));
        files.sort_by(|a, b| {
            (a.min_event_time_us.is_some(), a.min_event_time_us, &a.path).cmp(&(
                b.min_event_time_us.is_some(),
                b.min_event_time_us,
                &b.path,
            ))
        });
        Ok(files)
    }

    /// This instance's visible files of `table` smaller than `small_bytes` (compaction input);
    /// none of another directory (each instance compacts its own).
    pub async fn small_files(
        &self,
        table: &str,
        store_id: &str,
        small_bytes: u64,
    ) -> Result<Vec<CatalogFile>, ClusterError> {
        if store_id != self.store_id {
            return Ok(Vec::new());
        }
        let mut files = self.own_visible(table).await?;
        files.retain(|f| f.bytes >= 0 && (f.bytes as u64) < small_bytes);
        files.sort_by_key(|f| (f.min_event_time_us.is_some(), f.min_event_time_us));
        Ok(files)
    }

    /// This instance's data directory, when it has visible files of `table`.
    pub async fn stores(&self, table: &str) -> Result<Vec<String>, ClusterError> {
        let any = !self.own_visible(table).await?.is_empty();
        Ok(if any { vec![self.store_id.clone()] } else { Vec::new() })
    }

    /// Replaces `inputs` (this instance's) by `merged` in one manifest write; `Ok(false)` when
    /// one of them is no longer visible.
    pub async fn swap(
        &self,
        table: &str,
        instance_id: &str,
        merged: &CatalogFile,
        inputs: &[String],
    ) -> Result<bool, ClusterError> {
        let now = (self.now_ms)();
        self.update(table, |m| {
            let visible = |e: &Entry| e.removed_at_ms.is_none() && inputs.contains(&e.path);
            if m.files.iter().filter(|e| visible(e)).count() != inputs.len() {
                return (false, false);
            }
            for e in m.files.iter_mut().filter(|e| inputs.contains(&e.path)) {
                e.removed_at_ms = Some(now);
            }
            m.instance_id = instance_id.to_string();
            m.files.push(Entry::of(merged));
            (true, true)
        })
        .await
    }

    /// Takes out this instance's files of `table` whose events are all older than `cutoff_us`.
    pub async fn expire_before(&self, table: &str, cutoff_us: i64) -> Result<u64, ClusterError> {
        let now = (self.now_ms)();
        self.update(table, |m| {
            let mut n = 0;
            for e in m.files.iter_mut().filter(|e| e.removed_at_ms.is_none()) {
                if e.max_event_time_us.is_some_and(|t| t < cutoff_us) {
                    e.removed_at_ms = Some(now);
                    n += 1;
                }
            }
            (n > 0, n)
        })
        .await
    }

    /// This instance's files taken out more than `grace` ago (their objects can go).
    pub async fn expired(&self, grace: std::time::Duration) -> Result<Vec<String>, ClusterError> {
        let before = (self.now_ms)() - i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let own = self.own.lock().await;
        Ok(own
            .values()
            .flat_map(|m| m.files.iter())
            .filter(|e| e.removed_at_ms.is_some_and(|t| t <= before))
            .map(|e| e.path.clone())
            .collect())
    }

    /// Forgets a taken-out file whose object is deleted.
    pub async fn forget(&self, path: &str) -> Result<(), ClusterError> {
        let tables: Vec<String> = self.own.lock().await.keys().cloned().collect();
        for table in tables {
            self.update(&table, |m| {
                let before = m.files.len();
                m.files.retain(|e| e.path != path || e.removed_at_ms.is_none());
                (m.files.len() != before, ())
            })
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
