//! Hostile input against the real binary over HTTP and the Postgres wire: deep and wide
//! expressions, memory hogs, cartesian products, huge series and results, a full query queue,
//! event label floods. Each case asserts its documented error, and afterwards the Hub still
//! answers `/health`, ingests a batch and counts it exactly.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_postgres::error::SqlState;

use crate::harness::{Hub, HubOptions, free_port, generated, wait_for};
use crate::pgwire::{PASSWORD, USER, connect_to};

/// Small limits so every hog trips quickly.
const LIMITS: &str = "[query]
timeout_secs = 4
memory_limit_bytes = 67108864
total_memory_bytes = 134217728
max_result_bytes = 4194304
max_concurrent = 1
queue_timeout_ms = 300
";

async fn start(dir: &std::path::Path) -> (Hub, u16) {
    let port = free_port();
    let env = [
        ("PGWIRE_ENABLED", "true".to_string()),
        ("PGWIRE_PORT", port.to_string()),
        ("PGWIRE_USER", USER.to_string()),
        ("PGWIRE_PASSWORD", PASSWORD.to_string()),
    ];
    let hub = Hub::start_with(
        &dir.join("data"),
        HubOptions {
            config_toml: Some(LIMITS.into()),
            env: env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            ..HubOptions::default()
        },
    )
    .await;
    (hub, port)
}

/// `/health` answers, a batch is accepted, and the count is exactly what was posted.
async fn still_serving(hub: &Hub, posted: &mut i64, seed: u64) {
    let health = hub.get("/health").await;
    assert_eq!(health.status().as_u16(), 200);
    let (status, body) = hub.post_ndjson(generated(seed, 100, 0.0).join("\n")).await;
    assert_eq!(status, 200, "{body}");
    *posted += 100;
    assert_eq!(hub.count("").await, *posted, "every posted event counted once");
}

async fn sql_err(hub: &Hub, sql: &str) -> (u16, String, String) {
    let (status, body) = hub.sql(sql).await;
    (
        status,
        body["error"]["code"].as_str().unwrap_or_default().to_string(),
        body["error"]["message"].as_str().unwrap_or_default().to_string(),
    )
}

fn chain(term: &str, op: &str, n: usize) -> String {
    vec![term; n].join(op)
}

/// CPU seconds the process has used (utime + stime from /proc, in clock ticks of 10 ms).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_sql_gets_its_documented_error_and_the_hub_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, _) = start(dir.path()).await;
    let mut posted = 0;
    still_serving(&hub, &mut posted, 1).await;

    // Deep and wide expressions: a 400 naming the limit, never a stack overflow.
    for (sql, limit) in [
        (format!("SELECT {}", chain("1", "+", 5_000)), "query.max_expr_terms"),
        (format!("SELECT {}", chain("1", "+", 50_000)), "query.max_expr_terms"),
        (
            format!("SELECT 1 WHERE {}", chain("1=2", " OR ", 3_000)),
            "query.max_expr_terms",
        ),
        (
            format!("SELECT CASE {} ELSE 0 END", chain("WHEN 1=2 THEN 1", " ", 3_000)),
            "query.max_expr_terms",
        ),
        (chain("SELECT 1", " UNION ALL ", 500), "query.max_set_operations"),
        (format!("SELECT {}", chain("1", ",", 60_000)), "query.max_sql_tokens"),
    ] {
        let (status, code, message) = sql_err(&hub, &sql).await;
        assert_eq!((status, code.as_str()), (400, "query_too_complex"), "{message}");
        assert!(message.contains(limit), "{message}");
    }
    // Deep subqueries: the parser's own recursion limit.
    let nested = format!("SELECT * FROM {}SELECT 1{}", "(".repeat(300), ") AS t".repeat(300));
    let (status, code, message) = sql_err(&hub, &nested).await;
    assert_eq!((status, code.as_str()), (400, "invalid_sql"), "{message}");
    assert!(message.to_lowercase().contains("recursion"), "{message}");
    // A deep but legal expression is answered.
    let rows = hub.rows(&format!("SELECT {} AS n", chain("1", "+", 400))).await;
    assert_eq!(rows[0]["n"], 400);
    let rows = hub.rows(&chain("SELECT 1 AS one", " UNION ALL ", 50)).await;
    assert_eq!(rows.len(), 50);
    still_serving(&hub, &mut posted, 2).await;

    // Memory: an aggregate that buffers beyond the per-query limit.
    let (status, code, message) = sql_err(
        &hub,
        "SELECT array_agg(repeat('x', 100000)) FROM generate_series(1, 200000)",
    )
    .await;
    assert_eq!((status, code.as_str()), (422, "resources_exhausted"), "{message}");
    assert!(message.contains("query.memory_limit_bytes"), "{message}");
    let (status, code, message) = sql_err(
        &hub,
        "SELECT string_agg(repeat('y', 1000), ',') FROM generate_series(1, 200000)",
    )
    .await;
    assert_eq!((status, code.as_str()), (422, "resources_exhausted"), "{message}");
    // Our series aggregates buffer their input: accounted in the pool like the built-ins.
    for sql in [
        "SELECT forecast(to_timestamp(value), CAST(value AS DOUBLE), 5) FROM generate_series(1, 20000000)",
        "SELECT spearman_corr(CAST(value AS DOUBLE), CAST(value AS DOUBLE)) FROM generate_series(1, 20000000)",
    ] {
        let (status, code, message) = sql_err(&hub, sql).await;
        assert_eq!(
            (status, code.as_str()),
            (422, "resources_exhausted"),
            "{sql}: {message}"
        );
    }
    // A sort larger than the limit spills to disk and answers.
    let rows = hub
        .rows(
            "SELECT count(*) AS n, max(s) AS top FROM (SELECT CAST(value AS VARCHAR) || repeat('z', 300) AS s \
             FROM generate_series(1, 300000) ORDER BY s) AS sorted",
        )
        .await;
    assert_eq!(rows[0]["n"], 300_000);
    // Lexicographic: "9" followed by the padding is the largest.
    assert_eq!(rows[0]["top"].as_str().expect("top"), format!("9{}", "z".repeat(300)));
    still_serving(&hub, &mut posted, 3).await;

    // CPU: a cartesian product and a huge series are cancelled at the timeout, and the CPU
    // they used stops.
    for sql in [
        "SELECT count(*) FROM generate_series(1, 3000000) a, generate_series(1, 3000000) b",
        "SELECT count(*) FROM generate_series(1, 100000000000)",
    ] {
        let started = std::time::Instant::now();
        let (status, code, message) = sql_err(&hub, sql).await;
        assert_eq!((status, code.as_str()), (408, "query_timeout"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(10), "answered at the timeout");
        let pid = hub.pid();
        let quiet = wait_for(
            "the cancelled plan to stop using CPU",
            Duration::from_secs(10),
            || async {
                let before = cpu_ticks(pid);
                tokio::time::sleep(Duration::from_millis(500)).await;
                // Under 20 % of one core over half a second: the plan is gone.
                (cpu_ticks(pid) - before < 10).then_some(())
            },
        );
        quiet.await;
    }
    still_serving(&hub, &mut posted, 4).await;

    // A result larger than query.max_result_bytes, refused before the first byte.
    let r = hub
        .sql_as(
            "text/csv",
            "SELECT repeat('x', 1000) AS s FROM generate_series(1, 100000)",
        )
        .await;
    assert_eq!(r.status().as_u16(), 422);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "result_too_large", "{body}");
    still_serving(&hub, &mut posted, 5).await;

    // A full queue: one slot, held by a slow query; the next waits 300 ms, then 429.
    let slow = {
        let client = hub.client.clone();
        let url = hub.url("/api/v1/sql");
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"sql": "SELECT count(*) FROM generate_series(1, 100000000000)"}))
                .send()
                .await
                .expect("slow query")
                .status()
                .as_u16()
        })
    };
    let busy = wait_for("a 429 while the slot is taken", Duration::from_secs(3), || async {
        let r = hub
            .client
            .post(hub.url("/api/v1/sql"))
            .json(&json!({"sql": "SELECT 1"}))
            .send()
            .await
            .expect("post");
        (r.status().as_u16() == 429).then(|| r.headers().get("retry-after").cloned())
    })
    .await;
    assert_eq!(busy.expect("Retry-After").to_str().expect("ascii"), "1");
    assert_eq!(slow.await.expect("join"), 408);
    still_serving(&hub, &mut posted, 6).await;

    // Continuous queries: windows below 1 s and over-complex statements are refused.
    for (sql, words) in [
        (
            "SELECT window_start, count(*) AS n FROM events GROUP BY tumble(timestamp, INTERVAL '100 milliseconds')",
            "1 second minimum",
        ),
        (
            &*format!(
                "SELECT window_start, sum({}) AS n FROM events GROUP BY tumble(timestamp, INTERVAL '1 minute')",
                chain("latency_ms", "+", 3000)
            ),
            "query.max_expr_terms",
        ),
    ] {
        let (status, body) = hub
            .post_json(
                "/api/v1/continuous-queries",
                json!({"name": "hog", "sql": sql, "options": {}}).to_string(),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains(words), "{body}");
    }
    still_serving(&hub, &mut posted, 7).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_sql_on_the_wire_gets_sqlstates_and_the_hub_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, port) = start(dir.path()).await;
    let mut posted = 0;
    let conninfo = format!("host=127.0.0.1 port={port} user={USER} password={PASSWORD} dbname=hub sslmode=disable");
    let client = connect_to(&conninfo).await.expect("connect");

    for sql in [
        format!("SELECT {}", chain("1", "+", 5_000)),
        format!("SELECT {}", chain("1", "+", 50_000)),
    ] {
        let simple = client.simple_query(&sql).await.expect_err("refused");
        assert_eq!(simple.code().map(SqlState::code), Some("54001"), "{simple}");
        let extended = client.query(&sql, &[]).await.expect_err("refused");
        assert_eq!(extended.code().map(SqlState::code), Some("54001"), "{extended}");
    }
    // The wire shares query.total_memory_bytes with HTTP.
    let hog = client
        .simple_query("SELECT array_agg(repeat('x', 100000)) FROM generate_series(1, 200000)")
        .await
        .expect_err("over the total memory");
    assert_eq!(hog.code().map(SqlState::code), Some("53200"), "{hog:?}");
    let message = hog
        .as_db_error()
        .map(|e| e.message().to_lowercase())
        .unwrap_or_default();
    assert!(message.contains("resources exhausted"), "{hog:?}");
    // statement_timeout cancels a cartesian product.
    client.simple_query("SET statement_timeout = 1000").await.expect("set");
    let slow = client
        .simple_query("SELECT count(*) FROM generate_series(1, 3000000) a, generate_series(1, 3000000) b")
        .await
        .expect_err("timeout");
    assert_eq!(slow.code(), Some(&SqlState::QUERY_CANCELED), "{slow}");
    // A result over query.max_result_bytes (4 MiB) ends with SQLSTATE 54000.
    let big = client
        .simple_query("SELECT repeat('x', 1000) FROM generate_series(1, 100000)")
        .await
        .expect_err("too large");
    assert_eq!(big.code().map(SqlState::code), Some("54000"), "{big:?}");
    // The connection still works.
    let rows = client.query_one("SELECT 41 + 1", &[]).await.expect("query");
    assert_eq!(rows.get::<_, i64>(0), 42);
    still_serving(&hub, &mut posted, 11).await;
}

/// 5,000 events with distinct `source_module` values: the label keeps its first 1,000 values,
/// the rest count as `other`; `/metrics` stays small and the counts add up.
#[tokio::test(flavor = "multi_thread")]
async fn event_label_floods_keep_metrics_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(&dir.path().join("data")).await;
    let lines: Vec<String> = generated(77, 5000, 0.0)
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let mut v: Value = serde_json::from_str(&line).expect("json");
            v["source_module"] = json!(format!("module-{i:05}-{}", "m".repeat(40)));
            v.to_string()
        })
        .collect();
    let (status, body) = hub.post_ndjson(lines.join("\n")).await;
    assert_eq!(status, 200, "{body}");
    let text = hub.metrics_text().await;
    assert!(text.len() < 400 * 1024, "/metrics is {} bytes", text.len());
    let processed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("events_processed_total{"))
        .collect();
    // One series per (source_module, event_type): 1,000 admitted modules, then `other` once
    // per event type.
    assert!(processed.len() <= 1000 + 16, "{} series", processed.len());
    let value = |l: &&str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).expect("value");
    let other: f64 = processed
        .iter()
        .filter(|l| l.contains("source_module=\"other\""))
        .map(value)
        .sum();
    let all: f64 = processed.iter().map(value).sum();
    assert_eq!((other, all), (4000.0, 5000.0));
}
