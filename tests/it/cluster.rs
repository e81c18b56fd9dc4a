//! Shared history (issue #22, first increment): two real instances with their own data
//! directories, one S3 API (moto's server) and one PostgreSQL catalog. Each answers SQL over
//! both instances' events once they are flushed and shipped; restarts and a kill -9 neither
//! lose nor double-count anything.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::exports::S3Server;
use crate::harness::{Hub, HubOptions, generated, wait_until};
use crate::kafka::{Broker, kafka_opts, status};
use crate::pg::TestDb;

const MODELS: [&str; 3] = ["gpt-4o", "claude-3-5-sonnet", "llama-3-70b"];
/// 2026-01-01T00:00:00Z and 2026-02-01T00:00:00Z: instance a's and b's events.
const JANUARY: i64 = 1_767_225_600;
const FEBRUARY: i64 = 1_769_904_000;

/// `n` events of instance `tag` from `start` (unix seconds), one per second.
fn events(tag: u64, start: i64, n: i64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let ts = chrono::DateTime::from_timestamp(start + i, 0).expect("ts");
            serde_json::json!({
                "event_id": format!("00000000-0000-4000-8{tag:03x}-{i:012x}"),
                "timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "source_module": "llm-observatory",
                "event_type": "telemetry",
                "payload": {"provider": "p", "model": MODELS[(i % 3) as usize], "input_tokens": i + 1, "output_tokens": 1}
            })
        })
        .collect()
}

fn ndjson(events: &[Value]) -> String {
    events.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
}

/// The answer `PER_MODEL` must give: per model, (events, sum of input tokens).
fn oracle(events: &[Value]) -> BTreeMap<String, (i64, i64)> {
    let mut want = BTreeMap::new();
    for e in events {
        let entry = want
            .entry(e["payload"]["model"].as_str().unwrap_or_default().to_string())
            .or_insert((0, 0));
        entry.0 += 1;
        entry.1 += e["payload"]["input_tokens"].as_i64().unwrap_or_default();
    }
    want
}

const PER_MODEL: &str = "SELECT coalesce(model, '') AS model, count(*) AS n, coalesce(sum(input_tokens), 0) AS t \
                         FROM events GROUP BY 1 ORDER BY 1";

async fn per_model(hub: &Hub) -> BTreeMap<String, (i64, i64)> {
    hub.rows(PER_MODEL)
        .await
        .iter()
        .map(|r| {
            (
                r["model"].as_str().expect("model").to_string(),
                (r["n"].as_i64().expect("n"), r["t"].as_i64().expect("t")),
            )
        })
        .collect()
}

/// The sections that put an instance in the cluster (named `name` in the catalog).
fn cluster_toml(name: &str, db: &TestDb) -> String {
    format!(
        r#"
[storage]
segment_max_age_secs = 1
[postgres]
url = "{url}"
instance_id = "{name}"
[cluster]
remote = "s3://hub-shared/history/"
ship_interval_ms = 100
catalog_refresh_ms = 100
"#,
        url = db.url
    )
}

async fn start(dir: &Path, name: &str, db: &TestDb, s3: &S3Server) -> Hub {
    Hub::start_with(
        dir,
        HubOptions {
            config_toml: Some(cluster_toml(name, db)),
            env: s3.env(),
            ..HubOptions::default()
        },
    )
    .await
}

async fn converge(hub: &Hub, want: &BTreeMap<String, (i64, i64)>, what: &str) {
    wait_until(what, Duration::from_secs(60), async || per_model(hub).await == *want).await;
}

#[tokio::test]
async fn every_instance_answers_over_all_shipped_events() {
    let s3 = S3Server::start().await;
    s3.create_bucket("hub-shared").await;
    let db = TestDb::create("cluster").await;
    let (dir_a, dir_b) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let a = start(dir_a.path(), "a", &db, &s3).await;
    let mut b = start(dir_b.path(), "b", &db, &s3).await;

    // A file in a's store directory that is not Parquet: named in a's status, and it holds
    // back none of a's real files.
    let stray = "events-999999999999.parquet";
    std::fs::write(dir_a.path().join("events").join(stray), b"not parquet").expect("stray file");

    let (of_a, of_b) = (events(1, JANUARY, 300), events(2, FEBRUARY, 200));
    a.post_ok(ndjson(&of_a)).await;
    b.post_ok(ndjson(&of_b)).await;
    let all: Vec<Value> = of_a.iter().chain(&of_b).cloned().collect();
    let want = oracle(&all);
    converge(&a, &want, "instance a to see b's events").await;
    converge(&b, &want, "instance b to see a's events").await;

    // A time filter that excludes one instance's files still answers exactly (files pruned by
    // their recorded bounds, row groups by theirs).
    assert_eq!(a.count("WHERE timestamp >= '2026-02-01T00:00:00Z'").await, 200);
    assert_eq!(b.count("WHERE timestamp < '2026-02-01T00:00:00Z'").await, 300);
    assert_eq!(
        a.count("WHERE timestamp >= '2026-01-01T00:04:00Z' AND timestamp < '2026-02-01T00:00:10Z'")
            .await,
        60 + 10
    );

    // The pruning is real: b's February files are not even opened for a January range.
    let plan = |rows: Vec<Value>| rows.iter().map(|r| r.to_string()).collect::<String>();
    let january = plan(
        a.rows("EXPLAIN SELECT count(*) FROM events WHERE timestamp < '2026-01-15T00:00:00Z'")
            .await,
    );
    let february = plan(
        a.rows("EXPLAIN SELECT count(*) FROM events WHERE timestamp >= '2026-02-01T00:00:00Z'")
            .await,
    );
    assert!(february.contains("history/events/"), "{february}");
    assert!(!january.contains("history/events/"), "{january}");

    // The catalog lists each shipped file once, under the data directory it came from.
    let ready = a.get_json("/ready").await;
    let shared = &ready["components"][0]["detail"]["shared"];
    assert!(
        shared["files_of_other_instances"].as_u64().expect("files") >= 1,
        "{ready}"
    );
    assert_eq!(shared["shipper"]["pending_files"], 1, "{ready}");
    let error = shared["shipper"]["last_error"]
        .as_str()
        .expect("the stray file's error");
    assert!(error.contains(stray), "{error}");
    assert!(shared["catalog_error"].is_null(), "{ready}");
    let mut conn = db.connect().await;
    let (files, rows): (i64, i64) = sqlx::query_as("SELECT count(*), sum(rows)::bigint FROM hub_files")
        .fetch_one(&mut conn)
        .await
        .expect("catalog");
    assert_eq!(rows, 500, "{files} files");

    // kill -9: b's shipped share is still answered by a, from shared storage.
    b.kill9();
    assert_eq!(per_model(&a).await, want);
    // Restarted, b reads its own files locally and skips them in the catalog: nothing twice.
    b = start(dir_b.path(), "b-restarted", &db, &s3).await;
    assert_eq!(per_model(&b).await, want);
    let more = events(3, FEBRUARY + 3600, 30);
    b.post_ok(ndjson(&more)).await;
    let all: Vec<Value> = all.into_iter().chain(more).collect();
    let want = oracle(&all);
    converge(&a, &want, "instance a to see what b took after its restart").await;
    assert_eq!(per_model(&b).await, want);
}

/// The issue's setting: three instances in one consumer group on a 6-partition topic (Tansu),
/// history in S3 (moto), the catalog in PostgreSQL. Every instance answers over the whole
/// topic; after a kill -9 the survivors take its partitions and still count every event once;
/// the restarted instance agrees.
#[tokio::test(flavor = "multi_thread")]
async fn three_kafka_instances_each_answer_over_the_whole_topic() {
    let broker = Broker::start();
    let topic = "events-cluster";
    broker.create_topic(topic, 6).await;
    let s3 = S3Server::start().await;
    s3.create_bucket("hub-shared").await;
    let db = TestDb::create("cluster_kafka").await;
    let dir = tempfile::tempdir().expect("tmp");
    let opts = |name: &str| {
        let mut o = kafka_opts(&broker, topic, "g-cluster", &cluster_toml(name, &db));
        o.env.extend(s3.env());
        o
    };
    let a = Hub::start_with(&dir.path().join("a"), opts("a")).await;
    let b = Hub::start_with(&dir.path().join("b"), opts("b")).await;
    let mut c = Hub::start_with(&dir.path().join("c"), opts("c")).await;
    let hubs = || [&a, &b];
    wait_until(
        "the three instances to share the 6 partitions",
        Duration::from_secs(120),
        async || {
            let mut owned = Vec::new();
            for hub in [&a, &b, &c] {
                owned.push(
                    status(hub).await["sources"][0]["assigned_partitions"]
                        .as_u64()
                        .unwrap_or(0),
                );
            }
            owned.iter().all(|n| *n > 0) && owned.iter().sum::<u64>() == 6
        },
    )
    .await;

    let first = generated(91, 12_000, 0.0);
    broker
        .produce(topic, &first.iter().map(|l| l.clone().into_bytes()).collect::<Vec<_>>())
        .await;
    let mut all: Vec<Value> = first.iter().map(|l| serde_json::from_str(l).expect("json")).collect();
    let want = oracle(&all);
    for (name, hub) in [("a", &a), ("b", &b), ("c", &c)] {
        converge(hub, &want, &format!("instance {name} to answer over the whole topic")).await;
        assert_eq!(hub.count("").await, 12_000, "{name}");
    }
    // Each instance stored only its partitions' share.
    let local = |dir: &Path| -> usize {
        std::fs::read_dir(dir.join("events"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
                    .count()
            })
            .unwrap_or(0)
    };
    for name in ["a", "b", "c"] {
        assert!(local(&dir.path().join(name)) >= 1, "{name} flushed files of its own");
    }

    // kill -9 c: a and b take its partitions; c's shipped share is still answered.
    c.kill9();
    let second = generated(92, 6_000, 0.0);
    broker
        .produce(
            topic,
            &second.iter().map(|l| l.clone().into_bytes()).collect::<Vec<_>>(),
        )
        .await;
    all.extend(second.iter().map(|l| serde_json::from_str::<Value>(l).expect("json")));
    let want = oracle(&all);
    for hub in hubs() {
        converge(hub, &want, "the survivors to answer over every event after the kill").await;
    }
    // Restarted, c reads its own files locally, the others' from S3: every event once.
    c = Hub::start_with(&dir.path().join("c"), opts("c-restarted")).await;
    converge(&c, &want, "the restarted instance to agree").await;
    let distinct = c
        .rows("SELECT count(DISTINCT event_id) AS n, count(*) AS total FROM events")
        .await;
    assert_eq!(distinct[0]["n"], distinct[0]["total"], "no event twice: {distinct:?}");
    assert_eq!(distinct[0]["total"], 18_000);
}
