//! `POST /api/v1/sql`: formats, refusals, errors, JSON functions, caching.

use crate::harness::{Hub, HubOptions, generated};

async fn loaded_hub(dir: &std::path::Path, opts: HubOptions) -> Hub {
    let hub = Hub::start_with(&dir.join("data"), opts).await;
    let (status, _) = hub.post_ndjson(generated(11, 500, 0.0).join("\n")).await;
    assert_eq!(status, 200);
    hub
}

#[tokio::test(flavor = "multi_thread")]
async fn results_in_json_csv_and_arrow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = loaded_hub(dir.path(), HubOptions::default()).await;

    let asked = std::time::Instant::now();
    let (status, body) = hub
        .sql("SELECT model, count(*) AS n, sum(cost_usd) AS cost, min(timestamp) AS first FROM events WHERE model IS NOT NULL GROUP BY model ORDER BY n DESC")
        .await;
    let round_trip_ms = asked.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(status, 200, "{body}");
    let models = hub.rows("SELECT count(DISTINCT model) AS n FROM events").await;
    assert_eq!(body["row_count"], models[0]["n"], "one row per model");
    // The server's own timing is part of the client's round trip.
    let server_ms = body["execution_time_ms"].as_f64().expect("time");
    assert!(
        server_ms <= round_trip_ms,
        "server {server_ms} ms > round trip {round_trip_ms} ms"
    );
    assert_eq!(body["truncated"], false);
    assert_eq!(body["columns"][0]["name"], "model");
    assert_eq!(body["columns"][1]["type"], "Int64");
    assert!(
        body["columns"][3]["type"]
            .as_str()
            .expect("t")
            .starts_with("Timestamp(µs"),
        "{}",
        body["columns"][3]
    );
    let first = body["rows"][0]["first"].as_str().expect("timestamp as text");
    assert!(
        chrono::DateTime::parse_from_rfc3339(first).is_ok() || first.starts_with("2026-01-01"),
        "{first}"
    );

    let csv = hub
        .sql_as(
            "text/csv",
            "SELECT model, count(*) AS n FROM events WHERE model IS NOT NULL GROUP BY model ORDER BY model",
        )
        .await;
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/csv")
    );
    let rows: u64 = csv.headers()["x-row-count"].to_str().expect("hdr").parse().expect("n");
    let text = csv.text().await.expect("text");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("model,n"));
    assert_eq!(lines.count() as u64, rows);

    let arrow = hub
        .sql_as(
            "application/vnd.apache.arrow.stream",
            "SELECT event_id, latency_ms FROM events",
        )
        .await;
    assert_eq!(arrow.status(), 200);
    let bytes = arrow.bytes().await.expect("bytes");
    let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).expect("ipc");
    let total: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(total, 500);

    // The UDF library is registered in the ad-hoc session.
    let rows = hub
        .rows("SELECT p95(latency_ms) AS p95, sketch_quantile(quantile_sketch(latency_ms), 0.95) AS s95, max(latency_ms) AS mx FROM events")
        .await;
    let p95 = rows[0]["p95"].as_f64().expect("p95");
    assert_eq!(rows[0]["p95"], rows[0]["s95"]);
    assert!(p95 > 0.0 && p95 <= rows[0]["mx"].as_f64().expect("max"), "{rows:?}");
    let rows = hub
        .rows(
            "SELECT count(*) AS n, sum(CASE WHEN a['is_anomaly'] THEN 1 ELSE 0 END) AS anomalies FROM (
               SELECT anomaly(latency_ms, 3.0) OVER (ORDER BY timestamp ROWS BETWEEN 60 PRECEDING AND 1 PRECEDING) AS a
               FROM events WHERE latency_ms IS NOT NULL)",
        )
        .await;
    assert!(rows[0]["n"].as_i64().expect("n") > 400);
    assert!(rows[0]["anomalies"].as_i64().is_some(), "{rows:?}");

    // Payload fields stay reachable through the JSON functions.
    let rows = hub
        .rows("SELECT count(*) AS n FROM events WHERE json_get_str(payload, 'region') = 'eu-west-1'")
        .await;
    let direct = hub.count("WHERE provider IS NOT NULL").await;
    assert_eq!(rows[0]["n"].as_i64(), Some(direct), "every LLM call carries region");
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = loaded_hub(
        dir.path(),
        HubOptions {
            config_toml: Some("[query]\nmax_json_rows = 10\n".into()),
            ..Default::default()
        },
    )
    .await;
    for sql in [
        "CREATE TABLE t AS SELECT * FROM events",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "DROP TABLE events",
        "INSERT INTO events SELECT * FROM events",
        "DELETE FROM events",
        "COPY events TO '/tmp/stolen.csv'",
        "SET datafusion.execution.batch_size = 1",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'http://127.0.0.1:1/x.csv'",
    ] {
        let (status, body) = hub.sql(sql).await;
        assert_eq!(status, 403, "{sql}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .expect("message")
                .contains("not allowed"),
            "{body}"
        );
    }
    assert!(!std::path::Path::new("/tmp/stolen.csv").exists());
    assert_eq!(hub.count("").await, 500, "nothing was changed");

    let (status, body) = hub.sql("SELECT no_such_column FROM events").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_query");
    assert!(
        body["error"]["message"].as_str().expect("m").contains("no_such_column"),
        "{body}"
    );
    let (status, body) = hub.sql("SELEKT 1").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_sql")));
    let (status, _) = hub.sql("SELECT 1; SELECT 2").await;
    assert_eq!(status, 400);
    let (status, body) = hub.post_json("/api/v1/sql", "{\"query\": \"SELECT 1\"}".into()).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().expect("m").contains("sql"), "{body}");

    let (status, body) = hub.sql("SELECT event_id FROM events").await;
    assert_eq!(status, 200);
    assert_eq!(body["row_count"], 10);
    assert_eq!(body["truncated"], true);
}
