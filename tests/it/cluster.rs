//! Shared history (issue #22, first increment): two real instances with their own data
//! directories, one S3 API (moto's server) and one PostgreSQL catalog. Each answers SQL over
//! both instances' events once they are flushed and shipped; restarts and a kill -9 neither
//! lose nor double-count anything.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::exports::S3Server;
use crate::harness::{Hub, HubOptions, wait_until};
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
            .entry(e["payload"]["model"].as_str().expect("model").to_string())
            .or_insert((0, 0));
        entry.0 += 1;
        entry.1 += e["payload"]["input_tokens"].as_i64().expect("tokens");
    }
    want
}

const PER_MODEL: &str = "SELECT model, count(*) AS n, sum(input_tokens) AS t FROM events GROUP BY model ORDER BY model";

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

async fn start(dir: &Path, name: &str, db: &TestDb, s3: &S3Server) -> Hub {
    let config = format!(
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
    );
    Hub::start_with(
        dir,
        HubOptions {
            config_toml: Some(config),
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
