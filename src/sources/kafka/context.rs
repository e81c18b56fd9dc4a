//! The consumer's librdkafka context: rebalance handling (finish and commit what was handed on
//! before giving a partition away) and statistics (lag, high watermark, committed offsets).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::config::StartOffset;
use super::offsets::OffsetTracker;
use crate::metrics::Metrics;
use crate::sinks::RollupSink;

/// How long a rebalance waits for in-flight batches of revoked partitions to become durable.
const REVOKE_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// State shared between the consumer thread, its context and the status API.
#[derive(Debug, Default)]
pub struct Shared {
    /// Per-partition progress.
    pub tracker: OffsetTracker,
    /// Rebalances seen (assignments and revocations).
    pub rebalances: AtomicU64,
    /// Partitions revoked since the consumer loop last looked; it drops their pending records.
    pub revoked: Mutex<Vec<(String, i32)>>,
    /// Set by the pipeline when the sink refused a batch as stale: the consumer drops what it
    /// holds and seeks every owned partition back to the sink's stored offsets.
    pub rewind: AtomicBool,
    /// Bumped by every rewind; batches of an older epoch are discarded.
    pub epoch: AtomicU64,
    /// Set when the source is stopping (ends waits for the database).
    pub stopping: AtomicBool,
}

/// Where partitions start when a sink stores the offsets (exactly-once mode).
pub struct StoredPositions {
    /// The sink holding the offsets.
    pub sink: Arc<dyn RollupSink>,
    /// Runtime to run its async calls on from the consumer thread.
    pub runtime: tokio::runtime::Handle,
    /// Where a partition the sink has never seen starts after a rewind.
    pub start: StartOffset,
}

impl StoredPositions {
    /// The sink's next offsets for `parts`; retries while the database is unreachable (the
    /// consumer waits: nothing can be written meanwhile anyway). `None` if stopping.
    pub fn load(&self, parts: &[(String, i32)], shared: &Shared) -> Option<Vec<Option<i64>>> {
        let mut delays = self.sink.retry_policy().delays();
        let mut attempt = 0u32;
        loop {
            match self.runtime.block_on(self.sink.load_positions(parts)) {
                Ok(stored) => return Some(stored),
                Err(e) => {
                    attempt += 1;
                    if shared.stopping.load(Ordering::Relaxed) {
                        return None;
                    }
                    if attempt == 1 || attempt.is_multiple_of(10) {
                        tracing::warn!(error = %e, attempt, "cannot read stored offsets; waiting for the database");
                    }
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    std::thread::sleep(delay.min(Duration::from_secs(5)));
                }
            }
        }
    }
}

/// The consumer context.
pub struct HubContext {
    pub shared: Arc<Shared>,
    pub metrics: Metrics,
    /// Set in exactly-once mode: assignments start at the sink's stored offsets.
    pub positions: Option<StoredPositions>,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// Commits `offsets` (topic, partition, next offset) synchronously; logs a failure.
pub fn commit_sync(consumer: &BaseConsumer<HubContext>, offsets: &[(String, i32, i64)], tracker: &OffsetTracker) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p, o) in offsets {
        if let Err(e) = tpl.add_partition_offset(t, *p, Offset::Offset(*o)) {
            tracing::warn!(error = %e, topic = %t, partition = p, "cannot build offset commit");
            return;
        }
    }
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => tracker.committed(offsets),
        Err(e) => {
            tracing::warn!(error = %e, "offset commit failed; records after the last commit may be consumed again")
        }
    }
}

impl ClientContext for HubContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 || !p.desired {
                    continue;
                }
                self.shared
                    .tracker
                    .observed(topic, *partition, p.hi_offset, p.consumer_lag, p.committed_offset);
                let labels = [topic.as_str(), &partition.to_string()];
                self.metrics
                    .kafka_high_watermark
                    .with_label_values(&labels)
                    .set(p.hi_offset);
                self.metrics
                    .kafka_consumer_lag
                    .with_label_values(&labels)
                    .set(p.consumer_lag);
                self.metrics
                    .kafka_committed_offset
                    .with_label_values(&labels)
                    .set(p.committed_offset);
            }
        }
    }
}

impl ConsumerContext for HubContext {
    /// The default rebalance, plus: in exactly-once mode, newly assigned partitions start at
    /// the offsets stored in the sink (Kafka's committed offsets are informational there).
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Some(positions) = &self.positions {
                    let parts = partitions(tpl);
                    if let Some(stored) = positions.load(&parts, &self.shared) {
                        for ((t, p), o) in parts.iter().zip(stored) {
                            if let Some(o) = o
                                && let Err(e) = tpl.set_partition_offset(t, *p, Offset::Offset(o))
                            {
                                tracing::warn!(error = %e, topic = %t, partition = p, "cannot set the start offset");
                            }
                        }
                        tracing::info!(partitions = ?parts, "assigned partitions start at the offsets stored in the sink");
                    }
                }
                self.pre_rebalance(consumer, &Rebalance::Assign(tpl));
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned {
                    tracing::error!(error = %e, "cannot apply the partition assignment");
                }
                self.post_rebalance(consumer, &Rebalance::Assign(tpl));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
                let revoked = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = revoked {
                    tracing::error!(error = %e, "cannot apply the partition revocation");
                }
                self.post_rebalance(consumer, &Rebalance::Revoke(tpl));
            }
            other => {
                self.pre_rebalance(consumer, &Rebalance::Error(KafkaError::Rebalance(other.into())));
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "cannot drop the assignment after a rebalance error");
                }
            }
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let parts = partitions(tpl);
                self.shared.rebalances.fetch_add(1, Ordering::Relaxed);
                self.metrics.kafka_rebalances_total.inc();
                if let Ok(mut revoked) = self.shared.revoked.lock() {
                    revoked.extend(parts.iter().cloned());
                }
                let drained = self.shared.tracker.wait_durable(&parts, REVOKE_DRAIN_TIMEOUT);
                let due: Vec<_> = self
                    .shared
                    .tracker
                    .commit_due()
                    .into_iter()
                    .filter(|(t, p, _)| parts.iter().any(|(rt, rp)| rt == t && rp == p))
                    .collect();
                commit_sync(consumer, &due, &self.shared.tracker);
                // A pause outlives the assignment in librdkafka: clear it before the partitions
                // go, or they stay paused when the group hands them back to this instance.
                if let Err(e) = consumer.resume(tpl) {
                    tracing::warn!(error = %e, "cannot resume revoked partitions");
                }
                self.shared.tracker.revoked(&parts);
                if let Some(positions) = &self.positions {
                    positions.sink.forget_positions(&parts);
                }
                tracing::info!(partitions = ?parts, drained, "rebalance: partitions revoked");
                if !drained {
                    tracing::warn!(
                        "in-flight records of revoked partitions were not durable in time; the new owner may consume them again"
                    );
                }
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts = partitions(tpl);
            self.shared.rebalances.fetch_add(1, Ordering::Relaxed);
            self.metrics.kafka_rebalances_total.inc();
            self.shared.tracker.assigned(&parts);
            tracing::info!(partitions = ?parts, "rebalance: partitions assigned");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(error = %e, offsets = ?partitions(offsets), "asynchronous offset commit failed");
        }
    }
}
