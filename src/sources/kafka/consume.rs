//! The consumer thread: polls librdkafka in batches, copies records into one buffer per batch,
//! hands batches to the store pipeline through a bounded queue (pausing its partitions while the
//! queue is full), and commits offsets once the pipeline reports them durable.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::context::{HubContext, Shared, commit_sync};

/// How long shutdown waits for queued batches to become durable before the final commit.
const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// One consumed record; its payload and key live in the batch buffer.
#[derive(Debug)]
pub struct Record {
    /// Index into [`RawBatch::topics`].
    pub topic: usize,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Payload bytes in [`RawBatch::buf`].
    pub payload: Range<usize>,
    /// Key bytes in [`RawBatch::buf`], if any.
    pub key: Option<Range<usize>>,
    /// Original headers (kept for the dead-letter copy).
    pub headers: Option<OwnedHeaders>,
}

/// Records consumed together.
#[derive(Debug)]
pub struct RawBatch {
    /// Source topic names.
    pub topics: Arc<[String]>,
    /// Payloads and keys, back to back.
    pub buf: Vec<u8>,
    /// The records in consumption order.
    pub records: Vec<Record>,
    /// Rewind epoch the batch was consumed in ([`Shared::epoch`]).
    pub epoch: u64,
    started: Instant,
}

/// The records of one partition in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSpan {
    /// Topic index (into the batch's topics).
    pub topic: usize,
    /// Partition.
    pub partition: i32,
    /// The lowest offset.
    pub first: i64,
    /// The offset after the highest.
    pub next: i64,
    /// Records.
    pub count: u64,
}

impl RawBatch {
    fn new(topics: Arc<[String]>, epoch: u64) -> Self {
        Self {
            topics,
            buf: Vec::new(),
            records: Vec::new(),
            epoch,
            started: Instant::now(),
        }
    }

    /// A batch of `(topic index, partition, payload)` records at offsets 0, 1, … (tests).
    #[cfg(test)]
    pub(super) fn of(topics: &[&str], records: &[(usize, i32, &[u8])]) -> Self {
        let mut batch = Self::new(topics.iter().map(|t| t.to_string()).collect(), 0);
        for (offset, (topic, partition, payload)) in records.iter().enumerate() {
            let start = batch.buf.len();
            batch.buf.extend_from_slice(payload);
            batch.records.push(Record {
                topic: *topic,
                partition: *partition,
                offset: offset as i64,
                payload: start..batch.buf.len(),
                key: None,
                headers: None,
            });
        }
        batch
    }

    /// The payload of record `i`.
    pub fn payload(&self, i: usize) -> &[u8] {
        self.records.get(i).map_or(&[], |r| &self.buf[r.payload.clone()])
    }

    /// The key of record `i`.
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        self.records.get(i).and_then(|r| r.key.clone()).map(|k| &self.buf[k])
    }

    /// Per (topic index, partition): the offsets the batch covers and how many records.
    pub fn progress(&self) -> Vec<PartitionSpan> {
        let mut out: Vec<PartitionSpan> = Vec::new();
        for r in &self.records {
            match out
                .iter_mut()
                .find(|s| s.topic == r.topic && s.partition == r.partition)
            {
                Some(s) => {
                    s.first = s.first.min(r.offset);
                    s.next = s.next.max(r.offset + 1);
                    s.count += 1;
                }
                None => out.push(PartitionSpan {
                    topic: r.topic,
                    partition: r.partition,
                    first: r.offset,
                    next: r.offset + 1,
                    count: 1,
                }),
            }
        }
        out
    }

    fn push<M: Message>(&mut self, m: &M) {
        let topic = self.topics.iter().position(|t| t == m.topic()).unwrap_or_default();
        let payload = m.payload().unwrap_or_default();
        let start = self.buf.len();
        self.buf.extend_from_slice(payload);
        let payload = start..self.buf.len();
        let key = m.key().map(|k| {
            let start = self.buf.len();
            self.buf.extend_from_slice(k);
            start..self.buf.len()
        });
        let headers = m.headers().filter(|h| h.count() > 0).map(|h| {
            let mut owned = OwnedHeaders::new_with_capacity(h.count());
            for header in h.iter() {
                owned = owned.insert(header);
            }
            owned
        });
        if self.records.is_empty() {
            self.started = Instant::now();
        }
        self.records.push(Record {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            payload,
            key,
            headers,
        });
    }

    fn drop_partitions(&mut self, revoked: &[(String, i32)]) {
        let topics = Arc::clone(&self.topics);
        self.records.retain(|r| {
            !revoked
                .iter()
                .any(|(t, p)| *p == r.partition && topics.get(r.topic).is_some_and(|n| n == t))
        });
    }
}

/// Limits of one batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
    /// Least time between asynchronous offset commits.
    pub commit_interval: Duration,
}

/// Runs the poll loop until `stop` is set or the pipeline goes away.
pub fn run(
    consumer: &BaseConsumer<HubContext>,
    topics: Arc<[String]>,
    limits: BatchLimits,
    tx: &mpsc::Sender<RawBatch>,
    shared: &Shared,
    paused_gauge: &prometheus::IntGauge,
    stop: &AtomicBool,
) {
    let tracker = &shared.tracker;
    let mut current = RawBatch::new(Arc::clone(&topics), shared.epoch.load(Ordering::Acquire));
    let mut pending: Option<RawBatch> = None;
    let mut paused: Option<TopicPartitionList> = None;
    let mut last_poll_error: Option<Instant> = None;
    let mut last_commit = Instant::now();
    let mut closed = false;
    while !stop.load(Ordering::Relaxed) {
        if shared.rewind.load(Ordering::Acquire) {
            pending = None;
            current = rewind(consumer, shared, &topics);
            if let Some(tpl) = paused.take() {
                if let Err(e) = consumer.resume(&tpl) {
                    tracing::warn!(error = %e, "cannot resume partitions");
                }
                paused_gauge.set(0);
            }
            continue;
        }
        // Hand the pending batch on; while the queue is full keep partitions paused. Its records
        // count as sent only once the pipeline has them: a revoke waits for what the pipeline
        // holds, never for a batch still here (that one drops the revoked partitions instead).
        if let Some(batch) = pending.take() {
            let spans = batch.progress();
            let names = Arc::clone(&batch.topics);
            match tx.try_send(batch) {
                Ok(()) => mark_sent(shared, &names, &spans),
                Err(mpsc::error::TrySendError::Full(batch)) => {
                    if paused.is_none() {
                        paused = pause(consumer, paused_gauge);
                    }
                    pending = Some(batch);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    closed = true;
                    break;
                }
            }
            if pending.is_none()
                && let Some(tpl) = paused.take()
            {
                if let Err(e) = consumer.resume(&tpl) {
                    tracing::warn!(error = %e, "cannot resume partitions");
                }
                paused_gauge.set(0);
            }
        }
        let wait = if pending.is_some() || current.records.is_empty() {
            Duration::from_millis(50)
        } else {
            limits.max_wait.saturating_sub(current.started.elapsed())
        };
        match consumer.poll(wait) {
            Some(Ok(m)) => {
                current.push(&m);
                // Drain what is already fetched without waiting.
                while current.records.len() < limits.max_records && current.buf.len() < limits.max_bytes {
                    match consumer.poll(Duration::ZERO) {
                        Some(Ok(m)) => current.push(&m),
                        Some(Err(e)) => {
                            log_poll_error(&e, &mut last_poll_error);
                            break;
                        }
                        None => break,
                    }
                }
            }
            Some(Err(e)) => log_poll_error(&e, &mut last_poll_error),
            None => {}
        }
        // A rebalance ran inside poll: forget records of partitions given away.
        let revoked = shared
            .revoked
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        if !revoked.is_empty() {
            current.drop_partitions(&revoked);
            if let Some(p) = pending.as_mut() {
                p.drop_partitions(&revoked);
            }
            // librdkafka keeps a partition's pause flag across a rebalance: a paused partition
            // assigned again would never be fetched. The context resumed the revoked ones
            // before giving them up; resume the rest too, and pause again against the new
            // assignment when the queue is still full.
            if let Some(tpl) = paused.take() {
                if let Err(e) = consumer.resume(&tpl) {
                    tracing::warn!(error = %e, "cannot resume partitions after a rebalance");
                }
                paused_gauge.set(0);
            }
        }
        let full = current.records.len() >= limits.max_records || current.buf.len() >= limits.max_bytes;
        let due = !current.records.is_empty() && current.started.elapsed() >= limits.max_wait;
        if pending.is_none() && (full || due) {
            let epoch = shared.epoch.load(Ordering::Acquire);
            let batch = std::mem::replace(&mut current, RawBatch::new(Arc::clone(&topics), epoch));
            pending = Some(batch);
        }
        if last_commit.elapsed() >= limits.commit_interval {
            commit_async(consumer, shared);
            last_commit = Instant::now();
        }
    }
    // Shutdown: hand on what was consumed, let the pipeline make it durable, commit it.
    if !closed && let Some(batch) = pending.take() {
        mark_sent(shared, &batch.topics, &batch.progress());
        closed = tx.blocking_send(batch).is_err();
    }
    if !closed && !current.records.is_empty() {
        mark_sent(shared, &current.topics, &current.progress());
        closed = tx.blocking_send(current).is_err();
    }
    let drained = if closed {
        false
    } else {
        let assigned: Vec<(String, i32)> = tracker
            .snapshot()
            .into_iter()
            .filter(|p| p.assigned)
            .map(|p| (p.topic, p.partition))
            .collect();
        tracker.wait_durable(&assigned, SHUTDOWN_DRAIN_TIMEOUT)
    };
    commit_sync(consumer, &tracker.commit_due(), tracker);
    tracing::info!(drained, "kafka consumer stopped");
}

/// The sink refused a batch as stale: forget everything consumed and not yet durable, and seek
/// every owned partition back to the sink's stored offsets. Returns the new (empty) batch.
fn rewind(consumer: &BaseConsumer<HubContext>, shared: &Shared, topics: &Arc<[String]>) -> RawBatch {
    let epoch = shared.epoch.fetch_add(1, Ordering::AcqRel) + 1;
    let parts: Vec<(String, i32)> = match consumer.assignment() {
        Ok(tpl) => tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the assignment for a rewind");
            Vec::new()
        }
    };
    if let Some(positions) = &consumer.context().positions
        && !parts.is_empty()
        && let Some(stored) = positions.load(&parts, shared)
    {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in parts.iter().zip(stored) {
            let offset = match (o, positions.start) {
                (Some(o), _) => Offset::Offset(o),
                (None, super::config::StartOffset::Earliest) => Offset::Beginning,
                (None, super::config::StartOffset::Latest) => Offset::End,
            };
            if let Err(e) = tpl.add_partition_offset(t, *p, offset) {
                tracing::warn!(error = %e, "cannot build the rewind position");
            }
        }
        match consumer.seek_partitions(tpl, Duration::from_secs(10)) {
            Ok(result) => {
                for e in result.elements() {
                    if let Err(err) = e.error() {
                        tracing::warn!(error = %err, topic = e.topic(), partition = e.partition(), "seek failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "seek to stored offsets failed"),
        }
    }
    shared.tracker.assigned(&parts);
    shared.rewind.store(false, Ordering::Release);
    tracing::warn!(partitions = ?parts, epoch, "rewound to the offsets stored in the sink");
    RawBatch::new(Arc::clone(topics), epoch)
}

fn mark_sent(shared: &Shared, topics: &[String], spans: &[PartitionSpan]) {
    for span in spans {
        if let Some(name) = topics.get(span.topic) {
            shared.tracker.sent(name, span.partition, span.next, span.count);
        }
    }
}

fn pause(consumer: &BaseConsumer<HubContext>, gauge: &prometheus::IntGauge) -> Option<TopicPartitionList> {
    match consumer.assignment() {
        Ok(tpl) if tpl.count() > 0 => match consumer.pause(&tpl) {
            Ok(()) => {
                gauge.set(1);
                tracing::debug!(partitions = tpl.count(), "downstream is busy: partitions paused");
                Some(tpl)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot pause partitions");
                None
            }
        },
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the assignment");
            None
        }
    }
}

fn commit_async(consumer: &BaseConsumer<HubContext>, shared: &Shared) {
    let due = shared.tracker.commit_due();
    if due.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p, o) in &due {
        if tpl.add_partition_offset(t, *p, Offset::Offset(*o)).is_err() {
            return;
        }
    }
    match consumer.commit(&tpl, CommitMode::Async) {
        Ok(()) => shared.tracker.committed(&due),
        Err(e) => tracing::warn!(error = %e, "offset commit failed"),
    }
}

fn log_poll_error(e: &rdkafka::error::KafkaError, last: &mut Option<Instant>) {
    // Broker outages produce an error per poll; one line every 10 s is enough.
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
        tracing::warn!(error = %e, "kafka consumer error");
        *last = Some(Instant::now());
    }
}
