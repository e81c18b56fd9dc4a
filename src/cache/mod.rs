//! The query-result cache used by `POST /api/v1/sql`, the Postgres wire endpoint and the REST
//! read routes.
//!
//! - Keys ([`key`]) hash the normalized statement, the caller's scope, the endpoint's variant
//!   and the data version of every table read: new data makes the next identical query a miss,
//!   whatever the TTL.
//! - Backends ([`ResultCache`]): Redis or Redis Cluster ([`redis`]) shared by instances, or an
//!   in-process moka cache ([`memory`]). Entries are Arrow IPC, zstd-compressed ([`entry`]).
//! - Stampedes: identical concurrent misses run once per instance ([`flight`]) and, with
//!   Redis, once across instances behind a `SET NX PX` lock with a bounded wait.
//! - Redis is never on the critical path: errors and timeouts answer the query without the
//!   cache (`X-Cache: bypass`) and a circuit breaker stops trying while Redis is down.

pub mod config;
pub mod entry;
pub mod flight;
pub mod key;
pub mod memory;
pub mod redis;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use serde::Serialize;

pub use config::CacheConfig;
pub use entry::Answer;
pub use key::{CacheKey, KeyBuilder, Scope, TtlClass, Uncacheable};

use crate::error::{Classify, ErrorClass};
use crate::query::QueryError;
use crate::resilience::breaker::BreakerState;
use crate::storage::versions::TableVersions;

/// Errors of a cache backend. Never shown to a client: the query is answered without the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Recent calls failed; the breaker lets the next probe through after this long.
    #[error("redis circuit breaker open after repeated failures; next probe in {0:?}")]
    BreakerOpen(Duration),
    /// An entry could not be encoded or decoded.
    #[error("cache entry: {0}")]
    Entry(#[source] datafusion::arrow::error::ArrowError),
}

impl Classify for CacheError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Entry(_) => ErrorClass::Internal,
            _ => ErrorClass::External,
        }
    }

    fn retryable(&self) -> bool {
        false
    }
}

/// How a backend is doing (for `/ready`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackendHealth {
    /// Calls are failing or skipped: answers are computed without the cache.
    pub degraded: bool,
    /// Circuit breaker state, for backends that have one.
    pub breaker: Option<BreakerState>,
    /// Where it connects.
    pub target: Option<String>,
    /// The most recent error.
    pub last_error: Option<String>,
}

/// A store of encoded entries with per-entry TTL, and the cross-instance computation lock.
#[async_trait]
pub trait ResultCache: Send + Sync + std::fmt::Debug {
    /// The entry under `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError>;
    /// Stores `value` under `key` for `ttl`.
    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError>;
    /// Takes the lock of computing `key` for `ttl` unless another holder has it.
    async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, CacheError>;
    /// Releases the lock if `token` still holds it.
    async fn unlock(&self, key: &str, token: &str) -> Result<(), CacheError>;
    /// Implementation name.
    fn kind(&self) -> &'static str;
    /// Health for `/ready`.
    fn health(&self) -> BackendHealth {
        BackendHealth::default()
    }
}

/// How a request was answered, for `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// From the cache.
    Hit,
    /// Computed (and stored if small enough).
    Miss,
    /// Computed without the cache: not cacheable, or the cache failed.
    Bypass,
}

impl CacheStatus {
    /// `X-Cache` header value.
    pub fn header(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// The cache's metrics (the seed's names).
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    hits: IntCounterVec,
    misses: IntCounterVec,
    errors: IntCounterVec,
    coalesced: IntCounter,
    entry_bytes: Histogram,
}

impl CacheMetrics {
    /// Registers the cache metrics in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let hits = IntCounterVec::new(
            Opts::new("cache_hits_total", "Query results served from the cache, by cache_type"),
            &["cache_type"],
        )?;
        let misses = IntCounterVec::new(
            Opts::new("cache_misses_total", "Cacheable queries computed, by cache_type"),
            &["cache_type"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "cache_errors_total",
                "Cache calls that failed or were skipped (query answered without the cache), by operation",
            ),
            &["operation"],
        )?;
        let coalesced = IntCounter::new(
            "cache_coalesced_total",
            "Queries that waited for an identical query in flight instead of running",
        )?;
        let entry_bytes = Histogram::with_opts(
            HistogramOpts::new("cache_entry_bytes", "Size of stored cache entries (compressed)")
                .buckets(prometheus::exponential_buckets(256.0, 4.0, 10)?),
        )?;
        registry.register(Box::new(hits.clone()))?;
        registry.register(Box::new(misses.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(coalesced.clone()))?;
        registry.register(Box::new(entry_bytes.clone()))?;
        Ok(Self {
            hits,
            misses,
            errors,
            coalesced,
            entry_bytes,
        })
    }

    fn error(&self, operation: &str, e: &CacheError) {
        self.errors.with_label_values(&[operation]).inc();
        tracing::debug!(operation, error = %crate::error::chain(e), "cache skipped");
    }
}

type Outcome = Result<(Arc<Answer>, CacheStatus), QueryError>;

/// `run`'s answer through `cache` when one is configured (`key = None`: not cacheable), or
/// straight when the cache is off (status `None`: no `X-Cache` header).
pub async fn answer<F>(
    cache: Option<&QueryCache>,
    key: Option<&CacheKey>,
    run: F,
) -> Result<(Arc<Answer>, Option<CacheStatus>), QueryError>
where
    F: Future<Output = Result<Answer, QueryError>>,
{
    match cache {
        Some(cache) => cache.get_or_run(key, run).await.map(|(a, s)| (a, Some(s))),
        None => run.await.map(|a| (Arc::new(a), None)),
    }
}

/// Keys, backend, single-flight and metrics together.
#[derive(Debug)]
pub struct QueryCache {
    backend: Arc<dyn ResultCache>,
    keys: KeyBuilder,
    max_entry_bytes: usize,
    lock_ttl: Duration,
    lock_wait: Duration,
    flights: flight::Flights<Outcome>,
    metrics: CacheMetrics,
}

impl QueryCache {
    /// The cache `config` describes (Redis when a URL or cluster is configured, otherwise
    /// in-process), or `None` when disabled.
    pub fn build(
        config: &CacheConfig,
        versions: TableVersions,
        registry: &Registry,
    ) -> Result<Option<Arc<Self>>, CacheError> {
        if !config.enabled {
            return Ok(None);
        }
        let backend: Arc<dyn ResultCache> = if config.uses_redis() {
            let redis = redis::RedisCache::new(config)?;
            tracing::info!(target = redis.target(), "query cache in Redis");
            Arc::new(redis)
        } else {
            Arc::new(memory::MemoryCache::new(config.memory_max_bytes))
        };
        let metrics = CacheMetrics::new(registry)
            .map_err(|e| CacheError::Entry(datafusion::arrow::error::ArrowError::ExternalError(Box::new(e))))?;
        Ok(Some(Arc::new(Self::new(backend, config, versions, metrics))))
    }

    /// A cache over `backend`.
    pub fn new(
        backend: Arc<dyn ResultCache>,
        config: &CacheConfig,
        versions: TableVersions,
        metrics: CacheMetrics,
    ) -> Self {
        Self {
            backend,
            keys: KeyBuilder::new(config, versions),
            max_entry_bytes: config.max_entry_bytes,
            lock_ttl: Duration::from_millis(config.lock_ttl_ms.max(1)),
            lock_wait: Duration::from_millis(config.lock_wait_ms),
            flights: flight::Flights::default(),
            metrics,
        }
    }

    /// The key builder.
    pub fn keys(&self) -> &KeyBuilder {
        &self.keys
    }

    /// Backend name.
    pub fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// Backend health.
    pub fn health(&self) -> BackendHealth {
        self.backend.health()
    }

    /// The answer under `key`, or `run`'s (stored for the next caller when it fits).
    /// `key = None` (not cacheable) runs it directly.
    pub async fn get_or_run<F>(&self, key: Option<&CacheKey>, run: F) -> Outcome
    where
        F: Future<Output = Result<Answer, QueryError>>,
    {
        let Some(key) = key else {
            return run.await.map(|a| (Arc::new(a), CacheStatus::Bypass));
        };
        match self.lookup(key).await {
            Ok(Some(answer)) => {
                self.metrics.hits.with_label_values(&[key.class.label()]).inc();
                return Ok((answer, CacheStatus::Hit));
            }
            Ok(None) => {}
            Err(()) => return run.await.map(|a| (Arc::new(a), CacheStatus::Bypass)),
        }
        let (outcome, role) = self.flights.run(&key.key, self.compute(key, run)).await;
        if role == flight::Role::Follower {
            self.metrics.coalesced.inc();
        }
        outcome
    }

    async fn lookup(&self, key: &CacheKey) -> Result<Option<Arc<Answer>>, ()> {
        let got = self.backend.get(&key.key).await;
        tracing::debug!(key = %key.key, found = ?got.as_ref().map(|v| v.as_ref().map(Bytes::len)), "cache get");
        match got {
            Ok(Some(bytes)) => match entry::decode(&bytes) {
                Ok(answer) => Ok(Some(Arc::new(answer))),
                Err(e) => {
                    self.metrics.error("decode", &CacheError::Entry(e));
                    Ok(None)
                }
            },
            Ok(None) => Ok(None),
            Err(e) => {
                self.metrics.error("get", &e);
                Err(())
            }
        }
    }

    /// The leader's part of a miss: with a shared backend, take the computation lock or wait
    /// (bounded) for its holder's entry; then run, store, release.
    async fn compute<F>(&self, key: &CacheKey, run: F) -> Outcome
    where
        F: Future<Output = Result<Answer, QueryError>>,
    {
        let token = uuid::Uuid::new_v4().to_string();
        let locked = match self.backend.try_lock(&key.key, &token, self.lock_ttl).await {
            Ok(true) => true,
            Ok(false) => {
                if let Some(answer) = self.await_other_instance(key).await {
                    self.metrics.hits.with_label_values(&[key.class.label()]).inc();
                    return Ok((answer, CacheStatus::Hit));
                }
                false
            }
            Err(e) => {
                self.metrics.error("lock", &e);
                return run.await.map(|a| (Arc::new(a), CacheStatus::Bypass));
            }
        };
        self.metrics.misses.with_label_values(&[key.class.label()]).inc();
        let answer = run.await;
        if let Ok(answer) = &answer {
            self.store(key, answer).await;
        }
        if locked && let Err(e) = self.backend.unlock(&key.key, &token).await {
            self.metrics.error("unlock", &e);
        }
        answer.map(|a| (Arc::new(a), CacheStatus::Miss))
    }

    /// Polls for the entry another instance is computing, up to `lock_wait`.
    async fn await_other_instance(&self, key: &CacheKey) -> Option<Arc<Answer>> {
        let deadline = Instant::now() + self.lock_wait;
        let mut pause = Duration::from_millis(5);
        while Instant::now() < deadline {
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            match self.lookup(key).await {
                Ok(Some(answer)) => return Some(answer),
                Ok(None) => pause = (pause * 2).min(Duration::from_millis(100)),
                Err(()) => return None,
            }
        }
        None
    }

    async fn store(&self, key: &CacheKey, answer: &Answer) {
        let bytes = match entry::encode(answer) {
            Ok(b) => b,
            Err(e) => return self.metrics.error("encode", &CacheError::Entry(e)),
        };
        if bytes.len() > self.max_entry_bytes {
            self.metrics.errors.with_label_values(&["too_large"]).inc();
            return;
        }
        self.metrics.entry_bytes.observe(bytes.len() as f64);
        tracing::debug!(key = %key.key, bytes = bytes.len(), ttl = ?key.ttl, "cache put");
        if let Err(e) = self.backend.put(&key.key, Bytes::from(bytes), key.ttl).await {
            self.metrics.error("put", &e);
        }
    }
}
