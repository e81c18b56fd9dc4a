//! Configuration: one documented struct. Sources, later ones winning: built-in defaults, a TOML
//! file (`--config`), environment variables (the seed's names), command-line flags.
//! Unknown keys in the file are rejected.

pub mod duration;
pub mod env;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::cache::CacheConfig;
pub use crate::pgwire::config::{PgwireAuth, PgwireConfig, PgwireUser};
pub use crate::query::QueryConfig;
pub use crate::sinks::postgres::PostgresConfig;
pub use crate::sources::kafka::KafkaConfig;
pub use crate::storage::local::LocalStoreConfig as StorageConfig;

/// The whole configuration of the Hub.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP API listener.
    pub http: HttpConfig,
    /// Local durable storage of events (standalone mode).
    pub storage: StorageConfig,
    /// Ad-hoc SQL execution.
    pub query: QueryConfig,
    /// Query-result cache.
    pub cache: CacheConfig,
    /// Parquet snapshots: concurrency and schedules.
    pub exports: crate::exports::ExportsConfig,
    /// `[auth]`: API keys, roles and tenants on HTTP.
    pub auth: crate::auth::AuthConfig,
    /// `[object_store]`: retries and timeouts of S3 requests (exports, snapshot tables).
    pub object_store: crate::exports::ObjectStoreConfig,
    /// Logging.
    pub log: LogConfig,
    /// Built-in synthetic traffic (`serve --demo`).
    pub demo: DemoConfig,
    /// Continuous queries.
    pub stream: StreamConfig,
    /// Cluster mode: Kafka ingestion (off unless `brokers` is set).
    pub kafka: KafkaConfig,
    /// Cluster mode: PostgreSQL/TimescaleDB rollup sink (off unless `url` is set).
    pub postgres: PostgresConfig,
    /// PostgreSQL wire-protocol endpoint (psql, Grafana).
    pub pgwire: PgwireConfig,
    /// Live feeds (`GET /api/v1/stream`): history kept for resuming clients, per-client buffers.
    pub live: crate::live::LiveConfig,
    /// `[cluster]`: shared history in object storage (issue #22, first increment).
    pub cluster: crate::cluster::ClusterConfig,
    /// Alert rules and webhook notifications.
    pub alerts: crate::alerts::AlertsConfig,
}

/// The `[stream]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Run continuous queries at all.
    pub enabled: bool,
    /// Register the rollups shipped in `queries/` at startup (those not registered yet).
    pub shipped_queries: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            shipped_queries: true,
        }
    }
}

/// The `[http]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to bind (env `HOST`). `0.0.0.0` to accept remote clients.
    pub host: String,
    /// Port to bind (env `PORT`); `0` picks a free port.
    pub port: u16,
    /// Largest accepted request body in bytes (env `MAX_BODY_BYTES`); larger bodies get 413.
    pub max_body_bytes: usize,
    /// Origins browsers may call the API from (env `CORS_ALLOWED_ORIGINS`, comma-separated);
    /// none by default.
    pub cors_allowed_origins: Vec<String>,
    /// One log line per request (target `access`: method, path, status, ms, caller, request id).
    pub access_log: bool,
    /// Requests per second per caller.
    pub rate_limit: crate::http::limits::RateLimitConfig,
    /// PEM certificate chain: with `tls_key`, the port serves HTTPS only (env `HTTP_TLS_CERT`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (env `HTTP_TLS_KEY`).
    pub tls_key: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 3000,
            max_body_bytes: 16 * 1024 * 1024,
            cors_allowed_origins: Vec::new(),
            access_log: true,
            rate_limit: crate::http::limits::RateLimitConfig::default(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// The `[log]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `llm_analytics_hub=debug` (env `LOG_LEVEL`).
    pub level: String,
    /// `text` or `json` (env `LOG_FORMAT`).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The `[demo]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Generate synthetic LLM telemetry in-process.
    pub enabled: bool,
    /// Generated events per second.
    pub events_per_sec: u32,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            events_per_sec: 20,
            seed: 42,
        }
    }
}

/// Configuration errors: always the operator's to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`] (includes unknown keys).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message, naming the key.
        message: String,
    },
    /// The settings contradict each other or are out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// An environment variable has an unusable value.
    #[error("environment variable {name}={value:?} is invalid: {message}")]
    Env {
        /// Variable name.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why.
        message: String,
    },
}

/// Variables of later cluster-mode features: warned about so nobody believes they took effect.
const NOT_YET_SUPPORTED_ENV: [&str; 1] = ["CACHE_TTL"];

impl Config {
    /// Loads defaults, then `file` if given, then the environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies the environment variables (read through `get`): the single-key ones of
    /// [`env::ENV_KEYS`], then the ones that build a value from several.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        env::apply(self, &get)?;
        self.cache.apply_env(&get).map_err(|e| ConfigError::Env {
            name: e.name,
            value: e.value,
            message: e.message,
        })?;
        self.postgres.apply_env(&get);
        match (get("PGWIRE_USER"), get("PGWIRE_PASSWORD")) {
            (Some(user), Some(password)) => self.pgwire.set_user(user, password),
            (None, None) => {}
            (Some(user), None) => {
                return Err(ConfigError::Env {
                    name: "PGWIRE_USER",
                    value: user,
                    message: "set PGWIRE_PASSWORD too".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Env {
                    name: "PGWIRE_PASSWORD",
                    value: "(hidden)".into(),
                    message: "set PGWIRE_USER too".into(),
                });
            }
        }
        Ok(())
    }

    /// Checks rules that span fields or that serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        self.check_built()?;
        self.kafka.validate()?;
        self.cache.validate()?;
        self.live.validate()?;
        self.cluster.validate(self.postgres.enabled())?;
        self.pgwire.validate()
    }

    /// Refuses a configuration that needs a component this binary was built without (cargo
    /// features `kafka`, `postgres`, `pgwire`), naming the setting and the feature.
    fn check_built(&self) -> Result<(), String> {
        let missing = |setting: &str, feature: &str| {
            format!(
                "{setting} is set, but this build has no {feature} support (built without the `{feature}` cargo feature; \
                 `analytics-hub --version` lists the features; rebuild with `--features {feature}` or unset it)"
            )
        };
        if !cfg!(feature = "kafka") && self.kafka.enabled() {
            return Err(missing("kafka.brokers (KAFKA_BROKERS)", "kafka"));
        }
        if !cfg!(feature = "postgres") && self.postgres.enabled() {
            return Err(missing("postgres.url (DATABASE_URL, DB_HOST)", "postgres"));
        }
        if !cfg!(feature = "postgres") && self.auth.key_store == crate::auth::KeyStoreKind::Postgres {
            return Err(missing("auth.key_store = \"postgres\" (AUTH_KEY_STORE)", "postgres"));
        }
        if !cfg!(feature = "postgres") && self.cluster.enabled() {
            return Err(missing("cluster.remote (CLUSTER_REMOTE)", "postgres"));
        }
        if !cfg!(feature = "pgwire") && self.pgwire.enabled {
            return Err(missing("pgwire.enabled (PGWIRE_ENABLED)", "pgwire"));
        }
        Ok(())
    }

    /// Names of set environment variables that belong to features this build does not have.
    pub fn unsupported_env(get: impl Fn(&str) -> Option<String>) -> Vec<&'static str> {
        NOT_YET_SUPPORTED_ENV.into_iter().filter(|n| get(n).is_some()).collect()
    }

    /// The effective configuration as TOML (for `analytics-hub config`).
    /// The configuration as TOML, secrets masked (`analytics-hub config`).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        let mut shown = self.clone();
        for user in &mut shown.pgwire.users {
            user.password = "***".into();
        }
        shown.postgres.url = shown.postgres.url.as_deref().map(crate::redact::url);
        shown.cache.redis_url = shown.cache.redis_url.as_deref().map(crate::redact::url);
        if shown.cluster.secret.is_some() {
            shown.cluster.secret = Some("***".into());
        }
        if shown.auth.jwt.hs256_secret.is_some() {
            shown.auth.jwt.hs256_secret = Some("***".into());
        }
        toml::to_string_pretty(&shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[http]\nprot = 1\n").expect_err("typo must fail");
        assert!(err.contains("prot"), "{err}");
        let err = Config::from_toml("[nope]\n").expect_err("unknown section must fail");
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn file_then_env_precedence() {
        let mut c = Config::from_toml("[http]\nport = 4000\nhost = \"0.0.0.0\"\n").expect("valid");
        assert_eq!(c.http.port, 4000);
        assert_eq!(c.storage.segment_max_rows, StorageConfig::default().segment_max_rows);
        c.apply_env(|n| (n == "PORT").then(|| "5000".to_string()))
            .expect("env ok");
        assert_eq!(c.http.port, 5000);
        assert_eq!(c.http.host, "0.0.0.0");
        let err = c
            .apply_env(|n| (n == "PORT").then(|| "http".to_string()))
            .expect_err("bad port");
        assert!(err.to_string().contains("PORT"));
    }

    #[test]
    fn kafka_settings_from_env_and_file() {
        let mut c = Config::default();
        assert!(!c.kafka.enabled(), "standalone by default");
        c.apply_env(|n| match n {
            "KAFKA_BROKERS" => Some("127.0.0.1:9092".into()),
            "KAFKA_TOPIC" => Some("a, b".into()),
            "KAFKA_START_OFFSET" => Some("latest".into()),
            _ => None,
        })
        .expect("env ok");
        assert!(c.kafka.enabled());
        assert_eq!(c.kafka.topics(), vec!["a", "b"]);
        assert_eq!(c.kafka.dlq_topic_for("a"), "a.dlq");
        assert_eq!(c.kafka.start_offset, crate::sources::kafka::StartOffset::Latest);
        c.validate().expect("valid");
        c.kafka.dlq_topic = Some("dead".into());
        assert!(c.validate().expect_err("one dlq for two topics").contains("dlq_topic"));
        let err = Config::from_toml("[kafka]\nbrokerz = \"x\"\n").expect_err("typo must fail");
        assert!(err.contains("brokerz"), "{err}");
        let err = c
            .apply_env(|n| (n == "KAFKA_START_OFFSET").then(|| "middle".to_string()))
            .expect_err("bad start offset");
        assert!(err.to_string().contains("KAFKA_START_OFFSET"));
    }

    #[test]
    fn pgwire_settings_from_file_and_env() {
        let c = Config::default();
        assert!(
            c.pgwire.enabled && c.pgwire.api_keys && c.pgwire.active(),
            "enabled: API keys can log in without configured users"
        );
        let mut no_keys = c.clone();
        no_keys.pgwire.api_keys = false;
        assert!(!no_keys.pgwire.active(), "idle without users or API keys");
        assert_eq!(c.pgwire.port, 5433);
        let mut c = Config::from_toml(
            "[pgwire]\nport = 6543\nauth = \"md5\"\n[[pgwire.users]]\nname = \"a\"\npassword = \"b\"\n",
        )
        .expect("valid");
        assert_eq!(c.pgwire.auth, PgwireAuth::Md5);
        assert!(c.pgwire.active());
        c.apply_env(|n| match n {
            "PGWIRE_PORT" => Some("7000".into()),
            "PGWIRE_USER" => Some("a".into()),
            "PGWIRE_PASSWORD" => Some("c".into()),
            "PGWIRE_AUTH" => Some("scram-sha-256".into()),
            _ => None,
        })
        .expect("env ok");
        assert_eq!(c.pgwire.port, 7000);
        assert_eq!(c.pgwire.auth, PgwireAuth::ScramSha256);
        assert_eq!(
            c.pgwire.users,
            vec![PgwireUser {
                name: "a".into(),
                password: "c".into(),
                tenant: None,
                role: crate::auth::Role::Read,
            }]
        );
        let err = c
            .apply_env(|n| (n == "PGWIRE_USER").then(|| "x".to_string()))
            .expect_err("user without password");
        assert!(err.to_string().contains("PGWIRE_PASSWORD"));
        let roles = |toml: &str| Config::from_toml(toml).expect("parses").validate();
        assert!(
            roles("[[pgwire.users]]\nname = \"etl\"\npassword = \"p\"\nrole = \"ingest\"\n")
                .expect_err("ingest cannot run SQL")
                .contains("ingest")
        );
        assert!(
            roles("[[pgwire.users]]\nname = \"a\"\npassword = \"p\"\nrole = \"admin\"\ntenant = \"acme\"\n")
                .expect_err("admin is never bound")
                .contains("admin")
        );
        roles("[[pgwire.users]]\nname = \"ops\"\npassword = \"p\"\nrole = \"admin\"\n").expect("admin login");
        c.pgwire.auth = PgwireAuth::Trust;
        assert!(
            c.validate()
                .expect_err("trust needs allow_trust")
                .contains("allow_trust")
        );
        c.pgwire.allow_trust = true;
        c.validate().expect("trust allowed");
        let err = Config::from_toml("[pgwire]\nusers = [{ name = \"a\", pass = \"b\" }]\n").expect_err("typo");
        assert!(err.contains("pass"), "{err}");
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = Config::default().to_toml().expect("serialize");
        let back = Config::from_toml(&text).expect("parse back");
        assert_eq!(back.http.port, 3000);
        assert_eq!(back.cache, CacheConfig::default());
    }

    /// The value a test sets for a documented env name (valid for its type).
    fn sample_env_value(name: &str) -> &'static str {
        match name {
            "LOG_FORMAT" => "json",
            "KAFKA_START_OFFSET" => "latest",
            "PGWIRE_AUTH" => "md5",
            "PGWIRE_ENABLED" | "PGWIRE_API_KEYS" => "false",
            "PGWIRE_ALLOW_TRUST" | "REDIS_CLUSTER" => "true",
            "CACHE_ENABLED" | "ALERTS_ENABLED" | "CLUSTER_DISTRIBUTED" => "false",
            "LIVE_CLIENT_BUFFER_CHUNKS" | "LIVE_MAX_SUBSCRIBERS" => "77",
            "AUTH_MODE" => "required",
            "AUTH_KEY_STORE" => "file",
            "CORS_ALLOWED_ORIGINS" => "https://grafana.example",
            "OBJECT_STORE_MAX_RETRIES" => "7",
            "DATABASE_URL" => "postgres://u:p@db.example:5432/d",
            "AUTH_JWT_JWKS_URL" => "https://idp.example/.well-known/jwks.json",
            n if n.ends_with("PORT") => "4321",
            n if [
                "_SECS",
                "_MS",
                "_BYTES",
                "_LIMIT",
                "_CONCURRENT",
                "_TTL",
                "_PER_SEC",
                "_DAYS",
            ]
            .iter()
            .any(|s| n.ends_with(s)) =>
            {
                "12345"
            }
            _ => "sample-value",
        }
    }

    #[test]
    fn printed_configuration_masks_secrets() {
        let mut c = Config::default();
        c.pgwire.set_user("grafana".into(), "wire-s3cret".into());
        c.postgres.url = Some("postgres://hub:pg-s3cret@db/hub".into());
        c.cache.redis_url = Some("redis://:redis-s3cret@cache:6379".into());
        c.auth.jwt.hs256_secret = Some("jwt-s3cret".into());
        let text = c.to_toml().expect("toml");
        for secret in ["wire-s3cret", "pg-s3cret", "redis-s3cret", "jwt-s3cret"] {
            assert!(!text.contains(secret), "{secret} printed:\n{text}");
        }
        assert!(
            text.contains("grafana") && text.contains("postgres://hub:***@db/hub"),
            "{text}"
        );
    }

    /// Every env name in the `env` column of the configuration tables (docs/configuration.md,
    /// docs/kafka.md, docs/postgres-sink.md) changes the effective configuration: the docs
    /// cannot name a variable the code ignores.
    #[test]
    fn every_documented_env_name_is_honoured() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> = Vec::new();
        for doc in [
            "docs/configuration.md",
            "docs/kafka.md",
            "docs/postgres-sink.md",
            "docs/cache.md",
        ] {
            let text = std::fs::read_to_string(root.join(doc)).expect("doc");
            let mut env_col = None;
            for line in text.lines() {
                if !line.starts_with('|') {
                    env_col = None;
                    continue;
                }
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                if let Some(i) = cells.iter().position(|c| *c == "env") {
                    env_col = Some(i);
                    continue;
                }
                let Some(cell) = env_col.and_then(|i| cells.get(i)) else {
                    continue;
                };
                for token in cell.split('`').skip(1).step_by(2) {
                    if token
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    {
                        names.push(token.to_string());
                    }
                }
            }
        }
        assert!(names.len() >= 20, "found only {names:?}");
        let base = Config::default().to_toml().expect("toml");
        for name in &names {
            // The wire user and password come as a pair.
            let set: Vec<(&str, &str)> = match name.as_str() {
                "PGWIRE_USER" | "PGWIRE_PASSWORD" => vec![("PGWIRE_USER", "u"), ("PGWIRE_PASSWORD", "p")],
                n => vec![(n, sample_env_value(n))],
            };
            let mut c = Config::default();
            c.apply_env(|k| set.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_string()))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_ne!(
                c.to_toml().expect("toml"),
                base,
                "{name} is documented but changes nothing"
            );
        }
    }
}
