//! Environment variables → configuration keys. Adding a variable is one line in [`ENV_KEYS`]:
//! its value is read as the key's type (integer, float, boolean, string, or a comma-separated
//! list for a list), and a value the key does not take is an error naming the variable. The
//! few variables that build one value from several (`DATABASE_URL` / `DB_*`, `REDIS_URL` /
//! `REDIS_HOST` / `REDIS_PORT`, `PGWIRE_USER` + `PGWIRE_PASSWORD`) are applied by their
//! sections after these.

use toml::Value;

use super::{Config, ConfigError};

/// Every single-key environment variable and the configuration key it sets.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("HOST", "http.host"),
    ("PORT", "http.port"),
    ("MAX_BODY_BYTES", "http.max_body_bytes"),
    ("HTTP_TLS_CERT", "http.tls_cert"),
    ("HTTP_TLS_KEY", "http.tls_key"),
    ("CORS_ALLOWED_ORIGINS", "http.cors_allowed_origins"),
    ("RATE_LIMIT_INGEST_PER_SEC", "http.rate_limit.ingest_per_sec"),
    ("RATE_LIMIT_QUERY_PER_SEC", "http.rate_limit.query_per_sec"),
    ("LOG_LEVEL", "log.level"),
    ("LOG_FORMAT", "log.format"),
    ("DATA_DIR", "storage.data_dir"),
    ("STORAGE_MAX_MEMORY_BYTES", "storage.max_memory_bytes"),
    ("STORAGE_RETENTION_DAYS", "storage.retention_days"),
    ("QUERY_TIMEOUT_SECS", "query.timeout_secs"),
    ("QUERY_MEMORY_LIMIT", "query.memory_limit_bytes"),
    ("QUERY_MAX_CONCURRENT", "query.max_concurrent"),
    ("CACHE_ENABLED", "cache.enabled"),
    ("CACHE_METRICS_TTL", "cache.metrics_ttl_secs"),
    ("CACHE_EVENTS_TTL", "cache.events_ttl_secs"),
    ("CACHE_PREDICTIONS_TTL", "cache.predictions_ttl_secs"),
    ("CACHE_MAX_ENTRY_BYTES", "cache.max_entry_bytes"),
    ("CACHE_KEY_PREFIX", "cache.key_prefix"),
    ("REDIS_TIMEOUT_MS", "cache.redis_timeout_ms"),
    ("REDIS_CLUSTER", "cache.redis_cluster"),
    ("REDIS_NODES", "cache.redis_nodes"),
    ("AUTH_MODE", "auth.mode"),
    ("AUTH_KEY_STORE", "auth.key_store"),
    ("AUTH_JWT_SECRET", "auth.jwt.hs256_secret"),
    ("AUTH_JWT_JWKS_URL", "auth.jwt.jwks_url"),
    ("AUTH_JWT_ISSUER", "auth.jwt.issuer"),
    ("AUTH_JWT_AUDIENCE", "auth.jwt.audience"),
    ("OBJECT_STORE_MAX_RETRIES", "object_store.max_retries"),
    ("OBJECT_STORE_RETRY_TIMEOUT_SECS", "object_store.retry_timeout_secs"),
    ("CLUSTER_REMOTE", "cluster.remote"),
    ("CLUSTER_SECRET", "cluster.secret"),
    ("CLUSTER_ADVERTISE_URL", "cluster.advertise_url"),
    ("CLUSTER_PEERS", "cluster.peers"),
    ("CLUSTER_DISTRIBUTED", "cluster.distributed"),
    ("CLUSTER_WORKER_LISTEN", "cluster.worker_listen"),
    ("CLUSTER_WORKER_ADVERTISE_URL", "cluster.worker_advertise_url"),
    ("KAFKA_BROKERS", "kafka.brokers"),
    ("KAFKA_TOPIC", "kafka.topic"),
    ("KAFKA_GROUP_ID", "kafka.group_id"),
    ("KAFKA_DLQ_TOPIC", "kafka.dlq_topic"),
    ("KAFKA_START_OFFSET", "kafka.start_offset"),
    ("KAFKA_SESSION_TIMEOUT_MS", "kafka.session_timeout_ms"),
    ("PGWIRE_ENABLED", "pgwire.enabled"),
    ("PGWIRE_HOST", "pgwire.host"),
    ("PGWIRE_PORT", "pgwire.port"),
    ("PGWIRE_AUTH", "pgwire.auth"),
    ("PGWIRE_API_KEYS", "pgwire.api_keys"),
    ("PGWIRE_ALLOW_TRUST", "pgwire.allow_trust"),
    ("PGWIRE_TLS_CERT", "pgwire.tls_cert"),
    ("PGWIRE_TLS_KEY", "pgwire.tls_key"),
    ("LIVE_CLIENT_BUFFER_CHUNKS", "live.client_buffer_chunks"),
    ("LIVE_MAX_SUBSCRIBERS", "live.max_subscribers"),
    ("ALERTS_ENABLED", "alerts.enabled"),
    ("ALERTS_WEBHOOK_SECRET", "alerts.webhook_secret"),
];

/// The value of `text` as the type `current` has (a key absent from the TOML, an unset
/// option, is read as a string).
fn typed(current: Option<&Value>, text: &str) -> Result<Value, String> {
    match current {
        Some(Value::Integer(_)) => text
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| "expected a whole number".to_string()),
        Some(Value::Float(_)) => text
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| "expected a number".to_string()),
        Some(Value::Boolean(_)) => text
            .trim()
            .parse::<bool>()
            .map(Value::Boolean)
            .map_err(|_| "expected `true` or `false`".to_string()),
        Some(Value::Array(_)) => Ok(Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
        _ => Ok(Value::String(text.to_string())),
    }
}

/// Sets `path` (dotted) in `root` to `value`, creating tables on the way.
fn set(root: &mut Value, path: &str, value: Value) {
    let mut node = root;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let Value::Table(table) = node else { return };
        if parts.peek().is_none() {
            table.insert(part.to_string(), value);
            return;
        }
        node = table
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(toml::Table::new()));
    }
}

fn get<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |node, part| node.get(part))
}

/// Applies every variable of [`ENV_KEYS`] that `read` finds to `config`.
pub fn apply(config: &mut Config, read: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let error = |name: &'static str, value: String, message: String| ConfigError::Env { name, value, message };
    let mut root = Value::try_from(&*config).map_err(|e| error("(all)", String::new(), e.to_string()))?;
    for &(name, path) in ENV_KEYS {
        let Some(text) = read(name) else { continue };
        let value = typed(get(&root, path), &text).map_err(|m| error(name, text.clone(), m))?;
        set(&mut root, path, value);
        // Checked one variable at a time, so a value the key does not take names its variable.
        *config = root
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| error(name, text, e.message().to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        let owned: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        c.apply_env(move |n| owned.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))?;
        Ok(c)
    }

    #[test]
    fn values_are_read_as_their_keys_types_and_errors_name_the_variable() {
        let c = with(&[
            ("CORS_ALLOWED_ORIGINS", "https://a.example, https://b.example,"),
            ("AUTH_MODE", "required"),
            ("KAFKA_BROKERS", "k1:9092"),
            ("HTTP_TLS_CERT", "/etc/hub/cert.pem"),
            ("STORAGE_MAX_MEMORY_BYTES", "1048576"),
            ("PGWIRE_API_KEYS", "false"),
        ])
        .expect("valid");
        assert_eq!(
            c.http.cors_allowed_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(c.auth.mode, crate::auth::AuthMode::Required);
        assert_eq!(c.kafka.brokers.as_deref(), Some("k1:9092"));
        assert_eq!(
            c.http.tls_cert.as_deref(),
            Some(std::path::Path::new("/etc/hub/cert.pem"))
        );
        assert_eq!(c.storage.max_memory_bytes, 1_048_576);
        assert!(!c.pgwire.api_keys);
        for (name, value) in [
            ("AUTH_MODE", "sometimes"),
            ("PORT", "http"),
            ("PGWIRE_ENABLED", "yes please"),
            ("LOG_FORMAT", "xml"),
        ] {
            match with(&[(name, value)]) {
                Err(ConfigError::Env { name: n, value: v, .. }) => assert_eq!((n, v.as_str()), (name, value)),
                other => panic!("{name}={value}: {other:?}"),
            }
        }
    }

    /// Every variable the code reads is documented (the reverse of
    /// `every_documented_env_name_is_honoured`).
    #[test]
    fn every_variable_is_documented() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let docs: String = [
            "docs/configuration.md",
            "docs/kafka.md",
            "docs/postgres-sink.md",
            "docs/cache.md",
        ]
        .iter()
        .map(|d| std::fs::read_to_string(root.join(d)).expect("doc"))
        .collect();
        for (name, _) in ENV_KEYS {
            assert!(docs.contains(&format!("`{name}`")), "{name} is read but not documented");
        }
    }
}
