//! The `[kafka]` section: cluster-mode ingestion through a Kafka-protocol broker.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Kafka settings. Kafka is used only when `brokers` is set; otherwise the Hub runs standalone.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port]` (env `KAFKA_BROKERS`). Unset = standalone.
    pub brokers: Option<String>,
    /// Topic(s) of LLM telemetry events, comma-separated (env `KAFKA_TOPIC`).
    pub topic: String,
    /// Consumer group id; instances with the same id split the partitions (env `KAFKA_GROUP_ID`).
    pub group_id: String,
    /// Where a group without committed offsets starts: `earliest` or `latest`
    /// (env `KAFKA_START_OFFSET`).
    pub start_offset: StartOffset,
    /// Dead-letter topic for undecodable or invalid records; default `<topic>.dlq` per source
    /// topic (env `KAFKA_DLQ_TOPIC`; only with a single source topic).
    pub dlq_topic: Option<String>,
    /// Consume the topic(s) in this instance. `false` makes an HTTP-only front end that only
    /// produces.
    pub consume: bool,
    /// Produce events posted over HTTP (and demo traffic) to the topic instead of storing them
    /// directly, answering only after the broker acknowledged them.
    pub produce_http: bool,
    /// Create the topic(s) and dead-letter topic(s) at startup when they do not exist.
    pub create_topics: bool,
    /// Partitions of topics created by the Hub.
    pub topic_partitions: i32,
    /// Replication factor of topics created by the Hub (use 3 on a production cluster).
    pub topic_replication: i32,
    /// Consumer group session timeout in ms (env `KAFKA_SESSION_TIMEOUT_MS`); group joins take
    /// about half of it.
    pub session_timeout_ms: u32,
    /// Most records handed to the decoder as one batch.
    pub batch_max_records: usize,
    /// Most payload bytes in one batch.
    pub batch_max_bytes: usize,
    /// Longest wait to fill a batch, in ms; a partial batch is handed on after it.
    pub batch_max_wait_ms: u64,
    /// Batches queued between the consumer and the decoder/store; when full the consumer pauses
    /// its partitions, so memory stays bounded.
    pub queue_batches: usize,
    /// Batches decoded in parallel (results are stored in order).
    pub decode_threads: usize,
    /// How long a produce (HTTP ingest or dead-letter record) may wait for the broker's
    /// acknowledgement, in ms, before it fails (HTTP answers 503).
    pub produce_timeout_ms: u64,
    /// Least time between two offset commits, in ms (durable offsets are committed at most this
    /// often; a crash re-consumes at most this much more).
    pub commit_interval_ms: u64,
    /// Interval of librdkafka statistics (lag, high watermark, committed offset), in ms.
    pub statistics_interval_ms: u64,
    /// Extra librdkafka client properties (e.g. `security.protocol`, `sasl.mechanism`),
    /// applied to the consumer and the producers.
    pub client: BTreeMap<String, String>,
}

/// Start position of a new consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartOffset {
    /// From the oldest retained record.
    Earliest,
    /// Only records produced after the group first joined.
    Latest,
}

impl StartOffset {
    /// The librdkafka `auto.offset.reset` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
        }
    }
}

impl std::str::FromStr for StartOffset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            _ => Err("expected `earliest` or `latest`".into()),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: None,
            topic: "llm-analytics-events".into(),
            group_id: "llm-analytics-hub".into(),
            start_offset: StartOffset::Earliest,
            dlq_topic: None,
            consume: true,
            produce_http: true,
            create_topics: true,
            topic_partitions: 6,
            topic_replication: 1,
            session_timeout_ms: 10_000,
            batch_max_records: 10_000,
            batch_max_bytes: 8 * 1024 * 1024,
            batch_max_wait_ms: 100,
            queue_batches: 4,
            decode_threads: 2,
            produce_timeout_ms: 5_000,
            commit_interval_ms: 500,
            statistics_interval_ms: 1_000,
            client: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// Whether cluster-mode Kafka is configured.
    pub fn enabled(&self) -> bool {
        self.brokers.as_deref().is_some_and(|b| !b.trim().is_empty())
    }

    /// The source topics.
    pub fn topics(&self) -> Vec<String> {
        self.topic
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()
    }

    /// The dead-letter topic of `source_topic`.
    pub fn dlq_topic_for(&self, source_topic: &str) -> String {
        match &self.dlq_topic {
            Some(t) => t.clone(),
            None => format!("{source_topic}.dlq"),
        }
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        let topics = self.topics();
        if topics.is_empty() {
            return Err("kafka.topic must name at least one topic".into());
        }
        if self.dlq_topic.is_some() && topics.len() > 1 {
            return Err("kafka.dlq_topic can only be set with a single source topic".into());
        }
        if self.group_id.trim().is_empty() {
            return Err("kafka.group_id must not be empty".into());
        }
        if self.batch_max_records == 0 || self.queue_batches == 0 || self.decode_threads == 0 {
            return Err("kafka.batch_max_records, queue_batches and decode_threads must be > 0".into());
        }
        if self.topic_partitions < 1 {
            return Err("kafka.topic_partitions must be >= 1".into());
        }
        Ok(())
    }
}
