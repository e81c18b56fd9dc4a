//! The Redis backend: one Redis (async connection manager, reconnecting by itself) or a Redis
//! Cluster (cluster client, following slot moves and failovers). Every command is bounded by
//! `redis_timeout_ms` and goes through a circuit breaker, so a slow or dead Redis costs a query
//! at most one timeout and, once the breaker is open, nothing at all.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;

use super::config::CacheConfig;
use super::{CacheError, ResultCache};
use crate::resilience::breaker::{BreakerState, CircuitBreaker};

/// Deletes a lock only if it still holds our token (another instance may own it by now).
const UNLOCK: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

enum Conn {
    Single(ConnectionManager),
    Cluster {
        seeds: Vec<String>,
        timeout: Duration,
        conn: tokio::sync::Mutex<Option<ClusterConnection>>,
        /// Connections made so far: each one starts from the next seed, so a dead first seed
        /// does not stop the client from reading the topology from a live one.
        attempts: std::sync::atomic::AtomicUsize,
    },
}

/// The Redis-backed cache.
pub struct RedisCache {
    conn: Conn,
    timeout: Duration,
    breaker: CircuitBreaker,
    last_error: Mutex<Option<String>>,
    target: String,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache").field("target", &self.target).finish()
    }
}

impl RedisCache {
    /// A client for the Redis (or Cluster) `config` names. Connects lazily: a Redis that is
    /// down at startup only means the cache is skipped until it is back.
    pub fn new(config: &CacheConfig) -> Result<Self, CacheError> {
        let timeout = Duration::from_millis(config.redis_timeout_ms.max(1));
        let (conn, target) = if config.redis_cluster {
            let nodes = config.cluster_nodes();
            cluster_client(&nodes, timeout)?;
            (
                Conn::Cluster {
                    seeds: nodes.clone(),
                    timeout,
                    conn: tokio::sync::Mutex::new(None),
                    attempts: std::sync::atomic::AtomicUsize::new(0),
                },
                format!("cluster {}", nodes.join(",")),
            )
        } else {
            let url = config.redis_url.clone().unwrap_or_default();
            let client = redis::Client::open(url.as_str())?;
            let manager = ConnectionManager::new_lazy_with_config(
                client,
                ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(100)),
            )?;
            (Conn::Single(manager), crate::redact::url(&url))
        };
        Ok(Self {
            conn,
            timeout,
            breaker: CircuitBreaker::new(
                config.breaker_failures,
                Duration::from_secs(config.breaker_open_secs),
                1,
            )
            .named("redis"),
            last_error: Mutex::new(None),
            target,
        })
    }

    /// Where it connects (password removed).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs `cmd` with the timeout and the breaker. A cluster connection is (re)established
    /// outside the command timeout, bounded by its own (at least 1 s: it reads the topology
    /// and connects to every node); the breaker lets at most one caller wait for it per open
    /// period.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, CacheError> {
        self.breaker.allow().map_err(CacheError::BreakerOpen)?;
        let outcome = match &self.conn {
            Conn::Single(m) => {
                let mut m = m.clone();
                tokio::time::timeout(self.timeout, query(&mut m, cmd)).await
            }
            Conn::Cluster {
                seeds,
                timeout,
                conn,
                attempts,
            } => {
                let connect_timeout = self.timeout.max(Duration::from_secs(1));
                let connected = {
                    let mut slot = conn.lock().await;
                    match slot.as_ref() {
                        Some(c) => Ok(Ok(c.clone())),
                        None => {
                            let mut order = seeds.clone();
                            let n = attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let len = order.len().max(1);
                            order.rotate_left(n % len);
                            let connect = async move { cluster_client(&order, *timeout)?.get_async_connection().await };
                            let fresh = tokio::time::timeout(connect_timeout, connect).await;
                            if let Ok(Ok(c)) = &fresh {
                                *slot = Some(c.clone());
                            }
                            fresh
                        }
                    }
                };
                match connected {
                    Ok(Ok(mut c)) => tokio::time::timeout(self.timeout, query(&mut c, cmd)).await,
                    Ok(Err(e)) => Ok(Err(e)),
                    Err(elapsed) => Err(elapsed),
                }
            }
        };
        let result = match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CacheError::Redis(e)),
            Err(_) => Err(CacheError::Timeout(self.timeout)),
        };
        match &result {
            Ok(_) => self.breaker.success(),
            Err(e) => {
                self.breaker.failure();
                // redis-rs re-reads the topology only on a MOVED answer, which a dead master
                // never gives: after a failure the next call connects afresh and reads the
                // slots from a live node.
                if let Conn::Cluster { conn, .. } = &self.conn {
                    *conn.lock().await = None;
                }

                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
            }
        }
        result
    }
}

fn cluster_client(nodes: &[String], timeout: Duration) -> redis::RedisResult<redis::cluster::ClusterClient> {
    redis::cluster::ClusterClient::builder(nodes.to_vec())
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(3)
        .min_retry_wait(10)
        .max_retry_wait(100)
        .build()
}

async fn query<C: ConnectionLike + Send, T: redis::FromRedisValue>(
    conn: &mut C,
    cmd: &redis::Cmd,
) -> redis::RedisResult<T> {
    cmd.query_async(conn).await
}

#[async_trait]
impl ResultCache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let value: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(key)).await?;
        Ok(value.map(Bytes::from))
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let _: () = self
            .run(redis::cmd("SET").arg(key).arg(value.as_ref()).arg("PX").arg(ms))
            .await?;
        Ok(())
    }

    async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, CacheError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(format!("{key}:lock"))
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<(), CacheError> {
        let _: i64 = self
            .run(
                redis::cmd("EVAL")
                    .arg(UNLOCK)
                    .arg(1)
                    .arg(format!("{key}:lock"))
                    .arg(token),
            )
            .await?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        match self.conn {
            Conn::Single(_) => "redis",
            Conn::Cluster { .. } => "redis_cluster",
        }
    }

    fn health(&self) -> super::BackendHealth {
        let state = self.breaker.state();
        super::BackendHealth {
            degraded: state != BreakerState::Closed,
            breaker: Some(state),
            target: Some(self.target.clone()),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }
}
