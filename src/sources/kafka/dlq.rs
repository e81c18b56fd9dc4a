//! Dead-letter queue: records that cannot become events are produced, byte for byte, to a
//! dead-letter topic with headers saying why and where they came from.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::consume::RawBatch;
use crate::event::Rejection;

/// Header names on dead-lettered records.
pub mod header {
    /// Why the record was rejected (human-readable, names the field).
    pub const REASON: &str = "hub.dlq.reason";
    /// Machine-readable rejection kind (`malformed_json`, `missing_field`, ...).
    pub const ERROR_TYPE: &str = "hub.dlq.error_type";
    /// Topic the record was consumed from.
    pub const SOURCE_TOPIC: &str = "hub.dlq.source_topic";
    /// Partition it was consumed from.
    pub const SOURCE_PARTITION: &str = "hub.dlq.source_partition";
    /// Its offset there.
    pub const SOURCE_OFFSET: &str = "hub.dlq.source_offset";
}

/// Produces rejected records to their dead-letter topic.
pub struct DeadLetters {
    producer: FutureProducer,
    /// Dead-letter topic per source topic index.
    topics: Vec<String>,
    timeout: Duration,
}

impl DeadLetters {
    /// `topics[i]` is the dead-letter topic of source topic `i`.
    pub fn new(producer: FutureProducer, topics: Vec<String>, timeout: Duration) -> Self {
        Self {
            producer,
            topics,
            timeout,
        }
    }

    /// Produces every rejected record of `batch` and waits for all acknowledgements.
    pub async fn send(&self, batch: &RawBatch, rejected: &[Rejection]) -> Result<(), DeadLetterError> {
        let sends = rejected.iter().filter_map(|r| {
            let record = batch.records.get(r.index)?;
            let topic = self.topics.get(record.topic)?;
            let source_topic = batch.topics.get(record.topic).map_or("", String::as_str);
            let partition = record.partition.to_string();
            let offset = record.offset.to_string();
            let headers = record
                .headers
                .clone()
                .unwrap_or_default()
                .insert(Header {
                    key: header::REASON,
                    value: Some(r.reason.as_str()),
                })
                .insert(Header {
                    key: header::ERROR_TYPE,
                    value: Some(r.error_type.as_str()),
                })
                .insert(Header {
                    key: header::SOURCE_TOPIC,
                    value: Some(source_topic),
                })
                .insert(Header {
                    key: header::SOURCE_PARTITION,
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: header::SOURCE_OFFSET,
                    value: Some(offset.as_str()),
                });
            Some(self.send_one(topic, batch.payload(r.index), batch.key(r.index), headers))
        });
        // Each send times out on its own (message.timeout.ms); this bound keeps a broker that
        // never answers from holding the pipeline forever.
        let bound = self.timeout.saturating_mul(3);
        let results = tokio::time::timeout(bound, join_all(sends))
            .await
            .map_err(|_| DeadLetterError::Unacknowledged { secs: bound.as_secs() })?;
        match results.into_iter().find_map(Result::err) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn send_one(
        &self,
        topic: &str,
        payload: &[u8],
        key: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<(), DeadLetterError> {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(payload).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        self.producer
            .send(record, self.timeout)
            .await
            .map(|_| ())
            .map_err(|(source, _)| DeadLetterError::Produce {
                topic: topic.to_string(),
                source,
            })
    }
}

/// A dead letter the broker did not take; the batch's offsets stay where they are.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The broker refused or failed the produce.
    #[error("dead-letter produce to {topic} failed")]
    Produce {
        /// The dead-letter topic.
        topic: String,
        /// The producer's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// No acknowledgement within three produce timeouts.
    #[error("dead-letter produce unacknowledged after {secs} s")]
    Unacknowledged {
        /// The bound, seconds.
        secs: u64,
    },
}

impl crate::error::Classify for DeadLetterError {
    fn class(&self) -> crate::error::ErrorClass {
        // The broker's trouble, not the records': retrying (or a restart) can deliver them.
        crate::error::ErrorClass::External
    }
}
