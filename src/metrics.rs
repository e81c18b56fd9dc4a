//! Prometheus metrics, with the seed's names. One registry per process, passed explicitly.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Longest label value taken from user input; longer values are cut so a hostile client cannot
/// blow up the series' label size.
const MAX_LABEL_LEN: usize = 64;

/// Distinct values a label taken from events may have; later new values are counted under
/// `other`, so `/metrics` stays small whatever is ingested.
pub const MAX_LABEL_VALUES: usize = 1000;

/// The label values taken from events so far, per label name.
#[derive(Debug, Default)]
struct LabelBudget {
    seen: std::sync::Mutex<std::collections::HashMap<&'static str, std::collections::HashSet<String>>>,
}

/// All metrics of the Hub. Cheap to clone: one reference count (a copy per field cost ~40
/// atomic increments and as many decrements per request, 8 % of the single-event CPU).
#[derive(Clone, Debug)]
pub struct Metrics(Arc<MetricsInner>);

impl std::ops::Deref for Metrics {
    type Target = MetricsInner;

    fn deref(&self) -> &MetricsInner {
        &self.0
    }
}

/// The metrics behind [`Metrics`].
#[derive(Debug)]
pub struct MetricsInner {
    registry: Arc<Registry>,
    labels: Arc<LabelBudget>,
    /// Events durably accepted, by `source_module`, `event_type`.
    pub events_processed_total: IntCounterVec,
    /// Events rejected, by `source_module`, `event_type`, `error_type`.
    pub events_errors_total: IntCounterVec,
    /// Events decoded, by reader: `layout` (a learned event layout, the fast path), `scan`
    /// (the generic scanner), `serde` (everything else).
    pub events_decoded_total: IntCounterVec,
    /// HTTP request latency by `method`, `route`, `status_code`.
    pub http_request_duration_seconds: HistogramVec,
    /// HTTP requests by `method`, `route`, `status_code`.
    pub http_requests_total: IntCounterVec,
    /// SQL queries by `outcome` (`ok`, `user_error`, `refused`, `error`, `timeout`).
    pub sql_queries_total: IntCounterVec,
    /// Time to append and sync one batch to the WAL.
    pub wal_append_seconds: Histogram,
    /// Batches made durable by one WAL write + `fdatasync` (group commit).
    pub wal_commit_group_batches: Histogram,
    /// Events held in memory by the local store.
    pub storage_rows_in_memory: IntGauge,
    /// Events durable but held out of queries until the sink's transaction claims them.
    pub storage_rows_held: IntGauge,
    /// Bytes of events held in memory (not yet in Parquet).
    pub storage_bytes_in_memory: IntGauge,
    /// Appends that waited for the Parquet flush to free memory.
    pub storage_backpressure_waits_total: IntCounter,
    /// Parquet files taken out of the store by retention.
    pub storage_files_expired_total: IntCounter,
    /// Parquet files of the local store.
    pub storage_parquet_files: IntGauge,
    /// Failed storage writes (WAL appends, Parquet flushes, refusals below the free-space
    /// minimum), by `kind`: `no_space`, `low_space`, `read_only`, `io_error`.
    pub storage_write_errors_total: IntCounterVec,
    /// Damaged files moved to a quarantine folder.
    pub storage_quarantined_files_total: IntCounter,
    /// Free bytes on the data file system (last checked).
    pub storage_free_bytes: IntGauge,
    /// Events that arrived after their window closed, by continuous `query`.
    pub late_events_total: IntCounterVec,
    /// Output rows emitted by continuous `query`.
    pub cq_rows_emitted_total: IntCounterVec,
    /// Watermark of each continuous `query`, seconds since the epoch.
    pub cq_watermark_seconds: prometheus::GaugeVec,
    /// Records behind the high watermark, by `topic`, `partition` (from fetch responses).
    pub kafka_consumer_lag: IntGaugeVec,
    /// Broker high watermark, by `topic`, `partition`.
    pub kafka_high_watermark: IntGaugeVec,
    /// Offset committed by this group, by `topic`, `partition`.
    pub kafka_committed_offset: IntGaugeVec,
    /// Records consumed and made durable (stored or dead-lettered), by `topic`.
    pub kafka_records_consumed_total: IntCounterVec,
    /// Records sent to the dead-letter topic, by source `topic`, `error_type`.
    pub kafka_dlq_records_total: IntCounterVec,
    /// Partition assignments and revocations.
    pub kafka_rebalances_total: IntCounter,
    /// 1 while the consumer has paused its partitions because downstream is busy.
    pub kafka_consumer_paused: IntGauge,
    /// Cluster mode: flushed files uploaded to shared storage and recorded in the catalog.
    pub cluster_files_shipped_total: IntCounter,
    /// Cluster mode: failed shipping attempts (the file is tried again).
    pub cluster_ship_errors_total: IntCounter,
    /// Cluster mode: members whose recent events were left out of an answer.
    pub cluster_tail_errors_total: IntCounter,
    /// Cluster mode: stage tasks of distributed plans this instance ran as a worker (its own
    /// included).
    pub cluster_worker_tasks_total: IntCounter,
    /// Cluster mode: every data directory's files the catalog lists.
    pub cluster_shared_files: IntGauge,
    /// Cluster mode: other live members.
    pub cluster_members: IntGauge,
    /// Database statement time by `query_type` (`write_txn`, `load_offsets`, `migrate`, ...).
    pub db_query_duration_seconds: HistogramVec,
    /// Sink transactions by `result` (`ok`, `unavailable`, `fenced`, `error`).
    pub db_writes_total: IntCounterVec,
    /// Circuit breaker of database writes: 0 closed, 1 open, 2 half-open.
    pub db_circuit_breaker_state: IntGauge,
}

impl Metrics {
    /// The registry, for components that register their own metrics (the result cache).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Creates and registers all metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let events_processed_total = IntCounterVec::new(
            Opts::new("events_processed_total", "Events durably accepted"),
            &["source_module", "event_type"],
        )?;
        let events_errors_total = IntCounterVec::new(
            Opts::new("events_errors_total", "Events rejected"),
            &["source_module", "event_type", "error_type"],
        )?;
        let events_decoded_total = IntCounterVec::new(
            Opts::new(
                "events_decoded_total",
                "Events decoded, by reader (layout, scan, serde)",
            ),
            &["reader"],
        )?;
        let http_request_duration_seconds = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["method", "route", "status_code"],
        )?;
        let http_requests_total = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests"),
            &["method", "route", "status_code"],
        )?;
        let sql_queries_total =
            IntCounterVec::new(Opts::new("sql_queries_total", "SQL queries by outcome"), &["outcome"])?;
        let wal_append_seconds = Histogram::with_opts(
            HistogramOpts::new("wal_append_seconds", "Time to append and sync one batch to the WAL")
                .buckets(vec![0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5]),
        )?;
        let wal_commit_group_batches = Histogram::with_opts(
            HistogramOpts::new(
                "wal_commit_group_batches",
                "Batches made durable by one WAL write and fdatasync (group commit)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )?;
        let storage_rows_in_memory = IntGauge::new("storage_rows_in_memory", "Events held in memory")?;
        let storage_rows_held = IntGauge::new(
            "storage_rows_held",
            "Kafka events durable in the WAL but not visible yet: waiting for the sink transaction that claims them",
        )?;
        let storage_bytes_in_memory = IntGauge::new(
            "storage_bytes_in_memory",
            "Bytes (Arrow) of events held in memory, not yet in Parquet",
        )?;
        let storage_files_expired_total = IntCounter::new(
            "storage_files_expired_total",
            "Parquet files of events past storage.retention_days taken out of the store",
        )?;
        let storage_backpressure_waits_total = IntCounter::new(
            "storage_backpressure_waits_total",
            "Appends that waited for the Parquet flush to free memory (storage.max_memory_bytes)",
        )?;
        let storage_parquet_files = IntGauge::new("storage_parquet_files", "Parquet files in the local store")?;
        let storage_write_errors_total = IntCounterVec::new(
            Opts::new("storage_write_errors_total", "Failed storage writes by kind"),
            &["kind"],
        )?;
        let storage_quarantined_files_total =
            IntCounter::new("storage_quarantined_files_total", "Damaged files moved to quarantine")?;
        let storage_free_bytes = IntGauge::new("storage_free_bytes", "Free bytes on the data file system")?;

        let late_events_total = IntCounterVec::new(
            Opts::new("late_events_total", "Events that arrived after their window closed"),
            &["query"],
        )?;
        let cq_rows_emitted_total = IntCounterVec::new(
            Opts::new("cq_rows_emitted_total", "Continuous query output rows"),
            &["query"],
        )?;
        let cq_watermark_seconds = prometheus::GaugeVec::new(
            Opts::new(
                "cq_watermark_seconds",
                "Continuous query watermark (seconds since the epoch)",
            ),
            &["query"],
        )?;
        let tp = ["topic", "partition"];
        let kafka_consumer_lag = IntGaugeVec::new(
            Opts::new("kafka_consumer_lag", "Records behind the high watermark"),
            &tp,
        )?;
        let kafka_high_watermark = IntGaugeVec::new(Opts::new("kafka_high_watermark", "Broker high watermark"), &tp)?;
        let kafka_committed_offset =
            IntGaugeVec::new(Opts::new("kafka_committed_offset", "Committed consumer offset"), &tp)?;
        let kafka_records_consumed_total = IntCounterVec::new(
            Opts::new(
                "kafka_records_consumed_total",
                "Kafka records consumed and made durable",
            ),
            &["topic"],
        )?;
        let kafka_dlq_records_total = IntCounterVec::new(
            Opts::new("kafka_dlq_records_total", "Kafka records sent to the dead-letter topic"),
            &["topic", "error_type"],
        )?;
        let kafka_rebalances_total =
            IntCounter::new("kafka_rebalances_total", "Partition assignments and revocations")?;
        let kafka_consumer_paused =
            IntGauge::new("kafka_consumer_paused", "1 while partitions are paused (backpressure)")?;
        let cluster_files_shipped_total = IntCounter::new(
            "cluster_files_shipped_total",
            "Flushed files uploaded to shared storage and recorded in the catalog",
        )?;
        let cluster_ship_errors_total = IntCounter::new(
            "cluster_ship_errors_total",
            "Failed attempts to ship a flushed file (tried again)",
        )?;
        let cluster_tail_errors_total = IntCounter::new(
            "cluster_tail_errors_total",
            "Members whose recent events were left out of an answer (no answer in time)",
        )?;
        let cluster_worker_tasks_total = IntCounter::new(
            "cluster_worker_tasks_total",
            "Stage tasks of distributed plans run by this instance as a worker",
        )?;
        let cluster_shared_files = IntGauge::new(
            "cluster_shared_files",
            "Shared files the catalog lists (every instance's)",
        )?;
        let cluster_members = IntGauge::new("cluster_members", "Other live cluster members")?;
        let db_query_duration_seconds = HistogramVec::new(
            HistogramOpts::new("db_query_duration_seconds", "Database statement time").buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["query_type"],
        )?;
        let db_writes_total = IntCounterVec::new(
            Opts::new("db_writes_total", "Rollup sink transactions by result"),
            &["result"],
        )?;
        let db_circuit_breaker_state = IntGauge::new(
            "db_circuit_breaker_state",
            "Database circuit breaker: 0 closed, 1 open, 2 half-open",
        )?;
        registry.register(Box::new(db_query_duration_seconds.clone()))?;
        registry.register(Box::new(db_writes_total.clone()))?;
        registry.register(Box::new(db_circuit_breaker_state.clone()))?;
        for c in [&kafka_consumer_lag, &kafka_high_watermark, &kafka_committed_offset] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(kafka_records_consumed_total.clone()))?;
        registry.register(Box::new(kafka_dlq_records_total.clone()))?;
        registry.register(Box::new(kafka_rebalances_total.clone()))?;
        registry.register(Box::new(kafka_consumer_paused.clone()))?;
        registry.register(Box::new(cluster_files_shipped_total.clone()))?;
        registry.register(Box::new(cluster_ship_errors_total.clone()))?;
        registry.register(Box::new(cluster_tail_errors_total.clone()))?;
        registry.register(Box::new(cluster_worker_tasks_total.clone()))?;
        registry.register(Box::new(cluster_shared_files.clone()))?;
        registry.register(Box::new(cluster_members.clone()))?;
        registry.register(Box::new(late_events_total.clone()))?;
        registry.register(Box::new(cq_rows_emitted_total.clone()))?;
        registry.register(Box::new(cq_watermark_seconds.clone()))?;
        registry.register(Box::new(events_processed_total.clone()))?;
        registry.register(Box::new(events_errors_total.clone()))?;
        registry.register(Box::new(events_decoded_total.clone()))?;
        registry.register(Box::new(http_request_duration_seconds.clone()))?;
        registry.register(Box::new(http_requests_total.clone()))?;
        registry.register(Box::new(sql_queries_total.clone()))?;
        registry.register(Box::new(wal_append_seconds.clone()))?;
        registry.register(Box::new(wal_commit_group_batches.clone()))?;
        registry.register(Box::new(storage_rows_in_memory.clone()))?;
        registry.register(Box::new(storage_rows_held.clone()))?;
        registry.register(Box::new(storage_bytes_in_memory.clone()))?;
        registry.register(Box::new(storage_files_expired_total.clone()))?;
        registry.register(Box::new(storage_backpressure_waits_total.clone()))?;
        registry.register(Box::new(storage_parquet_files.clone()))?;
        registry.register(Box::new(storage_write_errors_total.clone()))?;
        registry.register(Box::new(storage_quarantined_files_total.clone()))?;
        registry.register(Box::new(storage_free_bytes.clone()))?;
        Ok(Self(Arc::new(MetricsInner {
            registry: Arc::new(registry),
            labels: Arc::default(),
            events_processed_total,
            events_errors_total,
            events_decoded_total,
            http_request_duration_seconds,
            http_requests_total,
            sql_queries_total,
            wal_append_seconds,
            wal_commit_group_batches,
            storage_rows_in_memory,
            storage_rows_held,
            storage_bytes_in_memory,
            storage_files_expired_total,
            storage_backpressure_waits_total,
            storage_parquet_files,
            storage_write_errors_total,
            storage_quarantined_files_total,
            storage_free_bytes,
            late_events_total,
            cq_rows_emitted_total,
            cq_watermark_seconds,
            kafka_consumer_lag,
            kafka_high_watermark,
            kafka_committed_offset,
            kafka_records_consumed_total,
            kafka_dlq_records_total,
            kafka_rebalances_total,
            kafka_consumer_paused,
            cluster_files_shipped_total,
            cluster_ship_errors_total,
            cluster_tail_errors_total,
            cluster_worker_tasks_total,
            cluster_shared_files,
            cluster_members,
            db_query_duration_seconds,
            db_writes_total,
            db_circuit_breaker_state,
        })))
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

impl Metrics {
    /// A label value taken from an event: cut to 64 bytes, and `other` once the label `name`
    /// has [`MAX_LABEL_VALUES`] distinct values.
    pub fn event_label<'a>(&self, name: &'static str, value: &'a str) -> &'a str {
        let value = label(value);
        let mut seen = self
            .labels
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let values = seen.entry(name).or_default();
        if values.contains(value) {
            return value;
        }
        if values.len() < MAX_LABEL_VALUES {
            values.insert(value.to_string());
            return value;
        }
        "other"
    }
}

/// Cuts a user-supplied label value to a bounded length (on a char boundary).
pub fn label(value: &str) -> &str {
    if value.len() <= MAX_LABEL_LEN {
        return value;
    }
    let mut end = MAX_LABEL_LEN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}
