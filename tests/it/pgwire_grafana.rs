//! What Grafana's PostgreSQL datasource sends (our own copies of its queries), through
//! tokio-postgres' simple protocol (lib/pq style) and extended protocol with `$1` (pgx style).

use tokio_postgres::types::Type;

use crate::pgwire::{WireHub, query_i64, simple_rows};

/// Grafana's search-path membership test (`buildSchemaConstraint`).
const SCHEMA_CONSTRAINT: &str = r#"
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"#;

fn table_list_query() -> String {
    format!(
        r#"SELECT
    CASE WHEN {c}
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY CASE WHEN {c} THEN 0 ELSE 1 END, 1"#,
        c = SCHEMA_CONSTRAINT
    )
}

fn columns_query(table: &str) -> String {
    format!(
        r#"SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident('{t}'),1) = 2
        THEN quote_ident(table_schema) = (parse_ident('{t}'))[1]
          AND quote_ident(table_name) = (parse_ident('{t}'))[2]
        ELSE quote_ident(table_name) = '{t}'
          AND {c}
      END"#,
        t = table,
        c = SCHEMA_CONSTRAINT
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn grafana_setup_and_metadata_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = WireHub::start(dir.path(), &[]).await;
    let client = w.connect().await;

    // health check: a comment only → EmptyQueryResponse, no rows, no error
    let msgs = client.simple_query("-- ping").await.expect("ping");
    assert!(simple_rows(&msgs).is_empty());
    client.batch_execute("-- ping").await.expect("ping via batch_execute");

    // setup
    let v: i64 = client
        .query_one("SELECT current_setting('server_version_num')::int/100 as version", &[])
        .await
        .expect("version num")
        .get("version");
    assert_eq!(v, 1600);
    let version: String = client
        .query_one("SELECT version()", &[])
        .await
        .expect("version()")
        .get(0);
    assert!(version.starts_with("PostgreSQL 16.6"), "{version}");
    let msgs = client.simple_query("SELECT version()").await.expect("simple version()");
    assert_eq!(simple_rows(&msgs)[0][0].as_deref(), Some(version.as_str()));
    let ts = client
        .query("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", &[])
        .await
        .expect("timescaledb check");
    assert!(ts.is_empty());
    let ts = client
        .simple_query("SELECT 1 FROM pg_extension WHERE extname='timescaledb'")
        .await
        .expect("simple");
    assert!(simple_rows(&ts).is_empty());
    let sp = client
        .simple_query("SELECT current_setting('search_path')")
        .await
        .expect("search_path");
    assert_eq!(simple_rows(&sp)[0][0].as_deref(), Some("\"$user\", public"));

    // schemata, table list (unqualified names on the search path), columns with Postgres types
    let schemas = simple_rows(
        &client
            .simple_query(
                "SELECT schema_name AS \"name\" FROM information_schema.schemata \
                 WHERE schema_name NOT IN ('information_schema', 'pg_catalog', 'pg_toast') ORDER BY schema_name",
            )
            .await
            .expect("schemata"),
    );
    // `snapshots`: Parquet snapshot locations registered as tables (docs/exports.md).
    assert_eq!(
        schemas,
        vec![vec![Some("public".to_string())], vec![Some("snapshots".to_string())]]
    );
    let tables = simple_rows(&client.simple_query(&table_list_query()).await.expect("table list"));
    let names: Vec<&str> = tables.iter().filter_map(|r| r[0].as_deref()).collect();
    assert!(names.contains(&"events"), "{names:?}");
    assert!(names.contains(&"llm_provider_model_1m"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("pg_catalog.") || n.starts_with("information_schema."))
    );
    for table in ["events", "public.events"] {
        let cols = simple_rows(&client.simple_query(&columns_query(table)).await.expect("columns"));
        let find = |c: &str| {
            cols.iter()
                .find(|r| r[0].as_deref() == Some(c))
                .and_then(|r| r[1].clone())
        };
        assert_eq!(cols.len(), 25, "{table}: {cols:?}");
        assert_eq!(
            find("timestamp").as_deref(),
            Some("timestamp with time zone"),
            "{table}"
        );
        assert_eq!(find("latency_ms").as_deref(), Some("double precision"));
        assert_eq!(find("input_tokens").as_deref(), Some("bigint"));
        assert_eq!(find("model").as_deref(), Some("text"));
    }

    // the same lookups through the extended protocol with $1 (pgx), incl. udt_name and `user`
    let rows = client
        .query(
            "SELECT column_name, data_type, udt_name FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            &[&"public", &"events"],
        )
        .await
        .expect("columns with $1");
    assert_eq!(rows.len(), 25);
    assert_eq!(rows[1].get::<_, String>("column_name"), "timestamp");
    assert_eq!(rows[1].get::<_, String>("udt_name"), "timestamptz");
    assert_eq!(rows[14].get::<_, String>("udt_name"), "float8");
    let rows = client
        .query(
            "SELECT quote_ident(table_name) AS \"table\" FROM information_schema.tables \
             WHERE quote_ident(table_schema) = $1 AND table_type = 'BASE TABLE' ORDER BY 1",
            &[&"public"],
        )
        .await
        .expect("tables with $1");
    assert!(rows.iter().any(|r| r.get::<_, String>("table") == "events"));
    let row = client
        .query_one(
            "SELECT user AS u, array_length(parse_ident($1), 1) = 2 AS two_parts, (parse_ident($1))[2] AS name, \
             array_lower(string_to_array($2, ','), 1) AS lo, array_upper(string_to_array($2, ','), 1) AS hi",
            &[&"public.events", &"a,b,c"],
        )
        .await
        .expect("functions with $1");
    assert_eq!(row.get::<_, String>("u"), crate::pgwire::USER);
    assert!(row.get::<_, bool>("two_parts"));
    assert_eq!(row.get::<_, String>("name"), "events");
    assert_eq!((row.get::<_, i32>("lo"), row.get::<_, i32>("hi")), (1, 3));
    let series = client
        .query("SELECT i FROM generate_series(1, 3) AS t(i)", &[])
        .await
        .expect("generate_series");
    assert_eq!(series.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn grafana_panel_queries_match_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = WireHub::start(dir.path(), &[]).await;
    let client = w.connect().await;
    let filter = "timestamp BETWEEN '2026-11-20T00:00:00Z' AND '2026-11-20T00:29:59Z'";

    // $__timeGroupAlias(timestamp, 5m) without TimescaleDB
    let sql = format!(
        "SELECT floor(extract(epoch from timestamp)/300)*300 AS \"time\", model AS metric, count(*) AS value \
         FROM events WHERE {filter} GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let rows = client.query(sql.as_str(), &[]).await.expect("epoch grouping");
    let http = w.hub.rows(&sql).await;
    assert_eq!(rows.len(), 12, "6 five-minute buckets x 2 models");
    assert_eq!(rows.len(), http.len());
    assert_eq!(rows[0].columns()[0].name(), "time");
    assert_eq!(rows[0].columns()[0].type_(), &Type::FLOAT8);
    for (r, h) in rows.iter().zip(&http) {
        assert_eq!(r.get::<_, f64>("time"), h["time"].as_f64().expect("time"));
        assert_eq!(r.get::<_, i64>("value"), h["value"].as_i64().expect("value"));
        assert_eq!(r.get::<_, i64>("value"), 5);
    }
    assert_eq!(rows[0].get::<_, f64>("time"), 1_795_132_800.0);

    // $__timeGroupAlias with TimescaleDB: time_bucket('300.000s', ...)
    let sql = format!(
        "SELECT time_bucket('300.000s', timestamp) AS \"time\", avg(latency_ms) AS avg_ms, \
         avg(CASE WHEN status <> 'ok' THEN 1.0 ELSE 0.0 END) AS error_rate \
         FROM events WHERE {filter} GROUP BY 1 ORDER BY 1"
    );
    let rows = client.query(sql.as_str(), &[]).await.expect("time_bucket");
    let http = w.hub.rows(&sql).await;
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[0].columns()[0].type_(), &Type::TIMESTAMPTZ);
    for (r, h) in rows.iter().zip(&http) {
        let t: std::time::SystemTime = r.get("time");
        let t: chrono::DateTime<chrono::Utc> = t.into();
        let ht = chrono::DateTime::parse_from_rfc3339(h["time"].as_str().expect("time")).expect("rfc3339");
        assert_eq!(t, ht);
        assert!((r.get::<_, f64>("avg_ms") - h["avg_ms"].as_f64().expect("avg")).abs() < 1e-9);
    }
    assert_eq!(rows[0].get::<_, f64>("avg_ms"), 104.5, "latencies 100..109");
    let text = simple_rows(&client.simple_query(&sql).await.expect("simple time_bucket"));
    assert_eq!(text[1][0].as_deref(), Some("2026-11-20 00:05:00+00"));
    assert_eq!(
        text[0][2].as_deref(),
        Some("0.1"),
        "1 error (i = 0) in the first 10 events"
    );

    // $__unixEpochFilter-style epoch filters and an epoch time column
    let sql = "SELECT extract(epoch from timestamp) AS \"time\", latency_ms FROM events \
               WHERE extract(epoch from timestamp) >= 1795132800 AND extract(epoch from timestamp) <= 1795133099 \
               ORDER BY 1";
    let rows = client.query(sql, &[]).await.expect("epoch filter");
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[9].get::<_, f64>("latency_ms"), 109.0);

    // several statements in one simple query (a dashboard panel with two queries)
    let msgs = client
        .simple_query(&format!(
            "SELECT count(*) AS n FROM events WHERE {filter}; SELECT model, sum(input_tokens) AS tokens FROM events GROUP BY model ORDER BY model"
        ))
        .await
        .expect("two statements");
    let rows = simple_rows(&msgs);
    let completes = msgs
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(_)))
        .count();
    assert_eq!(completes, 2);
    assert_eq!(rows[0][0].as_deref(), Some("60"));
    assert_eq!(rows[1][0].as_deref(), Some("claude-3-5-sonnet"));
    let http = w
        .hub
        .rows("SELECT sum(input_tokens) AS t FROM events WHERE model = 'claude-3-5-sonnet'")
        .await;
    assert_eq!(
        rows[1][1].as_deref().map(str::to_string),
        Some(http[0]["t"].to_string())
    );

    // a time-range query with the range as timestamptz parameters (pgx)
    let from: std::time::SystemTime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_132_800);
    let to: std::time::SystemTime = from + std::time::Duration::from_secs(1799);
    let n = query_i64(
        &client,
        "SELECT count(*) FROM events WHERE timestamp BETWEEN $1 AND $2",
        &[&from, &to],
    )
    .await;
    assert_eq!(n, 60, "range params");
}

#[tokio::test(flavor = "multi_thread")]
async fn grafana_dashboard_queries_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = WireHub::start(dir.path(), &[]).await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/dashboards/llm-operations.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
    let datasources = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/provisioning/datasources/hub.yaml"),
    )
    .expect("datasource yaml");
    assert!(datasources.contains("uid: llm-hub") && datasources.contains("url: 127.0.0.1:5433"));
    assert!(datasources.contains("database: llm_analytics"));

    // the rollup closes its 1-minute windows as the watermark passes them
    crate::harness::wait_until("50 rollup rows", std::time::Duration::from_secs(60), async || {
        let rows = w.hub.rows("SELECT count(*) AS n FROM llm_provider_model_1m").await;
        rows[0]["n"].as_i64().unwrap_or(0) >= 50
    })
    .await;
    let client = w.connect().await;
    let mut ran = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert_eq!(panel["datasource"]["uid"], "llm-hub");
        for target in panel["targets"].as_array().expect("targets") {
            let raw = target["rawSql"].as_str().expect("rawSql");
            // Grafana's expansion of $__timeFilter(col)
            let sql = expand_time_filter(raw, "'2026-11-20T00:00:00Z'", "'2026-11-20T01:00:00Z'");
            let msgs = client
                .simple_query(&sql)
                .await
                .unwrap_or_else(|e| panic!("panel {}: {e}\n{sql}", panel["title"]));
            let rows = simple_rows(&msgs);
            if panel["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Requests per minute"))
            {
                let total: i64 = rows
                    .iter()
                    .map(|r| r[2].as_deref().expect("requests").parse::<i64>().expect("int"))
                    .sum();
                let http = w.hub.rows("SELECT sum(requests) AS n FROM llm_provider_model_1m").await;
                assert_eq!(total, http[0]["n"].as_i64().expect("n"));
            }
            if panel["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Requests forecast"))
                && target["refId"] == "A"
            {
                assert_eq!(rows.len(), 30, "30 forecast minutes");
            }
            ran += 1;
        }
    }
    assert_eq!(ran, 9);
}

/// `$__timeFilter(col)` → `col BETWEEN from AND to`, as Grafana expands it.
fn expand_time_filter(sql: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find("$__timeFilter(") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "$__timeFilter(".len()..];
        let close = after.find(')').expect("closing parenthesis");
        out.push_str(&format!("{} BETWEEN {from} AND {to}", &after[..close]));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}
