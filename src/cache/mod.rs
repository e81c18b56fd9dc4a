//! Cache seam for query results. The standalone default is an in-process TTL cache
//! ([`memory::MemoryCache`]); a shared cache (Redis) plugs in behind [`ResultCache`].

pub mod memory;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

/// A cached, already-encoded response body.
#[derive(Debug, Clone)]
pub struct CachedResult {
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// The encoded body.
    pub body: Bytes,
}

/// A key-value cache of encoded results with per-entry time-to-live.
#[async_trait]
pub trait ResultCache: Send + Sync + std::fmt::Debug {
    /// The entry under `key` if present and not expired.
    async fn get(&self, key: &str) -> Option<CachedResult>;
    /// Stores `value` under `key` for `ttl`.
    async fn put(&self, key: &str, value: CachedResult, ttl: Duration);
    /// Implementation name (for `/ready`).
    fn kind(&self) -> &'static str;
}
