//! One subscriber's view of a topic: held rows after its resume point, then live rows, as
//! frames with resume tokens; ends with a close reason when it falls behind.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::json::writer::{LineDelimited, WriterBuilder};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use super::Permit;
use super::filter::RowFilter;
use super::topic::{Chunk, Subscription};

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// One row: its resume token and its JSON object.
    Row {
        /// `<epoch>-<sequence>`: pass it as `after` (or `Last-Event-ID`) to resume after it.
        token: String,
        /// The row as a JSON object (every column, nulls included).
        json: String,
    },
    /// Rows after the resume point that are no longer held (sent first).
    Gap(GapNotice),
    /// The stream ends: why.
    Closed(String),
}

/// Rows a resuming client will not get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GapNotice {
    /// The resume point the client asked for (a sequence number; 0 after a restart).
    pub after: u64,
    /// The oldest row still held: rows between `after` and it are gone.
    pub oldest_held: u64,
    /// The token came from before the Hub restarted: rows emitted before the restart are only
    /// in the tables.
    pub restarted: bool,
}

/// A subscription being read. Holds its stream permit until dropped.
#[derive(Debug)]
pub struct Follower {
    topic: String,
    epoch: String,
    after: u64,
    backlog: VecDeque<Arc<Chunk>>,
    subscription: Subscription,
    filter: RowFilter,
    buffer_chunks: usize,
    pending: VecDeque<Frame>,
    done: bool,
    permit: Permit,
}

impl Follower {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        topic: String,
        epoch: String,
        after: u64,
        restarted: bool,
        mut subscription: Subscription,
        filter: RowFilter,
        buffer_chunks: usize,
        permit: Permit,
    ) -> Self {
        let mut pending = VecDeque::new();
        let gap = subscription.gap.take();
        if gap.is_some() || restarted {
            let oldest_held = gap.map_or_else(
                || subscription.backlog.first().map_or(after + 1, |c| c.first_seq),
                |g| g.oldest_held,
            );
            pending.push_back(Frame::Gap(GapNotice {
                after,
                oldest_held,
                restarted,
            }));
        }
        Self {
            topic,
            epoch,
            after,
            backlog: std::mem::take(&mut subscription.backlog).into(),
            subscription,
            filter,
            buffer_chunks,
            pending,
            done: false,
            permit,
        }
    }

    /// The topic followed.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The token of the last row handed out (or of the resume point).
    pub fn token(&self) -> String {
        format!("{}-{}", self.epoch, self.after)
    }

    /// The next frame; `None` after [`Frame::Closed`].
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some(frame);
            }
            if self.done {
                return None;
            }
            let chunk = match self.backlog.pop_front() {
                Some(c) => c,
                None => match self.subscription.live.recv().await {
                    Ok(c) => c,
                    Err(RecvError::Lagged(n)) => {
                        self.done = true;
                        self.permit.count_cut_off();
                        return Some(Frame::Closed(format!(
                            "too slow: more than the {} chunks buffered per client behind ({n} skipped); reconnect with after={} to get the rows still held",
                            self.buffer_chunks,
                            self.token()
                        )));
                    }
                    Err(RecvError::Closed) => {
                        self.done = true;
                        return Some(Frame::Closed(format!(
                            "topic `{}` ended (its continuous query was deleted or replaced)",
                            self.topic
                        )));
                    }
                },
            };
            if let Err(e) = self.encode(&chunk) {
                self.done = true;
                return Some(Frame::Closed(format!("rows could not be encoded: {e}")));
            }
        }
    }

    /// Queues the rows of `chunk` after the resume point that pass the filter.
    fn encode(&mut self, chunk: &Chunk) -> Result<(), datafusion::arrow::error::ArrowError> {
        if chunk.last_seq() <= self.after {
            return Ok(());
        }
        let (rows, positions) = self.filter.apply(&chunk.batch)?;
        if rows.num_rows() > 0 {
            let mut buf = Vec::new();
            {
                let mut writer = WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, LineDelimited>(&mut buf);
                writer.write(&rows)?;
                writer.finish()?;
            }
            let text = String::from_utf8_lossy(&buf);
            for (line, position) in text.lines().zip(positions) {
                let seq = chunk.first_seq + u64::from(position);
                if seq <= self.after {
                    continue;
                }
                self.pending.push_back(Frame::Row {
                    token: format!("{}-{seq}", self.epoch),
                    json: line.to_string(),
                });
            }
        }
        self.after = self.after.max(chunk.last_seq());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LiveConfig, LiveFeed, RowFilter};
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(models: &[&str], start: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("model", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let n: Vec<i64> = (start..start + models.len() as i64).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(models.to_vec())),
                Arc::new(Int64Array::from(n)),
            ],
        )
        .expect("batch")
    }

    fn feed(history_rows: usize, buffer: usize) -> LiveFeed {
        LiveFeed::new(LiveConfig {
            history_rows,
            client_buffer_chunks: buffer,
            ..LiveConfig::default()
        })
    }

    async fn rows(f: &mut Follower, count: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while out.len() < count {
            match f.next().await {
                Some(Frame::Row { token, json }) => out.push((token, json)),
                other => panic!("expected a row, got {other:?}"),
            }
        }
        out
    }

    #[tokio::test]
    async fn a_client_resumes_after_its_last_token_without_gaps_or_repeats() {
        let feed = feed(100, 8);
        feed.publish("t", &batch(&["a", "b", "a"], 0));
        let mut f = feed.follow("t", Some("0"), RowFilter::default()).expect("follow");
        let first = rows(&mut f, 3).await;
        assert_eq!(first[2].1, r#"{"model":"a","n":2}"#);
        feed.publish("t", &batch(&["c", "d"], 3));
        let next = rows(&mut f, 1).await;
        drop(f);
        // Reconnect with the token of n=3: n=4 and what came since.
        feed.publish("t", &batch(&["e"], 5));
        let mut f = feed
            .follow("t", Some(&next[0].0), RowFilter::default())
            .expect("resume");
        let resumed = rows(&mut f, 2).await;
        let ns: Vec<&str> = resumed.iter().map(|(_, j)| j.as_str()).collect();
        assert_eq!(ns, vec![r#"{"model":"d","n":4}"#, r#"{"model":"e","n":5}"#]);
    }

    #[tokio::test]
    async fn filters_and_tokens_line_up_with_the_rows_they_name() {
        let feed = feed(100, 8);
        let schema = batch(&[], 0).schema();
        feed.declare("t", schema.clone());
        let filter = RowFilter::new(&schema, None, vec![("model".into(), "a".into())]).expect("filter");
        let mut f = feed.follow("t", None, filter).expect("follow");
        feed.publish("t", &batch(&["b", "a", "b", "a"], 0));
        let got = rows(&mut f, 2).await;
        let seqs: Vec<&str> = got.iter().map(|(t, _)| t.rsplit('-').next().unwrap_or("")).collect();
        assert_eq!(seqs, vec!["2", "4"]);
    }

    #[tokio::test]
    async fn a_slow_client_is_closed_with_a_reason_and_a_token() {
        let feed = feed(100, 2);
        let refused = feed.follow("t", None, RowFilter::default()).expect_err("no topic yet");
        assert_eq!(refused, super::super::FollowError::UnknownTopic("t".into()));
        feed.declare("t", batch(&[], 0).schema());
        let mut slow = feed.follow("t", None, RowFilter::default()).expect("follow");
        for i in 0..5 {
            feed.publish("t", &batch(&["x"], i));
        }
        match slow.next().await {
            Some(Frame::Closed(reason)) => {
                assert!(
                    reason.starts_with("too slow: more than the 2 chunks buffered per client behind (3 skipped)"),
                    "{reason}"
                );
                assert!(reason.contains("after="), "{reason}");
            }
            other => panic!("expected the close, got {other:?}"),
        }
        assert_eq!(slow.next().await, None);
    }

    #[tokio::test]
    async fn a_token_from_before_a_restart_or_beyond_the_history_is_a_gap() {
        let feed = feed(2, 8);
        feed.publish("t", &batch(&["a", "b", "c", "d"], 0));
        let mut f = feed.follow("t", Some("1"), RowFilter::default()).expect("follow");
        assert_eq!(
            f.next().await,
            Some(Frame::Gap(GapNotice {
                after: 1,
                oldest_held: 3,
                restarted: false
            }))
        );
        assert_eq!(rows(&mut f, 2).await.len(), 2);
        let mut f = feed.follow("t", Some("abc-7"), RowFilter::default()).expect("follow");
        assert!(matches!(
            f.next().await,
            Some(Frame::Gap(GapNotice { restarted: true, .. }))
        ));
        assert!(feed.follow("t", Some("x-y"), RowFilter::default()).is_err());
    }

    #[tokio::test]
    async fn streams_beyond_the_limit_are_refused_until_one_closes() {
        let feed = LiveFeed::new(LiveConfig {
            max_subscribers: 1,
            ..LiveConfig::default()
        });
        feed.declare("t", batch(&[], 0).schema());
        let first = feed.follow("t", None, RowFilter::default()).expect("first");
        assert_eq!(
            feed.follow("t", None, RowFilter::default()).err(),
            Some(super::super::FollowError::Busy(1))
        );
        drop(first);
        let second = feed
            .follow("t", None, RowFilter::default())
            .expect("a slot is free again");
        assert_eq!(feed.subscribers(), 1);
        drop(second);
        assert_eq!(feed.subscribers(), 0);
    }
}
