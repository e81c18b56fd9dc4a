//! Ingest seam: where validated events go. Standalone, they are appended to the local store
//! ([`StoreIngest`]); in cluster mode a Kafka producer takes its place behind [`Ingest`].

pub mod pipeline;
pub mod tenant;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};

use crate::error::{Classify, ErrorClass};
use crate::event::schema::col;
use crate::event::{DecodedBatch, ReaderCounts, Rejection};
use crate::metrics::Metrics;
use crate::storage::{EventStore, StorageError};
use crate::stream::lanes::LaneMark;

pub use pipeline::{Accepted, BodyShape, Pipeline, PipelineError};

/// Errors while handing events on.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The store could not make the events durable; nothing was acknowledged.
    #[error("events could not be stored: {0}")]
    Storage(#[from] StorageError),
    /// The Kafka broker did not acknowledge the events in time (HTTP → Kafka); retry later.
    #[cfg(feature = "kafka")]
    #[error("the Kafka broker did not acknowledge the events")]
    Produce(#[source] rdkafka::error::KafkaError),
    /// A broken invariant in the Hub.
    #[error("internal: {0}")]
    Internal(String),
}

impl Classify for IngestError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Storage(e) => e.class(),
            #[cfg(feature = "kafka")]
            Self::Produce(_) => ErrorClass::External,
            Self::Internal(_) => ErrorClass::Internal,
        }
    }
}

/// Accepts validated event batches; `Ok` means they are durable.
#[async_trait]
pub trait Ingest: Send + Sync + std::fmt::Debug {
    /// Makes `batch` durable. All or nothing. `raw` holds the events' original JSON in batch
    /// order when [`Self::wants_raw`] is true (otherwise it may be empty).
    async fn ingest(&self, batch: RecordBatch, raw: &[&[u8]]) -> Result<(), IngestError>;

    /// [`Self::ingest`] for a batch read from independently ordered lanes (Kafka partitions):
    /// `lanes` says how far each got in it, so the continuous queries' event time advances
    /// with the slowest ([`crate::stream::lanes`]).
    async fn ingest_from_lanes(&self, batch: RecordBatch, lanes: Vec<LaneMark>) -> Result<(), IngestError> {
        let _ = lanes;
        self.ingest(batch, &[]).await
    }

    /// Whether [`Self::ingest`] needs the original JSON of the events (it forwards them).
    fn wants_raw(&self) -> bool {
        false
    }

    /// The store this ingest holds batches in, named for the sink's claims (see
    /// [`Self::hold`]); `None` when it cannot hold batches.
    fn claims_store(&self) -> Option<&str> {
        None
    }

    /// Makes `batch` durable but not visible, under `tag`: the Kafka source then claims it in
    /// the sink's transaction and [`Self::publish`]es it, or [`Self::discard`]s it when the
    /// claim was refused. After a crash the store keeps only claimed batches.
    async fn hold(&self, batch: RecordBatch, tag: u64, lanes: Vec<LaneMark>) -> Result<Held, IngestError> {
        let _ = (batch, tag, lanes);
        Err(IngestError::Internal("this ingest cannot hold batches".into()))
    }

    /// Makes a held batch visible and hands it on (continuous queries, live feed).
    async fn publish(&self, held: Held) {
        let _ = held;
    }

    /// Drops a held batch.
    fn discard(&self, held: Held) {
        let _ = held;
    }

    /// The oldest WAL segment of the store (claims of older ones can go).
    fn oldest_wal_seq(&self) -> Option<u64> {
        None
    }
}

/// A batch held by [`Ingest::hold`].
#[derive(Debug)]
pub struct Held {
    /// Where the store holds it.
    pub at: crate::storage::HeldAppend,
    batch: RecordBatch,
    ahead: Vec<(crate::stream::engine::QueryId, crate::stream::query::Prepared)>,
    lanes: Vec<LaneMark>,
}

/// Standalone ingest: straight into an [`EventStore`].
#[derive(Debug, Clone)]
pub struct StoreIngest {
    store: Arc<dyn EventStore>,
    metrics: Metrics,
    stream: Option<crate::stream::StreamHandle>,
    live: Option<crate::live::LiveFeed>,
    /// The data directory's store id when batches are held for the sink's claims.
    claims_store: Option<String>,
}

impl StoreIngest {
    /// Ingest into `store`, counting into `metrics`; stored batches are then fed to the
    /// continuous queries of `stream`.
    pub fn new(store: Arc<dyn EventStore>, metrics: Metrics, stream: Option<crate::stream::StreamHandle>) -> Self {
        Self {
            store,
            metrics,
            stream,
            live: None,
            claims_store: None,
        }
    }

    /// Holds Kafka batches for the sink's claims, naming this store `store_id` (exactly-once
    /// into the events table, see [`Ingest::hold`]).
    pub fn with_claims(mut self, store_id: Option<String>) -> Self {
        self.claims_store = store_id;
        self
    }

    /// Also publishes every stored batch to the live `events` topic.
    pub fn with_live(mut self, live: crate::live::LiveFeed) -> Self {
        self.live = Some(live);
        self
    }
}

#[async_trait]
impl Ingest for StoreIngest {
    async fn ingest(&self, batch: RecordBatch, _raw: &[&[u8]]) -> Result<(), IngestError> {
        self.ingest_from_lanes(batch, Vec::new()).await
    }

    async fn ingest_from_lanes(&self, batch: RecordBatch, lanes: Vec<LaneMark>) -> Result<(), IngestError> {
        let stored = batch.clone();
        let (appended, ahead) = self.while_preparing(&stored, self.store.append(batch)).await;
        appended?;
        self.hand_on(stored, ahead, lanes).await;
        Ok(())
    }

    fn claims_store(&self) -> Option<&str> {
        self.claims_store.as_deref()
    }

    async fn hold(&self, batch: RecordBatch, tag: u64, lanes: Vec<LaneMark>) -> Result<Held, IngestError> {
        let stored = batch.clone();
        let (held, ahead) = self.while_preparing(&stored, self.store.append_held(batch, tag)).await;
        Ok(Held {
            at: held?,
            batch: stored,
            ahead,
            lanes,
        })
    }

    async fn publish(&self, held: Held) {
        if self.store.publish(&held.at) {
            self.hand_on(held.batch, held.ahead, held.lanes).await;
        } else {
            tracing::error!(seq = held.at.seq, "a held batch to publish was not found in the store");
        }
    }

    fn discard(&self, held: Held) {
        self.store.discard(&held.at);
    }

    fn oldest_wal_seq(&self) -> Option<u64> {
        self.store.oldest_wal_seq()
    }
}

impl StoreIngest {
    /// Runs `append` while this task computes the batch's partial aggregates for the continuous
    /// queries (requests do so in parallel while their appends wait for the group commit; the
    /// engine task only merges them).
    async fn while_preparing<T>(
        &self,
        batch: &RecordBatch,
        append: impl std::future::Future<Output = T>,
    ) -> (T, Vec<(crate::stream::engine::QueryId, crate::stream::query::Prepared)>) {
        match &self.stream {
            Some(stream) => tokio::join!(append, stream.prepare(batch)),
            None => (append.await, Vec::new()),
        }
    }

    /// After a batch became visible: counts it and feeds the live topic and the continuous
    /// queries.
    async fn hand_on(
        &self,
        stored: RecordBatch,
        ahead: Vec<(crate::stream::engine::QueryId, crate::stream::query::Prepared)>,
        lanes: Vec<LaneMark>,
    ) {
        count_processed(&self.metrics, &stored);
        if let Some(live) = &self.live {
            live.publish(crate::live::EVENTS_TOPIC, &stored);
        }
        if let Some(stream) = &self.stream {
            // Durable already; the engine catches up from the store after a restart if this fails.
            if let Err(e) = stream.push_prepared(stored, ahead, lanes).await {
                tracing::warn!(error = %e, "continuous queries did not receive a batch");
            }
        }
    }
}

/// Adds a batch to `events_processed_total{source_module,event_type}`.
pub fn count_processed(metrics: &Metrics, batch: &RecordBatch) {
    let (Some(modules), Some(types)) = (
        batch.column_by_name(col::SOURCE_MODULE),
        batch.column_by_name(col::EVENT_TYPE),
    ) else {
        return;
    };
    let (modules, types) = (modules.as_string::<i32>(), types.as_string::<i32>());
    // Few distinct pairs per batch: count runs locally, touch the counters once per pair.
    let mut counts: Vec<(&str, &str, u64)> = Vec::new();
    for i in 0..modules.len() {
        let (m, t) = (modules.value(i), types.value(i));
        match counts.iter_mut().find(|(cm, ct, _)| *cm == m && *ct == t) {
            Some(entry) => entry.2 += 1,
            None => counts.push((m, t, 1)),
        }
    }
    for (m, t, n) in counts {
        metrics
            .events_processed_total
            .with_label_values(&[
                metrics.event_label(col::SOURCE_MODULE, m),
                metrics.event_label(col::EVENT_TYPE, t),
            ])
            .inc_by(n);
    }
}

/// Counts a decoded batch: `events_decoded_total{reader}` and its rejects.
pub fn count_decoded(metrics: &Metrics, decoded: &DecodedBatch) {
    count_readers(metrics, decoded.readers);
    count_rejected(metrics, &decoded.rejected);
}

/// Adds a batch's events to `events_decoded_total{reader}`.
pub fn count_readers(metrics: &Metrics, readers: ReaderCounts) {
    let r = readers;
    for (reader, n) in [("layout", r.layout), ("scan", r.scan), ("serde", r.serde)] {
        if n > 0 {
            metrics
                .events_decoded_total
                .with_label_values(&[reader])
                .inc_by(n as u64);
        }
    }
}

/// Adds rejected events to `events_errors_total{source_module,event_type,error_type}`.
pub fn count_rejected(metrics: &Metrics, rejected: &[Rejection]) {
    for r in rejected {
        let module = r
            .source_module
            .as_deref()
            .map_or("unknown", |m| metrics.event_label(col::SOURCE_MODULE, m));
        let event_type = r
            .event_type
            .as_deref()
            .map_or("unknown", |t| metrics.event_label(col::EVENT_TYPE, t));
        metrics
            .events_errors_total
            .with_label_values(&[module, event_type, r.error_type.as_str()])
            .inc();
    }
}
