//! The store pipeline: decodes consumed batches (in parallel, results in order), dead-letters the
//! rejects, stores the events, then reports the offsets durable so the consumer commits them.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::consume::RawBatch;
use super::context::Shared;
use super::dlq::DeadLetters;
use crate::event::{DecodedBatch, EventDecoder};
use crate::ingest::{Ingest, count_rejected};
use crate::metrics::Metrics;

/// What the pipeline needs.
pub struct Pipeline {
    pub ingest: Arc<dyn Ingest>,
    pub dead_letters: DeadLetters,
    pub shared: Arc<Shared>,
    pub metrics: Metrics,
    pub decode_threads: usize,
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
            if !self.store(&batch, out, &shutdown).await {
                tracing::warn!("shutdown while the pipeline was retrying; records stay uncommitted");
                return;
            }
        }
    }

    /// Dead-letters, stores, reports durable. `false` if shutdown interrupted a retry loop.
    async fn store(&self, batch: &RawBatch, out: DecodedBatch, shutdown: &watch::Receiver<bool>) -> bool {
        if !out.rejected.is_empty() {
            let sent = retry("dead-letter produce", shutdown, || {
                self.dead_letters.send(batch, &out.rejected)
            })
            .await;
            if !sent {
                return false;
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
            let stored = retry("store", shutdown, || async {
                self.ingest
                    .ingest(out.batch.clone(), &[])
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
            if !stored {
                return false;
            }
        }
        for (topic, partition, next, n) in batch.progress() {
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
        true
    }
}

/// Retries `op` with exponential backoff (100 ms doubling to 5 s) until it succeeds, or until
/// shutdown (then `false`).
async fn retry<F, Fut>(what: &str, shutdown: &watch::Receiver<bool>, mut op: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut delay = Duration::from_millis(100);
    let mut shutdown = shutdown.clone();
    loop {
        match op().await {
            Ok(()) => return true,
            Err(e) => {
                if *shutdown.borrow() {
                    return false;
                }
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what} failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return false,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
