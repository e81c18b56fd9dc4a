//! Sinks for continuous-query outputs, one folder per sink behind [`RollupSink`]; [`build`] is
//! the one registry that turns the configuration into a sink.
//!
//! A sink has two inputs. The streaming engine hands it the states of the windows its queries
//! emit ([`crate::stream::state_sink::StateSink`]): one executor per continuous query, the sink
//! stores what the engine decided. The Kafka source hands it the source positions (partition
//! offsets), dead letters and the events-store batch claim of each consumed batch, made durable
//! in one transaction, so a source that resumes from the sink's positions stores every event
//! exactly once (and the engine, reading the store, counts it once).

#[cfg(feature = "postgres")]
pub mod postgres;
pub mod registry;
/// Without the `postgres` feature only the `[postgres]` section is built, so a configuration
/// file keeps parsing; [`crate::config::Config::validate`] refuses one that sets a URL.
#[cfg(not(feature = "postgres"))]
pub mod postgres {
    #[path = "config.rs"]
    pub mod config;
    pub use config::PostgresConfig;
}

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::{Classify, ErrorClass};
use crate::metrics::Metrics;
use crate::stream::catalog::CqDefinition;

/// A source position covered by a batch: the next offset to read of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePosition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset of the batch's first record of this partition: the write is refused as stale
    /// when it lies before the stored next offset (those records were counted already).
    pub first: i64,
    /// Offset after the batch's last record of this partition.
    pub next: i64,
}

/// Which events-store batch a sink write claims: written in the write's transaction, so after
/// a crash the store keeps exactly the batches whose source positions the sink advanced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventClaim {
    /// The data directory's store id.
    pub store_id: String,
    /// The batch's tag in the WAL.
    pub tag: u64,
    /// The WAL segment it is in.
    pub wal_seq: u64,
}

/// A record that could not be decoded, kept with its reason.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Source topic (None for HTTP).
    pub topic: Option<String>,
    /// Source partition.
    pub partition: Option<i32>,
    /// Source offset.
    pub offset: Option<i64>,
    /// Error class (`invalid_json`, `validation`, ...).
    pub error_type: String,
    /// Human-readable reason.
    pub reason: String,
    /// The original bytes.
    pub payload: Vec<u8>,
}

/// Errors of sinks.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The circuit breaker is open (the database failed repeatedly); retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database answered with an error or could not be reached; `transient` errors
    /// (connection, pool timeout, SQLSTATE classes 08/53/57, serialization and lock failures)
    /// are worth retrying, the rest are bugs.
    #[error("{}: {source}", database_label(*.transient, .sqlstate.as_deref()))]
    Database {
        /// Retry later.
        transient: bool,
        /// The server's error code, when it answered.
        sqlstate: Option<String>,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another instance advanced a partition's stored offset: this instance's view of it is
    /// stale and must be re-read before writing again.
    #[error("stale source position: {0}")]
    Fenced(String),
    /// The configuration (URL, a query the sink cannot store) is wrong.
    #[error("{0}")]
    Config(String),
    /// A bug.
    #[error("internal: {0}")]
    Internal(#[source] crate::error::ErrorDetail),
}

impl Classify for SinkError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Unavailable(_) | Self::Fenced(_) => ErrorClass::External,
            Self::Database { transient: true, .. } => ErrorClass::External,
            Self::Database { transient: false, .. } => ErrorClass::Internal,
            Self::Config(_) => ErrorClass::User,
            Self::Internal(_) => ErrorClass::Internal,
        }
    }

    /// A fenced write is the database's answer, not its failure: retrying the same stale
    /// position cannot succeed (the source rewinds instead).
    fn retryable(&self) -> bool {
        self.is_unavailable()
    }
}

/// `database unavailable (SQLSTATE 57P01)` / `database error`: how [`SinkError::Database`] opens.
fn database_label(transient: bool, sqlstate: Option<&str>) -> String {
    let what = if transient {
        "database unavailable"
    } else {
        "database error"
    };
    match sqlstate {
        Some(code) => format!("{what} (SQLSTATE {code})"),
        None => what.to_string(),
    }
}

impl SinkError {
    /// The database cannot take writes now (breaker open or a transient failure): what the
    /// circuit breaker counts and retries wait out.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Database { transient: true, .. })
    }
}

/// Where continuous-query outputs become durable and shared, and where the Kafka source keeps
/// its positions.
#[async_trait]
pub trait RollupSink: crate::stream::state_sink::StateSink {
    /// Sink kind (`postgres`).
    fn name(&self) -> &'static str;

    /// Records `dead_letters`, advances `positions` and writes `claim`, all in one
    /// transaction. All or nothing.
    async fn write(
        &self,
        dead_letters: &[DeadLetter],
        positions: &[SourcePosition],
        claim: Option<&EventClaim>,
    ) -> Result<(), SinkError>;

    /// The tags of `store_id`'s claimed batches (read before its store replays its WAL).
    async fn claims(&self, store_id: &str) -> Result<std::collections::HashSet<u64>, SinkError>;

    /// Whether `claim` was written (a write whose answer was lost may have committed).
    async fn is_claimed(&self, claim: &EventClaim) -> Result<bool, SinkError>;

    /// Deletes `store_id`'s claims of WAL segments before `oldest_seq` (flushed: no replay
    /// needs them). Returns how many went.
    async fn forget_claims(&self, store_id: &str, oldest_seq: u64) -> Result<u64, SinkError>;

    /// The stored next offsets of `partitions` of the consumer group (None = never written);
    /// later writes for these partitions must continue from exactly there.
    async fn load_positions(&self, partitions: &[(String, i32)]) -> Result<Vec<Option<i64>>, SinkError>;

    /// The continuous queries of the shared registry (every instance's), with their options.
    async fn registered(&self) -> Result<Vec<CqDefinition>, SinkError>;

    /// This instance no longer owns `partitions`.
    fn forget_positions(&self, partitions: &[(String, i32)]);

    /// Retry schedule for failed writes (attempts 0 = until it succeeds).
    fn retry_policy(&self) -> crate::resilience::RetryPolicy;

    /// Live status for `/api/v1/ingest/status`.
    fn status(&self) -> serde_json::Value;

    /// Whether writes can go through (circuit breaker not open).
    fn ready(&self) -> bool;
}

/// The configured sink, if any (the `[postgres]` section). `group` names the writer group
/// whose source offsets it stores (the Kafka consumer group); `store_id` names this data
/// directory's share of each rollup; `queries` follows the registered continuous queries.
pub async fn build(
    config: &postgres::config::PostgresConfig,
    group: &str,
    store_id: &str,
    queries: watch::Receiver<Vec<CqDefinition>>,
    metrics: &Metrics,
) -> Result<Option<Arc<dyn RollupSink>>, SinkError> {
    if !config.enabled() {
        return Ok(None);
    }
    #[cfg(feature = "postgres")]
    {
        let follow = queries.clone();
        let sink = Arc::new(postgres::PostgresSink::connect(config, group, store_id, queries, metrics.clone()).await?);
        sink.follow_registry(follow);
        Ok(Some(sink))
    }
    // Refused earlier by the configuration check; kept so no path runs without its sink silently.
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (group, store_id, queries, metrics);
        Err(SinkError::Config(
            "this build has no PostgreSQL support (cargo feature `postgres`)".into(),
        ))
    }
}
