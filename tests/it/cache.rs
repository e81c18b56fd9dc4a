//! The result cache against the real binary: in-process by default, a private `redis-server`
//! that is killed and restarted mid-test, and a 6-node Redis Cluster that loses a master.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Hub, free_port, generated, wait_for, wait_until};
use crate::pgwire::{WireHub, query_i64};

/// A `redis-server` of this test on a free loopback port (never the shared one on 6379).
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    cluster: bool,
}

impl RedisServer {
    fn start(dir: &Path, port: u16, cluster: bool) -> Self {
        let dir = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut server = Self {
            child: None,
            port,
            dir,
            cluster,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&self.dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                // A cache cluster keeps serving the slots it has while others fail over.
                "--cluster-require-full-coverage",
                "no",
                // A replica takes over however long ago it last heard from its master.
                "--cluster-replica-validity-factor",
                "0",
            ]);
        }
        self.child = Some(cmd.spawn().expect("redis-server (apt install redis-server)"));
        let port = self.port;
        wait_for_sync("redis-server to answer PING", || {
            cli(port, &["PING"]).is_some_and(|out| out.trim() == "PONG")
        });
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn cli(&self, args: &[&str]) -> Option<String> {
        cli(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli -p port args...`, its stdout when it ran.
fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls a blocking condition for up to 30 s.
fn wait_for_sync(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `sql` and returns (X-Cache, body).
async fn ask(hub: &Hub, sql: &str) -> (String, Value) {
    let r = hub
        .client
        .post(hub.url("/api/v1/sql"))
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .expect("sql request");
    assert_eq!(r.status(), 200, "{sql}");
    let cache = r
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().expect("ascii").to_string())
        .unwrap_or_default();
    (cache, r.json().await.expect("json"))
}

fn first_n(body: &Value) -> i64 {
    body["rows"][0]["n"]
        .as_i64()
        .unwrap_or_else(|| panic!("no n in {body}"))
}

/// The value of counter `name{labels}` in `/metrics` (0 when absent).
async fn counter(hub: &Hub, series: &str) -> f64 {
    hub.metrics_text()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(0.0)
}

const COUNT_EVENTS: &str = "SELECT count(*) AS n FROM events";

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_cached_until_a_table_they_read_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(&dir.path().join("data")).await;
    let (status, _) = hub.post_ndjson(generated(21, 300, 0.0).join("\n")).await;
    assert_eq!(status, 200);

    // Raw events: miss, then hit with the same answer; new events make the next one a miss.
    let (c1, b1) = ask(&hub, COUNT_EVENTS).await;
    assert_eq!((c1.as_str(), first_n(&b1)), ("miss", 300));
    let (c2, b2) = ask(&hub, "select   count(*) as n\nfrom events -- same statement\n").await;
    assert_eq!(
        (c2.as_str(), &b2["rows"]),
        ("hit", &b1["rows"]),
        "whitespace, keyword case and comments do not make another entry"
    );
    let (status, _) = hub.post_ndjson(generated(22, 7, 0.0).join("\n")).await;
    assert_eq!(status, 200);
    let (c3, b3) = ask(&hub, COUNT_EVENTS).await;
    assert_eq!(
        (c3.as_str(), first_n(&b3)),
        ("miss", 307),
        "acknowledged events are never hidden by the cache"
    );
    assert_eq!(ask(&hub, COUNT_EVENTS).await.0, "hit");

    // Not cacheable: no Hub table, or a volatile function.
    assert_eq!(ask(&hub, "SELECT 1 AS n").await.0, "bypass");
    assert_eq!(ask(&hub, "SELECT random() AS r FROM events LIMIT 1").await.0, "bypass");

    // Formats without JSON's row cap share one entry: CSV fills it, Arrow is served from it.
    let csv = hub.sql_as("text/csv", COUNT_EVENTS).await;
    assert_eq!(csv.headers()["x-cache"], "miss");
    assert_eq!(csv.text().await.expect("csv"), "n\n307\n");
    let arrow = hub.sql_as("application/vnd.apache.arrow.stream", COUNT_EVENTS).await;
    assert_eq!(arrow.headers()["x-cache"], "hit");

    // REST reads: cached per parameters, invalidated by new events.
    let list = |q: &'static str| {
        let hub = &hub;
        async move {
            let r = hub.get(&format!("/api/v1/events?{q}")).await;
            let cache = r.headers()["x-cache"].to_str().expect("ascii").to_string();
            (cache, r.json::<Value>().await.expect("json"))
        }
    };
    let (l1, page1) = list("limit=5").await;
    let (l2, page2) = list("limit=5").await;
    assert_eq!((l1.as_str(), l2.as_str()), ("miss", "hit"));
    assert_eq!(page1, page2);
    assert_eq!(list("limit=6").await.0, "miss", "other parameters, other entry");

    let ready = hub.get_json("/ready").await;
    let cache = ready["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["name"] == "cache")
        .expect("cache component")
        .clone();
    assert_eq!(
        (cache["kind"].as_str(), cache["detail"]["status"].as_str()),
        (Some("memory"), Some("ok"))
    );
    assert!(counter(&hub, "cache_hits_total{cache_type=\"events\"}").await >= 4.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rollup_answers_are_invalidated_when_their_query_emits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(&dir.path().join("data")).await;
    let (status, body) = hub
        .sql("CREATE CONTINUOUS QUERY per_minute AS SELECT window_start, count(*) AS n FROM events GROUP BY tumble(timestamp, INTERVAL '1 minute')")
        .await;
    assert_eq!(status, 201, "{body}");
    // 2026-11-20 00:00:00 .. 00:59:30, every 30 s: the windows up to 00:58 close.
    assert_eq!(hub.post_ndjson(crate::pgwire::events_ndjson()).await.0, 200);
    let rollup = "SELECT count(*) AS n FROM per_minute";
    let before = wait_for("the first windows to close", Duration::from_secs(30), async || {
        let n = first_n(&ask(&hub, rollup).await.1);
        (n > 0).then_some(n)
    })
    .await;
    let (cache, body) = ask(&hub, rollup).await;
    if first_n(&body) == before {
        assert_eq!(cache, "hit", "an unchanged rollup table is answered from the cache");
    }
    // One event ten minutes later closes the rest.
    let late = r#"{"event_id":"00000000-0000-4000-8000-00000000ffff","timestamp":"2026-11-20T01:10:00Z","source_module":"llm-observatory","event_type":"telemetry","payload":{"model":"m"}}"#;
    assert_eq!(hub.post_ndjson(late.into()).await.0, 200);
    let after = wait_for(
        "the rollup's new rows to be answered",
        Duration::from_secs(30),
        async || {
            let (cache, body) = ask(&hub, rollup).await;
            let n = first_n(&body);
            (n > before).then_some((cache, n))
        },
    )
    .await;
    assert_eq!(
        after.0, "miss",
        "the first answer with new rows is computed, never a stale hit"
    );
    assert_eq!(after.1, 60, "every minute of the hour closed");
    assert_eq!(ask(&hub, rollup).await.0, "hit");
    assert!(counter(&hub, "cache_hits_total{cache_type=\"metrics\"}").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_expire_and_large_answers_are_not_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_env(
        dir.path(),
        vec![
            ("CACHE_EVENTS_TTL".into(), "1".into()),
            ("CACHE_MAX_ENTRY_BYTES".into(), "2048".into()),
        ],
    )
    .await;
    assert_eq!(hub.post_ndjson(generated(31, 200, 0.0).join("\n")).await.0, 200);
    assert_eq!(ask(&hub, COUNT_EVENTS).await.0, "miss");
    let started = std::time::Instant::now();
    // Within the 1 s TTL it is a hit; after it, with no new data, a miss again.
    wait_until("the 1 s entry to expire", Duration::from_secs(10), async || {
        ask(&hub, COUNT_EVENTS).await.0 == "miss"
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "expired after its TTL, not before"
    );

    // 200 event ids do not fit in 2 KiB compressed: computed every time, never stored.
    let big = "SELECT event_id, payload FROM events ORDER BY event_id";
    assert_eq!(ask(&hub, big).await.0, "miss");
    assert_eq!(ask(&hub, big).await.0, "miss");
    assert!(counter(&hub, "cache_errors_total{operation=\"too_large\"}").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn wire_queries_are_cached_per_statement_and_parameters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wire = WireHub::start(dir.path(), &[]).await;
    let client = wire.connect().await;
    let hits = || counter(&wire.hub, "cache_hits_total{cache_type=\"events\"}");

    // Extended protocol: each parameter value has its own entry.
    let sql = "SELECT count(*) FROM events WHERE model = $1";
    assert_eq!(query_i64(&client, sql, &[&"gpt-4o"]).await, 60);
    let h0 = hits().await;
    assert_eq!(query_i64(&client, sql, &[&"gpt-4o"]).await, 60);
    assert_eq!(hits().await, h0 + 1.0, "same statement and parameters: a hit");
    assert_eq!(
        query_i64(&client, sql, &[&"no-such-model"]).await,
        0,
        "other parameters: their own answer"
    );
    assert_eq!(hits().await, h0 + 1.0);

    // Simple protocol: the second run is a hit with the same rows.
    let simple = "SELECT count(*) AS n FROM events";
    let first = crate::pgwire::simple_rows(&client.simple_query(simple).await.expect("simple"));
    assert_eq!(first, vec![vec![Some("120".to_string())]]);
    let h1 = hits().await;
    let second = crate::pgwire::simple_rows(&client.simple_query(simple).await.expect("simple"));
    assert_eq!(second, first);
    assert_eq!(
        hits().await,
        h1 + 1.0,
        "the repeated simple query is served from the cache"
    );

    // New events: the wire sees them at once.
    assert_eq!(wire.hub.post_ndjson(generated(41, 5, 0.0).join("\n")).await.0, 200);
    let rows = crate::pgwire::simple_rows(&client.simple_query(simple).await.expect("simple"));
    assert_eq!(rows, vec![vec![Some("125".to_string())]]);
}

/// The Hub pointed at `redis_env`, with 100 events.
async fn hub_with(dir: &Path, redis_env: Vec<(String, String)>) -> Hub {
    let hub = Hub::start_env(dir, redis_env).await;
    assert_eq!(hub.post_ndjson(generated(51, 100, 0.0).join("\n")).await.0, 200);
    hub
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_means_answers_without_the_cache_then_the_cache_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut redis = RedisServer::start(dir.path(), free_port(), false);
    let prefix = format!("hubtest{}:", redis.port);
    let hub = hub_with(
        dir.path(),
        vec![
            ("REDIS_URL".into(), format!("redis://127.0.0.1:{}", redis.port)),
            ("CACHE_KEY_PREFIX".into(), prefix.clone()),
        ],
    )
    .await;
    assert_eq!(ask(&hub, COUNT_EVENTS).await.0, "miss");
    let (cache, body) = ask(&hub, COUNT_EVENTS).await;
    assert_eq!((cache.as_str(), first_n(&body)), ("hit", 100));
    let keys = redis
        .cli(&["--scan", "--pattern", &format!("{prefix}*")])
        .expect("scan");
    assert_eq!(
        keys.lines().filter(|k| !k.ends_with(":lock")).count(),
        1,
        "one entry in Redis: {keys}"
    );
    let ttl: i64 = redis
        .cli(&["PTTL", keys.lines().next().expect("key")])
        .expect("pttl")
        .trim()
        .parse()
        .expect("ms");
    assert!(
        (1..=60_000).contains(&ttl),
        "events entries live the events TTL: {ttl} ms"
    );

    redis.kill();
    for i in 0..6 {
        let (cache, body) = ask(&hub, COUNT_EVENTS).await;
        assert_eq!(
            (cache.as_str(), first_n(&body)),
            ("bypass", 100),
            "query {i} with Redis down"
        );
    }
    let ready = hub.get("/ready").await;
    assert_eq!(ready.status(), 200, "a dead cache does not make the Hub unready");
    let ready: Value = ready.json().await.expect("json");
    assert_eq!(ready["degraded"], serde_json::json!(["cache"]));
    assert!(counter(&hub, "cache_errors_total{operation=\"get\"}").await >= 1.0);

    redis.restart();
    // The breaker probes Redis again after its open period; the empty cache then fills.
    wait_until("the cache to be used again", Duration::from_secs(30), async || {
        ask(&hub, COUNT_EVENTS).await.0 == "miss"
    })
    .await;
    assert_eq!(ask(&hub, COUNT_EVENTS).await.0, "hit");
    let ready = hub.get_json("/ready").await;
    assert_eq!(ready["degraded"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_losing_a_master_keeps_queries_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<RedisServer> = (0..6)
        .map(|_| RedisServer::start(dir.path(), free_port(), true))
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addrs.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "1", "--cluster-yes"]);
    nodes[0].cli(&create).expect("redis-cli --cluster create");
    wait_for_sync("the cluster to be ok on every node", || {
        nodes.iter().all(|n| {
            n.cli(&["CLUSTER", "INFO"])
                .is_some_and(|i| i.contains("cluster_state:ok"))
        })
    });
    let hub = hub_with(
        dir.path(),
        vec![
            ("REDIS_CLUSTER".into(), "true".into()),
            ("REDIS_NODES".into(), addrs.join(",")),
        ],
    )
    .await;
    assert_eq!(ask(&hub, COUNT_EVENTS).await.0, "miss");
    assert_eq!(ask(&hub, COUNT_EVENTS).await.0, "hit");

    // Kill the master that holds the entry.
    let holder = nodes
        .iter()
        .position(|n| {
            n.cli(&["--scan", "--pattern", "llmhub:q:*"])
                .is_some_and(|k| !k.trim().is_empty())
                && n.cli(&["ROLE"]).is_some_and(|r| r.starts_with("master"))
        })
        .expect("a master holds the entry");
    nodes[holder].kill();
    let survivor = (holder + 1) % nodes.len();
    wait_for_sync("a replica to take over the killed master's slots", || {
        nodes[survivor]
            .cli(&["CLUSTER", "INFO"])
            .is_some_and(|i| i.contains("cluster_state:ok"))
            && nodes[survivor]
                .cli(&["CLUSTER", "NODES"])
                .is_some_and(|n| n.contains("master,fail"))
    });

    // Every query is answered, correctly and without waiting on Redis, through the failover.
    for i in 0..40 {
        let asked = std::time::Instant::now();
        let (_, body) = ask(&hub, COUNT_EVENTS).await;
        assert_eq!(first_n(&body), 100, "query {i} during the failover");
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "query {i} took {:?}",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ready = hub.get("/ready").await;
    assert_eq!(ready.status(), 200, "a failing cache never makes the Hub unready");
    // Then the promoted replica serves the cache: the replicated entry is a hit again.
    wait_until(
        "an entry served by the promoted replica",
        Duration::from_secs(30),
        async || ask(&hub, COUNT_EVENTS).await.0 == "hit",
    )
    .await;
}

/// Two caches (as two instances would hold) on one Redis, over the same data version: identical
/// concurrent misses compute once; the second instance waits behind the `SET NX` lock and is
/// served the first one's entry.
#[tokio::test(flavor = "multi_thread")]
async fn instances_sharing_redis_compute_a_missing_entry_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use datafusion::prelude::SessionContext;
    use llm_analytics_hub::cache::redis::RedisCache;
    use llm_analytics_hub::cache::{Answer, CacheConfig, CacheMetrics, CacheStatus, QueryCache, Scope};
    use llm_analytics_hub::storage::EventStore;
    use llm_analytics_hub::storage::local::{LocalStore, LocalStoreConfig};
    use llm_analytics_hub::storage::versions::TableVersions;

    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path(), free_port(), false);
    let store = LocalStore::open_table(
        dir.path().join("t"),
        llm_analytics_hub::event::schema::events_schema(),
        None,
        LocalStoreConfig::default(),
        None,
        llm_analytics_hub::storage::health::StorageHealth::new(None),
    )
    .expect("store");
    let versions = TableVersions::new();
    versions.register("t", Arc::new(store.clone()));
    let ctx = SessionContext::new();
    ctx.register_table("t", store.table_provider()).expect("table");
    let state = ctx.state();
    let statement = llm_analytics_hub::cache::key::parse_one("SELECT count(*) FROM t", &state).expect("one statement");
    let config = CacheConfig {
        redis_url: Some(format!("redis://127.0.0.1:{}", redis.port)),
        lock_wait_ms: 20_000,
        ..CacheConfig::default()
    };
    let instance = || {
        let backend = Arc::new(RedisCache::new(&config).expect("client"));
        let metrics = CacheMetrics::new(&prometheus::Registry::new()).expect("metrics");
        QueryCache::new(backend, &config, versions.clone(), metrics)
    };
    let (a, b) = (instance(), instance());
    let key = a
        .keys()
        .for_statement(&statement, &state, &Scope::default(), "test")
        .expect("cacheable");
    assert_eq!(
        Some(&key),
        b.keys()
            .for_statement(&statement, &state, &Scope::default(), "test")
            .ok()
            .as_ref()
    );

    let runs = AtomicUsize::new(0);
    let (open, gate) = tokio::sync::watch::channel(false);
    let compute = || {
        let mut gate = gate.clone();
        let runs = &runs;
        let state = state.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            let _ = gate.wait_for(|o| *o).await;
            let df = SessionContext::new_with_state(state)
                .sql("SELECT count(*) AS n FROM t")
                .await
                .expect("plan");
            let schema = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await.expect("run");
            Ok(Answer {
                schema,
                batches,
                row_count: 1,
                truncated: false,
            })
        }
    };
    let first = a.get_or_run(Some(&key), compute());
    let mut first = Box::pin(first);
    // Instance A misses, takes the lock and blocks in its computation.
    let lock = format!("{}:lock", key.key);
    let polled = wait_for("instance A to hold the lock", Duration::from_secs(10), async || {
        if futures::poll!(first.as_mut()).is_ready() {
            panic!("A finished before its gate opened");
        }
        (redis.cli(&["EXISTS", &lock]).as_deref().map(str::trim) == Some("1")).then_some(())
    })
    .await;
    let () = polled;
    let second = tokio::spawn({
        let key = key.clone();
        async move {
            b.get_or_run(Some(&key), async { unreachable!("B must not compute") })
                .await
        }
    });
    open.send_replace(true);
    let (answer_a, status_a) = first.await.expect("A");
    let (answer_b, status_b) = second.await.expect("task").expect("B");
    assert_eq!((status_a, status_b), (CacheStatus::Miss, CacheStatus::Hit));
    assert_eq!(answer_a.batches, answer_b.batches);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "computed once across both instances");
    assert_eq!(
        redis.cli(&["EXISTS", &lock]).as_deref().map(str::trim),
        Some("0"),
        "lock released"
    );
}
