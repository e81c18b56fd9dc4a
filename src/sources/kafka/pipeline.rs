//! The store pipeline: decodes consumed batches (in parallel, results in order), dead-letters the
//! rejects, stores the events, then reports the offsets durable so the consumer commits them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::TimestampMicrosecondType;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::consume::RawBatch;
use super::context::Shared;
use super::dlq::DeadLetters;
use super::offsets::PartitionProgress;
use crate::event::schema::col;
use crate::event::{DecodedBatch, EventDecoder};
use crate::ingest::{Held, Ingest, count_readers, count_rejected};
use crate::metrics::Metrics;
use crate::resilience::{RetryPolicy, retry};
use crate::sinks::{DeadLetter, EventClaim, RollupSink, SinkError, SourcePosition};
use crate::stream::lanes::LaneMark;

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

/// How often the claims of flushed WAL segments are deleted.
const FORGET_CLAIMS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

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
        let mut claims_forgotten = std::time::Instant::now();
        while let Some(joined) = decoded.next().await {
            if claims_forgotten.elapsed() >= FORGET_CLAIMS_EVERY {
                claims_forgotten = std::time::Instant::now();
                self.forget_claims().await;
            }
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

    /// Deletes the claims of WAL segments the store has flushed (no replay reads them again).
    async fn forget_claims(&self) {
        let (Some(sink), Some(store_id), Some(oldest)) =
            (&self.sink, self.ingest.claims_store(), self.ingest.oldest_wal_seq())
        else {
            return;
        };
        match sink.forget_claims(store_id, oldest).await {
            Ok(n) => tracing::debug!(deleted = n, "claims of flushed WAL segments deleted"),
            Err(e) => tracing::warn!(error = %e, "cannot delete old claims; will retry"),
        }
    }

    /// Decides a held batch whose sink write did not succeed: a write whose answer was lost may
    /// have committed, so the claim says whether it counts. Never left held (its segment could
    /// not be flushed); when the database cannot tell, it is dropped from memory, and a restart
    /// replays it if it was claimed after all.
    async fn settle(&self, sink: &dyn RollupSink, held: Held, claim: &EventClaim, shutdown: &watch::Receiver<bool>) {
        let claimed = retry("checking a batch's claim", sink.retry_policy(), shutdown, || {
            sink.is_claimed(claim)
        })
        .await;
        match claimed {
            Ok(true) => self.ingest.publish(held).await,
            Ok(false) => self.ingest.discard(held),
            Err(e) => {
                tracing::error!(error = %e, "cannot tell whether a batch was claimed; dropped from memory (a restart replays it if it was)");
                self.ingest.discard(held);
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
        // With a sink and a store that can hold batches, the events are exactly-once too: the
        // batch is made durable but held out of queries, claimed in the sink's transaction
        // (with its offsets), and only then published. A crash before the claim leaves it
        // unclaimed, so the store drops it at replay and the records are consumed again.
        let claims_store = self.sink.as_ref().and(self.ingest.claims_store());
        let mut held = None;
        if out.batch.num_rows() > 0 {
            let lanes = lane_marks(batch, &out, &self.shared.tracker.snapshot());
            let stored = match claims_store {
                Some(_) => {
                    let tag = uuid::Uuid::new_v4().as_u64_pair().0;
                    retry("store", RetryPolicy::UNTIL_SUCCESS, shutdown, || async {
                        self.ingest.hold(out.batch.clone(), tag, lanes.clone()).await
                    })
                    .await
                    .map(|h| held = Some(h))
                }
                None => {
                    retry("store", RetryPolicy::UNTIL_SUCCESS, shutdown, || async {
                        self.ingest.ingest_from_lanes(out.batch.clone(), lanes.clone()).await
                    })
                    .await
                }
            };
            if stored.is_err() {
                return Stored::Stop;
            }
        }
        if let Some(sink) = &self.sink {
            let claim = match (claims_store, &held) {
                (Some(store_id), Some(h)) => Some(EventClaim {
                    store_id: store_id.to_string(),
                    tag: h.at.tag,
                    wal_seq: h.at.seq,
                }),
                _ => None,
            };
            match write_sink(sink.as_ref(), batch, &out, shutdown, claim.as_ref()).await {
                Ok(()) => {}
                Err(SinkError::Fenced(reason)) => {
                    tracing::warn!(%reason, "the sink refused a batch as stale; rewinding to its stored offsets");
                    if let (Some(h), Some(claim)) = (held.take(), &claim) {
                        self.settle(sink.as_ref(), h, claim, shutdown).await;
                    }
                    return Stored::Rewind;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the rollup sink gave up; stopping the kafka pipeline");
                    if let (Some(h), Some(claim)) = (held.take(), &claim) {
                        self.settle(sink.as_ref(), h, claim, shutdown).await;
                    }
                    return Stored::Stop;
                }
            }
            if let Some(h) = held {
                self.ingest.publish(h).await;
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

/// How far each partition got in `batch` (the largest event time of its stored events), and
/// every other partition assigned to this instance announced: the continuous queries' event
/// time then advances with the slowest partition ([`crate::stream::lanes`]).
fn lane_marks(batch: &RawBatch, out: &DecodedBatch, partitions: &[PartitionProgress]) -> Vec<LaneMark> {
    let lane = |topic: &str, partition: i32| -> Arc<str> { format!("{topic}/{partition}").into() };
    let mut max: HashMap<(usize, i32), i64> = HashMap::new();
    let times = out
        .batch
        .column_by_name(col::TIMESTAMP)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>());
    if let Some(times) = times {
        // Accepted events are the records in order, less the rejected ones (sorted by index).
        let mut rejected = out.rejected.iter().map(|r| r.index).peekable();
        let mut row = 0;
        for (i, record) in batch.records.iter().enumerate() {
            if rejected.peek() == Some(&i) {
                rejected.next();
                continue;
            }
            if row >= times.len() {
                break;
            }
            if times.is_valid(row) {
                let t = times.value(row);
                max.entry((record.topic, record.partition))
                    .and_modify(|m| *m = (*m).max(t))
                    .or_insert(t);
            }
            row += 1;
        }
    }
    let mut marks: Vec<LaneMark> = max
        .into_iter()
        .filter_map(|((topic, partition), t)| {
            Some(LaneMark {
                lane: lane(batch.topics.get(topic)?, partition),
                max_event_us: Some(t),
            })
        })
        .collect();
    for p in partitions.iter().filter(|p| p.assigned) {
        let name = lane(&p.topic, p.partition);
        if !marks.iter().any(|m| m.lane == name) {
            marks.push(LaneMark {
                lane: name,
                max_event_us: None,
            });
        }
    }
    marks
}

/// Writes `out` and the offsets `batch` covers to the sink, retrying failures with the sink's
/// backoff (forever when its attempts are 0) until shutdown.
async fn write_sink(
    sink: &dyn RollupSink,
    batch: &RawBatch,
    out: &DecodedBatch,
    shutdown: &watch::Receiver<bool>,
    claim: Option<&EventClaim>,
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
        || sink.write(&letters, &positions, claim),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u128, ts: &str) -> Vec<u8> {
        format!(
            r#"{{"event_id":"{}","timestamp":"{ts}","source_module":"m","event_type":"telemetry","payload":{{}}}}"#,
            uuid::Uuid::from_u128(id)
        )
        .into_bytes()
    }

    fn us(ts: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(ts).expect("ts").timestamp_micros()
    }

    #[test]
    fn each_partition_gets_the_largest_event_time_of_its_stored_events_and_the_rest_are_announced() {
        let (a, b, c) = (
            event(1, "2026-01-01T00:10:00Z"),
            event(2, "2026-01-01T00:01:00Z"),
            event(3, "2026-01-01T00:09:00Z"),
        );
        // Rejected records shift the rows: partition 1's time must come from its own event.
        let batch = RawBatch::of(
            &["t"],
            &[(0, 0, &a), (0, 1, b"not json"), (0, 1, &b), (0, 2, b"{}"), (0, 0, &c)],
        );
        let out = decode(&batch, 0).expect("decode");
        assert_eq!(out.rejected.len(), 2);
        let partitions: Vec<PartitionProgress> = (0..4)
            .map(|p| PartitionProgress {
                topic: "t".into(),
                partition: p,
                assigned: p != 3,
                ..PartitionProgress::default()
            })
            .collect();
        let mut marks = lane_marks(&batch, &out, &partitions);
        marks.sort_by(|x, y| x.lane.cmp(&y.lane));
        let lane = |name: &str, t: Option<i64>| LaneMark {
            lane: name.into(),
            max_event_us: t,
        };
        assert_eq!(
            marks,
            vec![
                lane("t/0", Some(us("2026-01-01T00:10:00Z"))),
                lane("t/1", Some(us("2026-01-01T00:01:00Z"))),
                // Only rejects: announced, not advanced. Partition 3 is not assigned here.
                lane("t/2", None),
            ]
        );
    }
}
