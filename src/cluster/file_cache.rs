//! A read-through cache of shared files on local disk. Shared files never change once written
//! (every key is new: a data directory's sequence number or a compaction's uuid), so a cached
//! copy never goes stale: the first read of a file downloads it whole into
//! `<data_dir>/cluster/cache/`, later reads (footers, row groups, every dashboard refresh) are
//! local. Size-bounded, least recently used evicted (moka); emptied at start.
//!
//! Only reads go through it (the scans of shared history); uploads and compaction use the store
//! directly.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use tokio::io::AsyncWriteExt;

/// The cache in front of `inner`.
#[derive(Debug)]
pub struct FileCache {
    inner: Arc<dyn ObjectStore>,
    local: Arc<LocalFileSystem>,
    dir: PathBuf,
    /// Cached objects by key, weighed in KiB.
    entries: moka::future::Cache<Path, u64>,
    /// Objects below this prefix are this instance's own shipped files: read from its data
    /// directory while they are there (no second copy), else through the cache.
    own: Option<(Path, Arc<LocalFileSystem>)>,
}

impl std::fmt::Display for FileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileCache({} in {})", self.inner, self.dir.display())
    }
}

fn io(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "file cache",
        source: Box::new(e),
    }
}

impl FileCache {
    /// Caches reads of `inner` in `dir` (emptied now), keeping at most `max_bytes`.
    pub fn new(inner: Arc<dyn ObjectStore>, dir: PathBuf, max_bytes: u64) -> std::io::Result<Self> {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&dir)?;
        let local = Arc::new(LocalFileSystem::new_with_prefix(&dir).map_err(std::io::Error::other)?);
        let evict_dir = dir.clone();
        let entries = moka::future::Cache::builder()
            .max_capacity((max_bytes / 1024).max(1))
            .weigher(|_: &Path, kib: &u64| u32::try_from(*kib).unwrap_or(u32::MAX))
            .eviction_listener(move |key: Arc<Path>, _, cause| {
                if cause != moka::notification::RemovalCause::Replaced {
                    let _ = std::fs::remove_file(evict_dir.join(key.as_ref().as_ref()));
                }
            })
            .build();
        Ok(Self {
            inner,
            local,
            dir,
            entries,
            own: None,
        })
    }

    /// Objects `<prefix>/<name>` are read from `<dir>/<name>` while that file exists.
    pub fn with_own_files(mut self, prefix: Path, dir: &std::path::Path) -> std::io::Result<Self> {
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(std::io::Error::other)?;
        self.own = Some((prefix, Arc::new(fs)));
        Ok(self)
    }

    /// The own file `location` stands for, read from the data directory, if it is still there.
    async fn own_file(&self, location: &Path, options: &GetOptions) -> Option<Result<GetResult>> {
        let (prefix, fs) = self.own.as_ref()?;
        let mut rest = location.prefix_match(prefix)?;
        let name = rest.next()?;
        if rest.next().is_some() {
            return None;
        }
        match fs.get_opts(&Path::from(name.as_ref()), options.clone()).await {
            Err(object_store::Error::NotFound { .. }) => None,
            other => Some(other),
        }
    }

    /// Downloads `location` into the cache unless it is there (one download per key at a time).
    async fn ensure(&self, location: &Path) -> Result<()> {
        let download = async {
            let target = self.dir.join(location.as_ref());
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(io)?;
            }
            // Asked first, so a missing object leaves no file behind.
            let mut stream = self.inner.get(location).await?.into_stream();
            let temp = target.with_extension(format!("part-{}", uuid::Uuid::new_v4().simple()));
            let mut file = tokio::fs::File::create(&temp).await.map_err(io)?;
            let mut size = 0u64;
            let copied: Result<()> = async {
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    size += chunk.len() as u64;
                    file.write_all(&chunk).await.map_err(io)?;
                }
                file.flush().await.map_err(io)?;
                tokio::fs::rename(&temp, &target).await.map_err(io)
            }
            .await;
            if copied.is_err() {
                let _ = tokio::fs::remove_file(&temp).await;
            }
            copied.map(|()| size.div_ceil(1024))
        };
        self.entries
            .try_get_with(location.clone(), download)
            .await
            .map(|_| ())
            .map_err(|e| object_store::Error::Generic {
                store: "file cache",
                source: Box::new(std::io::Error::other(e.to_string())),
            })
    }
}

#[async_trait]
impl ObjectStore for FileCache {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let conditional = options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some()
            || options.version.is_some();
        if conditional {
            return self.inner.get_opts(location, options).await;
        }
        if let Some(own) = self.own_file(location, &options).await {
            return own;
        }
        self.ensure(location).await?;
        match self.local.get_opts(location, options.clone()).await {
            // Evicted between the two steps: read through.
            Err(object_store::Error::NotFound { .. }) => self.inner.get_opts(location, options).await,
            other => other,
        }
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn reads_once_from_the_store_then_locally_and_evicts_by_size() {
        let inner = Arc::new(InMemory::new());
        let key = Path::from("events/s/events-1.parquet");
        inner.put(&key, PutPayload::from(vec![7u8; 4096])).await.expect("put");
        let dir = tempfile::tempdir().expect("tmp");
        let cache = FileCache::new(inner.clone(), dir.path().join("cache"), 8 * 1024).expect("cache");
        let range = cache.get_range(&key, 10..20).await.expect("range");
        assert_eq!(range.as_ref(), &[7u8; 10]);
        assert!(dir.path().join("cache/events/s/events-1.parquet").exists());
        // Gone from the store, still served from the cache.
        inner.delete(&key).await.expect("delete");
        assert_eq!(
            cache.get(&key).await.expect("get").bytes().await.expect("bytes").len(),
            4096
        );
        // A missing object is an error, not an empty file.
        let missing = cache.get(&Path::from("events/s/none.parquet")).await;
        assert!(missing.is_err());
        // Over the budget, older entries leave (and their files with them).
        for i in 2..6 {
            let k = Path::from(format!("events/s/events-{i}.parquet"));
            inner.put(&k, PutPayload::from(vec![1u8; 4096])).await.expect("put");
            cache.get(&k).await.expect("get");
        }
        cache.entries.run_pending_tasks().await;
        assert!(
            cache.entries.weighted_size() <= 8,
            "{} KiB",
            cache.entries.weighted_size()
        );
        let files = walk(&dir.path().join("cache"));
        assert!(files <= 2, "{files} files left");
    }

    #[tokio::test]
    async fn own_files_are_read_from_the_data_directory_while_there() {
        let inner = Arc::new(InMemory::new());
        let data = tempfile::tempdir().expect("tmp");
        let cache_dir = tempfile::tempdir().expect("tmp");
        std::fs::write(data.path().join("events-1.parquet"), [1u8; 100]).expect("write");
        // The shipped copy differs, so the test can tell which one was read.
        let own = Path::from("p/events/me/events-1.parquet");
        let gone = Path::from("p/events/me/events-2.parquet");
        inner.put(&own, PutPayload::from(vec![2u8; 100])).await.expect("put");
        inner.put(&gone, PutPayload::from(vec![3u8; 50])).await.expect("put");
        let cache = FileCache::new(inner.clone(), cache_dir.path().join("c"), 1 << 20)
            .expect("cache")
            .with_own_files(Path::from("p/events/me"), data.path())
            .expect("own");
        assert_eq!(cache.get_range(&own, 0..3).await.expect("own").as_ref(), &[1u8; 3]);
        assert_eq!(cache.head(&own).await.expect("head").size, 100);
        assert_eq!(walk(&cache_dir.path().join("c")), 0, "an own file is not copied");
        // Compacted or deleted locally: read through the cache.
        assert_eq!(cache.get_range(&gone, 0..2).await.expect("gone").as_ref(), &[3u8; 2]);
        assert_eq!(walk(&cache_dir.path().join("c")), 1);
    }

    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(std::result::Result::ok)
                    .map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 })
                    .sum()
            })
            .unwrap_or(0)
    }
}
