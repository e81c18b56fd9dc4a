//! Live feeds: rows as the Hub stores, emits and alerts on them, pushed to subscribers
//! (`GET /api/v1/stream` over WebSocket or Server-Sent Events, and the alert engine).
//!
//! Topics: `events` (every stored event, after it is durable), `cq:<name>` (every row a
//! continuous query emits, as its store receives it) and `alerts` (every alert transition).
//! Each row gets a sequence number; a client resumes with the last one it saw and gets every
//! row after it that is still held (`live.history_rows` per topic), or a `gap` notice naming
//! what is gone. A client that falls `live.client_buffer_chunks` chunks behind is disconnected
//! with a close reason; memory is bounded per topic, not per client.

pub mod config;
pub mod filter;
pub mod follower;
pub mod topic;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

pub use config::LiveConfig;
pub use filter::RowFilter;
pub use follower::{Follower, Frame};
pub use topic::Topic;

/// The topic of stored events.
pub const EVENTS_TOPIC: &str = "events";
/// The topic of alert transitions.
pub const ALERTS_TOPIC: &str = "alerts";

/// The topic of continuous query `name`'s emitted rows.
pub fn query_topic(name: &str) -> String {
    format!("cq:{name}")
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FollowError {
    /// No such topic.
    #[error("unknown topic `{0}`: follow `events`, `alerts` or `cq:<continuous query name>`")]
    UnknownTopic(String),
    /// The resume token is not one the Hub hands out.
    #[error("`after` must be a token from an earlier row (`<epoch>-<sequence>`) or a sequence number, not `{0}`")]
    BadToken(String),
    /// A filter names no such column, or the caller may not follow this topic.
    #[error("{0}")]
    Filter(String),
    /// Too many open streams.
    #[error("{0} live streams are open, the most `live.max_subscribers` allows; retry later")]
    Busy(usize),
}

/// Every live topic of this process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveFeed {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LiveConfig,
    /// Distinguishes this process's sequence numbers from an earlier run's.
    epoch: String,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    subscribers: AtomicUsize,
    /// `live_subscribers`, `live_cut_off_total`, when registered.
    gauge: Option<prometheus::IntGauge>,
    cut_off: Option<prometheus::IntCounter>,
}

impl LiveFeed {
    /// Feeds bounded by `config`.
    pub fn new(config: LiveConfig) -> Self {
        Self::build(config, None, None)
    }

    /// Feeds bounded by `config`, counting open streams (`live_subscribers`) and clients cut
    /// off for falling behind (`live_cut_off_total`) in `registry`.
    pub fn with_metrics(config: LiveConfig, registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let gauge = prometheus::IntGauge::new("live_subscribers", "Open live streams (GET /api/v1/stream)")?;
        let cut_off = prometheus::IntCounter::new(
            "live_cut_off_total",
            "Live stream clients disconnected for falling behind",
        )?;
        registry.register(Box::new(gauge.clone()))?;
        registry.register(Box::new(cut_off.clone()))?;
        Ok(Self::build(config, Some(gauge), Some(cut_off)))
    }

    fn build(config: LiveConfig, gauge: Option<prometheus::IntGauge>, cut_off: Option<prometheus::IntCounter>) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                epoch: format!("{:x}", crate::event::time::now_micros()),
                topics: RwLock::new(HashMap::new()),
                subscribers: AtomicUsize::new(0),
                gauge,
                cut_off,
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &LiveConfig {
        &self.inner.config
    }

    fn topics(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Topic>>> {
        self.inner
            .topics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn topics_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Topic>>> {
        self.inner
            .topics
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn new_topic(&self, schema: SchemaRef) -> Arc<Topic> {
        Arc::new(Topic::new(
            schema,
            self.inner.config.history_rows,
            self.inner.config.client_buffer_chunks,
        ))
    }

    /// Makes `name` followable with rows shaped `schema` (a topic of another shape is replaced:
    /// its subscribers are told it ended).
    pub fn declare(&self, name: &str, schema: SchemaRef) {
        if self.topics().get(name).is_some_and(|t| *t.schema() == schema) {
            return;
        }
        let topic = self.new_topic(schema);
        self.topics_mut().insert(name.to_string(), topic);
    }

    /// Removes a topic (its query was deleted); subscribers are told it ended.
    pub fn remove(&self, name: &str) {
        self.topics_mut().remove(name);
    }

    /// Publishes rows to `name` (declared on first use).
    pub fn publish(&self, name: &str, batch: &RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        let existing = self.topics().get(name).cloned();
        let topic = match existing {
            Some(t) if *t.schema() == batch.schema() => t,
            _ => {
                self.declare(name, batch.schema());
                match self.topics().get(name).cloned() {
                    Some(t) => t,
                    None => return,
                }
            }
        };
        topic.publish(batch.clone());
    }

    /// The topic `name`, when it exists.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics().get(name).cloned()
    }

    /// Names of every topic, sorted.
    pub fn topic_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.topics().keys().cloned().collect();
        names.sort();
        names
    }

    /// Open streams right now.
    pub fn subscribers(&self) -> usize {
        self.inner.subscribers.load(Ordering::Relaxed)
    }

    /// Follows `name` from just after `after` (a token from an earlier row; none: from now),
    /// seeing only the rows `filter` passes.
    pub fn follow(&self, name: &str, after: Option<&str>, filter: RowFilter) -> Result<Follower, FollowError> {
        let topic = self
            .topic(name)
            .ok_or_else(|| FollowError::UnknownTopic(name.to_string()))?;
        let resume = after.map(|t| self.parse_token(t)).transpose()?;
        let permit = Permit::take(&self.inner)?;
        let (after_seq, restarted) = match resume {
            Some(Resume::Seq(seq)) => (Some(seq), false),
            // A token from before a restart: every row held now is newer than it.
            Some(Resume::Earlier) => (Some(0), true),
            None => (None, false),
        };
        let subscription = topic.subscribe(after_seq);
        Ok(Follower::new(
            name.to_string(),
            self.inner.epoch.clone(),
            after_seq.unwrap_or(topic.next_seq().saturating_sub(1)),
            restarted,
            subscription,
            filter,
            self.inner.config.client_buffer_chunks,
            permit,
        ))
    }

    fn parse_token(&self, token: &str) -> Result<Resume, FollowError> {
        let bad = || FollowError::BadToken(token.chars().take(64).collect());
        match token.split_once('-') {
            Some((epoch, seq)) => {
                let seq: u64 = seq.parse().map_err(|_| bad())?;
                if epoch.is_empty() || !epoch.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(bad());
                }
                Ok(if epoch == self.inner.epoch {
                    Resume::Seq(seq)
                } else {
                    Resume::Earlier
                })
            }
            None => token.parse().map(Resume::Seq).map_err(|_| bad()),
        }
    }
}

enum Resume {
    Seq(u64),
    Earlier,
}

/// One open stream, counted against `live.max_subscribers` until dropped.
#[derive(Debug)]
pub struct Permit {
    inner: Arc<Inner>,
}

impl Permit {
    fn take(inner: &Arc<Inner>) -> Result<Self, FollowError> {
        let max = inner.config.max_subscribers;
        let before = inner
            .subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .map_err(FollowError::Busy)?;
        if let Some(g) = &inner.gauge {
            g.set(i64::try_from(before + 1).unwrap_or(i64::MAX));
        }
        Ok(Self {
            inner: Arc::clone(inner),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let before = self.inner.subscribers.fetch_sub(1, Ordering::AcqRel);
        if let Some(g) = &self.inner.gauge {
            g.set(i64::try_from(before.saturating_sub(1)).unwrap_or(i64::MAX));
        }
    }
}

impl Permit {
    /// Counts a client cut off for falling behind.
    pub(crate) fn count_cut_off(&self) {
        if let Some(c) = &self.inner.cut_off {
            c.inc();
        }
    }
}
