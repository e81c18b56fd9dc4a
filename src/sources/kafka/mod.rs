//! Kafka source (cluster mode): a consumer-group member that decodes records into Arrow
//! batches, stores them durably, dead-letters what is invalid and only then commits offsets.
//!
//! With a rollup sink (PostgreSQL), delivery into the sink is exactly-once: each batch's rollup
//! updates and the offsets it covers are written in one transaction, and every partition
//! assignment starts at the offsets stored there (see `crate::sinks`).
//!
//! Delivery guarantee into the local store: with the rollup sink exactly-once — each batch is
//! stored held (durable, invisible), claimed in the sink's transaction with its offsets, then
//! published; a replay keeps only claimed batches (`crate::storage::ReplayFilter`). Without a
//! sink at-least-once: offsets are committed only after the records they cover are durable
//! (stored, or acknowledged on the dead-letter topic). A clean shutdown or rebalance first
//! drains in-flight batches and commits synchronously, so nothing is consumed twice then; after
//! a crash (kill -9) the records stored after the last commit (at most the in-flight batches,
//! about `queue_batches` × `batch_max_records`) are consumed again and stored twice.

pub mod admin;
pub mod bench;
mod client;
pub mod config;
mod consume;
mod context;
pub mod dlq;
mod offsets;
mod pipeline;
pub mod producer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

pub use config::{KafkaConfig, StartOffset};
pub use offsets::PartitionProgress;

use self::consume::BatchLimits;
use self::context::{HubContext, Shared, StoredPositions};
use self::dlq::DeadLetters;
use self::pipeline::Pipeline;
use super::{Source, SourceError, SourceStatus};
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::sinks::RollupSink;

/// The Kafka consumer source.
pub struct KafkaSource {
    config: KafkaConfig,
    consumer: BaseConsumer<HubContext>,
    dead_letters: DeadLetters,
    status: Arc<KafkaStatus>,
    ingest: Arc<dyn Ingest>,
    sink: Option<Arc<dyn RollupSink>>,
    metrics: Metrics,
}

/// Live state for `/api/v1/ingest/status` and `/ready`.
#[derive(Debug)]
pub struct KafkaStatus {
    shared: Arc<Shared>,
    brokers: String,
    topics: Vec<String>,
    dlq_topics: Vec<String>,
    group_id: String,
    running: AtomicBool,
}

impl KafkaStatus {
    /// Records handed to the pipeline so far.
    pub fn consumed(&self) -> u64 {
        self.shared.tracker.snapshot().iter().map(|p| p.consumed).sum()
    }
}

impl SourceStatus for KafkaStatus {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn status(&self) -> serde_json::Value {
        let partitions = self.shared.tracker.snapshot();
        let assigned = partitions.iter().filter(|p| p.assigned).count();
        let lag: i64 = partitions
            .iter()
            .filter(|p| p.assigned && p.lag > 0)
            .map(|p| p.lag)
            .sum();
        json!({
            "source": "kafka",
            "running": self.running.load(Ordering::Relaxed),
            "brokers": self.brokers,
            "topics": self.topics,
            "dead_letter_topics": self.dlq_topics,
            "group_id": self.group_id,
            "assigned_partitions": assigned,
            "rebalances": self.shared.rebalances.load(Ordering::Relaxed),
            "consumed": partitions.iter().map(|p| p.consumed).sum::<u64>(),
            "dead_lettered": partitions.iter().map(|p| p.dead_lettered).sum::<u64>(),
            "lag": lag,
            "partitions": partitions,
        })
    }

    fn ready(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }
}

impl KafkaSource {
    /// Connects the consumer (subscribed, not yet polling) and the dead-letter producer.
    /// With `sink`, partitions start at the offsets stored in the sink and every batch is
    /// written to it together with its offsets (exactly-once).
    pub fn new(
        config: &KafkaConfig,
        ingest: Arc<dyn Ingest>,
        sink: Option<Arc<dyn RollupSink>>,
        metrics: Metrics,
    ) -> Result<Self, SourceError> {
        let shared = Arc::new(Shared::default());
        let positions = match &sink {
            Some(sink) => Some(StoredPositions {
                sink: Arc::clone(sink),
                runtime: tokio::runtime::Handle::try_current()
                    .map_err(|e| SourceError::Config(format!("the kafka source needs a tokio runtime: {e}")))?,
                start: config.start_offset,
            }),
            None => None,
        };
        let context = HubContext {
            shared: Arc::clone(&shared),
            metrics: metrics.clone(),
            positions,
        };
        let mut consumer_config = client::consumer(config);
        let max_records = config.batch_max_records.max(1);
        consumer_config.set("queued.min.messages", (max_records * 2).max(10_000).to_string());
        let consumer: BaseConsumer<HubContext> = consumer_config
            .create_with_context(context)
            .map_err(|e| SourceError::Config(format!("cannot create the Kafka consumer: {e}")))?;
        let topics = config.topics();
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topic_refs)
            .map_err(|e| SourceError::Config(format!("cannot subscribe to {topics:?}: {e}")))?;
        // Not idempotent: a dead-letter copy may be produced twice after a retry (consumers of
        // the DLQ see source coordinates in the headers; the Postgres sink deduplicates on
        // them), and idempotent producers of several instances stalled on the Tansu broker.
        let producer: FutureProducer = client::producer(config)
            .set("enable.idempotence", "false")
            .create()
            .map_err(|e| SourceError::Config(format!("cannot create the dead-letter producer: {e}")))?;
        let dlq_topics: Vec<String> = topics.iter().map(|t| config.dlq_topic_for(t)).collect();
        let timeout = Duration::from_millis(config.produce_timeout_ms);
        let status = Arc::new(KafkaStatus {
            shared,
            brokers: config.brokers.clone().unwrap_or_default(),
            topics,
            dlq_topics: dlq_topics.clone(),
            group_id: config.group_id.clone(),
            running: AtomicBool::new(false),
        });
        Ok(Self {
            config: config.clone(),
            consumer,
            dead_letters: DeadLetters::new(producer, dlq_topics, timeout),
            status,
            ingest,
            sink,
            metrics,
        })
    }

    /// Its live status.
    pub fn status(&self) -> Arc<KafkaStatus> {
        Arc::clone(&self.status)
    }
}

#[async_trait]
impl Source for KafkaSource {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn status(&self) -> Arc<dyn SourceStatus> {
        self.status.clone()
    }

    async fn run(self: Box<Self>, mut shutdown: watch::Receiver<bool>) -> Result<(), SourceError> {
        let Self {
            config,
            consumer,
            dead_letters,
            status,
            ingest,
            sink,
            metrics,
        } = *self;
        let (tx, rx) = mpsc::channel(config.queue_batches);
        let stop = Arc::new(AtomicBool::new(false));
        let limits = BatchLimits {
            max_records: config.batch_max_records,
            max_bytes: config.batch_max_bytes,
            max_wait: Duration::from_millis(config.batch_max_wait_ms),
            commit_interval: Duration::from_millis(config.commit_interval_ms),
        };
        let topics: Arc<[String]> = status.topics.clone().into();
        let (done_tx, done_rx) = oneshot::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            let shared = Arc::clone(&status.shared);
            let paused = metrics.kafka_consumer_paused.clone();
            std::thread::Builder::new()
                .name("kafka-consumer".into())
                .spawn(move || {
                    consume::run(&consumer, topics, limits, &tx, &shared, &paused, &stop);
                    drop(tx);
                    drop(consumer);
                    let _ = done_tx.send(());
                })
                .map_err(|e| SourceError::Runtime {
                    context: "cannot start the consumer thread".into(),
                    source: Box::new(e),
                })?
        };
        status.running.store(true, Ordering::Relaxed);
        tracing::info!(brokers = %status.brokers, topics = ?status.topics, group = %status.group_id, "kafka source started");
        let pipeline = Pipeline {
            ingest,
            dead_letters,
            shared: Arc::clone(&status.shared),
            metrics,
            decode_threads: config.decode_threads,
            sink,
        };
        let mut pipeline_task = tokio::spawn(pipeline.run(rx, shutdown.clone()));
        let pipeline_failed = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => false,
            _ = &mut pipeline_task => true,
        };
        stop.store(true, Ordering::Relaxed);
        status.shared.stopping.store(true, Ordering::Relaxed);
        status.running.store(false, Ordering::Relaxed);
        let _ = done_rx.await;
        if !pipeline_failed {
            let _ = pipeline_task.await;
        }
        drop(thread);
        if pipeline_failed {
            return Err(SourceError::Halted(
                "the kafka pipeline stopped; consumption halted (see the log)".into(),
            ));
        }
        Ok(())
    }
}
