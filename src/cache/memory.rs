//! The in-process backend (standalone default): moka, bounded by the bytes of its entries, each
//! entry expiring after its own TTL.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::Expiry;
use moka::future::Cache;

use super::{CacheError, ResultCache};

#[derive(Debug, Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Entry, _created_at: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// In-process cache of at most `max_bytes` of entries (least recently used evicted first).
#[derive(Debug, Clone)]
pub struct MemoryCache {
    entries: Cache<String, Entry>,
}

impl MemoryCache {
    /// A cache holding at most `max_bytes` of entries.
    pub fn new(max_bytes: u64) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &String, e: &Entry| u32::try_from(key.len() + e.value.len()).unwrap_or(u32::MAX))
                .expire_after(PerEntryTtl)
                .build(),
        }
    }

    /// Bytes held (after pending evictions ran).
    pub async fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.weighted_size()
    }
}

#[async_trait]
impl ResultCache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        Ok(self.entries.get(key).await.map(|e| e.value))
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        self.entries.insert(key.to_string(), Entry { value, ttl }).await;
        Ok(())
    }

    async fn try_lock(&self, _key: &str, _token: &str, _ttl: Duration) -> Result<bool, CacheError> {
        // One process: single-flight already makes this caller the only one computing.
        Ok(true)
    }

    async fn unlock(&self, _key: &str, _token: &str) -> Result<(), CacheError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_by_bytes_and_expires_per_entry() {
        let cache = MemoryCache::new(10_000);
        for i in 0..100 {
            cache
                .put(&format!("k{i}"), Bytes::from(vec![0u8; 1000]), Duration::from_secs(60))
                .await
                .expect("put");
        }
        let held = cache.weighted_size().await;
        assert!(held <= 10_000, "held {held} bytes");
        let mut present = 0;
        for i in 0..100 {
            present += usize::from(cache.get(&format!("k{i}")).await.expect("get").is_some());
        }
        assert!(
            (1..=10).contains(&present),
            "{present} of 100 kB-sized entries kept in 10 kB"
        );

        cache
            .put("short", Bytes::from_static(b"x"), Duration::from_millis(30))
            .await
            .expect("put");
        cache
            .put("long", Bytes::from_static(b"y"), Duration::from_secs(60))
            .await
            .expect("put");
        // moka reads its own clock: wait (bounded) for the expiry instead of advancing one.
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.get("short").await.expect("get").is_some() {
            assert!(Instant::now() < deadline, "the 30 ms entry never expired");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(cache.get("long").await.expect("get"), Some(Bytes::from_static(b"y")));
    }
}
