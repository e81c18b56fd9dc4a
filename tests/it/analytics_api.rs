//! `/api/v1/metrics` and `/api/v1/analytics` against the real binary, on generated traffic
//! with an injected gpt-4o latency spike: every answer equals the documented SQL run through
//! `/api/v1/sql`, coarser windows merged from finer rows equal the shipped coarser tables,
//! parameter problems are 400s naming the parameter, and a tenant's key sees its rows only.

use std::time::Duration;

use llm_analytics_hub::generate::{Generator, GeneratorConfig};
use serde_json::{Value, json};

use crate::auth::create_key;
use crate::harness::{Hub, wait_until};

/// 2026-01-01T00:00:00Z, µs.
const START_US: i64 = 1_767_225_600_000_000;
/// The range every comparison reads: the generated traffic is 00:00–00:40 (trace children
/// up to a few minutes later), the event that closes the hour is at 01:00:06.
const RANGE: &str = "start=2026-01-01T00:00:00Z&end=2026-01-01T01:00:00Z";
const SQL_RANGE: &str =
    "window_start >= TIMESTAMP '2026-01-01T00:00:00Z' AND window_start < TIMESTAMP '2026-01-01T01:00:00Z'";

/// `n` events from 00:00, two a second; gpt-4o latency ×5 from 00:30 for two minutes.
fn traffic(n: usize) -> Vec<String> {
    let mut g = Generator::new(GeneratorConfig {
        seed: 20,
        start_us: START_US,
        events_per_sec: 2.0,
        spike_at_secs: 1800,
        spike_secs: 120,
        spike_factor: 5.0,
        ..GeneratorConfig::default()
    });
    (0..n).map(|_| g.next_event(None)).collect()
}

/// One LLM event (for hand-built traces and the event that closes the windows).
fn llm_event(id: u128, ts: &str, correlation: Option<&str>, parent: Option<u128>, status: &str) -> String {
    let mut e = json!({
        "event_id": uuid::Uuid::from_u128(id).to_string(), "timestamp": ts, "source_module": "llm-observatory",
        "event_type": "telemetry",
        "payload": {"provider": "openai", "model": "m", "latency_ms": 100, "status": status, "tenant": "acme"}
    });
    if status == "error" {
        e["payload"]["error_type"] = json!("server_error");
    }
    if let Some(c) = correlation {
        e["correlation_id"] = json!(c);
    }
    if let Some(p) = parent {
        e["parent_event_id"] = json!(uuid::Uuid::from_u128(p).to_string());
    }
    e.to_string()
}

async fn post_traffic(hub: &Hub, key: Option<&str>, lines: &[String]) {
    for chunk in lines.chunks(1200) {
        let mut req = hub
            .client
            .post(hub.url("/api/v1/events/batch"))
            .header("content-type", "application/x-ndjson")
            .body(chunk.join("\n"));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.expect("post");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }
}

/// GET with an optional key; (status, JSON body).
async fn get(hub: &Hub, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = hub.client.get(hub.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.expect("get");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get_ok(hub: &Hub, path: &str) -> Value {
    let (status, body) = get(hub, path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Waits until `sql`'s first row's `n` is at least `want`.
async fn wait_count(hub: &Hub, sql: &str, want: i64) {
    wait_until(sql, Duration::from_secs(90), async || {
        let (status, body) = hub.sql(sql).await;
        status == 200 && body["rows"][0]["n"].as_i64().unwrap_or(0) >= want
    })
    .await;
}

/// Numbers equal within a relative 1e-9 (sums in another order), everything else exactly.
fn assert_same(route: &Value, sql: &Value, keys: &[&str], what: &str) {
    let (a, b) = (route.as_array().expect("route rows"), sql.as_array().expect("sql rows"));
    assert_eq!(
        a.len(),
        b.len(),
        "{what}: {} rows vs {}:\n{route}\n{sql}",
        a.len(),
        b.len()
    );
    for (x, y) in a.iter().zip(b) {
        for k in keys {
            let same = match (x[k].as_f64(), y[k].as_f64()) {
                (Some(p), Some(q)) => (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1.0),
                _ => x[k] == y[k],
            };
            assert!(same, "{what}: `{k}` differs: {x} vs {y}");
        }
    }
}

/// Asserts a 400 whose message names `param`.
async fn assert_names(hub: &Hub, path: &str, param: &str) {
    let (status, body) = get(hub, path, None).await;
    assert_eq!(status, 400, "{path}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("`{param}`")), "{path}: {message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_analytics_answer_as_their_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(&dir.path().join("data")).await;
    post_traffic(&hub, None, &traffic(4800)).await;
    // A trace three levels deep whose deepest call failed (after the generated traffic, so
    // that it is not late for the continuous queries).
    let trace = [
        llm_event(1, "2026-01-01T00:50:00Z", Some("trace-x"), None, "ok"),
        llm_event(2, "2026-01-01T00:50:01Z", Some("trace-x"), Some(1), "ok"),
        llm_event(3, "2026-01-01T00:50:02Z", Some("trace-x"), Some(2), "error"),
        llm_event(4, "2026-01-01T00:50:03Z", Some("trace-x"), Some(1), "ok"),
    ];
    hub.post_ok(trace.join("\n")).await;
    // Moves the watermark past 01:00: every window of the first hour closes.
    hub.post_ok(llm_event(9, "2026-01-01T01:00:06Z", None, None, "ok"))
        .await;
    wait_count(&hub, "SELECT count(*) AS n FROM llm_provider_model_1h", 7).await;
    wait_count(&hub, "SELECT count(*) AS n FROM llm_tenant_model_1h", 1).await;

    // The families.
    let list = get_ok(&hub, "/api/v1/metrics").await;
    let families = list["families"].as_array().expect("families");
    let family = |name: &str| {
        families
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {list}"))
            .clone()
    };
    let pm = family("llm_provider_model");
    let windows: Vec<&str> = pm["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .filter_map(|w| w["window"].as_str())
        .collect();
    assert_eq!(windows, ["1m", "5m", "15m", "1h", "6h", "1d", "1w", "1mo"]);
    assert_eq!(pm["windows"][3]["table"], "llm_provider_model_1h");
    assert_eq!(pm["windows"][3]["latest_window_end"], "2026-01-01T01:00:00Z");
    assert_eq!(pm["group_by"], json!(["provider", "model"]));
    assert!(
        pm["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .any(|c| c["name"] == "p95_latency_ms" && c["type"] == "Float64"),
        "{pm}"
    );
    let tm = family("llm_tenant_model");
    assert_eq!(tm["windows"].as_array().expect("windows").len(), 2, "{tm}");
    assert_eq!(tm["group_by"], json!(["tenant", "provider", "model"]));

    // Latest values: the newest 1-minute window, one row per group.
    let latest = get_ok(&hub, "/api/v1/metrics/llm_provider_model").await;
    assert_eq!(latest["table"], "llm_provider_model_1m");
    let sql_latest = hub
        .rows("SELECT window_end, provider, model, requests FROM llm_provider_model_1m WHERE window_end = (SELECT max(window_end) FROM llm_provider_model_1m) ORDER BY provider, model")
        .await;
    assert_eq!(latest["window_end"], sql_latest[0]["window_end"]);
    assert_same(
        &latest["rows"],
        &json!(sql_latest),
        &["provider", "model", "requests"],
        "latest",
    );
    assert_eq!(get(&hub, "/api/v1/metrics/nope", None).await.0, 404);
    assert_eq!(get(&hub, "/api/v1/metrics/nope/timeseries", None).await.0, 404);

    // A window the family has no table for, merged from its 1-minute rows, equals the shipped
    // 15-minute table of the other family (same events, summed over tenants).
    let fields = "requests,errors,error_rate,cost_usd,min_latency_ms,max_latency_ms,avg_latency_ms,stddev_latency_ms,p50_latency_ms,p95_latency_ms,p99_latency_ms";
    let merged = get_ok(
        &hub,
        &format!(
            "/api/v1/metrics/llm_tenant_model/timeseries?window=15m&group_by=provider,model&fields={fields}&{RANGE}"
        ),
    )
    .await;
    assert_eq!(
        merged["merged_from"], "llm_tenant_model_1m",
        "{}",
        merged["merged_from"]
    );
    let shipped = hub
        .rows(&format!(
            "SELECT window_start AS time, provider, model, {fields} FROM llm_provider_model_15m WHERE {SQL_RANGE} ORDER BY time, provider, model"
        ))
        .await;
    assert!(shipped.len() >= 18, "three 15-minute windows × 6 models: {shipped:?}");
    let mut keys = vec!["time", "provider", "model"];
    keys.extend(fields.split(','));
    assert_same(&merged["points"], &json!(shipped), &keys, "15m merged vs shipped");

    // The stored hour (read as is) equals the sum of the 1-minute rows.
    let hour = get_ok(
        &hub,
        &format!(
            "/api/v1/metrics/llm_provider_model/timeseries?window=1h&group_by=model&fields=requests,cost_usd&{RANGE}"
        ),
    )
    .await;
    assert_eq!(
        (hour["source_table"].as_str(), hour["merged_from"].as_str()),
        (Some("llm_provider_model_1h"), None)
    );
    let summed = hub
        .rows(&format!(
            "SELECT model, sum(requests) AS requests, sum(cost_usd) AS cost_usd FROM llm_provider_model_1m WHERE {SQL_RANGE} GROUP BY model ORDER BY model"
        ))
        .await;
    assert_same(
        &hour["points"],
        &json!(summed),
        &["model", "requests", "cost_usd"],
        "1h vs Σ 1m",
    );

    // Anomalies: the spike, and the same rows as the documented SQL.
    let anomalies = get_ok(
        &hub,
        &format!("/api/v1/analytics/anomalies?metric=llm_provider_model.p95_latency_ms&window=1m&{RANGE}"),
    )
    .await;
    let found = anomalies["anomalies"].as_array().expect("anomalies");
    assert!(
        found.iter().any(|a| a["time"] == "2026-01-01T00:30:00Z"
            && a["model"] == "gpt-4o"
            && a["kind"] == "spike"
            && a["severity"] == "critical"),
        "the injected spike: {anomalies}"
    );
    let documented = hub
        .rows(&format!(
            "SELECT window_start AS time, provider, model, p95_latency_ms AS value, a['score'] AS score, a['baseline'] AS baseline, a['kind'] AS kind, a['severity'] AS severity
             FROM (SELECT window_start, provider, model, p95_latency_ms,
                          anomaly(p95_latency_ms, 3.0) OVER (PARTITION BY provider, model ORDER BY window_start
                                                             ROWS BETWEEN 60 PRECEDING AND 1 PRECEDING) AS a
                   FROM llm_provider_model_1m WHERE {SQL_RANGE})
             WHERE a['is_anomaly'] ORDER BY time, provider, model"
        ))
        .await;
    let all = [
        "time", "provider", "model", "value", "score", "baseline", "kind", "severity",
    ];
    assert_same(&anomalies["anomalies"], &json!(documented), &all, "anomaly vs SQL");
    // The statement the route reports gives its answer through /api/v1/sql.
    let reported = hub.rows(anomalies["sql"].as_str().expect("sql")).await;
    assert_same(&anomalies["anomalies"], &json!(reported), &all, "reported SQL");

    // Robust, per model (re-aggregated: each model has one provider), critical only.
    let robust = get_ok(
        &hub,
        &format!("/api/v1/analytics/anomalies?metric=llm_provider_model_1m.p95_latency_ms&method=robust&threshold=3.5&group_by=model&severity=critical&{RANGE}"),
    )
    .await;
    let documented = hub
        .rows(&format!(
            "SELECT window_start AS time, model, a['score'] AS score, a['kind'] AS kind, a['severity'] AS severity
             FROM (SELECT window_start, model, anomaly_robust(p95_latency_ms, 3.5) OVER (PARTITION BY model ORDER BY window_start
                                                      ROWS BETWEEN 60 PRECEDING AND 1 PRECEDING) AS a
                   FROM llm_provider_model_1m WHERE {SQL_RANGE})
             WHERE a['is_anomaly'] AND a['severity'] = 'critical' ORDER BY time, model"
        ))
        .await;
    assert!(
        documented
            .iter()
            .any(|a| a["time"] == "2026-01-01T00:30:00Z" && a["model"] == "gpt-4o"),
        "{documented:?}"
    );
    assert_same(
        &robust["anomalies"],
        &json!(documented),
        &["time", "model", "score", "kind", "severity"],
        "robust vs SQL",
    );

    // Predictions equal forecast() in SQL; a posted series equals the same forecast.
    let history = "start=2026-01-01T00:00:00Z&end=2026-01-01T00:40:00Z";
    let predictions = get_ok(
        &hub,
        &format!("/api/v1/analytics/predictions?metric=llm_provider_model.requests&window=1m&horizon=5&method=ets&level=0.9&{history}"),
    )
    .await;
    let forecast = hub
        .rows(
            "SELECT provider, model, f['ts'] AS time, f['yhat'] AS yhat, f['lower'] AS lower, f['upper'] AS upper
             FROM (SELECT provider, model, unnest(forecast(window_start, requests, 5, 'ets', 0.9)) AS f
                   FROM llm_provider_model_1m
                   WHERE window_start >= TIMESTAMP '2026-01-01T00:00:00Z' AND window_start < TIMESTAMP '2026-01-01T00:40:00Z'
                   GROUP BY provider, model)
             ORDER BY time, provider, model",
        )
        .await;
    assert_eq!(
        forecast.iter().filter(|r| r["model"] == "gpt-4o").count(),
        5,
        "5 steps: {forecast:?}"
    );
    let cols = ["provider", "model", "time", "yhat", "lower", "upper"];
    assert_same(
        &predictions["predictions"],
        &json!(forecast),
        &cols,
        "predictions vs forecast()",
    );
    let series = hub
        .rows("SELECT window_start, requests FROM llm_provider_model_1m WHERE model = 'gpt-4o' AND window_start < TIMESTAMP '2026-01-01T00:40:00Z' ORDER BY window_start")
        .await;
    let points: Vec<Value> = series
        .iter()
        .map(|r| json!({"ts": r["window_start"], "value": r["requests"]}))
        .collect();
    let (status, posted) = hub
        .post_json(
            "/api/v1/analytics/predict",
            json!({"points": points, "horizon": 5, "method": "ets", "level": 0.9}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{posted}");
    let gpt4o: Vec<Value> = forecast.iter().filter(|r| r["model"] == "gpt-4o").cloned().collect();
    assert_same(
        &posted["predictions"],
        &json!(gpt4o),
        &["time", "yhat", "lower", "upper"],
        "posted vs forecast()",
    );

    // Correlations: totals per minute, as spearman_corr and xcorr over the joined series.
    let corr = get_ok(
        &hub,
        &format!("/api/v1/analytics/correlations?metric_a=llm_provider_model.requests&metric_b=llm_provider_model.max_latency_ms&max_lag=5&{RANGE}"),
    )
    .await;
    let sql = hub
        .rows(&format!(
            "WITH a AS (SELECT window_start, sum(requests) AS r FROM llm_provider_model_1m WHERE {SQL_RANGE} GROUP BY window_start),
                  b AS (SELECT window_start, max(max_latency_ms) AS m FROM llm_provider_model_1m WHERE {SQL_RANGE} GROUP BY window_start)
             SELECT points, spearman, x['best_lag'] AS best_lag, x['coefficient'] AS lag_coefficient
             FROM (SELECT count(*) AS points, spearman_corr(a.r, b.m) AS spearman, xcorr(a.window_start, a.r, b.m, 5) AS x
                   FROM a JOIN b ON a.window_start = b.window_start)"
        ))
        .await;
    assert!(corr["points"].as_i64().unwrap_or(0) >= 40, "{corr}");
    assert_same(
        &json!([corr]),
        &json!(sql),
        &["points", "spearman", "best_lag", "lag_coefficient"],
        "correlations vs SQL",
    );

    // A trace: the chain from its root, the deepest failure as root cause.
    let chain = get_ok(&hub, "/api/v1/analytics/traces/trace-x").await;
    assert_eq!(
        (&chain["events_in_chain"], &chain["depth"], &chain["errors"]),
        (&json!(4), &json!(2), &json!(1)),
        "{chain}"
    );
    assert_eq!(
        chain["root_cause"],
        format!("{}:server_error", uuid::Uuid::from_u128(3)),
        "{chain}"
    );
    let depths: Vec<i64> = chain["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["depth"].as_i64())
        .collect();
    assert_eq!(depths, [0, 1, 1, 2]);
    // A generated trace: its root and every child.
    let generated = hub
        .rows("SELECT correlation_id, count(*) AS n FROM events WHERE correlation_id IS NOT NULL AND correlation_id <> 'trace-x' GROUP BY correlation_id ORDER BY correlation_id LIMIT 1")
        .await;
    let id = generated[0]["correlation_id"].as_str().expect("a generated trace");
    let chain = get_ok(&hub, &format!("/api/v1/analytics/traces/{id}")).await;
    assert_eq!(chain["events_in_chain"], generated[0]["n"], "{chain}");
    assert_eq!(chain["depth"], 1, "{chain}");
    assert_eq!(get(&hub, "/api/v1/analytics/traces/no-such-trace", None).await.0, 404);

    // Parameter problems: 400 naming the parameter.
    let ts = "/api/v1/metrics/llm_provider_model/timeseries";
    let an = "/api/v1/analytics/anomalies?metric=llm_provider_model.p95_latency_ms";
    let co = "/api/v1/analytics/correlations?metric_a=llm_provider_model.requests&metric_b=llm_provider_model.errors";
    let pr = "/api/v1/analytics/predictions?metric=llm_provider_model.requests";
    for (path, param) in [
        (format!("{ts}?window=2m"), "window"),
        (format!("{ts}?group_by=region"), "group_by"),
        (format!("{ts}?fields=nope"), "fields"),
        (format!("{ts}?fields=model"), "fields"),
        (
            "/api/v1/metrics/llm_tenant_model/timeseries?window=15m&fields=requests,latency_sketch".into(),
            "fields",
        ),
        (format!("{ts}?start=yesterday"), "start"),
        (format!("{ts}?start=2000-01-01T00:00:00Z"), "start"),
        (
            format!("{ts}?end=2026-01-01T00:00:00Z&start=2026-01-02T00:00:00Z"),
            "start",
        ),
        (format!("{ts}?limit=5"), "limit"),
        ("/api/v1/analytics/anomalies".into(), "metric"),
        ("/api/v1/analytics/anomalies?metric=nope.requests".into(), "metric"),
        ("/api/v1/analytics/anomalies?metric=llm_provider_model".into(), "metric"),
        (format!("{an}&threshold=-1"), "threshold"),
        (format!("{an}&method=seasonal"), "period"),
        (format!("{an}&method=prophet"), "method"),
        (format!("{an}&severity=warning"), "severity"),
        (format!("{co}&max_lag=x"), "max_lag"),
        (format!("{co}&filter_a=region:eu"), "filter_a"),
        (
            "/api/v1/analytics/correlations?metric_a=llm_provider_model.requests&metric_b=llm_provider_model.nope"
                .into(),
            "metric_b",
        ),
        (format!("{pr}&horizon=0"), "horizon"),
        (format!("{pr}&method=prophet"), "method"),
        (format!("{pr}&level=2"), "level"),
        (
            format!("/api/v1/analytics/traces/{}", "x".repeat(300)),
            "correlation_id",
        ),
    ] {
        assert_names(&hub, &path, param).await;
    }
    let (status, body) = hub
        .post_json(
            "/api/v1/analytics/predict",
            json!({"points": [{"ts": "2026-01-01T00:00:00Z", "value": 1.0}]}).to_string(),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`points`"),
        "{body}"
    );
    let mut points: Vec<Value> = (0..12)
        .map(|i| json!({"ts": format!("2026-01-01T00:{i:02}:00Z"), "value": i}))
        .collect();
    points[3]["ts"] = json!("not a time");
    let (status, body) = hub
        .post_json("/api/v1/analytics/predict", json!({"points": points}).to_string())
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap_or_default().contains("[3].ts"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_key_reads_only_its_rollups_and_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, data) = crate::auth::hub_requiring_keys(dir.path()).await;
    let admin = create_key(&data, "admin", "admin", None);
    let acme = create_key(&data, "acme-read", "read", Some("acme"));
    post_traffic(&hub, Some(&admin), &traffic(1200)).await;
    post_traffic(
        &hub,
        Some(&admin),
        &[llm_event(9, "2026-01-01T01:00:06Z", None, None, "ok")],
    )
    .await;
    wait_until("the tenant rollup", Duration::from_secs(90), async || {
        let (_, body) = get(&hub, "/api/v1/metrics/llm_tenant_model_1h", Some(&admin)).await;
        body["rows"].as_array().is_some_and(|r| !r.is_empty())
    })
    .await;

    assert_eq!(get(&hub, "/api/v1/metrics", None).await.0, 401);
    let (status, list) = get(&hub, "/api/v1/metrics", Some(&acme)).await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["families"]
        .as_array()
        .expect("families")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(names.contains(&"llm_tenant_model"), "{names:?}");
    assert!(
        !names.contains(&"llm_provider_model"),
        "tables without a tenant column: {names:?}"
    );
    assert_eq!(
        get(&hub, "/api/v1/metrics/llm_provider_model/timeseries", Some(&acme))
            .await
            .0,
        404
    );
    let path = format!("/api/v1/metrics/llm_tenant_model/timeseries?window=1h&group_by=tenant&fields=requests&{RANGE}");
    let (status, mine) = get(&hub, &path, Some(&acme)).await;
    assert_eq!(status, 200, "{mine}");
    let (_, all) = get(&hub, &path, Some(&admin)).await;
    let tenants = |v: &Value| -> Vec<String> {
        v["points"]
            .as_array()
            .expect("points")
            .iter()
            .filter_map(|p| p["tenant"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(tenants(&mine), ["acme"], "{mine}");
    assert!(tenants(&all).len() == 4, "every tenant for the admin: {all}");
    let acme_row = all["points"]
        .as_array()
        .expect("points")
        .iter()
        .find(|p| p["tenant"] == "acme")
        .cloned();
    assert_eq!(Some(mine["points"][0].clone()), acme_row);
    let (status, anomalies) = get(
        &hub,
        &format!("/api/v1/analytics/anomalies?metric=llm_tenant_model.requests&window=1m&threshold=0.5&{RANGE}"),
        Some(&acme),
    )
    .await;
    assert_eq!(status, 200, "{anomalies}");
    let rows = anomalies["anomalies"].as_array().expect("anomalies");
    assert!(
        !rows.is_empty() && rows.iter().all(|a| a["tenant"] == "acme"),
        "{anomalies}"
    );
}
