//! Per-partition progress: what was handed on, what is durable, what is committed, and the
//! broker's high watermark. Shared by the consumer thread, the store pipeline and the status API.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Progress of one partition. Offsets are "next offset to read" (Kafka's commit convention).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionProgress {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Whether this instance owns the partition now.
    pub assigned: bool,
    /// Next offset after the last record handed to the pipeline (-1 = none yet).
    pub sent_next: i64,
    /// Next offset after the last record that is durable (stored or dead-lettered).
    pub durable_next: i64,
    /// Offset committed to the group (-1 = none).
    pub committed_offset: i64,
    /// Broker high watermark from fetch responses (-1 = unknown).
    pub high_watermark: i64,
    /// Records behind the high watermark, as librdkafka reports it (-1 = unknown).
    pub lag: i64,
    /// Records consumed from this partition by this instance.
    pub consumed: u64,
    /// Records of this partition sent to the dead-letter topic.
    pub dead_lettered: u64,
}

impl PartitionProgress {
    fn new(topic: &str, partition: i32) -> Self {
        Self {
            topic: topic.to_string(),
            partition,
            assigned: false,
            sent_next: -1,
            durable_next: -1,
            committed_offset: -1,
            high_watermark: -1,
            lag: -1,
            consumed: 0,
            dead_lettered: 0,
        }
    }

    /// Offsets durable but not committed yet.
    fn commit_due(&self) -> Option<i64> {
        (self.assigned && self.durable_next >= 0 && self.durable_next > self.committed_offset)
            .then_some(self.durable_next)
    }
}

type Key = (String, i32);

/// The shared table of [`PartitionProgress`].
#[derive(Debug, Default)]
pub struct OffsetTracker {
    parts: Mutex<BTreeMap<Key, PartitionProgress>>,
    durable: Condvar,
}

impl OffsetTracker {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Key, PartitionProgress>> {
        // A panic while holding the lock leaves plain counters behind; keep serving them.
        self.parts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entry<'a>(
        parts: &'a mut BTreeMap<Key, PartitionProgress>,
        topic: &str,
        partition: i32,
    ) -> &'a mut PartitionProgress {
        parts
            .entry((topic.to_string(), partition))
            .or_insert_with(|| PartitionProgress::new(topic, partition))
    }

    /// Partitions assigned to this instance by a rebalance.
    pub fn assigned(&self, partitions: &[(String, i32)]) {
        let mut parts = self.lock();
        for (t, p) in partitions {
            let e = Self::entry(&mut parts, t, *p);
            e.assigned = true;
            e.sent_next = -1;
            e.durable_next = -1;
        }
    }

    /// Partitions taken away by a rebalance.
    pub fn revoked(&self, partitions: &[(String, i32)]) {
        let mut parts = self.lock();
        for (t, p) in partitions {
            Self::entry(&mut parts, t, *p).assigned = false;
        }
    }

    /// Records up to `next - 1` of a partition were handed to the pipeline.
    pub fn sent(&self, topic: &str, partition: i32, next: i64, records: u64) {
        let mut parts = self.lock();
        let e = Self::entry(&mut parts, topic, partition);
        e.sent_next = e.sent_next.max(next);
        e.consumed += records;
    }

    /// Records up to `next - 1` of a partition are durable.
    pub fn durable(&self, topic: &str, partition: i32, next: i64, dead_lettered: u64) {
        let mut parts = self.lock();
        let e = Self::entry(&mut parts, topic, partition);
        e.durable_next = e.durable_next.max(next);
        e.dead_lettered += dead_lettered;
        drop(parts);
        self.durable.notify_all();
    }

    /// Offsets to commit now: `(topic, partition, next offset)`.
    pub fn commit_due(&self) -> Vec<(String, i32, i64)> {
        self.lock()
            .values()
            .filter_map(|p| p.commit_due().map(|o| (p.topic.clone(), p.partition, o)))
            .collect()
    }

    /// A commit of these offsets succeeded.
    pub fn committed(&self, offsets: &[(String, i32, i64)]) {
        let mut parts = self.lock();
        for (t, p, o) in offsets {
            let e = Self::entry(&mut parts, t, *p);
            e.committed_offset = e.committed_offset.max(*o);
        }
    }

    /// Broker-side numbers from librdkafka statistics.
    pub fn observed(&self, topic: &str, partition: i32, high_watermark: i64, lag: i64, committed: i64) {
        let mut parts = self.lock();
        let e = Self::entry(&mut parts, topic, partition);
        e.high_watermark = high_watermark;
        e.lag = lag;
        if committed >= 0 {
            e.committed_offset = e.committed_offset.max(committed);
        }
    }

    /// Waits until everything handed on for `partitions` is durable, or `timeout` passes.
    /// Returns whether it all became durable.
    pub fn wait_durable(&self, partitions: &[(String, i32)], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut parts = self.lock();
        loop {
            let pending = partitions.iter().any(|(t, p)| {
                parts
                    .get(&(t.clone(), *p))
                    .is_some_and(|e| e.sent_next > e.durable_next)
            });
            if !pending {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            parts = match self.durable.wait_timeout(parts, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Every partition this instance has seen, sorted by topic and partition.
    pub fn snapshot(&self) -> Vec<PartitionProgress> {
        self.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_what_is_durable_and_assigned() {
        let t = OffsetTracker::default();
        let parts = vec![("a".to_string(), 0), ("a".to_string(), 1)];
        t.assigned(&parts);
        t.sent("a", 0, 100, 100);
        t.sent("a", 1, 50, 50);
        assert!(t.commit_due().is_empty(), "nothing durable yet");
        t.durable("a", 0, 60, 1);
        assert_eq!(t.commit_due(), vec![("a".to_string(), 0, 60)]);
        t.committed(&[("a".to_string(), 0, 60)]);
        assert!(t.commit_due().is_empty());
        assert!(
            !t.wait_durable(&parts, Duration::from_millis(10)),
            "a/0 and a/1 still pending"
        );
        t.durable("a", 0, 100, 0);
        t.durable("a", 1, 50, 0);
        assert!(t.wait_durable(&parts, Duration::from_millis(10)));
        t.revoked(&parts[..1]);
        assert_eq!(
            t.commit_due(),
            vec![("a".to_string(), 1, 50)],
            "revoked partitions are not committed"
        );
        let snap = t.snapshot();
        assert_eq!(snap[0].consumed, 100);
        assert_eq!(snap[0].dead_lettered, 1);
    }
}
