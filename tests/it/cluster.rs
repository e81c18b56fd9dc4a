//! Shared history (issue #22, first increment): two real instances with their own data
//! directories, one S3 API (moto's server) and one PostgreSQL catalog. Each answers SQL over
//! both instances' events once they are flushed and shipped; restarts and a kill -9 neither
//! lose nor double-count anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::exports::S3Server;
use crate::harness::{Hub, HubOptions, free_port, generated, wait_until};
use crate::kafka::{Broker, kafka_opts, status};
use crate::pg::TestDb;
use crate::proxy::StallProxy;

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
                "payload": {"provider": "p", "model": MODELS[(i % 3) as usize], "input_tokens": i + 1, "output_tokens": 1,
                            "latency_ms": latency(tag, i)}
            })
        })
        .collect()
}

/// A spread of latencies (1..=997 ms) so percentiles mean something.
fn latency(tag: u64, i: i64) -> i64 {
    ((i * 37 + tag as i64 * 11) % 997) + 1
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

/// The sections that put an instance in the cluster (named `name` in the catalog), its
/// segments flushed (and shipped) every `segment_secs`.
fn cluster_toml(name: &str, db: &TestDb, segment_secs: u64) -> String {
    cluster_toml_with(name, db, segment_secs, "")
}

/// [`cluster_toml`] with more `[cluster]` keys.
fn cluster_toml_with(name: &str, db: &TestDb, segment_secs: u64, cluster_keys: &str) -> String {
    cluster_toml_at(name, &db.url, segment_secs, cluster_keys)
}

/// [`cluster_toml_with`] reaching the database at `url`.
fn cluster_toml_at(name: &str, url: &str, segment_secs: u64, cluster_keys: &str) -> String {
    format!(
        r#"
[storage]
segment_max_age_secs = {segment_secs}
[postgres]
url = "{url}"
instance_id = "{name}"
[cluster]
remote = "s3://hub-shared/history/"
ship_interval_ms = 100
catalog_refresh_ms = 100
secret = "test-cluster-secret-0123"
{cluster_keys}
"#
    )
}

async fn start(dir: &Path, name: &str, db: &TestDb, s3: &S3Server) -> Hub {
    start_flushing(dir, name, db, s3, 1).await
}

async fn start_flushing(dir: &Path, name: &str, db: &TestDb, s3: &S3Server, segment_secs: u64) -> Hub {
    start_toml(dir, cluster_toml(name, db, segment_secs), s3).await
}

async fn start_toml(dir: &Path, toml: String, s3: &S3Server) -> Hub {
    Hub::start_with(
        dir,
        HubOptions {
            config_toml: Some(toml),
            env: s3.env(),
            ..HubOptions::default()
        },
    )
    .await
}

async fn converge(hub: &Hub, want: &BTreeMap<String, (i64, i64)>, what: &str) {
    let mut last = BTreeMap::new();
    // 120 s: after a kill -9 under a loaded suite a survivor was seen taking over a minute to
    // start fetching a partition it was assigned (session 17 note); alone it takes seconds.
    let done = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            last = per_model(hub).await;
            if last == *want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if done.is_err() {
        let status = hub.get_json("/api/v1/ingest/status").await;
        let ready = hub.get_json("/ready").await;
        let total: i64 = last.values().map(|(n, _)| n).sum();
        // The same count past the result cache (a statement no one asked before) and the plan
        // with each leaf's rows: tells a stale cached answer from a leaf that is short.
        let uncached = hub.rows("SELECT count(*) AS diagnostic_uncached FROM events").await;
        let analyzed = hub.rows("EXPLAIN ANALYZE SELECT count(*) FROM events").await;
        panic!(
            "timed out after 120 s waiting for {what}: {total} events, answer {last:?}, want {want:?}; \
             uncached: {uncached:?}; plan: {analyzed:?}; ingest status: {status}; ready: {ready}"
        );
    }
}

/// What every test here starts from: moto's S3 server with the bucket, a fresh database, and
/// two data directories.
struct Setup {
    s3: S3Server,
    db: TestDb,
    dir_a: tempfile::TempDir,
    dir_b: tempfile::TempDir,
}

async fn setup(tag: &str) -> Setup {
    let s3 = S3Server::start().await;
    s3.create_bucket("hub-shared").await;
    Setup {
        s3,
        db: TestDb::create(tag).await,
        dir_a: tempfile::tempdir().expect("tmp"),
        dir_b: tempfile::tempdir().expect("tmp"),
    }
}

#[tokio::test]
async fn every_instance_answers_over_all_shipped_events() {
    let Setup { s3, db, dir_a, dir_b } = setup("cluster").await;
    let a = start(dir_a.path(), "a", &db, &s3).await;
    let mut b = start(dir_b.path(), "b", &db, &s3).await;

    // A file in a's store directory that is not Parquet: named in a's status, and it holds
    // back none of a's real files.
    let stray = "events-999999999999.parquet";
    std::fs::write(dir_a.path().join("events").join(stray), b"not parquet").expect("stray file");

    let all = post_to_both(&a, &b).await;
    let want = oracle(&all);

    // Once flushed and shipped, b's events are read from shared storage.
    wait_shipped(&b, "b", 0).await;
    wait_shipped(&a, "a", 1).await;
    wait_until("a to list b's files", Duration::from_secs(30), async || {
        shared(&a).await["files_of_other_instances"].as_u64().unwrap_or(0) >= 1
    })
    .await;

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
    let b_files = format!(
        "history/events/{}/",
        std::fs::read_to_string(dir_b.path().join("cluster/store-id"))
            .expect("b's store id")
            .trim()
    );
    assert!(february.contains(&b_files), "{february}");
    assert!(!january.contains(&b_files), "{january}");

    // Reading b's files left local copies in a's cache (later scans read them from disk).
    let cached = std::fs::read_dir(dir_a.path().join("cluster/cache/history/events"))
        .expect("a's cache of shared files")
        .filter_map(Result::ok)
        .flat_map(|store| {
            std::fs::read_dir(store.path())
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
        })
        .filter(|f| f.file_name().to_string_lossy().ends_with(".parquet"))
        .count();
    assert!(cached >= 1, "no cached copy of b's files");

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
    let (files, rows): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(rows)::bigint FROM hub_files WHERE table_name = 'events'")
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

/// A member that does not answer in time is left out of that answer, and the partial answer
/// is never served again from the result cache: once the member answers, the same query counts
/// its events, although no data changed in between.
#[tokio::test]
async fn an_answer_that_left_a_member_out_is_not_served_again_from_the_cache() {
    let Setup { s3, db, dir_a, dir_b } = setup("cluster_partial").await;
    // b stays a member while stopped (its last heartbeat is recent enough), but its tail
    // answer is waited for 1 s only; segments are not flushed, so b's events are in its tail.
    let keys = "member_timeout_ms = 600000\ntail_timeout_ms = 1000\n";
    let a = start_toml(dir_a.path(), cluster_toml_with("a", &db, 3600, keys), &s3).await;
    let b = start_toml(dir_b.path(), cluster_toml_with("b", &db, 3600, keys), &s3).await;
    let (of_a, of_b) = (events(1, JANUARY, 30), events(2, FEBRUARY, 20));
    a.post_ok(ndjson(&of_a)).await;
    b.post_ok(ndjson(&of_b)).await;
    let all: Vec<Value> = of_a.iter().chain(&of_b).cloned().collect();
    converge(&a, &oracle(&all), "instance a to see b's events").await;

    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &b.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    let errors = metric(&a, "cluster_tail_errors_total").await;
    let partial = a.sql("SELECT count(*) AS n FROM events").await;
    signal("-CONT");
    assert_eq!(partial.0, 200, "{partial:?}");
    assert_eq!(
        partial.1["rows"][0]["n"], 30,
        "b's events are left out while it is stopped: {partial:?}"
    );
    assert!(metric(&a, "cluster_tail_errors_total").await > errors);
    // The same statement again, nothing changed since: b answers now, and so must the query.
    assert_eq!(a.count("").await, 50);
}

/// Without PostgreSQL: the catalog is kept as manifest objects in the bucket (one per data
/// directory) and the members are the static `cluster.peers`. Each instance answers over both
/// instances' events; a killed member drops out of the others' list within seconds and its
/// shipped share is answered from shared storage; restarted, it rejoins.
#[tokio::test(flavor = "multi_thread")]
async fn without_postgres_static_peers_and_manifests_make_the_cluster() {
    let s3 = S3Server::start().await;
    s3.create_bucket("hub-shared").await;
    let (dir_a, dir_b) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let (port_a, port_b) = (free_port(), free_port());
    // No `postgres.url`: `[postgres]` only names the instance.
    let toml = |name: &str| {
        format!(
            r#"
[storage]
segment_max_age_secs = 1
[postgres]
instance_id = "{name}"
[cluster]
remote = "s3://hub-shared/history/"
ship_interval_ms = 100
catalog_refresh_ms = 100
member_timeout_ms = 1000
secret = "test-cluster-secret-0123"
peers = ["http://127.0.0.1:{port_a}", "http://127.0.0.1:{port_b}"]
"#
        )
    };
    let opts = |port: u16| HubOptions {
        config_toml: Some(toml(if port == port_a { "a" } else { "b" })),
        env: s3.env(),
        port: Some(port),
        ..HubOptions::default()
    };
    let a = Hub::start_with(dir_a.path(), opts(port_a)).await;
    let mut b = Hub::start_with(dir_b.path(), opts(port_b)).await;
    for (hub, other) in [(&a, "b"), (&b, "a")] {
        wait_until("the peers to find each other", Duration::from_secs(30), async || {
            members(hub).await == [other]
        })
        .await;
    }

    // The question the peers ask each other needs the cluster secret.
    let member = |secret: &'static str| {
        a.client
            .get(a.url("/internal/v1/cluster/member"))
            .header("x-hub-cluster-secret", secret)
            .send()
    };
    assert_eq!(member("wrong-secret").await.expect("member").status(), 401);
    let me: Value = member("test-cluster-secret-0123")
        .await
        .expect("member")
        .json()
        .await
        .expect("json");
    assert_eq!(me["instance_id"], "a");
    assert_eq!(me["url"], format!("http://127.0.0.1:{port_a}"));

    let all = post_to_both(&a, &b).await;
    let want = oracle(&all);

    // Shipped: the files are in the bucket, listed by one manifest per data directory.
    wait_shipped(&a, "a", 0).await;
    wait_shipped(&b, "b", 0).await;
    let manifests = objects_under(&s3, "history/_catalog/events/").await;
    let store_id = |dir: &Path| {
        std::fs::read_to_string(dir.join("cluster/store-id"))
            .expect("store id")
            .trim()
            .to_string()
    };
    let mut expected: Vec<String> = [store_id(dir_a.path()), store_id(dir_b.path())]
        .iter()
        .map(|id| format!("history/_catalog/events/{id}.json"))
        .collect();
    expected.sort();
    assert_eq!(manifests, expected);
    wait_until("a to list b's files", Duration::from_secs(30), async || {
        shared(&a).await["files_of_other_instances"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert!(shared(&a).await["catalog_error"].is_null());

    // kill -9 b: it stops answering, so it is out of a's members within seconds, and a
    // answers over b's shipped share from shared storage alone.
    b.kill9();
    wait_until("a to drop b from its members", Duration::from_secs(30), async || {
        members(&a).await.is_empty()
    })
    .await;
    assert_eq!(per_model(&a).await, want);

    // Restarted, b rejoins; its new events reach a through b's tail, then shared storage.
    b = Hub::start_with(dir_b.path(), opts(port_b)).await;
    wait_until("b to rejoin", Duration::from_secs(30), async || {
        members(&a).await == ["b"]
    })
    .await;
    let more = events(3, FEBRUARY + 3600, 30);
    b.post_ok(ndjson(&more)).await;
    let all: Vec<Value> = all.into_iter().chain(more).collect();
    let want = oracle(&all);
    converge(&a, &want, "instance a to see what b took after its restart").await;
    converge(&b, &want, "the restarted instance to agree").await;
}

/// The issue's setting: three instances in one consumer group on a 6-partition topic (Tansu),
/// history in S3 (moto), the catalog in PostgreSQL. Every instance answers over the whole
/// topic; after a kill -9 the survivors take its partitions and still count every event once;
/// the restarted instance agrees, also after a kill -9 between storing a batch and claiming it.
#[tokio::test(flavor = "multi_thread")]
async fn three_kafka_instances_each_answer_over_the_whole_topic() {
    let broker = Broker::start();
    let topic = "events-cluster";
    broker.create_topic(topic, 6).await;
    let s3 = S3Server::start().await;
    s3.create_bucket("hub-shared").await;
    let db = TestDb::create("cluster_kafka").await;
    // c reaches the database through a proxy the test can stall.
    let proxy = StallProxy::start("127.0.0.1:5432".parse().expect("addr")).await;
    let proxied = db.url.replace("127.0.0.1:5432", &proxy.addr.to_string());
    assert_ne!(proxied, db.url);
    let dir = tempfile::tempdir().expect("tmp");
    let opts = |name: &str| {
        let url = if name.starts_with('c') { &proxied } else { &db.url };
        let mut o = kafka_opts(&broker, topic, "g-cluster", &cluster_toml_at(name, url, 1, ""));
        o.env.extend(s3.env());
        o
    };
    let a = Hub::start_with(&dir.path().join("a"), opts("a")).await;
    let b = Hub::start_with(&dir.path().join("b"), opts("b")).await;
    let mut c = Hub::start_with(&dir.path().join("c"), opts("c")).await;
    let hubs = || [&a, &b];
    wait_assigned([&a, &b, &c]).await;

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
    // Each instance's share reaches shared storage (nothing left in memory, nothing unshipped),
    // so what c holds survives its kill -9 for the others.
    for (name, hub) in [("a", &a), ("b", &b), ("c", &c)] {
        wait_shipped(hub, name, 0).await;
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
        let converged = tokio::time::timeout(Duration::from_secs(120), async {
            while per_model(hub).await != want {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        if converged.is_err() {
            dump_cluster(&[("a", &a), ("b", &b)], &db, &dir.path().join("c")).await;
            converge(hub, &want, "the survivors to answer over every event after the kill").await;
        }
    }
    // Restarted, c reads its own files locally, the others' from S3: every event once.
    c = Hub::start_with(&dir.path().join("c"), opts("c-restarted")).await;
    converge(&c, &want, "the restarted instance to agree").await;
    let distinct = c
        .rows("SELECT count(DISTINCT event_id) AS n, count(*) AS total FROM events")
        .await;
    assert_eq!(distinct[0]["n"], distinct[0]["total"], "no event twice: {distinct:?}");
    assert_eq!(distinct[0]["total"], 18_000);

    // kill -9 c mid-ingest, between storing a batch and claiming it: c's database stalls, so c
    // makes a batch of the 30,000 new events durable in its WAL (held out of queries) but the
    // sink transaction that claims it and advances its offsets never commits. a and b take c's
    // partitions from the stored offsets and consume those records again; restarted, c replays
    // only claimed batches. Every instance then counts every event exactly once.
    // c's restart rebalanced the group; a rebalance needs c's database (the sink's offsets), so
    // the stall starts once the assignment has settled.
    wait_assigned([&a, &b, &c]).await;
    proxy.stall();
    let third = generated(93, 30_000, 0.0);
    broker
        .produce(topic, &third.iter().map(|l| l.clone().into_bytes()).collect::<Vec<_>>())
        .await;
    all.extend(third.iter().map(|l| serde_json::from_str::<Value>(l).expect("json")));
    wait_until(
        "c to hold a batch its stalled database cannot claim",
        Duration::from_secs(60),
        async || metric(&c, "storage_rows_held").await > 0.0,
    )
    .await;
    c.kill9();
    proxy.resume();
    let total = all.len() as i64;
    c = Hub::start_with(&dir.path().join("c"), opts("c-after-crash")).await;
    for (name, hub) in [("a", &a), ("b", &b), ("c", &c)] {
        wait_until(
            &format!("{name} to count every event once after the crash"),
            Duration::from_secs(120),
            async || {
                let rows = hub
                    .rows("SELECT count(*) AS total, count(DISTINCT event_id) AS n FROM events")
                    .await;
                rows[0]["total"].as_i64() == Some(total) && rows[0]["n"].as_i64() == Some(total)
            },
        )
        .await;
    }
    let want = oracle(&all);
    for hub in [&a, &b, &c] {
        assert_eq!(per_model(hub).await, want);
    }
}

/// Posts 300 January events to `a` and 200 February events to `b`, waits until each answers
/// over all of them, and returns them.
async fn post_to_both(a: &Hub, b: &Hub) -> Vec<Value> {
    let (of_a, of_b) = (events(1, JANUARY, 300), events(2, FEBRUARY, 200));
    a.post_ok(ndjson(&of_a)).await;
    b.post_ok(ndjson(&of_b)).await;
    let all: Vec<Value> = of_a.into_iter().chain(of_b).collect();
    let want = oracle(&all);
    converge(a, &want, "instance a to see b's events").await;
    converge(b, &want, "instance b to see a's events").await;
    all
}

/// Prints what each instance and the catalog hold (for a failed convergence).
async fn dump_cluster(hubs: &[(&str, &Hub)], db: &TestDb, dead_dir: &Path) {
    for (name, hub) in hubs {
        let status = hub.get_json("/api/v1/ingest/status").await;
        let shared = shared(hub).await;
        let log: Vec<String> = hub
            .log_text()
            .lines()
            .filter(|l| {
                !l.contains("access")
                    && !l.contains("audit")
                    && !l.contains("registered")
                    && !l.contains("store opened")
            })
            .map(str::to_string)
            .collect();
        eprintln!(
            "== {name}: ingest {status}\n== {name}: shared {shared}\n== {name}: log\n{}",
            log.join("\n")
        );
    }
    let mut conn = db.connect().await;
    let files: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT path, instance_id, rows FROM hub_files WHERE removed_at IS NULL ORDER BY path")
            .fetch_all(&mut conn)
            .await
            .expect("catalog");
    eprintln!("== catalog: {files:?}");
    let offsets: Vec<(String, i32, i64)> =
        sqlx::query_as("SELECT topic, partition, next_offset FROM hub_kafka_offsets ORDER BY 1, 2")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    eprintln!("== offsets: {offsets:?}");
    let listing = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .map(|r| {
                r.filter_map(Result::ok)
                    .map(|e| {
                        format!(
                            "{} {}",
                            e.file_name().to_string_lossy(),
                            e.metadata().map(|m| m.len()).unwrap_or(0)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    eprintln!(
        "== dead instance's events dir: {:?}; wal: {:?}",
        listing(&dead_dir.join("events")),
        listing(&dead_dir.join("events/wal"))
    );
}

/// Waits until `hubs` share the topic's 6 partitions, each owning some.
async fn wait_assigned(hubs: [&Hub; 3]) {
    wait_until(
        "the three instances to share the 6 partitions",
        Duration::from_secs(120),
        async || {
            let mut owned = Vec::new();
            for hub in hubs {
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
}

/// Distributed execution: three instances, each holding a third of the events in shared
/// storage. A scan larger than `distributed_bytes_per_partition` is split across all three
/// (`EXPLAIN` shows the stages, each instance runs tasks), and every instance's answer (counts,
/// sums and mergeable p99 sketches) equals the oracle. After a kill -9 the survivors answer
/// again once the dead member has left the worker list (`member_timeout_ms`).
#[tokio::test(flavor = "multi_thread")]
async fn scans_are_split_across_the_instances_and_agree_with_the_oracle() {
    let Setup { s3, db, dir_a, dir_b } = setup("cluster_distributed").await;
    let dir_c = tempfile::tempdir().expect("tmp");
    let keys = "distributed_bytes_per_partition = 2048\nmember_timeout_ms = 2000";
    let toml = |name: &str| cluster_toml_with(name, &db, 1, keys);
    // a also speaks the Postgres wire protocol: its queries take the same cluster-wide plans.
    let wire_port = crate::harness::free_port();
    let mut wire_env = s3.env();
    for (k, v) in [
        ("PGWIRE_ENABLED", "true".to_string()),
        ("PGWIRE_PORT", wire_port.to_string()),
        ("PGWIRE_USER", crate::pgwire::USER.to_string()),
        ("PGWIRE_PASSWORD", crate::pgwire::PASSWORD.to_string()),
    ] {
        wire_env.push((k.to_string(), v));
    }
    let a = Hub::start_with(
        dir_a.path(),
        HubOptions {
            config_toml: Some(toml("a")),
            env: wire_env,
            ..HubOptions::default()
        },
    )
    .await;
    let b = start_toml(dir_b.path(), toml("b"), &s3).await;
    let mut c = start_toml(dir_c.path(), toml("c"), &s3).await;

    let shares = [
        events(1, JANUARY, 900),
        events(2, FEBRUARY, 600),
        events(3, FEBRUARY + 86_400, 750),
    ];
    for (hub, share) in [&a, &b, &c].into_iter().zip(&shares) {
        for chunk in share.chunks(150) {
            hub.post_ok(ndjson(chunk)).await;
        }
    }
    let all: Vec<Value> = shares.iter().flatten().cloned().collect();
    let want = oracle(&all);
    for (name, hub) in [("a", &a), ("b", &b), ("c", &c)] {
        wait_shipped(hub, name, 0).await;
    }
    for hub in [&a, &b, &c] {
        wait_until(
            "every member in every worker list",
            Duration::from_secs(30),
            async || shared(hub).await["workers"].as_array().map_or(0, Vec::len) == 3,
        )
        .await;
    }

    // The plan is split: stages, tasks on the three workers, partial aggregates below the
    // network shuffle.
    let split = explain(&a, PER_MODEL).await;
    assert!(split.contains("DistributedExec"), "{split}");
    assert!(split.contains("Stage 1"), "{split}");
    assert!(split.contains("tasks=3"), "{split}");
    assert!(split.contains("TailExec"), "{split}");

    // Exact counts and sums, and p99 within the sketch's 1 % relative error, on every instance.
    let p99_want = exact_p99_by_model(&all);
    let p99_sql = "SELECT coalesce(model, '') AS model, p99(latency_ms) AS p99 FROM events GROUP BY 1 ORDER BY 1";
    let mut before = Vec::new();
    for hub in [&a, &b, &c] {
        before.push(worker_tasks(hub).await);
    }
    for (name, hub) in [("a", &a), ("b", &b), ("c", &c)] {
        assert_eq!(per_model(hub).await, want, "{name}");
        assert_eq!(hub.count("").await, 2_250, "{name}");
        for row in hub.rows(p99_sql).await {
            let model = row["model"].as_str().expect("model");
            let got = row["p99"].as_f64().expect("p99");
            let exact = p99_want[model];
            assert!(
                (got - exact).abs() <= exact * 0.0101,
                "{name} {model}: p99 {got}, exact {exact}"
            );
        }
    }
    // Each instance ran stage tasks for the others' queries, not only its own.
    for (i, (name, hub)) in [("a", &a), ("b", &b), ("c", &c)].into_iter().enumerate() {
        let ran = worker_tasks(hub).await - before[i];
        assert!(ran >= 3, "{name} ran {ran} tasks over 3 instances' queries");
    }
    // Over the wire endpoint (psql, Grafana): the same answer, and b and c did part of the work.
    let before_wire = (worker_tasks(&b).await, worker_tasks(&c).await);
    let wire = crate::pgwire::connect_to(&format!(
        "host=127.0.0.1 port={wire_port} user={} password={} dbname=hub sslmode=disable",
        crate::pgwire::USER,
        crate::pgwire::PASSWORD
    ))
    .await
    .expect("wire connection");
    let over_wire: BTreeMap<String, (i64, i64)> = wire
        .query(PER_MODEL, &[])
        .await
        .expect("per-model over the wire")
        .iter()
        .map(|r| (r.get::<_, String>(0), (r.get::<_, i64>(1), r.get::<_, i64>(2))))
        .collect();
    assert_eq!(over_wire, want);
    assert!(worker_tasks(&b).await > before_wire.0 && worker_tasks(&c).await > before_wire.1);

    // Small queries stay where they are asked: a range no shared file overlaps is not
    // distributed (and the members' tails are read by a itself).
    let small = explain(
        &a,
        "SELECT count(*) FROM events WHERE timestamp < '2025-06-01T00:00:00Z'",
    )
    .await;
    assert!(!small.contains("DistributedExec"), "{small}");
    // Nor does a query reading this instance's own tables (`late_events`: a task elsewhere
    // would read another machine's disk), however large its scan of shared files.
    let local = explain(
        &a,
        "SELECT count(*) FROM events WHERE event_id IN (SELECT event_id FROM late_events)",
    )
    .await;
    assert!(local.contains("history/events/"), "{local}");
    assert!(!local.contains("DistributedExec"), "{local}");

    // kill -9 c: its shipped share stays readable; once it has left the worker list (2 s
    // heartbeat timeout) every query answers again, exactly.
    c.kill9();
    for (name, hub) in [("a", &a), ("b", &b)] {
        wait_until(
            &format!("{name} to answer exactly without c"),
            Duration::from_secs(30),
            async || {
                let (status, body) = hub.sql(PER_MODEL).await;
                status == 200 && rows_per_model(&body) == want
            },
        )
        .await;
    }
    c = start_toml(dir_c.path(), toml("c-restarted"), &s3).await;
    assert_eq!(per_model(&c).await, want);
    assert_eq!(c.count("").await, 2_250);
}

/// The plans `EXPLAIN sql` shows on `hub`, one after the other.
async fn explain(hub: &Hub, sql: &str) -> String {
    hub.rows(&format!("EXPLAIN {sql}"))
        .await
        .iter()
        .map(|r| r["plan"].as_str().unwrap_or_default().to_string() + "\n")
        .collect()
}

fn exact_p99_by_model(events: &[Value]) -> BTreeMap<String, f64> {
    let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for e in events {
        by.entry(e["payload"]["model"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(e["payload"]["latency_ms"].as_f64().expect("latency"));
    }
    by.into_iter()
        .map(|(m, mut v)| {
            v.sort_by(f64::total_cmp);
            // The rank the sketch estimates: floor(q · (n − 1)).
            let rank = (0.99 * (v.len() - 1) as f64).floor() as usize;
            (m, v[rank])
        })
        .collect()
}

fn rows_per_model(body: &Value) -> BTreeMap<String, (i64, i64)> {
    body["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["model"].as_str().unwrap_or_default().to_string(),
                (r["n"].as_i64().unwrap_or(-1), r["t"].as_i64().unwrap_or(-1)),
            )
        })
        .collect()
}

/// `cluster_worker_tasks_total` of `hub`.
async fn worker_tasks(hub: &Hub) -> u64 {
    hub.metrics_text()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("cluster_worker_tasks_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// `/ready`'s view of shared history.
async fn shared(hub: &Hub) -> Value {
    hub.get_json("/ready").await["components"][0]["detail"]["shared"].clone()
}

async fn members(hub: &Hub) -> Vec<String> {
    shared(hub).await["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|x| x["instance"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Events acknowledged on one instance are in the very next answer of another, flushed or not:
/// the reader asks the owner for what its list of shared files lacks.
#[tokio::test]
async fn recent_events_are_in_the_next_answer_of_every_instance() {
    let Setup { s3, db, dir_a, dir_b } = setup("cluster_tail").await;
    // Nothing is flushed for 5 minutes: every event below travels as a tail.
    let a = start_flushing(dir_a.path(), "a", &db, &s3, 300).await;
    let b = start_flushing(dir_b.path(), "b", &db, &s3, 300).await;
    wait_until("each instance to list the other", Duration::from_secs(30), async || {
        members(&a).await == ["b"] && members(&b).await == ["a"]
    })
    .await;
    let of_a = events(4, JANUARY, 120);
    a.post_ok(ndjson(&of_a)).await;
    assert_eq!(per_model(&b).await, oracle(&of_a), "b's next answer has a's events");
    let of_b = events(5, FEBRUARY, 80);
    b.post_ok(ndjson(&of_b)).await;
    let both: Vec<Value> = of_a.iter().chain(&of_b).cloned().collect();
    assert_eq!(per_model(&a).await, oracle(&both));
    assert_eq!(per_model(&b).await, oracle(&both));
    // Filters and projections travel: only February, two columns.
    assert_eq!(a.count("WHERE timestamp >= '2026-02-01T00:00:00Z'").await, 80);
    let rows = b
        .rows("SELECT event_id, model FROM events WHERE timestamp < '2026-01-01T00:00:10Z' ORDER BY event_id")
        .await;
    assert_eq!(rows.len(), 10, "{rows:?}");
    assert_eq!(rows[0]["event_id"], of_a[0]["event_id"]);
    // A wrong secret is refused.
    let refused = a
        .client
        .post(a.url("/internal/v1/cluster/tail"))
        .header("x-hub-cluster-secret", "guess")
        .body("{}")
        .send()
        .await
        .expect("tail");
    assert_eq!(refused.status(), 401);
}

/// Shipping races the queries: with segments flushed and shipped every second, every answer
/// during 40 rounds of ingest counts each acknowledged event exactly once. A killed member's
/// unshipped events are left out (counted in `/ready`) until it is back.
#[tokio::test]
async fn shipping_racing_queries_counts_every_event_once() {
    let Setup { s3, db, dir_a, dir_b } = setup("cluster_race").await;
    // What is tested is the tail and the catalog, not the result cache (whose key follows the
    // members' heartbeats, README "Scaling out"): every count is computed.
    let start = |dir: &Path, name: &str| {
        let (db, s3) = (&db, &s3);
        let dir = dir.to_path_buf();
        let name = name.to_string();
        async move {
            let mut env = s3.env();
            env.push(("CACHE_ENABLED".into(), "false".into()));
            Hub::start_with(
                &dir,
                HubOptions {
                    config_toml: Some(cluster_toml(&name, db, 1)),
                    env,
                    ..HubOptions::default()
                },
            )
            .await
        }
    };
    let mut a = start(dir_a.path(), "a").await;
    let b = start(dir_b.path(), "b").await;
    wait_until("b to list a", Duration::from_secs(30), async || {
        members(&b).await == ["a"]
    })
    .await;
    let mut all = Vec::new();
    // Rounds go on until a has shipped 4 segments (1 s each) underneath them, ten a second
    // (paced, so the tests running beside this one keep their share of the 2 cores).
    let mut round = 0u64;
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    loop {
        pace.tick().await;
        let batch = events(100 + round, JANUARY + round as i64 * 3600, 50);
        a.post_ok(ndjson(&batch)).await;
        all.extend(batch);
        assert_eq!(b.count("").await, all.len() as i64, "round {round}");
        round += 1;
        let shipped = shared(&a).await["shipper"]["shipped_files"].as_u64().expect("shipped");
        if round >= 20 && shipped >= 4 {
            break;
        }
        assert!(round < 2_000, "a shipped {shipped} segments in {round} rounds");
    }
    let shipped = shared(&a).await["shipper"]["shipped_files"].as_u64().expect("shipped");
    assert!(metric(&a, "cluster_files_shipped_total").await >= shipped as f64);
    assert_eq!(metric(&b, "cluster_members").await, 1.0);
    // kill -9: b still answers at once (the dead member's tail is left out and counted).
    let tail = events(999, FEBRUARY, 25);
    a.post_ok(ndjson(&tail)).await;
    all.extend(tail);
    a.kill9();
    let (status, _) = b.sql("SELECT count(*) FROM events").await;
    assert_eq!(status, 200);
    assert!(shared(&b).await["tail_errors"].as_u64().expect("tail errors") >= 1);
    assert!(metric(&b, "cluster_tail_errors_total").await >= 1.0);
    a = start(dir_a.path(), "a").await;
    wait_until("b to see every event again", Duration::from_secs(30), async || {
        b.count("").await == all.len() as i64
    })
    .await;
    assert_eq!(a.count("").await, all.len() as i64);
}

/// Waits until `hub` holds nothing in memory and has shipped every flushed file but `stray`
/// unreadable ones.
async fn wait_shipped(hub: &Hub, name: &str, stray: u64) {
    let mut last = Value::Null;
    let shipped = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let ready = hub.get_json("/ready").await;
            let detail = &ready["components"][0]["detail"];
            // `pending_files` counts a segment flushed since the shipper's last round too
            // (before, such a file was neither in memory nor pending, and a kill -9 right then
            // left the survivors without it: the three-Kafka test's flake).
            if detail["rows_in_memory"] == 0
                && detail["shared"]["shipper"]["pending_files"] == stray
                && detail["shared"]["shipper"]["shipped_files"].as_u64().unwrap_or(0) >= 1
            {
                return;
            }
            last = detail.clone();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        shipped.is_ok(),
        "timed out after 60 s waiting for {name} to ship what it holds; its storage: {last}; held rows: {}",
        metric(hub, "storage_rows_held").await
    );
}

/// Shared objects under the bucket's `history/events/` prefix (S3 ListObjectsV2 on moto).
async fn objects(s3: &S3Server) -> Vec<String> {
    objects_under(s3, "history/events/").await
}

/// Objects of the bucket under `prefix`.
async fn objects_under(s3: &S3Server, prefix: &str) -> Vec<String> {
    let xml = reqwest::get(format!("{}/hub-shared?list-type=2&prefix={prefix}", s3.endpoint()))
        .await
        .expect("list")
        .text()
        .await
        .expect("list body");
    xml.split("<Key>")
        .skip(1)
        .filter_map(|k| k.split("</Key>").next())
        .map(str::to_string)
        .collect()
}

/// Compaction runs once for the cluster (whoever holds the lock): a directory's small files
/// become one sorted file, the replaced objects are deleted, every answer stays exact, and the
/// owner neither ships nor serves the merged segments again, across a restart too.
#[tokio::test]
async fn compaction_merges_small_files_once_for_the_cluster() {
    let Setup { s3, db, dir_a, dir_b } = setup("cluster_compact").await;
    let keys = "compact_interval_ms = 200\ncompact_min_files = 3\ncompact_grace_secs = 0";
    let a_toml = || cluster_toml_with("a", &db, 1, keys);
    let mut a = start_toml(dir_a.path(), a_toml(), &s3).await;
    let b = start_toml(dir_b.path(), cluster_toml_with("b", &db, 1, keys), &s3).await;
    wait_until("b to list a", Duration::from_secs(30), async || {
        members(&b).await == ["a"]
    })
    .await;

    // Six rounds, each flushed and shipped as its own small file.
    let mut all = Vec::new();
    for round in 0..6u64 {
        let batch = events(200 + round, JANUARY + round as i64 * 86_400, 40);
        a.post_ok(ndjson(&batch)).await;
        all.extend(batch);
        wait_until("the round to be shipped", Duration::from_secs(30), async || {
            shared(&a).await["shipper"]["shipped_files"].as_u64().unwrap_or(0) > round
        })
        .await;
    }
    wait_shipped(&a, "a", 0).await;
    let want = oracle(&all);
    let mut conn = db.connect().await;
    let catalog = async |conn: &mut sqlx::PgConnection| -> (i64, i64, i64) {
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE level = 1 AND removed_at IS NULL), \
                    count(*) FILTER (WHERE level = 0 AND removed_at IS NULL), \
                    count(*) FILTER (WHERE removed_at IS NOT NULL) FROM hub_files WHERE table_name = 'events'",
        )
        .fetch_one(conn)
        .await
        .expect("catalog")
    };
    // Settled: merged until fewer than compact_min_files small files are left, the replaced
    // ones purged (grace 0).
    wait_until(
        "a's files to be compacted and the replaced ones purged",
        Duration::from_secs(60),
        async || {
            let (compacted, flushed, replaced) = catalog(&mut conn).await;
            compacted >= 1 && flushed < 3 && replaced == 0
        },
    )
    .await;
    let visible = async |conn: &mut sqlx::PgConnection| -> BTreeSet<String> {
        sqlx::query_scalar::<_, String>(
            "SELECT 'history/' || path FROM hub_files WHERE removed_at IS NULL AND table_name = 'events'",
        )
        .fetch_all(conn)
        .await
        .expect("visible")
        .into_iter()
        .collect()
    };
    let before = visible(&mut conn).await;
    let leaders: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT instance_id FROM hub_files WHERE level = 1 AND table_name = 'events'")
            .fetch_all(&mut conn)
            .await
            .expect("leaders");
    assert_eq!(leaders.len(), 1, "one instance compacts: {leaders:?}");
    let rows: i64 = sqlx::query_scalar(
        "SELECT sum(rows)::bigint FROM hub_files WHERE removed_at IS NULL AND table_name = 'events'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("rows");
    assert_eq!(rows, all.len() as i64, "every row in exactly one visible file");
    let stored: BTreeSet<String> = objects(&s3).await.into_iter().collect();
    assert_eq!(stored, before, "the replaced objects are deleted");
    assert_eq!(
        per_model(&b).await,
        want,
        "b reads the compacted file and a's tail skips it"
    );
    assert_eq!(per_model(&a).await, want);

    // Restarted, a ships none of the merged segments again.
    a.terminate();
    a = start_toml(dir_a.path(), a_toml(), &s3).await;
    assert_eq!(shared(&a).await["shipper"]["pending_files"], 0);
    assert_eq!(visible(&mut conn).await, before, "no flushed segment shipped again");
    wait_until("b to list a again", Duration::from_secs(30), async || {
        members(&b).await == ["a"]
    })
    .await;
    assert_eq!(per_model(&b).await, want);
    assert_eq!(per_model(&a).await, want);
}

/// The value of an unlabelled metric of `/metrics`.
async fn metric(hub: &Hub, name: &str) -> f64 {
    let text = hub.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// `storage.retention_days` in a cluster: shared history past it is taken out once (by the
/// maintenance leader), its object deleted, and the owner's local copy leaves its tail, so every
/// instance answers over the recent events only.
#[tokio::test(flavor = "multi_thread")]
async fn retention_takes_old_shared_history_out_for_the_whole_cluster() {
    let Setup { s3, db, dir_a, dir_b } = setup("cluster_retention").await;
    let keys = "compact_interval_ms = 200\ncompact_grace_secs = 0";
    let toml = |name: &str| {
        cluster_toml_with(name, &db, 1, keys).replacen(
            "[storage]\n",
            "[storage]\nretention_days = 30\nretention_check_secs = 1\n",
            1,
        )
    };
    let a = start_toml(dir_a.path(), toml("a"), &s3).await;
    let b = start_toml(dir_b.path(), toml("b"), &s3).await;
    wait_until("b to list a", Duration::from_secs(30), async || {
        members(&b).await == ["a"]
    })
    .await;

    let now = chrono::Utc::now().timestamp();
    let recent = events(301, now - 600, 90);
    a.post_ok(ndjson(&recent)).await;
    wait_until("the recent events to be shipped", Duration::from_secs(30), async || {
        shared(&a).await["shipper"]["shipped_files"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    // January 2026: far past 30 days.
    a.post_ok(ndjson(&events(302, JANUARY, 120))).await;
    let want = oracle(&recent);
    for (name, hub) in [("a", &a), ("b", &b)] {
        converge(hub, &want, &format!("{name} to answer over the recent events only")).await;
    }
    let mut conn = db.connect().await;
    let cutoff_us = (now - 30 * 86_400) * 1_000_000;
    wait_until(
        "the old file to leave the catalog and the bucket",
        Duration::from_secs(60),
        async || {
            let old: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM hub_files WHERE max_event_time_us < $1 AND table_name = 'events'",
            )
            .bind(cutoff_us)
            .fetch_one(&mut conn)
            .await
            .expect("catalog");
            let visible: BTreeSet<String> = sqlx::query_scalar::<_, String>(
                "SELECT 'history/' || path FROM hub_files WHERE removed_at IS NULL AND table_name = 'events'",
            )
            .fetch_all(&mut conn)
            .await
            .expect("visible")
            .into_iter()
            .collect();
            let stored: BTreeSet<String> = objects(&s3).await.into_iter().collect();
            old == 0 && !visible.is_empty() && stored == visible
        },
    )
    .await;
    assert!(metric(&a, "storage_files_expired_total").await >= 1.0);
    for hub in [&a, &b] {
        assert_eq!(per_model(hub).await, want);
    }
}

/// 2026-03-01T00:00:00Z: the continuous-query test's events.
const MARCH: i64 = 1_772_323_200;

/// `SELECT` of one window of a rollup: per model, (requests, input tokens, p99 latency).
async fn rollup_rows(hub: &Hub, table: &str, window_start: i64) -> BTreeMap<String, (i64, i64, f64)> {
    let start = chrono::DateTime::from_timestamp(window_start, 0)
        .expect("ts")
        .to_rfc3339();
    let sql = format!(
        "SELECT model, requests, input_tokens, p99_latency_ms FROM {table} \
         WHERE window_start = TIMESTAMP '{start}' ORDER BY model"
    );
    hub.rows(&sql)
        .await
        .iter()
        .map(|r| {
            (
                r["model"].as_str().expect("model").to_string(),
                (
                    r["requests"].as_i64().expect("requests"),
                    r["input_tokens"].as_i64().expect("input_tokens"),
                    r["p99_latency_ms"].as_f64().expect("p99"),
                ),
            )
        })
        .collect()
}

/// Waits until `table`'s row of `window_start` on `hub` has, per model, the oracle's counts and
/// token sums and a p99 within the sketch's 1 % of the exact one.
async fn wait_rollup(hub: &Hub, what: &str, table: &str, window_start: i64, events: &[Value]) {
    let in_window: Vec<Value> = events
        .iter()
        .filter(|e| {
            let ts = chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().expect("ts")).expect("ts");
            let t = ts.timestamp();
            let size = if table.ends_with("_1m") { 60 } else { 3600 };
            t >= window_start && t < window_start + size
        })
        .cloned()
        .collect();
    let counts = oracle(&in_window);
    let p99 = exact_p99_by_model(&in_window);
    let mut last = BTreeMap::new();
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            last = rollup_rows(hub, table, window_start).await;
            let right = last.len() == counts.len()
                && last.iter().all(|(model, (n, t, q))| {
                    counts.get(model) == Some(&(*n, *t)) && (q - p99[model]).abs() <= 0.01 * p99[model] + 1e-9
                });
            if right {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "timed out waiting for {what}: {table} at {window_start} is {last:?}, want counts {counts:?} and p99 {p99:?}"
    );
}

/// `/ready`'s shared-table entry of `query` on `hub`.
async fn shared_table(hub: &Hub, query: &str) -> Value {
    shared(hub).await["tables"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["query"] == query)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The continuous-query tables are cluster-wide: two instances each aggregate their own events
/// of the same minutes, and on either instance `llm_provider_model_1m` and `…_1h` hold the
/// merge of both (counts and token sums exact, p99 from the merged sketches within 1 %). Each
/// instance ships its rows like its events, and compaction merges their small files like the
/// events'; after a kill -9 the survivor still answers with the dead instance's rows from
/// shared storage.
#[tokio::test]
async fn continuous_query_tables_hold_every_instances_rows() {
    let Setup { s3, db, dir_a, dir_b } = setup("cluster_cq").await;
    // Replaced files outlive any query here (a grace of 0 lets a query that listed them just
    // before the swap find them deleted).
    let keys = "compact_interval_ms = 200\ncompact_min_files = 2\ncompact_grace_secs = 60";
    let a = start_toml(dir_a.path(), cluster_toml_with("a", &db, 1, keys), &s3).await;
    let mut b = start_toml(dir_b.path(), cluster_toml_with("b", &db, 1, keys), &s3).await;
    // The same two minutes on both instances, 20 events per model and minute on each; one
    // event at 00:30 on each closes those minutes there (round one), one three hours later
    // closes the rest of the first hour (round two): two files of 1m rows per instance.
    let (of_a, of_b) = (events(1, MARCH, 120), events(2, MARCH, 120));
    let closers = [events(3, MARCH + 1800, 1), events(4, MARCH + 1800, 1)];
    a.post_ok(ndjson(&of_a)).await;
    b.post_ok(ndjson(&of_b)).await;
    a.post_ok(ndjson(&closers[0])).await;
    b.post_ok(ndjson(&closers[1])).await;
    for hub in [&a, &b] {
        wait_until("the first 1m rows to be shipped", Duration::from_secs(60), async || {
            shared_table(hub, "llm_provider_model_1m").await["shipper"]["shipped_files"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        })
        .await;
    }
    a.post_ok(ndjson(&events(5, MARCH + 3 * 3600, 1))).await;
    b.post_ok(ndjson(&events(6, MARCH + 3 * 3600, 1))).await;
    let both: Vec<Value> = of_a
        .iter()
        .chain(&of_b)
        .chain(closers.iter().flatten())
        .cloned()
        .collect();

    let check = async |hub: &Hub, what: &str| {
        for (table, start) in [
            ("llm_provider_model_1m", MARCH),
            ("llm_provider_model_1m", MARCH + 60),
            ("llm_provider_model_1h", MARCH),
        ] {
            wait_rollup(hub, what, table, start, &both).await;
        }
    };
    for (name, hub) in [("a", &a), ("b", &b)] {
        check(hub, &format!("{name} to merge both instances' rows")).await;
        let queries = hub.get_json("/api/v1/continuous-queries").await;
        let scope = |q: &str| {
            queries["continuous_queries"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["name"] == q)
                .map(|x| x["scope"].clone())
                .unwrap_or(Value::Null)
        };
        assert_eq!(scope("llm_provider_model_1m"), "cluster", "{queries}");
        assert_eq!(scope("llm_provider_model_1mo"), "cluster", "{queries}");
    }
    // One row per window and model, not one per instance.
    let rows: i64 = b
        .rows("SELECT count(*) AS n FROM llm_provider_model_1m WHERE window_start < TIMESTAMP '2026-03-01T00:02:00Z'")
        .await[0]["n"]
        .as_i64()
        .expect("n");
    assert_eq!(rows, 6, "two minutes × three models");

    // Each instance's two small files of 1m rows are compacted into one, once for the cluster,
    // and the answers stay the same.
    let mut conn = db.connect().await;
    wait_until(
        "the 1m rows' files to be compacted",
        Duration::from_secs(60),
        async || {
            let compacted: i64 = sqlx::query_scalar(
                "SELECT count(DISTINCT store_id) FROM hub_files \
             WHERE table_name LIKE 'cq.llm_provider_model_1m.%' AND level = 1 AND removed_at IS NULL",
            )
            .fetch_one(&mut conn)
            .await
            .expect("catalog");
            compacted == 2
        },
    )
    .await;
    check(&a, "a to answer the same over compacted files").await;

    // b's rows reach shared storage; after a kill -9 a answers with them from there.
    wait_until("b to ship its 1m and 1h rows", Duration::from_secs(60), async || {
        let mut done = true;
        for q in ["llm_provider_model_1m", "llm_provider_model_1h"] {
            let t = shared_table(&b, q).await;
            done &= t["rows_in_memory"] == 0
                && t["shipper"]["pending_files"] == 0
                && t["shipper"]["shipped_files"].as_u64().unwrap_or(0) >= 1;
        }
        done
    })
    .await;
    b.kill9();
    wait_until("a to drop b from its members", Duration::from_secs(30), async || {
        members(&a).await.is_empty()
    })
    .await;
    check(&a, "a to answer with b's shipped rows").await;
}

/// A query deleted and created again with the same SQL would number its files from 0 again,
/// under names the catalog still lists for its old rows: the Hub keeps such a table this
/// instance's own (saying why) rather than let the old files shadow the new rows; under
/// another name the same SQL is cluster-wide again.
#[tokio::test]
async fn a_query_created_again_with_the_sql_of_a_deleted_one_is_not_shadowed_by_its_old_files() {
    use super::cq::{PER_MODEL, register_ok};
    let Setup { s3, db, dir_a, .. } = setup("cluster_cq_again").await;
    let toml = cluster_toml("a", &db, 1) + "\n[stream]\nshipped_queries = false\n";
    let a = start_toml(dir_a.path(), toml, &s3).await;
    let rollup = |base: &str| {
        format!(
            "SELECT window_start, window_end, model, sum(n) AS n, sum(tokens) AS tokens FROM {base} \
             GROUP BY tumble(window_start, INTERVAL '5 minutes'), model"
        )
    };
    let scope = async |name: &str| {
        let q = a.get_json(&format!("/api/v1/continuous-queries/{name}")).await;
        (
            q["scope"].as_str().unwrap_or_default().to_string(),
            q["scope_reason"].clone(),
        )
    };
    register_ok(&a, "per_model", PER_MODEL, serde_json::json!({})).await;
    register_ok(&a, "per_model_5m", &rollup("per_model"), serde_json::json!({})).await;
    assert_eq!(scope("per_model").await.0, "cluster");
    a.post_ok(ndjson(&events(7, MARCH, 120))).await;
    a.post_ok(ndjson(&events(8, MARCH + 3600, 1))).await;
    wait_until("per_model's rows to be shipped", Duration::from_secs(60), async || {
        shared_table(&a, "per_model").await["shipper"]["shipped_files"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    })
    .await;

    for name in ["per_model_5m", "per_model"] {
        assert_eq!(
            a.delete(&format!("/api/v1/continuous-queries/{name}")).await,
            204,
            "{name}"
        );
    }
    register_ok(&a, "per_model", PER_MODEL, serde_json::json!({})).await;
    register_ok(&a, "per_model_5m", &rollup("per_model"), serde_json::json!({})).await;
    let (kind, why) = scope("per_model").await;
    assert_eq!(kind, "instance", "{why}");
    assert!(why.as_str().unwrap_or_default().contains("created again"), "{why}");

    register_ok(&a, "per_model_v2", PER_MODEL, serde_json::json!({})).await;
    register_ok(&a, "per_model_v2_5m", &rollup("per_model_v2"), serde_json::json!({})).await;
    assert_eq!(scope("per_model_v2").await.0, "cluster");
}
