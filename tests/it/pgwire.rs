//! Postgres wire endpoint with tokio-postgres (simple and extended protocol, SCRAM): results,
//! types and values against `POST /api/v1/sql`; refusals, bad logins, garbage and dropped
//! clients leave the server serving.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::harness::{Hub, free_port};

pub const USER: &str = "grafana";
pub const PASSWORD: &str = "wire-Secret-1";

/// A Hub with the wire endpoint on its own port and 120 known events on 2026-11-20.
pub struct WireHub {
    pub hub: Hub,
    pub port: u16,
}

/// Events every 30 s from 2026-11-20T00:00:00Z: alternating models/providers, latency
/// `100 + i` ms, `10 * i` input tokens, every 10th an error.
pub fn events_ndjson() -> String {
    let models = [("openai", "gpt-4o"), ("anthropic", "claude-3-5-sonnet")];
    (0..120)
        .map(|i: i64| {
            let (provider, model) = models[(i % 2) as usize];
            let ts = chrono::DateTime::from_timestamp(1_795_132_800 + i * 30, 0).expect("ts");
            serde_json::json!({
                "event_id": format!("00000000-0000-4000-8000-{i:012x}"),
                "timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "source_module": "llm-observatory",
                "event_type": "telemetry",
                "payload": {
                    "provider": provider, "model": model, "latency_ms": 100 + i,
                    "input_tokens": 10 * i, "output_tokens": 5, "cost_usd": 0.001 * i as f64,
                    "status": if i % 10 == 0 { "error" } else { "ok" },
                }
            })
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl WireHub {
    pub async fn start(dir: &Path, extra_env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut env = vec![
            ("PGWIRE_ENABLED".to_string(), "true".to_string()),
            ("PGWIRE_PORT".to_string(), port.to_string()),
            ("PGWIRE_USER".to_string(), USER.to_string()),
            ("PGWIRE_PASSWORD".to_string(), PASSWORD.to_string()),
        ];
        env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let hub = Hub::start_env(dir, env).await;
        let (status, body) = hub.post_ndjson(events_ndjson()).await;
        assert_eq!(status, 200, "{body}");
        Self { hub, port }
    }

    pub fn conn_str(&self, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} password={password} dbname=hub sslmode=disable",
            self.port
        )
    }

    pub async fn try_connect(&self, password: &str) -> Result<Client, tokio_postgres::Error> {
        connect_to(&self.conn_str(password)).await
    }

    pub async fn connect(&self) -> Client {
        self.try_connect(PASSWORD).await.expect("connect with SCRAM")
    }
}

/// Connects with the libpq connection string `conninfo` (no TLS); the connection runs in a task.
pub async fn connect_to(conninfo: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The BIGINT in the first column of the one row `sql` (extended protocol) returns.
pub async fn query_i64(client: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> i64 {
    client
        .query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// The rows of the simple-protocol messages, as text.
pub fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect()
}

fn sqlstate(e: &tokio_postgres::Error) -> SqlState {
    e.as_db_error()
        .map(|d| d.code().clone())
        .unwrap_or(SqlState::CONNECTION_EXCEPTION)
}

#[tokio::test(flavor = "multi_thread")]
async fn wire_results_match_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = WireHub::start(dir.path(), &[]).await;
    let client = w.connect().await;
    let sql = "SELECT model, count(*) AS n, sum(input_tokens) AS tokens, sum(cost_usd) AS cost, \
               max(latency_ms) AS max_ms, min(timestamp) AS first, bool_or(status = 'error') AS any_error \
               FROM events GROUP BY model ORDER BY model";
    let http = w.hub.rows(sql).await;

    // extended protocol: typed values
    let rows = client.query(sql, &[]).await.expect("extended query");
    let types: Vec<Type> = rows[0].columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        types,
        vec![
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::FLOAT8,
            Type::FLOAT8,
            Type::TIMESTAMPTZ,
            Type::BOOL
        ]
    );
    assert_eq!(rows.len(), http.len());
    assert_eq!(rows.len(), 2);
    for (row, h) in rows.iter().zip(&http) {
        assert_eq!(row.get::<_, String>("model"), h["model"].as_str().expect("model"));
        assert_eq!(row.get::<_, i64>("n"), h["n"].as_i64().expect("n"));
        assert_eq!(row.get::<_, i64>("tokens"), h["tokens"].as_i64().expect("tokens"));
        let cost = row.get::<_, f64>("cost");
        assert!(
            (cost - h["cost"].as_f64().expect("cost")).abs() < 1e-9,
            "{cost} vs {}",
            h["cost"]
        );
        assert_eq!(row.get::<_, f64>("max_ms"), h["max_ms"].as_f64().expect("max"));
        let first: std::time::SystemTime = row.get("first");
        let http_first = chrono::DateTime::parse_from_rfc3339(h["first"].as_str().expect("first")).expect("rfc3339");
        let first: chrono::DateTime<chrono::Utc> = first.into();
        assert_eq!(first, http_first);
        assert_eq!(row.get::<_, bool>("any_error"), h["any_error"].as_bool().expect("bool"));
    }
    assert!(rows[1].get::<_, bool>("any_error"), "gpt-4o has the errors");
    assert_eq!(rows[0].get::<_, String>("model"), "claude-3-5-sonnet");
    assert_eq!(rows[0].get::<_, i64>("n"), 60);

    // simple protocol: Postgres text formats
    let msgs = client.simple_query(sql).await.expect("simple query");
    let text = simple_rows(&msgs);
    assert_eq!(text.len(), 2);
    assert_eq!(text[1][0].as_deref(), Some("gpt-4o"));
    assert_eq!(text[1][1].as_deref(), Some("60"));
    // Postgres ISO text (fractional seconds only when not zero)
    assert_eq!(
        text[1][5].as_deref(),
        Some("2026-11-20 00:00:00+00"),
        "timestamptz text: {:?}",
        text[1]
    );
    assert_eq!(text[1][6].as_deref(), Some("t"), "bool text");
    let msgs = client
        .simple_query(
            "SELECT CAST('2026-11-20T00:00:00.25' AS TIMESTAMP) AS a, CAST(NULL AS TIMESTAMP) AS b, 'x.000000' AS c",
        )
        .await
        .expect("fractions");
    assert_eq!(
        simple_rows(&msgs)[0],
        vec![
            Some("2026-11-20 00:00:00.25".to_string()),
            None,
            Some("x.000000".to_string())
        ]
    );

    // $1 parameters (text and timestamptz), prepared once, executed twice
    let stmt = client
        .prepare("SELECT count(*) AS n FROM events WHERE model = $1 AND timestamp >= $2")
        .await
        .expect("prepare");
    assert_eq!(stmt.params(), &[Type::TEXT, Type::TIMESTAMPTZ]);
    let since: std::time::SystemTime = std::time::UNIX_EPOCH + Duration::from_secs(1_795_132_800 + 1800);
    for (model, expected) in [("gpt-4o", 30i64), ("claude-3-5-sonnet", 30)] {
        let n: i64 = client
            .query_one(&stmt, &[&model, &since])
            .await
            .expect("execute")
            .get("n");
        let http_n = w
            .hub
            .count(&format!(
                "WHERE model = '{model}' AND timestamp >= '2026-11-20T00:30:00Z'"
            ))
            .await;
        assert_eq!((n, n), (expected, http_n), "{model}");
    }

    // arrays, NULLs and numeric formats
    let row = client
        .query_one(
            "SELECT string_to_array('a,b', ',') AS arr, CAST(NULL AS BIGINT) AS nothing, 1.5::double precision AS f",
            &[],
        )
        .await
        .expect("arrays");
    assert_eq!(row.columns()[0].type_(), &Type::TEXT_ARRAY);
    assert_eq!(row.get::<_, Vec<String>>("arr"), vec!["a", "b"]);
    assert_eq!(row.get::<_, Option<i64>>("nothing"), None);
    assert_eq!(row.get::<_, f64>("f"), 1.5);
}

#[tokio::test(flavor = "multi_thread")]
async fn wire_refuses_writes_like_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = WireHub::start(dir.path(), &[]).await;
    let client = w.connect().await;
    for sql in [
        "CREATE TABLE t (a INT)",
        "DROP TABLE events",
        "INSERT INTO events (event_id) VALUES ('x')",
        "DELETE FROM events",
        "UPDATE events SET model = 'x'",
        "COPY events TO STDOUT",
        "SELECT * INTO copy_of_events FROM events",
        "SELECT * FROM '/etc/passwd'",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
    ] {
        let simple = client.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&simple), SqlState::INSUFFICIENT_PRIVILEGE, "{sql}: {simple}");
        let extended = client.query(sql, &[]).await.expect_err(sql);
        assert_eq!(
            sqlstate(&extended),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}: {extended}"
        );
        // Over HTTP the same statements are 403, except `COPY ... TO STDOUT`, which DataFusion's
        // parser does not accept at all (400 invalid_sql) while the wire refuses it by name.
        let (status, body) = w.hub.sql(sql).await;
        let expected = if sql == "COPY events TO STDOUT" { 400 } else { 403 };
        assert_eq!(status, expected, "{sql}: {body}");
    }
    // session statements clients send are harmless no-ops
    for sql in [
        "BEGIN",
        "SET application_name = 'grafana'",
        "SET datafusion.execution.batch_size = 1",
        "SET statement_timeout = 10000",
        "SHOW server_version",
        "COMMIT",
        "ROLLBACK",
        "DISCARD ALL",
    ] {
        client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let shown = client.simple_query("SHOW server_version").await.expect("SHOW");
    assert_eq!(simple_rows(&shown)[0][0].as_deref(), Some("16.6"));
    let shown: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .expect("SHOW extended")
        .get(0);
    assert_eq!(shown, "160006");
    // the shared session was not changed by SET, and nothing was written
    assert_eq!(w.hub.count("").await, 120);
    let tables = w
        .hub
        .rows("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        .await;
    assert!(
        tables
            .iter()
            .all(|t| t["table_name"] != "t" && t["table_name"] != "copy_of_events")
    );
    let batch = w
        .hub
        .rows("SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'")
        .await;
    assert_eq!(batch[0]["value"], "8192", "SET must not reach the shared session");
    // errors from DataFusion get a SQLSTATE, the connection stays usable
    let e = client
        .simple_query("SELECT nope FROM events")
        .await
        .expect_err("unknown column");
    assert_eq!(sqlstate(&e), SqlState::UNDEFINED_COLUMN, "{e}");
    let e = client
        .simple_query("SELECT * FROM nope")
        .await
        .expect_err("unknown table");
    assert_eq!(sqlstate(&e), SqlState::UNDEFINED_TABLE, "{e}");
    assert_eq!(
        query_i64(&client, "SELECT count(*) FROM events", &[]).await,
        120,
        "still serving"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wire_survives_bad_logins_garbage_and_dropped_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = WireHub::start(dir.path(), &[]).await;

    // wrong password and unknown user: 28P01, the same answer
    let Err(e) = w.try_connect("wrong").await else {
        panic!("wrong password accepted")
    };
    assert_eq!(sqlstate(&e), SqlState::INVALID_PASSWORD, "{e}");
    let conn = format!(
        "host=127.0.0.1 port={} user=nobody password={PASSWORD} sslmode=disable",
        w.port
    );
    let Err(e) = tokio_postgres::connect(&conn, NoTls).await else {
        panic!("unknown user accepted")
    };
    assert_eq!(sqlstate(&e), SqlState::INVALID_PASSWORD, "{e}");

    // garbage bytes, a truncated startup packet, an oversized length, then the client hangs up:
    // the server closes its side promptly
    for garbage in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0, 0, 0, 8, 0, 3],
        vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0],
        (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
    ] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", w.port))
            .await
            .expect("tcp");
        let _ = s.write_all(&garbage).await;
        let _ = s.shutdown().await;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "server must close the connection, not hang");
    }

    // a client that goes away in the middle of a large result
    let client = w.connect().await;
    let stream = client
        .query_raw(
            "SELECT a.value AS v FROM generate_series(1, 3000000) AS a",
            std::iter::empty::<i64>(),
        )
        .await
        .expect("streaming query");
    let mut stream = Box::pin(stream);
    let first = stream.next().await.expect("a row").expect("row ok");
    assert_eq!(first.get::<_, i64>("v"), 1);
    drop(stream);
    drop(client);

    // a client that disconnects while its query is still running (raw socket, mid-message)
    {
        let client = w.connect().await;
        let pending = tokio::spawn(async move {
            client
                .simple_query("SELECT count(*) FROM generate_series(1, 20000000) AS a, generate_series(1, 3) AS b")
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        pending.abort();
    }

    // the server still serves new clients, over both protocols and HTTP
    let client = w.connect().await;
    let msgs = client
        .simple_query("SELECT count(*) FROM events")
        .await
        .expect("simple after abuse");
    assert_eq!(simple_rows(&msgs)[0][0].as_deref(), Some("120"));
    let n = query_i64(&client, "SELECT count(*) FROM events WHERE model = $1", &[&"gpt-4o"]).await;
    assert_eq!(n, 60);
    assert_eq!(w.hub.get_json("/health").await["status"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn wire_cancel_request_stops_a_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = WireHub::start(dir.path(), &[]).await;
    let client = w.connect().await;
    let token = client.cancel_token();
    let started = std::time::Instant::now();
    let long = tokio::spawn(async move {
        let r = client
            .simple_query("SELECT count(*) FROM generate_series(1, 400000000) AS a WHERE a.value % 7 = 3")
            .await;
        (r, client)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(NoTls).await.expect("cancel request sent");
    let (result, client) = tokio::time::timeout(Duration::from_secs(20), long)
        .await
        .expect("cancelled in time")
        .expect("join");
    let e = result.expect_err("the query was cancelled");
    assert_eq!(sqlstate(&e), SqlState::QUERY_CANCELED, "{e}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let msgs = client
        .simple_query("SELECT 1")
        .await
        .expect("connection usable after cancel");
    assert_eq!(simple_rows(&msgs)[0][0].as_deref(), Some("1"));
}
