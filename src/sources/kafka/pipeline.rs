//! The store pipeline: decodes consumed batches (in parallel, results in order), dead-letters the
//! rejects, stores the events, then reports the offsets durable so the consumer commits them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::consume::RawBatch;
use super::context::Shared;
use super::dlq::DeadLetters;
use crate::event::{DecodedBatch, EventDecoder};
use crate::ingest::{Ingest, count_readers, count_rejected};
use crate::metrics::Metrics;
use crate::resilience::{RetryPolicy, retry};
use crate::sinks::{DeadLetter, RollupSink, SinkError, SourcePosition};

/// What the pipeline needs.
pub struct Pipeline {
    pub ingest: Arc<dyn Ingest>,
    pub dead_letters: DeadLetters,
    pub shared: Arc<Shared>,
    pub metrics: Metrics,
    pub decode_threads: usize,
    /// Exactly-once mode: rollups and offsets are written here in one transaction.
    pub sink: Option<Arc<dyn RollupSink>>,
}

/// What storing one batch came to.
enum Stored {
    /// Durable.
    Done,
    /// The sink refused it as stale; the consumer rewinds.
    Rewind,
    /// Shutdown interrupted a retry, or the sink gave up.
    Stop,
}

/// Decodes every record of `batch` as one event.
pub fn decode(batch: &RawBatch, ingest_time_us: i64) -> Result<DecodedBatch, crate::event::BodyError> {
    let mut decoder = EventDecoder::new(batch.records.len(), batch.buf.len(), ingest_time_us);
    for i in 0..batch.records.len() {
        decoder.push(batch.payload(i));
    }
    decoder.finish()
}

impl Pipeline {
    /// Runs until the consumer closes the queue. On shutdown with a failing store or broker it
    /// stops retrying and leaves the offsets uncommitted (the records are consumed again later).
    pub async fn run(self, rx: mpsc::Receiver<RawBatch>, shutdown: watch::Receiver<bool>) {
        let batches = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        let decoded = batches
            .map(|batch| {
                tokio::task::spawn_blocking(move || {
                    let out = decode(&batch, crate::event::time::now_micros());
                    (batch, out)
                })
            })
            .buffered(self.decode_threads);
        let mut decoded = std::pin::pin!(decoded);
        while let Some(joined) = decoded.next().await {
            let (batch, out) = match joined {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::error!(error = %e, "decoder task failed; stopping the kafka pipeline");
                    return;
                }
            };
            let out = match out {
                Ok(out) => out,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build an Arrow batch; stopping the kafka pipeline");
                    return;
                }
            };
            if batch.epoch != self.shared.epoch.load(Ordering::Acquire) || self.shared.rewind.load(Ordering::Acquire) {
                // Consumed before a rewind: the consumer reads these records again.
                continue;
            }
            match self.store(&batch, out, &shutdown).await {
                Stored::Done => {}
                Stored::Rewind => self.shared.rewind.store(true, Ordering::Release),
                Stored::Stop => {
                    tracing::warn!("the pipeline stopped while retrying; records stay uncommitted");
                    return;
                }
            }
        }
    }

    /// Dead-letters, stores, writes the sink, reports durable.
    async fn store(&self, batch: &RawBatch, out: DecodedBatch, shutdown: &watch::Receiver<bool>) -> Stored {
        count_readers(&self.metrics, out.readers);
        if !out.rejected.is_empty() {
            let sent = retry("dead-letter produce", RetryPolicy::UNTIL_SUCCESS, shutdown, || {
                self.dead_letters.send(batch, &out.rejected)
            })
            .await;
            if sent.is_err() {
                return Stored::Stop;
            }
            count_rejected(&self.metrics, &out.rejected);
            for r in &out.rejected {
                let topic = batch
                    .records
                    .get(r.index)
                    .and_then(|rec| batch.topics.get(rec.topic))
                    .map_or("", String::as_str);
                self.metrics
                    .kafka_dlq_records_total
                    .with_label_values(&[topic, r.error_type.as_str()])
                    .inc();
            }
        }
        if out.batch.num_rows() > 0 {
            let stored = retry("store", RetryPolicy::UNTIL_SUCCESS, shutdown, || async {
                self.ingest.ingest(out.batch.clone(), &[]).await
            })
            .await;
            if stored.is_err() {
                return Stored::Stop;
            }
        }
        if let Some(sink) = &self.sink {
            match write_sink(sink.as_ref(), batch, &out, shutdown).await {
                Ok(()) => {}
                Err(SinkError::Fenced(reason)) => {
                    tracing::warn!(%reason, "the sink refused a batch as stale; rewinding to its stored offsets");
                    return Stored::Rewind;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the rollup sink gave up; stopping the kafka pipeline");
                    return Stored::Stop;
                }
            }
        }
        for span in batch.progress() {
            let (topic, partition, next, n) = (span.topic, span.partition, span.next, span.count);
            let Some(name) = batch.topics.get(topic) else { continue };
            let dead = out
                .rejected
                .iter()
                .filter(|r| {
                    batch
                        .records
                        .get(r.index)
                        .is_some_and(|rec| rec.topic == topic && rec.partition == partition)
                })
                .count() as u64;
            self.shared.tracker.durable(name, partition, next, dead);
            self.metrics
                .kafka_records_consumed_total
                .with_label_values(&[name])
                .inc_by(n);
        }
        Stored::Done
    }
}

/// Writes `out` and the offsets `batch` covers to the sink, retrying failures with the sink's
/// backoff (forever when its attempts are 0) until shutdown.
async fn write_sink(
    sink: &dyn RollupSink,
    batch: &RawBatch,
    out: &DecodedBatch,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), SinkError> {
    let positions: Vec<SourcePosition> = batch
        .progress()
        .into_iter()
        .filter_map(|span| {
            batch.topics.get(span.topic).map(|topic| SourcePosition {
                topic: topic.clone(),
                partition: span.partition,
                first: span.first,
                next: span.next,
            })
        })
        .collect();
    let letters: Vec<DeadLetter> = out
        .rejected
        .iter()
        .filter_map(|r| {
            let rec = batch.records.get(r.index)?;
            Some(DeadLetter {
                topic: batch.topics.get(rec.topic).cloned(),
                partition: Some(rec.partition),
                offset: Some(rec.offset),
                error_type: r.error_type.as_str().to_string(),
                reason: r.reason.clone(),
                payload: batch.payload(r.index).to_vec(),
            })
        })
        .collect();
    retry(
        "rollup sink write (ingestion paused)",
        sink.retry_policy(),
        shutdown,
        || sink.write(&out.batch, &letters, &positions),
    )
    .await
}
