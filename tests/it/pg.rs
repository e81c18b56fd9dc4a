//! PostgreSQL helpers for the sink tests: a fresh database on the machine's server, a private
//! server (for outage tests that stop it), and the oracle the rollup tables are checked against.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::catalog::MemTable;
use datafusion::prelude::SessionContext;
use llm_analytics_hub::event::decode_batch_body;
use sqlx::{Connection, PgConnection, Row};

use crate::harness::free_port;

/// The machine's PostgreSQL (trust auth).
pub const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// The base rollup the sink tests register, and a 5-minute rollup derived from it.
pub const QUERIES: [(&str, &str); 2] = [
    (
        "pm_1m",
        "CREATE CONTINUOUS QUERY pm_1m WITH (allowed_lateness = '1 hour') AS
         SELECT window_start, window_end, provider, model,
                count(*) AS requests, sum(input_tokens) AS input_tokens, sum(cost_usd) AS cost_usd,
                min(latency_ms) AS min_latency_ms, max(latency_ms) AS max_latency_ms,
                quantile_sketch(latency_ms) AS latency_sketch,
                sketch_quantile(quantile_sketch(latency_ms), 0.95) AS p95_latency_ms
         FROM events WHERE model IS NOT NULL
         GROUP BY tumble(timestamp, INTERVAL '1 minute'), provider, model",
    ),
    (
        "pm_5m",
        "CREATE CONTINUOUS QUERY pm_5m WITH (allowed_lateness = '1 hour') AS
         SELECT window_start, window_end, provider, model,
                sum(requests) AS requests, sum(input_tokens) AS input_tokens, sum(cost_usd) AS cost_usd,
                min(min_latency_ms) AS min_latency_ms, max(max_latency_ms) AS max_latency_ms,
                sketch_merge(latency_sketch) AS latency_sketch,
                sketch_quantile(sketch_merge(latency_sketch), 0.95) AS p95_latency_ms
         FROM pm_1m
         GROUP BY tumble(window_start, INTERVAL '5 minutes'), provider, model",
    ),
];

/// One rollup row: requests, input tokens, cost, min, max, p95.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupRow {
    pub requests: i64,
    pub input_tokens: i64,
    pub cost_usd: f64,
    pub min_latency_ms: f64,
    pub max_latency_ms: f64,
    pub p95_latency_ms: f64,
}

/// (window_start µs, provider, model) → row.
pub type Rollup = BTreeMap<(i64, String, String), RollupRow>;

/// A database of its own on the machine's server, dropped at the end.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create(tag: &str) -> Self {
        let name = format!("hub_it_{tag}_{}", free_port());
        let mut admin = PgConnection::connect(&format!("{SERVER}/postgres"))
            .await
            .expect("connect to the local PostgreSQL (scripts/test.sh starts it)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create database");
        Self {
            url: format!("{SERVER}/{name}"),
            name,
        }
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.expect("connect test db")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .output();
    }
}

/// A private PostgreSQL server in a temporary directory, so a test can stop and start it
/// without disturbing other tests. Runs as the `postgres` user when the tests run as root.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

fn as_postgres(program: &PathBuf) -> Command {
    // SAFETY-free check of the effective user: `id -u`.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PrivatePg {
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())
            .expect("initdb");
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let data = dir.path().join("data");
        let out = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let pg = Self {
            dir,
            bin,
            port: free_port(),
        };
        pg.up();
        pg
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .args(["-o", &opts, "-l"])
            .arg(self.dir.path().join("server.log"))
            .arg("start")
            .output()
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (fast shutdown: open connections are cut).
    pub fn down(&self) {
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-w", "-m", "fast", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .output()
            .expect("pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .output();
    }
}

fn f64_at(b: &RecordBatch, col: &str, i: usize) -> f64 {
    let c = cast(b.column_by_name(col).expect(col), &DataType::Float64).expect("cast");
    c.as_primitive::<Float64Type>().value(i)
}

fn i64_at(b: &RecordBatch, col: &str, i: usize) -> i64 {
    let c = cast(b.column_by_name(col).expect(col), &DataType::Int64).expect("cast");
    c.as_primitive::<Int64Type>().value(i)
}

/// The rollups computed in one batch over every valid event in `lines` by plain DataFusion
/// (no windows, no streaming): per `minutes`-minute window, provider and model.
pub async fn oracle(lines: &[Vec<u8>], minutes: i64) -> Rollup {
    let body: Vec<u8> = lines.join(&b'\n');
    let decoded = decode_batch_body(&body, 0).expect("decode");
    let batch = decoded.batch;
    let mut ctx = SessionContext::new();
    llm_analytics_hub::query::register_functions(&mut ctx).expect("functions");
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).expect("memtable");
    ctx.register_table("events", Arc::new(table)).expect("register");
    let width = minutes * 60_000_000;
    let sql = format!(
        "SELECT CAST(to_unixtime(timestamp) * 1000000 AS BIGINT) / {width} * {width} AS ws, provider, model,
                count(*) AS requests, sum(input_tokens) AS input_tokens, sum(cost_usd) AS cost_usd,
                min(latency_ms) AS min_latency_ms, max(latency_ms) AS max_latency_ms,
                p95(latency_ms) AS p95_latency_ms
         FROM events WHERE model IS NOT NULL GROUP BY 1, 2, 3"
    );
    let batches = ctx.sql(&sql).await.expect("plan").collect().await.expect("run");
    let mut out = Rollup::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            let key = (
                i64_at(b, "ws", i),
                b.column_by_name("provider")
                    .expect("provider")
                    .as_string::<i32>()
                    .value(i)
                    .to_string(),
                b.column_by_name("model")
                    .expect("model")
                    .as_string::<i32>()
                    .value(i)
                    .to_string(),
            );
            out.insert(key, row_of(b, i));
        }
    }
    out
}

fn row_of(b: &RecordBatch, i: usize) -> RollupRow {
    RollupRow {
        requests: i64_at(b, "requests", i),
        input_tokens: i64_at(b, "input_tokens", i),
        cost_usd: f64_at(b, "cost_usd", i),
        min_latency_ms: f64_at(b, "min_latency_ms", i),
        max_latency_ms: f64_at(b, "max_latency_ms", i),
        p95_latency_ms: f64_at(b, "p95_latency_ms", i),
    }
}

/// The rows of a rollup table in PostgreSQL.
pub async fn stored(conn: &mut PgConnection, table: &str) -> Rollup {
    let sql = format!(
        "SELECT (extract(epoch FROM window_start) * 1000000)::bigint, provider, model, requests, input_tokens,
                cost_usd, min_latency_ms, max_latency_ms, p95_latency_ms FROM {table}"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(conn)
        .await
        .expect("select rollup");
    rows.iter()
        .map(|r| {
            (
                (r.get(0), r.get(1), r.get(2)),
                RollupRow {
                    requests: r.get(3),
                    input_tokens: r.get(4),
                    cost_usd: r.get(5),
                    min_latency_ms: r.get(6),
                    max_latency_ms: r.get(7),
                    p95_latency_ms: r.get(8),
                },
            )
        })
        .collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-9)
}

/// How `got` differs from `want`, if it does: every row equal (counts, integer sums, min and
/// max exactly; the float sum to 1e-9, summation order differs; the p95 to 1e-6, the same
/// merged DDSketch).
pub fn difference(what: &str, got: &Rollup, want: &Rollup) -> Option<String> {
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).take(5).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).take(5).collect();
    if !missing.is_empty() || !extra.is_empty() {
        return Some(format!(
            "{what}: {} rows stored, {} expected; missing {missing:?}, extra {extra:?}",
            got.len(),
            want.len()
        ));
    }
    for (k, w) in want {
        let g = &got[k];
        if (g.requests, g.input_tokens, g.min_latency_ms, g.max_latency_ms)
            != (w.requests, w.input_tokens, w.min_latency_ms, w.max_latency_ms)
        {
            return Some(format!("{what} {k:?}: stored {g:?}, expected {w:?}"));
        }
        if !close(g.cost_usd, w.cost_usd, 1e-9) {
            return Some(format!("{what} {k:?} cost {} vs {}", g.cost_usd, w.cost_usd));
        }
        if !close(g.p95_latency_ms, w.p95_latency_ms, 1e-6) {
            return Some(format!("{what} {k:?} p95 {} vs {}", g.p95_latency_ms, w.p95_latency_ms));
        }
    }
    None
}

/// Panics with the [`difference`] of `got` and `want`, if any.
pub fn assert_same(what: &str, got: &Rollup, want: &Rollup) {
    if let Some(d) = difference(what, got, want) {
        panic!("{d}");
    }
}

/// Waits until table `table` in PostgreSQL equals `want` (rows reach PostgreSQL when the Hub
/// closes their windows); panics with the last difference after `timeout`.
pub async fn wait_same(conn: &mut PgConnection, table: &str, want: &Rollup, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let Some(d) = difference(table, &stored(conn, table).await, want) else {
            return;
        };
        assert!(std::time::Instant::now() < deadline, "after {timeout:?}: {d}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// An event that closes every window of the generated events: `template` (a valid generated
/// event) moved to the wall clock, without a model (so no rollup row of its own). Sent after
/// the data (over Kafka: after every record was consumed, to every partition): the queries'
/// watermark passes every generated window and the Hub emits them; the tests' queries allow
/// an hour of lateness, so skew between Kafka partitions never makes a data event late.
pub fn closing_event(template: &[u8]) -> Vec<u8> {
    let mut event: serde_json::Value = serde_json::from_slice(template).expect("a generated event");
    event["event_id"] = serde_json::Value::from(uuid::Uuid::new_v4().to_string());
    event["timestamp"] = serde_json::Value::from(chrono::Utc::now().to_rfc3339());
    if let Some(payload) = event["payload"].as_object_mut() {
        payload.remove("model");
    }
    event.to_string().into_bytes()
}

/// Sum of the stored next offsets of `group`.
pub async fn stored_offsets(conn: &mut PgConnection, group: &str) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>(
        "SELECT sum(next_offset)::bigint FROM hub_kafka_offsets WHERE consumer_group = $1",
    )
    .bind(group)
    .fetch_one(conn)
    .await
    .unwrap_or(None)
    .unwrap_or(0)
}
