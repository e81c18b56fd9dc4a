//! The PostgreSQL rollup sink against the real server, the real Kafka-protocol broker and the
//! real binary: exactly-once across kill -9, a database outage, and a rebalance.

use std::time::Duration;

use serde_json::Value;
use sqlx::Row;

use crate::harness::wait_until;
use crate::harness::{BIN, Hub, HubOptions, generated};
use crate::kafka::{Broker, is_valid, kafka_opts};
use crate::pg::{PrivatePg, QUERIES, TestDb, assert_same, closing_event, oracle, stored, stored_offsets, wait_same};

fn with_db(mut opts: HubOptions, url: &str) -> HubOptions {
    opts.env.push(("DATABASE_URL".into(), url.into()));
    opts
}

async fn register(hub: &Hub) {
    for (name, sql) in QUERIES {
        let (status, body) = hub.sql(sql).await;
        assert_eq!(status, 201, "register {name}: {body}");
    }
}

/// Events (with ~0.5% invalid ones) as produced payloads.
fn payloads(seed: u64, n: usize) -> Vec<Vec<u8>> {
    generated(seed, n, 0.005).into_iter().map(String::into_bytes).collect()
}

/// Posts `valid` in NDJSON bodies of 2,000 events, each answered 200, then the
/// [`closing_event`].
async fn post_then_close(hub: &Hub, valid: &[Vec<u8>]) {
    post_all(hub, valid).await;
    let closing = String::from_utf8(closing_event(&valid[0])).expect("utf-8");
    let (status, body) = hub.post_ndjson(closing).await;
    assert_eq!(status, 200, "{body}");
}

/// Posts `valid` in NDJSON bodies of 2,000 events, each answered 200.
async fn post_all(hub: &Hub, valid: &[Vec<u8>]) {
    for chunk in valid.chunks(2_000) {
        let body = chunk
            .iter()
            .map(|l| String::from_utf8_lossy(l).to_string())
            .collect::<Vec<_>>()
            .join("\n");
        let (status, body) = hub.post_ndjson(body).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Once every record is consumed: closes the generated windows on every partition, then waits
/// for PostgreSQL to hold the oracle's rows.
async fn close_and_check(broker: &Broker, topic: &str, conn: &mut sqlx::PgConnection, produced: &[Vec<u8>]) {
    let template = produced.iter().find(|p| is_valid(p)).expect("a valid event");
    broker
        .produce_to_each_partition(topic, 4, &closing_event(template))
        .await;
    check_against_oracle(conn, produced).await;
}

async fn check_against_oracle(conn: &mut sqlx::PgConnection, produced: &[Vec<u8>]) {
    let want_1m = oracle(produced, 1).await;
    let want_5m = oracle(produced, 5).await;
    assert!(
        want_1m.len() > 100,
        "enough windows to mean something: {}",
        want_1m.len()
    );
    // Rows reach PostgreSQL as the Hub emits their windows.
    wait_same(conn, "pm_1m", &want_1m, Duration::from_secs(120)).await;
    wait_same(conn, "pm_5m", &want_5m, Duration::from_secs(120)).await;
    let invalid = produced.iter().filter(|p| !is_valid(p)).count() as i64;
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM hub_dead_letters")
        .fetch_one(&mut *conn)
        .await
        .expect("dead letters");
    assert!(invalid > 0);
    assert_eq!(dead, invalid, "every invalid record recorded once");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_ingest_writes_rollups_and_grafana_sql_agrees_with_the_hub() {
    let db = TestDb::create("http").await;
    // `analytics-hub migrate` applies the migrations and reports the storage path.
    let out = std::process::Command::new(BIN)
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("run migrate");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("applied 1 hub schema"), "{report}");
    assert!(report.contains("native partitioning"), "{report}");

    let dir = tempfile::tempdir().expect("tempdir");
    let opts = HubOptions {
        config_toml: Some("[stream]\nshipped_queries = false\n".into()),
        ..HubOptions::default()
    };
    let hub = Hub::start_with(&dir.path().join("data"), with_db(opts, &db.url)).await;
    register(&hub).await;
    let produced = payloads(81, 20_000);
    let valid: Vec<Vec<u8>> = produced.iter().filter(|p| is_valid(p)).cloned().collect();
    post_then_close(&hub, &valid).await;
    let mut conn = db.connect().await;
    let want_1m = oracle(&valid, 1).await;
    wait_same(&mut conn, "pm_1m", &want_1m, Duration::from_secs(120)).await;
    wait_same(&mut conn, "pm_5m", &oracle(&valid, 5).await, Duration::from_secs(120)).await;

    // One executor per query: an event arriving after its window closed is the Hub's late
    // event, and PostgreSQL, written from the Hub's emissions, does not count it either.
    let mut late: Value = serde_json::from_slice(&valid[0]).expect("a generated event");
    let late_id = uuid::Uuid::new_v4().to_string();
    late["event_id"] = Value::from(late_id.as_str());
    let (status, body) = hub.post_ndjson(late.to_string()).await;
    assert_eq!(status, 200, "{body}");
    wait_until("the late event recorded", Duration::from_secs(30), async || {
        hub.rows(&format!(
            "SELECT count(*) AS n FROM late_events WHERE event_id = '{late_id}' AND query = 'pm_1m'"
        ))
        .await[0]["n"]
            .as_i64()
            == Some(1)
    })
    .await;
    assert_same("pm_1m after a late event", &stored(&mut conn, "pm_1m").await, &want_1m);

    // The fallback storage: a partitioned table with month partitions and a BRIN index.
    let storage: String = sqlx::query_scalar("SELECT storage FROM hub_continuous_queries WHERE name = 'pm_1m'")
        .fetch_one(&mut conn)
        .await
        .expect("registry row");
    assert_eq!(storage, "partitioned");
    let parts: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_inherits WHERE inhparent = 'pm_1m'::regclass")
        .fetch_one(&mut conn)
        .await
        .expect("partitions");
    assert!(parts >= 2, "default + at least one month partition: {parts}");

    // A Grafana panel query straight on PostgreSQL equals the Hub's SQL over its own table.
    let mut closed = Vec::new();
    wait_until("the Hub closed some windows", Duration::from_secs(60), async || {
        closed = hub
            .rows("SELECT max(window_start) AS t, count(*) AS n FROM pm_1m")
            .await;
        closed[0]["n"].as_i64().unwrap_or(0) >= 10
    })
    .await;
    let until = closed[0]["t"].as_str().expect("window_start as text").to_string();
    let panel = |from: &str| {
        format!(
            "SELECT window_start AS \"time\", model, CAST(sum(requests) AS BIGINT) AS requests, max(max_latency_ms) AS max_ms
             FROM pm_1m WHERE window_start BETWEEN '2000-01-01T00:00:00Z' AND '{from}'
             GROUP BY 1, 2 ORDER BY 1, 2"
        )
    };
    let pg_rows = sqlx::query(sqlx::AssertSqlSafe(panel(&until)))
        .fetch_all(&mut conn)
        .await
        .expect("grafana sql");
    let hub_rows: Vec<Value> = hub.rows(&panel(&until)).await;
    assert_eq!(pg_rows.len(), hub_rows.len(), "same rows up to {until}");
    assert!(pg_rows.len() >= 10);
    for (pg, hubr) in pg_rows.iter().zip(&hub_rows) {
        let model: String = pg.get("model");
        let requests: i64 = pg.get("requests");
        let max_ms: f64 = pg.get("max_ms");
        assert_eq!(hubr["model"], model.as_str());
        assert_eq!(hubr["requests"], requests);
        assert_eq!(hubr["max_ms"].as_f64(), Some(max_ms));
    }
    let metrics = hub.metrics_text().await;
    assert!(
        metrics.contains("db_query_duration_seconds_count{query_type=\"write_states\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("db_circuit_breaker_state 0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_to_postgres_is_exactly_once_across_repeated_kill9() {
    let broker = Broker::start();
    let topic = "events-pg-kill";
    broker.create_topic(topic, 4).await;
    let db = TestDb::create("kill").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let opts = with_db(
        kafka_opts(
            &broker,
            topic,
            "g-pg-kill",
            "batch_max_records = 1000\nqueue_batches = 2\n",
        ),
        &db.url,
    );
    let mut hub = Hub::start_with(&data, opts.clone()).await;
    register(&hub).await;
    let produced = payloads(83, 200_000);
    let total = produced.len() as i64;
    broker.produce(topic, &produced).await;
    let mut conn = db.connect().await;
    for round in 1..=5i64 {
        let target = total * round / 7;
        wait_until("progress before the kill", Duration::from_secs(300), async || {
            stored_offsets(&mut conn, "g-pg-kill").await >= target
        })
        .await;
        hub.kill9();
        let at = stored_offsets(&mut conn, "g-pg-kill").await;
        assert!(at < total, "kill {round} landed mid-ingestion ({at} of {total})");
        eprintln!("kill -9 #{round} at {at} of {total} records");
        hub = Hub::start_with(&data, opts.clone()).await;
    }
    wait_until("every record written", Duration::from_secs(600), async || {
        stored_offsets(&mut conn, "g-pg-kill").await == total
    })
    .await;
    close_and_check(&broker, topic, &mut conn, &produced).await;
    drop(hub);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_outage_pauses_ingestion_and_loses_nothing() {
    let broker = Broker::start();
    let topic = "events-pg-outage";
    broker.create_topic(topic, 4).await;
    let pg = PrivatePg::start();
    let url = pg.url("llm_analytics");
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = "batch_max_records = 1000\nqueue_batches = 2\n[postgres]\nbreaker_open_secs = 2\nretry_max_ms = 2000\n";
    let hub = Hub::start_with(
        &dir.path().join("data"),
        with_db(kafka_opts(&broker, topic, "g-pg-outage", extra), &url),
    )
    .await;
    register(&hub).await;
    let produced = payloads(84, 100_000);
    let total = produced.len() as i64;
    broker.produce(topic, &produced).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("connect");
    wait_until("ingestion under way", Duration::from_secs(300), async || {
        stored_offsets(&mut conn, "g-pg-outage").await >= total / 4
    })
    .await;
    drop(conn);
    pg.down();
    wait_until("/ready reports the open breaker", Duration::from_secs(60), async || {
        let r = hub.client.get(hub.url("/ready")).send().await.expect("ready");
        r.status().as_u16() == 503
    })
    .await;
    wait_until("the breaker open (state 1)", Duration::from_secs(60), async || {
        hub.metrics_text()
            .await
            .lines()
            .any(|l| l == "db_circuit_breaker_state 1")
    })
    .await;
    wait_until(
        "backpressure: the consumer paused while the database is down",
        Duration::from_secs(120),
        async || hub.metrics_text().await.lines().any(|l| l == "kafka_consumer_paused 1"),
    )
    .await;
    pg.up();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("reconnect");
    wait_until(
        "every record written after the outage",
        Duration::from_secs(600),
        async || stored_offsets(&mut conn, "g-pg-outage").await == total,
    )
    .await;
    wait_until("/ready again", Duration::from_secs(60), async || {
        hub.client
            .get(hub.url("/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    close_and_check(&broker, topic, &mut conn, &produced).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_with_a_rebalance_count_every_event_once() {
    let broker = Broker::start();
    let topic = "events-pg-group";
    broker.create_topic(topic, 4).await;
    let db = TestDb::create("group").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = with_db(
        kafka_opts(
            &broker,
            topic,
            "g-pg-group",
            "batch_max_records = 1000\nqueue_batches = 2\n",
        ),
        &db.url,
    );
    let a = Hub::start_with(&dir.path().join("a"), opts.clone()).await;
    register(&a).await;
    let produced = payloads(85, 120_000);
    let total = produced.len() as i64;
    let (first, second) = produced.split_at(produced.len() / 2);
    broker.produce(topic, first).await;
    let mut conn = db.connect().await;
    wait_until("a under way", Duration::from_secs(300), async || {
        stored_offsets(&mut conn, "g-pg-group").await >= total / 6
    })
    .await;
    // A's writes block on a lock while B joins: A's queue fills and it pauses its partitions,
    // so the rebalance runs while A is paused (librdkafka keeps a pause across a rebalance; a
    // consumer that forgot it never fetched the partitions it was given back).
    let mut locker = db.connect().await;
    sqlx::query("BEGIN").execute(&mut locker).await.expect("begin");
    sqlx::query("LOCK TABLE hub_kafka_offsets IN EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("lock the offsets table");
    broker.produce(topic, second).await;
    wait_until("a paused by backpressure", Duration::from_secs(120), async || {
        a.metrics_text().await.lines().any(|l| l == "kafka_consumer_paused 1")
    })
    .await;
    // B joins mid-stream: the group rebalances; B learns the queries from the shared registry.
    let b = Hub::start_with(&dir.path().join("b"), opts.clone()).await;
    // Release A's blocked writes as soon as B has its partitions. This is the interleaving that
    // once counted records twice (pm_1m 782 vs 511 requests): A's queued pre-rebalance batches
    // commit after B (and A, re-assigned) read the stored offsets, so A's re-consumed batch
    // overlapped them; the sink now refuses a batch that starts before the stored offset.
    wait_until("b assigned partitions", Duration::from_secs(120), async || {
        b.get_json("/api/v1/ingest/status").await["sources"][0]["assigned_partitions"]
            .as_u64()
            .unwrap_or(0)
            > 0
    })
    .await;
    sqlx::query("COMMIT")
        .execute(&mut locker)
        .await
        .expect("release the lock");
    wait_until("every record written", Duration::from_secs(600), async || {
        stored_offsets(&mut conn, "g-pg-group").await == total
    })
    .await;
    let writers: Vec<String> = sqlx::query_scalar("SELECT DISTINCT updated_by FROM hub_kafka_offsets")
        .fetch_all(&mut conn)
        .await
        .expect("writers");
    assert_eq!(writers.len(), 2, "both instances wrote offsets: {writers:?}");
    close_and_check(&broker, topic, &mut conn, &produced).await;
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread")]
async fn http_ingest_goes_on_while_postgres_is_down_and_the_rollups_follow_when_it_returns() {
    let pg = PrivatePg::start();
    let url = pg.url("llm_analytics");
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = HubOptions {
        config_toml: Some(
            "[stream]\nshipped_queries = false\n[postgres]\nbreaker_open_secs = 1\nretry_max_ms = 500\n".into(),
        ),
        ..HubOptions::default()
    };
    let hub = Hub::start_with(&dir.path().join("data"), with_db(opts, &url)).await;
    register(&hub).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("connect");
    // The tables exist as soon as their queries do (before any window is emitted).
    wait_until("pm_1m and pm_5m created", Duration::from_secs(30), async || {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename IN ('pm_1m', 'pm_5m')",
        )
        .fetch_one(&mut conn)
        .await
        .is_ok_and(|n| n == 2)
    })
    .await;
    drop(conn);
    pg.down();

    // Ingestion does not depend on the rollup database: every body is stored and answered.
    let valid: Vec<Vec<u8>> = payloads(86, 6_000).into_iter().filter(|p| is_valid(p)).collect();
    post_then_close(&hub, &valid).await;
    let count = async |table: &str| hub.rows(&format!("SELECT count(*) AS n FROM {table}")).await[0]["n"].as_i64();
    assert_eq!(count("events").await, Some(valid.len() as i64 + 1));

    // The closed windows wait for the database, in order: the query says so and its own table
    // does not get rows PostgreSQL would miss.
    wait_until(
        "pm_1m waiting for the rollup sink",
        Duration::from_secs(60),
        async || {
            hub.get_json("/api/v1/continuous-queries/pm_1m").await["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("wait for the rollup sink"))
        },
    )
    .await;
    assert_eq!(count("pm_1m").await, Some(0), "rows held while the sink refuses them");

    pg.up();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("reconnect");
    let want_1m = oracle(&valid, 1).await;
    wait_same(&mut conn, "pm_1m", &want_1m, Duration::from_secs(120)).await;
    wait_same(&mut conn, "pm_5m", &oracle(&valid, 5).await, Duration::from_secs(120)).await;
    wait_until("the Hub's own table written too", Duration::from_secs(30), async || {
        count("pm_1m").await == Some(want_1m.len() as i64)
    })
    .await;
    assert_eq!(
        hub.get_json("/api/v1/continuous-queries/pm_1m").await["last_error"],
        Value::Null,
        "the wait is over"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_stops_leaves_its_share_of_the_open_windows_in_postgres() {
    let db = TestDb::create("stop").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = HubOptions {
        config_toml: Some("[stream]\nshipped_queries = false\n".into()),
        ..HubOptions::default()
    };
    let mut hub = Hub::start_with(&dir.path().join("data"), with_db(opts, &db.url)).await;
    register(&hub).await;
    let mut conn = db.connect().await;
    wait_until("pm_1m created", Duration::from_secs(30), async || {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pm_1m")
            .fetch_one(&mut conn)
            .await
            .is_ok()
    })
    .await;
    let valid: Vec<Vec<u8>> = payloads(87, 6_000).into_iter().filter(|p| is_valid(p)).collect();
    post_all(&hub, &valid).await;
    // An hour of allowed lateness over a minute of events: no window has closed.
    assert!(stored(&mut conn, "pm_1m").await.is_empty(), "nothing emitted yet");
    // A scaled-down pod: SIGTERM, and its volume would go with it. Its share of the open
    // windows is in PostgreSQL (the instance that takes its partitions adds its own).
    let status = hub.terminate();
    assert!(status.success(), "{status:?}");
    assert_same(
        "pm_1m after the stop",
        &stored(&mut conn, "pm_1m").await,
        &oracle(&valid, 1).await,
    );
}
