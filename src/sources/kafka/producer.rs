//! HTTP → Kafka: in cluster mode events posted to the API (and demo traffic) are validated,
//! then produced to the topic; the request is answered only after the broker acknowledged them.

use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::config::KafkaConfig;
use crate::event::schema::col;
use crate::ingest::{Ingest, IngestError};

/// Produces accepted events' original JSON, keyed by `correlation_id` (else `event_id`), so a
/// trace's events stay in one partition and in order.
pub struct KafkaIngest {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaIngest")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaIngest {
    /// An idempotent producer to the first configured topic.
    pub fn from_config(config: &KafkaConfig) -> Result<Self, String> {
        let producer: FutureProducer = super::client::producer(config)
            .create()
            .map_err(|e| format!("cannot create the Kafka producer: {e}"))?;
        let topic = config
            .topics()
            .into_iter()
            .next()
            .ok_or_else(|| "kafka.topic is empty".to_string())?;
        Ok(Self {
            producer,
            topic,
            timeout: Duration::from_millis(config.produce_timeout_ms),
        })
    }
}

fn keys(batch: &RecordBatch) -> Vec<Option<&str>> {
    let strings = |name| batch.column_by_name(name).and_then(|c| c.as_string_opt::<i32>());
    let (corr, ids) = (strings(col::CORRELATION_ID), strings(col::EVENT_ID));
    (0..batch.num_rows())
        .map(|i| {
            corr.filter(|c| c.is_valid(i))
                .map(|c| c.value(i))
                .or_else(|| ids.filter(|c| c.is_valid(i)).map(|c| c.value(i)))
        })
        .collect()
}

#[async_trait]
impl Ingest for KafkaIngest {
    async fn ingest(&self, batch: RecordBatch, raw: &[&[u8]]) -> Result<(), IngestError> {
        if raw.len() != batch.num_rows() {
            return Err(IngestError::Internal(format!(
                "kafka ingest needs the original JSON of every event ({} rows, {} raw)",
                batch.num_rows(),
                raw.len()
            )));
        }
        let keys = keys(&batch);
        let sends = raw.iter().zip(&keys).map(|(payload, key)| {
            let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.topic).payload(*payload);
            if let Some(k) = key {
                record = record.key(*k);
            }
            self.producer.send(record, self.timeout)
        });
        let results = join_all(sends).await;
        if let Some((e, _)) = results.into_iter().find_map(Result::err) {
            return Err(IngestError::Produce(e));
        }
        Ok(())
    }

    fn wants_raw(&self) -> bool {
        true
    }
}
