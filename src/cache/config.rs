//! The `[cache]` section: the result cache's own configuration (this module never reads the
//! top-level configuration).

use serde::{Deserialize, Serialize};

/// The `[cache]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Cache query results at all (env `CACHE_ENABLED`). Answers are keyed on the data version
    /// of every table they read, so a cached answer is never older than its tables.
    pub enabled: bool,
    /// Seconds a result over rollup (continuous-query) tables lives (env `CACHE_METRICS_TTL`).
    pub metrics_ttl_secs: u64,
    /// Seconds a result reading `events` or `late_events` lives (env `CACHE_EVENTS_TTL`).
    pub events_ttl_secs: u64,
    /// Seconds a result calling `forecast` lives (env `CACHE_PREDICTIONS_TTL`).
    pub predictions_ttl_secs: u64,
    /// Longest life of a result whose statement reads the clock (`now()`, `current_date`, ...):
    /// its answer changes with time even when no data does.
    pub relative_time_ttl_secs: u64,
    /// Largest cached result, compressed, in bytes (env `CACHE_MAX_ENTRY_BYTES`); larger
    /// results are answered but not stored.
    pub max_entry_bytes: usize,
    /// In-process cache size (bytes of compressed results) when no Redis is configured.
    pub memory_max_bytes: u64,
    /// Redis URL, e.g. `redis://127.0.0.1:6379/0` (env `REDIS_URL`; or `REDIS_HOST` and
    /// `REDIS_PORT`). Unset: the in-process cache.
    pub redis_url: Option<String>,
    /// Use the Redis Cluster client (env `REDIS_CLUSTER=true`) with `redis_nodes`.
    pub redis_cluster: bool,
    /// Cluster seed nodes, `host:port` or URLs (env `REDIS_NODES`, comma separated).
    pub redis_nodes: Vec<String>,
    /// Prefix of every key the Hub writes to Redis (env `CACHE_KEY_PREFIX`).
    pub key_prefix: String,
    /// Longest wait for one Redis command in ms; slower answers count as errors and the query
    /// is answered without the cache (env `REDIS_TIMEOUT_MS`).
    pub redis_timeout_ms: u64,
    /// Consecutive Redis failures that open the circuit breaker (the cache is skipped, Redis is
    /// probed again after `breaker_open_secs`).
    pub breaker_failures: u32,
    /// Seconds the breaker stays open before a probe.
    pub breaker_open_secs: u64,
    /// How long one instance holds the computation lock of a key (Redis `SET NX PX`), ms.
    pub lock_ttl_ms: u64,
    /// Longest wait of another instance for the lock holder's result before computing the
    /// answer itself, ms.
    pub lock_wait_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            metrics_ttl_secs: 300,
            events_ttl_secs: 60,
            predictions_ttl_secs: 600,
            relative_time_ttl_secs: 5,
            max_entry_bytes: 4 << 20,
            memory_max_bytes: 64 << 20,
            redis_url: None,
            redis_cluster: false,
            redis_nodes: Vec::new(),
            key_prefix: "llmhub:".into(),
            redis_timeout_ms: 250,
            breaker_failures: 3,
            breaker_open_secs: 5,
            lock_ttl_ms: 10_000,
            lock_wait_ms: 2_000,
        }
    }
}

/// An environment variable with a value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value}: {message}")]
pub struct EnvError {
    /// Variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// Why it does not parse.
    pub message: String,
}

fn parse<T: std::str::FromStr>(name: &'static str, value: String) -> Result<T, EnvError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| EnvError {
        name,
        value,
        message: e.to_string(),
    })
}

impl CacheConfig {
    /// Applies the environment variables that build the Redis URL (`REDIS_URL`, or `REDIS_HOST`
    /// and `REDIS_PORT`); the single-key ones are in `config::env::ENV_KEYS`.
    pub fn apply_env(&mut self, get: &impl Fn(&str) -> Option<String>) -> Result<(), EnvError> {
        if let Some(url) = get("REDIS_URL").filter(|u| !u.is_empty()) {
            self.redis_url = Some(url);
        } else if let Some(host) = get("REDIS_HOST").filter(|h| !h.is_empty()) {
            let port = get("REDIS_PORT").unwrap_or_else(|| "6379".into());
            self.redis_url = Some(format!("redis://{host}:{port}"));
        } else if let Some(port) = get("REDIS_PORT") {
            self.redis_url = Some(format!("redis://127.0.0.1:{}", parse::<u16>("REDIS_PORT", port)?));
        }
        Ok(())
    }

    /// Rules serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.redis_cluster && self.redis_nodes.is_empty() && self.redis_url.is_none() {
            return Err("cache.redis_cluster needs cache.redis_nodes (env REDIS_NODES) or a redis_url".into());
        }
        if self.key_prefix.is_empty() {
            return Err("cache.key_prefix must not be empty (the Hub's keys must be told apart from others')".into());
        }
        Ok(())
    }

    /// Whether a Redis (single node or Cluster) backs the cache.
    pub fn uses_redis(&self) -> bool {
        self.redis_url.is_some() || self.redis_cluster
    }

    /// The cluster's seed nodes as URLs (`host:port` becomes `redis://host:port`).
    pub fn cluster_nodes(&self) -> Vec<String> {
        let nodes = if self.redis_nodes.is_empty() {
            self.redis_url.iter().cloned().collect()
        } else {
            self.redis_nodes.clone()
        };
        nodes
            .into_iter()
            .map(|n| if n.contains("://") { n } else { format!("redis://{n}") })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_names_set_redis_and_ttls() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| (*v).to_string())
        };
        // Through the whole configuration: the single-key names live in config::env.
        let cache_of = |pairs: &'static [(&'static str, &'static str)]| {
            let mut c = crate::config::Config::default();
            c.apply_env(env(pairs)).map(|()| c.cache)
        };
        let c = cache_of(&[("REDIS_HOST", "cache.internal"), ("CACHE_METRICS_TTL", "30")]).expect("valid");
        assert_eq!(c.redis_url.as_deref(), Some("redis://cache.internal:6379"));
        assert_eq!(c.metrics_ttl_secs, 30);
        let c = cache_of(&[("REDIS_CLUSTER", "true"), ("REDIS_NODES", "a:7000, b:7001,")]).expect("valid");
        assert_eq!(c.cluster_nodes(), vec!["redis://a:7000", "redis://b:7001"]);
        assert!(c.uses_redis());
        c.validate().expect("valid");
        let err = cache_of(&[("CACHE_EVENTS_TTL", "soon")]).expect_err("not a number");
        assert!(
            matches!(
                err,
                crate::config::ConfigError::Env {
                    name: "CACHE_EVENTS_TTL",
                    ..
                }
            ),
            "{err}"
        );
        let err = CacheConfig::default()
            .apply_env(&env(&[("REDIS_PORT", "sixty")]))
            .expect_err("not a port");
        assert_eq!(err.name, "REDIS_PORT");
        let cluster_without_nodes = CacheConfig {
            redis_cluster: true,
            ..CacheConfig::default()
        };
        assert!(
            cluster_without_nodes
                .validate()
                .expect_err("no nodes")
                .contains("REDIS_NODES")
        );
    }
}
