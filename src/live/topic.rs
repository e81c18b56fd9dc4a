//! One live topic: a ring of recent chunks (for clients that resume) and a broadcast channel
//! (for clients that follow), both bounded. Every subscriber shares them, so memory does not
//! grow with the number or the slowness of clients.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use tokio::sync::broadcast;

/// Rows published together (one stored batch, one emission), numbered from `first_seq`.
#[derive(Debug)]
pub struct Chunk {
    /// Sequence number of the first row; row `i` has `first_seq + i`.
    pub first_seq: u64,
    /// The rows.
    pub batch: RecordBatch,
}

impl Chunk {
    /// Sequence number of the last row.
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.batch.num_rows() as u64 - 1
    }
}

/// Rows a resuming client asked for that are no longer held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The client had everything up to this sequence number.
    pub after: u64,
    /// The oldest row still held (rows between are gone).
    pub oldest_held: u64,
}

/// What a new subscriber gets: held rows after its resume point, then the live channel.
#[derive(Debug)]
pub struct Subscription {
    /// Held chunks with rows after the resume point (the first may start before it: skip rows
    /// with a sequence number at or below the resume point).
    pub backlog: Vec<Arc<Chunk>>,
    /// Rows after the resume point that are no longer held.
    pub gap: Option<Gap>,
    /// Chunks published after the backlog, in order, none missing unless the subscriber lags.
    pub live: broadcast::Receiver<Arc<Chunk>>,
}

#[derive(Debug)]
struct Ring {
    next_seq: u64,
    chunks: VecDeque<Arc<Chunk>>,
    rows: usize,
}

/// A topic (`events`, `cq:<name>`, `alerts`).
#[derive(Debug)]
pub struct Topic {
    schema: SchemaRef,
    tx: broadcast::Sender<Arc<Chunk>>,
    ring: Mutex<Ring>,
    history_rows: usize,
}

impl Topic {
    /// A topic of rows shaped `schema`, holding about `history_rows` rows for resuming clients
    /// and letting a subscriber fall `buffer_chunks` chunks behind.
    pub fn new(schema: SchemaRef, history_rows: usize, buffer_chunks: usize) -> Self {
        let (tx, _) = broadcast::channel(buffer_chunks.max(1));
        Self {
            schema,
            tx,
            ring: Mutex::new(Ring {
                next_seq: 1,
                chunks: VecDeque::new(),
                rows: 0,
            }),
            history_rows: history_rows.max(1),
        }
    }

    /// The rows' shape.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // The ring holds no invariant a panicking holder could break half-way.
        self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Numbers `batch`'s rows, keeps them for resuming clients and hands them to subscribers.
    pub fn publish(&self, batch: RecordBatch) {
        let rows = batch.num_rows();
        if rows == 0 {
            return;
        }
        let mut ring = self.ring();
        let chunk = Arc::new(Chunk {
            first_seq: ring.next_seq,
            batch,
        });
        ring.next_seq += rows as u64;
        // A chunk larger than the history keeps only its newest rows.
        let held = if rows > self.history_rows {
            let skip = rows - self.history_rows;
            Arc::new(Chunk {
                first_seq: chunk.first_seq + skip as u64,
                batch: chunk.batch.slice(skip, self.history_rows),
            })
        } else {
            Arc::clone(&chunk)
        };
        ring.rows += held.batch.num_rows();
        ring.chunks.push_back(held);
        while ring.rows > self.history_rows {
            match ring.chunks.pop_front() {
                Some(old) => ring.rows -= old.batch.num_rows(),
                None => break,
            }
        }
        // Sent under the ring's lock, so a subscriber's backlog and live channel meet exactly.
        // No receiver is not an error: the ring keeps the rows.
        let _ = self.tx.send(chunk);
    }

    /// Subscribes from just after sequence number `after` (0: every held row; `None`: only
    /// rows published from now on).
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let ring = self.ring();
        let live = self.tx.subscribe();
        let Some(after) = after else {
            return Subscription {
                backlog: Vec::new(),
                gap: None,
                live,
            };
        };
        let backlog: Vec<Arc<Chunk>> = ring.chunks.iter().filter(|c| c.last_seq() > after).cloned().collect();
        let oldest_held = ring.chunks.front().map_or(ring.next_seq, |c| c.first_seq);
        let gap = (after + 1 < oldest_held).then_some(Gap { after, oldest_held });
        Subscription { backlog, gap, live }
    }

    /// Sequence number the next row will get.
    pub fn next_seq(&self) -> u64 {
        self.ring().next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(values: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(values))]).expect("batch")
    }

    fn values(chunks: &[Arc<Chunk>], after: u64) -> Vec<i64> {
        let mut out = Vec::new();
        for c in chunks {
            let col = c.batch.column(0).as_any().downcast_ref::<Int64Array>().expect("int64");
            for i in 0..c.batch.num_rows() {
                if c.first_seq + i as u64 > after {
                    out.push(col.value(i));
                }
            }
        }
        out
    }

    #[test]
    fn a_resuming_subscriber_gets_exactly_the_rows_after_its_token() {
        let topic = Topic::new(batch(0..1).schema(), 100, 8);
        topic.publish(batch(0..10)); // seq 1..=10
        topic.publish(batch(10..20)); // seq 11..=20
        let sub = topic.subscribe(Some(15));
        assert_eq!(sub.gap, None);
        assert_eq!(values(&sub.backlog, 15), (15..20).collect::<Vec<_>>());
        let sub = topic.subscribe(Some(0));
        assert_eq!(values(&sub.backlog, 0), (0..20).collect::<Vec<_>>());
        let sub = topic.subscribe(None);
        assert!(sub.backlog.is_empty());
    }

    #[test]
    fn rows_no_longer_held_are_reported_as_a_gap() {
        let topic = Topic::new(batch(0..1).schema(), 25, 8);
        for i in 0..5 {
            topic.publish(batch(i * 10..i * 10 + 10)); // seq 1..=50
        }
        // 25 rows are held at most: the chunks of seq 31..=50 (20 rows) survive.
        let sub = topic.subscribe(Some(3));
        assert_eq!(
            sub.gap,
            Some(Gap {
                after: 3,
                oldest_held: 31
            })
        );
        assert_eq!(values(&sub.backlog, 3), (30..50).collect::<Vec<_>>());
        // A chunk larger than the whole history keeps its newest rows.
        topic.publish(batch(50..100)); // seq 51..=100
        let sub = topic.subscribe(Some(0));
        assert_eq!(
            sub.gap,
            Some(Gap {
                after: 0,
                oldest_held: 76
            })
        );
        assert_eq!(values(&sub.backlog, 0), (75..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_it_lagged() {
        let topic = Topic::new(batch(0..1).schema(), 100, 2);
        let mut sub = topic.subscribe(None);
        for i in 0..5 {
            topic.publish(batch(i..i + 1));
        }
        assert!(matches!(
            sub.live.recv().await,
            Err(broadcast::error::RecvError::Lagged(3))
        ));
        // It then continues with what the channel still holds.
        assert_eq!(sub.live.recv().await.expect("chunk").first_seq, 4);
    }

    #[tokio::test]
    async fn backlog_and_live_chunks_meet_without_a_gap_or_a_duplicate() {
        let topic = Topic::new(batch(0..1).schema(), 100, 8);
        topic.publish(batch(0..3));
        let mut sub = topic.subscribe(Some(0));
        topic.publish(batch(3..6));
        let mut all = sub.backlog.clone();
        all.push(sub.live.recv().await.expect("chunk"));
        assert_eq!(values(&all, 0), (0..6).collect::<Vec<_>>());
    }
}
