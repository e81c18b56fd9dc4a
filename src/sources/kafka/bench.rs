//! `analytics-hub bench kafka`: produces N generated events to a topic, then measures a raw
//! librdkafka consume of that topic against the Hub's consume + decode pipeline (same client
//! settings, fresh consumer groups), and prints both rates.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{Notify, watch};

use super::config::KafkaConfig;
use super::{KafkaSource, Source};
use crate::generate::{Generator, GeneratorConfig};
use crate::ingest::{Ingest, IngestError};
use crate::metrics::Metrics;

/// What to run.
#[derive(Debug, Clone)]
pub struct KafkaBenchArgs {
    /// Bootstrap brokers.
    pub brokers: String,
    /// Topic; a new one named after the time when `None`.
    pub topic: Option<String>,
    /// Events to produce (and consume).
    pub count: u64,
    /// Partitions of the created topic.
    pub partitions: i32,
    /// Skip producing (the topic already holds `count` events).
    pub no_produce: bool,
}

/// Counts decoded rows; wakes the bench when all arrived.
#[derive(Debug)]
struct CountingIngest {
    rows: AtomicU64,
    target: u64,
    done: Notify,
}

#[async_trait]
impl Ingest for CountingIngest {
    async fn ingest(&self, batch: RecordBatch, _raw: &[&[u8]]) -> Result<(), IngestError> {
        let n = self.rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed) + batch.num_rows() as u64;
        if n >= self.target {
            self.done.notify_one();
        }
        Ok(())
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Runs the benchmark and returns the report.
pub async fn run(args: KafkaBenchArgs) -> Result<String, String> {
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("hub-bench-{}", crate::event::time::now_micros()));
    let config = KafkaConfig {
        brokers: Some(args.brokers.clone()),
        topic: topic.clone(),
        topic_partitions: args.partitions,
        session_timeout_ms: 6_000,
        ..KafkaConfig::default()
    };
    let mut report = String::new();
    let mut bytes = 0u64;
    if !args.no_produce {
        super::admin::ensure_topics(&config).await?;
        let (n, b, took) = produce(&config, &topic, args.count).await?;
        bytes = b;
        report += &format!(
            "produced   {n} events ({:.1} MB) in {:.2} s = {:.0} events/s\n",
            b as f64 / 1e6,
            took.as_secs_f64(),
            rate(n, took)
        );
    }
    let (raw_n, raw_bytes, raw_took) = tokio::task::spawn_blocking({
        let config = config.clone();
        let count = args.count;
        move || raw_consume(&config, count)
    })
    .await
    .map_err(|e| e.to_string())??;
    if bytes == 0 {
        bytes = raw_bytes;
    }
    let raw_rate = rate(raw_n, raw_took);
    report += &format!(
        "raw        librdkafka BaseConsumer: {raw_n} records in {:.2} s = {raw_rate:.0} records/s ({:.0} MB/s)\n",
        raw_took.as_secs_f64(),
        bytes as f64 / 1e6 / raw_took.as_secs_f64().max(1e-9)
    );
    let (hub_n, hub_took) = hub_consume(&config, args.count).await?;
    let hub_rate = rate(hub_n, hub_took);
    report += &format!(
        "hub        consume + decode to Arrow:  {hub_n} events in {:.2} s = {hub_rate:.0} events/s\n",
        hub_took.as_secs_f64()
    );
    report += &format!("ratio      hub / raw = {:.2}\n", hub_rate / raw_rate.max(1e-9));
    Ok(report)
}

async fn produce(config: &KafkaConfig, topic: &str, count: u64) -> Result<(u64, u64, Duration), String> {
    let producer: FutureProducer = super::client::producer(config)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .map_err(|e| e.to_string())?;
    let mut generator = Generator::new(GeneratorConfig {
        disorder_ms: 2000,
        ..GeneratorConfig::default()
    });
    let events: Vec<String> = (0..count).map(|_| generator.next_event(None)).collect();
    let bytes: u64 = events.iter().map(|e| e.len() as u64).sum();
    let start = Instant::now();
    for chunk in events.chunks(20_000) {
        let sends = chunk.iter().map(|e| {
            producer.send(
                FutureRecord::<(), str>::to(topic).payload(e.as_str()),
                Duration::from_secs(30),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| format!("produce failed: {e}"))?;
        }
    }
    Ok((count, bytes, start.elapsed()))
}

fn raw_consume(config: &KafkaConfig, count: u64) -> Result<(u64, u64, Duration), String> {
    let mut c = super::client::consumer(config);
    c.set(
        "group.id",
        format!("hub-bench-raw-{}", crate::event::time::now_micros()),
    )
    .set("queued.min.messages", "20000");
    let consumer: BaseConsumer = c.create().map_err(|e| e.to_string())?;
    consumer
        .subscribe(&[config.topic.as_str()])
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut start = None;
    while n < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                start.get_or_insert_with(Instant::now);
                n += 1;
                bytes += m.payload_len() as u64;
            }
            Some(Err(e)) => tracing::warn!(error = %e, "raw consume error"),
            None => {}
        }
    }
    let took = start.map_or(Duration::ZERO, |s| s.elapsed());
    if n < count {
        return Err(format!("raw consume saw only {n} of {count} records within 10 minutes"));
    }
    Ok((n, bytes, took))
}

async fn hub_consume(config: &KafkaConfig, count: u64) -> Result<(u64, Duration), String> {
    let config = KafkaConfig {
        group_id: format!("hub-bench-hub-{}", crate::event::time::now_micros()),
        ..config.clone()
    };
    let ingest = Arc::new(CountingIngest {
        rows: AtomicU64::new(0),
        target: count,
        done: Notify::new(),
    });
    let metrics = Metrics::new().map_err(|e| e.to_string())?;
    let source =
        KafkaSource::new(&config, Arc::clone(&ingest) as Arc<dyn Ingest>, None, metrics).map_err(|e| e.to_string())?;
    let status = source.status();
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(Box::new(source).run(rx));
    // Time from the first consumed record, like the raw run (group join excluded).
    let wait_first = Instant::now();
    while status.consumed() == 0 && ingest.rows.load(Ordering::Relaxed) == 0 {
        if wait_first.elapsed() > Duration::from_secs(120) {
            return Err("the hub consumer got no records within 2 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let start = Instant::now();
    let finished = tokio::time::timeout(Duration::from_secs(600), async {
        while ingest.rows.load(Ordering::Relaxed) < count {
            ingest.done.notified().await;
        }
    })
    .await;
    let took = start.elapsed();
    let _ = tx.send(true);
    let _ = task.await;
    let n = ingest.rows.load(Ordering::Relaxed);
    if finished.is_err() {
        return Err(format!("the hub decoded only {n} of {count} events within 10 minutes"));
    }
    Ok((n, took))
}
