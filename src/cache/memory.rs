//! In-process TTL cache with a bounded number of entries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{CachedResult, ResultCache};
use crate::clock::Clock;

#[derive(Debug)]
struct Entry {
    value: CachedResult,
    expires: Instant,
    inserted: Instant,
}

/// Bounded in-process cache: at most `max_entries`; expired entries are dropped first, then
/// the oldest.
#[derive(Debug)]
pub struct MemoryCache {
    entries: Mutex<HashMap<String, Entry>>,
    max_entries: usize,
    clock: Arc<dyn Clock>,
}

impl MemoryCache {
    /// A cache holding at most `max_entries` results.
    pub fn new(max_entries: usize) -> Self {
        Self::with_clock(max_entries, crate::clock::system())
    }

    /// [`Self::new`] with expiry measured on `clock`.
    pub fn with_clock(max_entries: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
            clock,
        }
    }
}

#[async_trait]
impl ResultCache for MemoryCache {
    async fn get(&self, key: &str) -> Option<CachedResult> {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match entries.get(key) {
            Some(e) if e.expires > self.clock.now() => Some(e.value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    async fn put(&self, key: &str, value: CachedResult, ttl: Duration) {
        let now = self.clock.now();
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= self.max_entries && !entries.contains_key(key) {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.max_entries
                && let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.inserted).map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            key.to_string(),
            Entry {
                value,
                expires: now + ttl,
                inserted: now,
            },
        );
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn v(s: &'static str) -> CachedResult {
        CachedResult {
            content_type: "text/plain",
            body: Bytes::from_static(s.as_bytes()),
        }
    }

    #[tokio::test]
    async fn expires_and_evicts() {
        let clock = Arc::new(crate::clock::ManualClock::default());
        let cache = MemoryCache::with_clock(2, clock.clone());
        cache.put("a", v("1"), Duration::from_secs(60)).await;
        assert_eq!(cache.get("a").await.map(|r| r.body), Some(Bytes::from_static(b"1")));
        cache.put("short", v("2"), Duration::from_millis(1)).await;
        assert!(cache.get("short").await.is_some(), "fresh until its TTL passes");
        clock.advance(Duration::from_millis(1));
        assert!(cache.get("short").await.is_none(), "expired entry is gone");
        clock.advance(Duration::from_millis(1));
        cache.put("b", v("3"), Duration::from_secs(60)).await;
        clock.advance(Duration::from_millis(1));
        cache.put("c", v("4"), Duration::from_secs(60)).await;
        assert!(cache.get("a").await.is_none(), "oldest evicted at capacity");
        assert!(cache.get("b").await.is_some());
        assert!(cache.get("c").await.is_some());
    }
}
