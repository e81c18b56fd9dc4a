//! The `[postgres]` section: the rollup sink (cluster mode's durable, shared output).

use serde::{Deserialize, Serialize};

/// PostgreSQL/TimescaleDB sink settings. The sink is used only when `url` is set (directly, by
/// `DATABASE_URL`, or by the seed's `DB_*` variables); otherwise continuous-query outputs stay
/// in the local store only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// Connection URL, `postgres://user:password@host:port/database` (env `DATABASE_URL`, or
    /// built from `DB_HOST`, `DB_PORT`, `DB_NAME` (default `llm_analytics`), `DB_USER`,
    /// `DB_PASSWORD`). Unset = no Postgres sink.
    pub url: Option<String>,
    /// Create the database named in `url` when it does not exist (needs CREATEDB).
    pub create_database: bool,
    /// Apply `migrations/` at startup (they are also applied by `analytics-hub migrate`).
    pub migrate_on_start: bool,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a connection, in ms; a write that cannot get one fails (and is
    /// retried).
    pub acquire_timeout_ms: u64,
    /// First retry delay of a failed write, in ms.
    pub retry_initial_ms: u64,
    /// Growth factor of the retry delay.
    pub retry_multiplier: f64,
    /// Largest retry delay, in ms.
    pub retry_max_ms: u64,
    /// Attempts per write before the Kafka source stops (`0` = retry until the database is
    /// back, with ingestion paused meanwhile). A stopped source resumes from the offsets stored
    /// in Postgres after a restart.
    pub retry_max_attempts: u32,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failure_threshold: u32,
    /// Seconds the breaker stays open before trial writes (half-open).
    pub breaker_open_secs: u64,
    /// Successful trial writes that close the breaker again.
    pub breaker_half_open_successes: u32,
    /// Name of this instance in `hub_kafka_offsets.updated_by` (default: host name and pid).
    pub instance_id: Option<String>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: None,
            create_database: true,
            migrate_on_start: true,
            max_connections: 4,
            acquire_timeout_ms: 5_000,
            retry_initial_ms: 100,
            retry_multiplier: 2.0,
            retry_max_ms: 30_000,
            retry_max_attempts: 0,
            breaker_failure_threshold: 5,
            breaker_open_secs: 30,
            breaker_half_open_successes: 3,
            instance_id: None,
        }
    }
}

/// Default database name (seed).
pub const DEFAULT_DATABASE: &str = "llm_analytics";

impl PostgresConfig {
    /// Whether the sink is configured.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    /// Applies `DATABASE_URL` or `DB_HOST`/`DB_PORT`/`DB_NAME`/`DB_USER`/`DB_PASSWORD`.
    pub fn apply_env(&mut self, get: &impl Fn(&str) -> Option<String>) {
        if let Some(url) = get("DATABASE_URL").filter(|u| !u.is_empty()) {
            self.url = Some(url);
            return;
        }
        if let Some(host) = get("DB_HOST").filter(|h| !h.is_empty()) {
            let port = get("DB_PORT").unwrap_or_else(|| "5432".into());
            let name = get("DB_NAME").unwrap_or_else(|| DEFAULT_DATABASE.into());
            let user = get("DB_USER").unwrap_or_else(|| "postgres".into());
            let auth = match get("DB_PASSWORD") {
                Some(p) => format!("{}:{}", encode(&user), encode(&p)),
                None => encode(&user),
            };
            self.url = Some(format!("postgres://{auth}@{host}:{port}/{name}"));
        }
    }

    /// This instance's name.
    pub fn instance(&self) -> String {
        self.instance_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", host_name().unwrap_or_default(), std::process::id()))
    }
}

/// This machine's host name (`/etc/hostname`), if it has one.
pub fn host_name() -> Option<String> {
    let host = std::fs::read_to_string("/etc/hostname").ok()?;
    Some(host.trim().to_string()).filter(|h| !h.is_empty())
}

/// Percent-encodes what may not appear in a URL's user info.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_from_seed_variables() {
        let env = |n: &str| match n {
            "DB_HOST" => Some("db".to_string()),
            "DB_USER" => Some("hub".to_string()),
            "DB_PASSWORD" => Some("p@ss".to_string()),
            _ => None,
        };
        let mut c = PostgresConfig::default();
        c.apply_env(&env);
        assert_eq!(c.url.as_deref(), Some("postgres://hub:p%40ss@db:5432/llm_analytics"));
        let mut c = PostgresConfig::default();
        c.apply_env(&|n: &str| (n == "DATABASE_URL").then(|| "postgres://x/y".to_string()));
        assert_eq!(c.url.as_deref(), Some("postgres://x/y"));
    }
}
