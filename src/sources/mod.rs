//! Event sources other than HTTP, one folder per source behind [`Source`]; [`build`] is the one
//! registry that turns the configuration into running sources.

#[cfg(feature = "kafka")]
pub mod kafka;
/// Without the `kafka` feature only the `[kafka]` section is built, so a configuration file
/// keeps parsing; [`crate::config::Config::validate`] refuses one that sets brokers.
#[cfg(not(feature = "kafka"))]
pub mod kafka {
    #[path = "config.rs"]
    pub mod config;
    pub use config::{KafkaConfig, StartOffset};
}

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::{Classify, ErrorClass};
use crate::ingest::Ingest;
use crate::metrics::Metrics;

/// Errors of sources.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source cannot be set up with this configuration.
    #[error("{0}")]
    Config(String),
    /// The source failed while running.
    #[error("{context}: {source}")]
    Runtime {
        /// What the source was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The source stopped while running, with no underlying error to report (the log says why).
    #[error("{0}")]
    Halted(String),
}

impl Classify for SourceError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Config(_) => ErrorClass::User,
            Self::Runtime { .. } | Self::Halted(_) => ErrorClass::External,
        }
    }
}

/// Live status of a source, for `/api/v1/ingest/status` and `/ready`.
pub trait SourceStatus: Send + Sync + std::fmt::Debug {
    /// Source kind (`kafka`).
    fn name(&self) -> &'static str;
    /// Everything an operator wants to see, as JSON.
    fn status(&self) -> serde_json::Value;
    /// Whether it is consuming.
    fn ready(&self) -> bool;
}

/// A source of events: runs until `shutdown`, handing events to its [`Ingest`].
#[async_trait]
pub trait Source: Send {
    /// Source kind.
    fn name(&self) -> &'static str;
    /// Its live status.
    fn status(&self) -> Arc<dyn SourceStatus>;
    /// Consumes until `shutdown` turns true, then drains and commits.
    async fn run(self: Box<Self>, shutdown: watch::Receiver<bool>) -> Result<(), SourceError>;
}

/// The configured sources (the `[kafka]` section), storing into `store_ingest` (and writing
/// `sink` exactly-once).
pub async fn build(
    config: &kafka::config::KafkaConfig,
    store_ingest: Arc<dyn Ingest>,
    sink: Option<Arc<dyn crate::sinks::RollupSink>>,
    metrics: &Metrics,
) -> Result<Vec<Box<dyn Source>>, SourceError> {
    if !config.enabled() {
        return Ok(Vec::new());
    }
    build_kafka(config, store_ingest, sink, metrics).await
}

#[cfg(feature = "kafka")]
async fn build_kafka(
    config: &kafka::config::KafkaConfig,
    store_ingest: Arc<dyn Ingest>,
    sink: Option<Arc<dyn crate::sinks::RollupSink>>,
    metrics: &Metrics,
) -> Result<Vec<Box<dyn Source>>, SourceError> {
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    if config.create_topics {
        // Not fatal: the topics may exist already, or the broker may come up later.
        if let Err(e) = kafka::admin::ensure_topics(config).await {
            tracing::warn!(error = %e, "kafka topics could not be checked or created");
        }
    }
    if config.consume {
        sources.push(Box::new(kafka::KafkaSource::new(
            config,
            store_ingest,
            sink,
            metrics.clone(),
        )?));
    }
    Ok(sources)
}

/// Refused earlier by the configuration check; kept so no path starts a configured source
/// silently without it.
#[cfg(not(feature = "kafka"))]
async fn build_kafka(
    _config: &kafka::config::KafkaConfig,
    _store_ingest: Arc<dyn Ingest>,
    _sink: Option<Arc<dyn crate::sinks::RollupSink>>,
    _metrics: &Metrics,
) -> Result<Vec<Box<dyn Source>>, SourceError> {
    Err(SourceError::Config(
        "this build has no Kafka support (cargo feature `kafka`)".into(),
    ))
}
