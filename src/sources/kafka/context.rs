//! The consumer's librdkafka context: rebalance handling (finish and commit what was handed on
//! before giving a partition away) and statistics (lag, high watermark, committed offsets).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::offsets::OffsetTracker;
use crate::metrics::Metrics;

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
}

/// The consumer context.
pub struct HubContext {
    pub shared: Arc<Shared>,
    pub metrics: Metrics,
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
                self.shared.tracker.revoked(&parts);
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
