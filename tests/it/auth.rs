//! Authentication, roles and tenant isolation against the real binary: keys made by the CLI
//! while the service runs, every role on every route group, and a tenant's key trying many
//! SQL shapes to reach another tenant's rows.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{BIN, Hub, HubOptions, wait_for, wait_until};

/// `analytics-hub keys ...` on `data`; returns stdout (panics on failure).
fn keys(data: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .arg("keys")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("analytics-hub keys");
    assert!(
        out.status.success(),
        "keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `keys` with extra environment (e.g. `DATABASE_URL`).
fn keys_env(data: &Path, args: &[&str], env: &[(String, String)]) -> String {
    let out = std::process::Command::new(BIN)
        .arg("keys")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("analytics-hub keys");
    assert!(
        out.status.success(),
        "keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates a key, returns it.
pub fn create_key(data: &Path, name: &str, role: &str, tenant: Option<&str>) -> String {
    let mut args = vec!["create", "--name", name, "--role", role];
    if let Some(t) = tenant {
        args.extend(["--tenant", t]);
    }
    let out = keys(data, &args);
    out.lines().next().expect("the key").trim().to_string()
}

/// The Hub on `dir/data` with `toml` as its configuration file.
async fn hub_with_config(dir: &Path, toml: String) -> (Hub, std::path::PathBuf) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let hub = Hub::start_with(
        &data,
        HubOptions {
            config_toml: Some(toml),
            ..HubOptions::default()
        },
    )
    .await;
    (hub, data)
}

/// A Hub on `dir/data` with `AUTH_MODE=required`; returns it and its data directory.
pub async fn hub_requiring_keys(dir: &Path) -> (Hub, std::path::PathBuf) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let hub = Hub::start_with(
        &data,
        HubOptions {
            env: vec![("AUTH_MODE".into(), "required".into())],
            ..HubOptions::default()
        },
    )
    .await;
    (hub, data)
}

/// A request with `key` (as a bearer token), returning status and JSON body (`null` if none).
async fn call(hub: &Hub, method: &str, path: &str, key: Option<&str>, body: Option<String>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = hub.client.request(method, hub.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn sql(hub: &Hub, key: &str, statement: &str) -> (u16, Value) {
    call(
        hub,
        "POST",
        "/api/v1/sql",
        Some(key),
        Some(json!({ "sql": statement }).to_string()),
    )
    .await
}

fn event(i: usize, tenant: Option<&str>) -> Value {
    let mut payload = json!({
        "provider": "openai", "model": if i % 4 < 2 { "gpt-4o" } else { "gpt-4o-mini" },
        "latency_ms": 100 + i, "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.01,
        "status": "ok",
    });
    if let Some(t) = tenant {
        payload["tenant"] = json!(t);
    }
    json!({
        "event_id": format!("00000000-0000-4000-8000-{i:012x}"),
        "timestamp": format!("2026-11-20T00:{:02}:00Z", i % 60),
        "source_module": "llm-observatory",
        "event_type": "telemetry",
        "payload": payload,
    })
}

fn ndjson(events: &[Value]) -> String {
    events.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_role_on_every_route_group_and_keys_from_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, data) = hub_requiring_keys(dir.path()).await;
    let admin = create_key(&data, "ops", "admin", None);
    let reader = create_key(&data, "dash", "read", None);
    let ingester = create_key(&data, "collector", "ingest", None);

    // Public: health and readiness; everything else needs a key, and says how to send one.
    assert_eq!(call(&hub, "GET", "/health", None, None).await.0, 200);
    assert_eq!(call(&hub, "GET", "/ready", None, None).await.0, 200);
    let (status, body) = call(&hub, "GET", "/api/v1/events", None, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Authorization: Bearer"))
    );
    let unknown = call(
        &hub,
        "GET",
        "/api/v1/events",
        Some("lah_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        None,
    )
    .await;
    let not_a_key = call(&hub, "GET", "/api/v1/events", Some("hunter2"), None).await;
    assert_eq!((unknown.0, not_a_key.0), (401, 401));
    assert_eq!(unknown.1, not_a_key.1, "an unknown key and garbage get the same answer");

    let batch = ndjson(&[event(1, None), event(2, None)]);
    let sql_body = json!({ "sql": "SELECT count(*) AS n FROM events" }).to_string();
    let cq_body = json!({ "name": "per_model", "sql": crate::cq::PER_MODEL, "options": {} }).to_string();
    let export_body =
        json!({ "table": "events", "destination": format!("file://{}/", dir.path().join("x").display()) }).to_string();
    // (method, path, body, status for admin, read, ingest)
    let cases: Vec<(&str, &str, Option<String>, [u16; 3])> = vec![
        ("POST", "/api/v1/events/batch", Some(batch.clone()), [200, 403, 200]),
        ("GET", "/api/v1/events", None, [200, 200, 403]),
        ("POST", "/api/v1/sql", Some(sql_body.clone()), [200, 200, 403]),
        ("GET", "/api/v1/continuous-queries", None, [200, 200, 403]),
        ("GET", "/api/v1/ingest/status", None, [200, 200, 403]),
        ("POST", "/api/v1/continuous-queries", Some(cq_body), [201, 403, 403]),
        ("GET", "/api/v1/exports", None, [200, 403, 403]),
        ("POST", "/api/v1/exports", Some(export_body), [202, 403, 403]),
        ("GET", "/api/v1/snapshots", None, [200, 403, 403]),
        ("GET", "/api/v1/keys", None, [200, 403, 403]),
    ];
    for (method, path, body, expected) in cases {
        // Refusals first, so the admin's side effects (a created query) do not change them.
        for (key, want, role) in [
            (&reader, expected[1], "read"),
            (&ingester, expected[2], "ingest"),
            (&admin, expected[0], "admin"),
        ] {
            let (status, answer) = call(&hub, method, path, Some(key), body.clone()).await;
            assert_eq!(status, want, "{role}: {method} {path}: {answer}");
            if status == 403 {
                assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
                assert!(
                    answer["error"]["message"].as_str().is_some_and(|m| m.contains(role)),
                    "{answer}"
                );
            }
        }
    }
    // CREATE CONTINUOUS QUERY through the SQL route is an admin action too.
    let (status, _) = sql(
        &hub,
        &reader,
        &format!("CREATE CONTINUOUS QUERY q2 AS {}", crate::cq::PER_MODEL),
    )
    .await;
    assert_eq!(status, 403);
    // X-API-Key works as well as a bearer token.
    let r = hub
        .client
        .get(hub.url("/api/v1/events"))
        .header("x-api-key", &reader)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);

    // Admins manage keys over HTTP too: a key made there works at once, and stops at once.
    let (status, made) = call(
        &hub,
        "POST",
        "/api/v1/keys",
        Some(&admin),
        Some(json!({"name": "api-made", "role": "read", "tenant": "acme", "expires_in_secs": 3600}).to_string()),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let api_key = made["key"].as_str().expect("key").to_string();
    assert_eq!(
        (made["role"].as_str(), made["tenant"].as_str()),
        (Some("read"), Some("acme"))
    );
    assert_eq!(call(&hub, "GET", "/api/v1/events", Some(&api_key), None).await.0, 200);
    let (_, listed) = call(&hub, "GET", "/api/v1/keys", Some(&admin), None).await;
    assert!(
        !listed.to_string().contains(&api_key) && !listed.to_string().contains("sha256"),
        "{listed}"
    );
    assert_eq!(
        call(&hub, "DELETE", "/api/v1/keys/api-made", Some(&admin), None)
            .await
            .0,
        200
    );
    assert_eq!(call(&hub, "GET", "/api/v1/events", Some(&api_key), None).await.0, 401);
    assert_eq!(
        call(&hub, "DELETE", "/api/v1/keys/api-made", Some(&admin), None)
            .await
            .0,
        404
    );
    let (status, body) = call(
        &hub,
        "POST",
        "/api/v1/keys",
        Some(&admin),
        Some(json!({"name": "x", "role": "admin", "tenant": "acme"}).to_string()),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // Revoked with the service running: refused within about a second.
    assert!(keys(&data, &["revoke", "--name", "dash"]).contains("revoked"));
    wait_for("the revocation to take effect", Duration::from_secs(10), async || {
        (call(&hub, "GET", "/api/v1/events", Some(&reader), None).await.0 == 401).then_some(())
    })
    .await;
    let listed = keys(&data, &["list"]);
    assert!(
        listed.contains("dash\tread\t-\t") && listed.contains("\trevoked"),
        "{listed}"
    );
    assert!(!listed.contains(&admin), "keys are never listed");
    // An expiring key works until its time and not after.
    let brief = keys(
        &data,
        &["create", "--name", "brief", "--role", "read", "--expires", "2s"],
    );
    let brief = brief.lines().next().expect("key").to_string();
    wait_for("the new key to be seen", Duration::from_secs(10), async || {
        (call(&hub, "GET", "/api/v1/events", Some(&brief), None).await.0 == 200).then_some(())
    })
    .await;
    wait_for("the key to expire", Duration::from_secs(10), async || {
        (call(&hub, "GET", "/api/v1/events", Some(&brief), None).await.0 == 401).then_some(())
    })
    .await;
    // Admin keys are not tenant-bound; bad input is refused by the CLI, naming it.
    let refused = std::process::Command::new(BIN)
        .args([
            "keys",
            "create",
            "--name",
            "t-admin",
            "--role",
            "admin",
            "--tenant",
            "acme",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .expect("keys");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("admin keys"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_key_sees_and_writes_only_its_tenant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, data) = hub_requiring_keys(dir.path()).await;
    let admin = create_key(&data, "ops", "admin", None);
    let acme_read = create_key(&data, "acme-dash", "read", Some("acme"));
    let acme_ingest = create_key(&data, "acme-app", "ingest", Some("acme"));

    // A rollup grouped by tenant: each tenant reads its own rows of it.
    let per_tenant = "SELECT window_start, window_end, tenant, model, count(*) AS n FROM events GROUP BY tumble(timestamp, INTERVAL '1 minute'), tenant, model";
    let (status, body) = call(
        &hub,
        "POST",
        "/api/v1/continuous-queries",
        Some(&admin),
        Some(json!({ "name": "tenant_model_1m", "sql": per_tenant, "options": {} }).to_string()),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // 40 events: even ones globex's (posted by the admin), odd ones acme's (by acme's key,
    // half of them without a tenant: stamped).
    let globex: Vec<Value> = (0..40).step_by(2).map(|i| event(i, Some("globex"))).collect();
    let (status, body) = call(
        &hub,
        "POST",
        "/api/v1/events/batch",
        Some(&admin),
        Some(ndjson(&globex)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let acme: Vec<Value> = (1..40)
        .step_by(2)
        .map(|i| event(i, (i % 4 == 1).then_some("acme")))
        .collect();
    let (status, body) = call(
        &hub,
        "POST",
        "/api/v1/events/batch",
        Some(&acme_ingest),
        Some(ndjson(&acme)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Writing into another tenant is refused per event, naming the field.
    let (status, body) = call(
        &hub,
        "POST",
        "/api/v1/events/batch",
        Some(&acme_ingest),
        Some(ndjson(&[event(100, Some("globex")), event(101, Some("acme"))])),
    )
    .await;
    assert_eq!(status, 207, "{body}");
    assert_eq!(body["rejected"][0]["index"], 0);
    assert_eq!(body["rejected"][0]["error_type"], "tenant_mismatch");
    assert!(
        body["rejected"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("payload.tenant"))
    );

    let (_, all) = sql(
        &hub,
        &admin,
        "SELECT tenant, count(*) AS n FROM events GROUP BY tenant ORDER BY tenant",
    )
    .await;
    assert_eq!(
        all["rows"],
        json!([{"tenant": "acme", "n": 21}, {"tenant": "globex", "n": 20}]),
        "{all}"
    );

    // Every shape sees acme's rows only: the distinct tenants of what it returns, and counts.
    let only_acme = [
        "SELECT DISTINCT tenant FROM events",
        "SELECT DISTINCT tenant FROM events WHERE tenant = 'globex' OR tenant = 'acme'",
        "SELECT DISTINCT e.tenant FROM events e JOIN events f ON e.event_id = f.event_id",
        "SELECT DISTINCT tenant FROM (SELECT * FROM events) AS s",
        "WITH x AS (SELECT tenant FROM events) SELECT DISTINCT tenant FROM x",
        "SELECT DISTINCT tenant FROM (SELECT tenant FROM events UNION ALL SELECT tenant FROM events) AS u",
        "SELECT DISTINCT tenant FROM (SELECT tenant, row_number() OVER (PARTITION BY tenant ORDER BY timestamp) AS r FROM events) AS w",
        "SELECT DISTINCT tenant FROM events WHERE event_id IN (SELECT event_id FROM events)",
        "SELECT DISTINCT (SELECT max(tenant) FROM events) AS tenant FROM events",
        "SELECT DISTINCT tenant FROM events WHERE EXISTS (SELECT 1 FROM events AS g WHERE g.tenant = 'acme')",
        "SELECT DISTINCT tenant FROM datafusion.public.events",
        "SELECT DISTINCT tenant FROM public.events",
        "SELECT DISTINCT tenant FROM events LIMIT 5",
        "SELECT DISTINCT tenant FROM events CROSS JOIN (SELECT count(*) AS c FROM events) AS k",
        "SELECT DISTINCT tenant FROM events WHERE model IN (SELECT model FROM events)",
        "SELECT tenant FROM events GROUP BY tenant HAVING count(*) > 0",
        "SELECT DISTINCT t AS tenant FROM (SELECT tenant AS t FROM events ORDER BY timestamp DESC LIMIT 100) AS x",
        "SELECT DISTINCT first_value(tenant) OVER (ORDER BY timestamp) AS tenant FROM events",
        "SELECT DISTINCT tenant FROM events INTERSECT SELECT DISTINCT tenant FROM events",
        "SELECT DISTINCT tenant FROM events EXCEPT SELECT 'nobody'",
        "SELECT DISTINCT tenant FROM events WHERE tenant = (SELECT min(tenant) FROM events)",
        "SELECT DISTINCT e.tenant FROM events e LEFT JOIN llm_tenant_model_1m r ON r.tenant = e.tenant",
    ];
    for statement in only_acme {
        let (status, answer) = sql(&hub, &acme_read, statement).await;
        assert_eq!(status, 200, "{statement}: {answer}");
        let rows = answer["rows"].as_array().expect("rows");
        assert!(
            !rows.is_empty() && rows.iter().all(|r| r["tenant"] == "acme"),
            "{statement}: {answer}"
        );
    }
    let counts = [
        ("SELECT count(*) AS n FROM events", 21),
        ("SELECT count(*) AS n FROM events WHERE tenant = 'globex'", 0),
        ("SELECT count(*) AS n FROM events WHERE tenant IS NULL", 0),
        (
            "SELECT count(*) AS n FROM events WHERE event_id = '00000000-0000-4000-8000-000000000000'",
            0,
        ),
        (
            "SELECT count(*) AS n FROM (SELECT event_id FROM events UNION SELECT event_id FROM events) AS u",
            21,
        ),
        (
            "SELECT count(*) AS n FROM events e LEFT JOIN events f ON f.tenant = 'globex'",
            21,
        ),
        ("SELECT count(DISTINCT model) AS n FROM events", 2),
        ("SELECT count(*) AS n FROM events WHERE tenant LIKE '%'", 21),
        (
            "SELECT count(*) AS n FROM events WHERE EXISTS (SELECT 1 FROM events AS g WHERE g.tenant = 'globex')",
            0,
        ),
        ("SELECT count(*) AS n FROM (SELECT * FROM events LIMIT 1000) AS s", 21),
        ("SELECT count(*) AS n FROM events WHERE tenant <> 'acme'", 0),
        (
            "SELECT CAST(sum(CASE WHEN tenant = 'globex' THEN 1 ELSE 0 END) AS BIGINT) AS n FROM events",
            0,
        ),
        (
            "SELECT count(*) AS n FROM events WHERE event_id NOT IN (SELECT event_id FROM events)",
            0,
        ),
    ];
    for (statement, want) in counts {
        let (status, answer) = sql(&hub, &acme_read, statement).await;
        assert_eq!(status, 200, "{statement}: {answer}");
        assert_eq!(answer["rows"][0]["n"], want, "{statement}: {answer}");
    }
    // EXPLAIN shows the tenant's filter under the plan; EXPLAIN ANALYZE (whose metrics count
    // every tenant's rows) is refused for a tenant, allowed for the admin.
    let (status, answer) = sql(&hub, &acme_read, "EXPLAIN SELECT * FROM events WHERE tenant = 'globex'").await;
    assert_eq!(status, 200, "{answer}");
    let physical = answer["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["plan_type"] == "physical_plan")
        .expect("physical plan")["plan"]
        .as_str()
        .expect("text")
        .to_string();
    assert!(
        physical.contains("tenant@") && physical.contains("= acme"),
        "{physical}"
    );
    let (status, answer) = sql(&hub, &acme_read, "EXPLAIN ANALYZE SELECT count(*) FROM events").await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.to_string().contains("EXPLAIN ANALYZE is not available"),
        "{answer}"
    );
    assert_eq!(
        sql(&hub, &admin, "EXPLAIN ANALYZE SELECT count(*) FROM events").await.0,
        200
    );
    wait_for(
        "the per-tenant rollup of both tenants",
        Duration::from_secs(30),
        async || {
            let (_, answer) = sql(&hub, &admin, "SELECT count(DISTINCT tenant) AS n FROM tenant_model_1m").await;
            (answer["rows"][0]["n"] == 2).then_some(())
        },
    )
    .await;
    let (_, rollup) = sql(
        &hub,
        &acme_read,
        "SELECT tenant, count(*) AS windows FROM tenant_model_1m GROUP BY tenant",
    )
    .await;
    let rows = rollup["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{rollup}");
    assert_eq!(rows[0]["tenant"], "acme", "{rollup}");

    // Tables without a tenant column (the shipped rollups) do not exist for a tenant, in SQL
    // or in the catalog views.
    let (status, answer) = sql(&hub, &acme_read, "SELECT count(*) FROM llm_provider_model_1m").await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("llm_provider_model_1m"), "{answer}");
    let (_, tables) = sql(&hub, &acme_read, "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema NOT IN ('information_schema')").await;
    let names: Vec<&str> = tables["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["table_name"].as_str())
        .collect();
    assert!(
        names.contains(&"events") && names.contains(&"tenant_model_1m"),
        "{tables}"
    );
    assert!(
        names.contains(&"llm_tenant_model_1m") && names.contains(&"llm_tenant_model_1h"),
        "the shipped per-tenant rollups: {tables}"
    );
    assert!(!names.iter().any(|n| n.starts_with("llm_provider_model")), "{tables}");
    let (_, admin_tables) = sql(
        &hub,
        &admin,
        "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'llm_provider_model_1m'",
    )
    .await;
    assert_eq!(admin_tables["rows"][0]["n"], 1, "the admin sees every table");

    // The query list shows a tenant only the queries whose output it can read.
    let (_, listed) = call(&hub, "GET", "/api/v1/continuous-queries", Some(&acme_read), None).await;
    let names: Vec<&str> = listed["continuous_queries"]
        .as_array()
        .expect("queries")
        .iter()
        .filter_map(|q| q["name"].as_str())
        .collect();
    assert!(
        names.contains(&"tenant_model_1m") && names.contains(&"llm_tenant_model_1h"),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("llm_provider_model")), "{names:?}");
    let hidden = call(
        &hub,
        "GET",
        "/api/v1/continuous-queries/llm_provider_model_1m",
        Some(&acme_read),
        None,
    )
    .await;
    assert_eq!(hidden.0, 404);
    assert_eq!(
        call(
            &hub,
            "GET",
            "/api/v1/continuous-queries/llm_provider_model_1m",
            Some(&admin),
            None
        )
        .await
        .0,
        200
    );

    // The REST reads too: the list, and a globex event by id is not found.
    let (_, list) = call(&hub, "GET", "/api/v1/events?limit=1000", Some(&acme_read), None).await;
    let events = list["events"].as_array().expect("events");
    assert_eq!(events.len(), 21, "{list}");
    assert!(
        events
            .iter()
            .all(|e| e["payload"]["tenant"] == "acme" || e["payload"].get("tenant").is_none())
    );
    let globex_id = "00000000-0000-4000-8000-000000000000";
    assert_eq!(
        call(&hub, "GET", &format!("/api/v1/events/{globex_id}"), Some(&admin), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(
            &hub,
            "GET",
            &format!("/api/v1/events/{globex_id}"),
            Some(&acme_read),
            None
        )
        .await
        .0,
        404
    );

    // The result cache never hands one tenant's answer to another: the admin's answer is
    // cached first, then the tenant asks the same.
    let statement = "SELECT count(*) AS n FROM events WHERE latency_ms >= 0";
    for _ in 0..2 {
        assert_eq!(sql(&hub, &admin, statement).await.1["rows"][0]["n"], 41);
    }
    for _ in 0..2 {
        assert_eq!(sql(&hub, &acme_read, statement).await.1["rows"][0]["n"], 21);
    }

    // Late events carry their event's tenant: each tenant sees its own, an admin both.
    let late = |i: usize, tenant: &str| {
        let mut e = event(i, Some(tenant));
        e["timestamp"] = json!("2026-11-19T23:00:00Z");
        e
    };
    let (status, body) = call(
        &hub,
        "POST",
        "/api/v1/events/batch",
        Some(&admin),
        Some(ndjson(&[late(200, "globex"), late(201, "acme")])),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // (acme's odd-minute events above were late too: posted after globex's moved the watermark.)
    let late_of = "SELECT tenant, event_id FROM late_events WHERE query = 'tenant_model_1m' \
                   AND event_id IN ('00000000-0000-4000-8000-0000000000c8', '00000000-0000-4000-8000-0000000000c9') \
                   ORDER BY tenant";
    let seen = wait_for("both late events in late_events", Duration::from_secs(30), async || {
        let (_, answer) = sql(&hub, &admin, late_of).await;
        (answer["rows"].as_array().is_some_and(|r| r.len() == 2)).then_some(answer)
    })
    .await;
    assert_eq!(
        seen["rows"],
        json!([
            {"tenant": "acme", "event_id": "00000000-0000-4000-8000-0000000000c9"},
            {"tenant": "globex", "event_id": "00000000-0000-4000-8000-0000000000c8"},
        ])
    );
    let (status, answer) = sql(&hub, &acme_read, late_of).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["rows"],
        json!([{"tenant": "acme", "event_id": "00000000-0000-4000-8000-0000000000c9"}])
    );
    let globex_late = "SELECT count(*) AS n FROM late_events WHERE query = 'tenant_model_1m' AND (tenant = 'globex' OR tenant IS NULL)";
    assert_eq!(sql(&hub, &admin, globex_late).await.1["rows"][0]["n"], 1);
    let (_, answer) = sql(&hub, &acme_read, globex_late).await;
    assert_eq!(answer["rows"][0]["n"], 0, "{answer}");
    let (_, answer) = sql(
        &hub,
        &acme_read,
        "SELECT count(*) AS n FROM late_events WHERE query = 'tenant_model_1m'",
    )
    .await;
    assert_eq!(
        answer["rows"][0]["n"], 19,
        "acme's 18 odd-minute events and its late one: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_cors_request_ids_and_the_audit_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let hub = Hub::start_with(
        &data,
        HubOptions {
            env: vec![
                ("RATE_LIMIT_QUERY_PER_SEC".into(), "1".into()),
                ("CORS_ALLOWED_ORIGINS".into(), "https://dash.example".into()),
            ],
            ..HubOptions::default()
        },
    )
    .await;

    // One query a second per client address: the second at once is refused with Retry-After,
    // ingest has its own budget, and the budget comes back.
    let statement = "SELECT count(*) AS n FROM events";
    assert_eq!(hub.sql(statement).await.0, 200);
    let r = hub
        .client
        .post(hub.url("/api/v1/sql"))
        .json(&json!({ "sql": statement }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 429);
    assert!(
        r.headers().get("retry-after").is_some_and(|v| v == "1"),
        "{:?}",
        r.headers()
    );
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ip:127.0.0.1")),
        "{body}"
    );
    assert_eq!(
        hub.post_ndjson(ndjson(&[event(1, None)])).await.0,
        200,
        "ingest has its own budget"
    );
    wait_for("the query budget to refill", Duration::from_secs(10), async || {
        (hub.sql(statement).await.0 == 200).then_some(())
    })
    .await;

    // Request ids: the client's is echoed, otherwise one is made up; both reach the logs.
    let r = hub
        .client
        .get(hub.url("/health"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .expect("health");
    assert_eq!(r.headers()["x-request-id"], "trace-abc-123");
    let r = hub.client.get(hub.url("/health")).send().await.expect("health");
    let made = r.headers()["x-request-id"].to_str().expect("ascii").to_string();
    assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");

    // CORS: the configured origin gets a preflight answer, another origin does not.
    let preflight = |origin: &'static str| {
        hub.client
            .request(reqwest::Method::OPTIONS, hub.url("/api/v1/sql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let ok = preflight("https://dash.example").await.expect("preflight");
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://dash.example");
    let other = preflight("https://evil.example").await.expect("preflight");
    assert!(
        other.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        other.headers()
    );

    // The audit trail names the caller and the statement; the access log every request.
    let log = hub.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("audit") && l.contains("SELECT count(*) AS n FROM events") && l.contains("status=200")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("access") && l.contains("trace-abc-123")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("access") && l.contains("status=429")),
        "{log}"
    );
}

/// `openssl` with `args`, in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_bearer_tokens_hs256_rs256_es256_and_every_defect_refused() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let dir = tempfile::tempdir().expect("tempdir");
    let keys_dir = dir.path();
    openssl(keys_dir, &["genrsa", "-out", "rsa.pem", "2048"]);
    openssl(keys_dir, &["rsa", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub.pem"]);
    openssl(
        keys_dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.sec1.pem",
        ],
    );
    openssl(
        keys_dir,
        &["pkcs8", "-topk8", "-nocrypt", "-in", "ec.sec1.pem", "-out", "ec.pem"],
    );
    openssl(keys_dir, &["ec", "-in", "ec.pem", "-pubout", "-out", "ec.pub.pem"]);
    let secret = "a-shared-secret-of-more-than-32-bytes!";
    let toml = format!(
        "[auth]\nmode = \"required\"\n[auth.jwt]\nhs256_secret = \"{secret}\"\npublic_key_files = [\"{}\", \"{}\"]\nissuer = \"https://idp.example\"\naudience = \"llm-analytics-hub\"\nrole_claim = \"hub_role\"\ntenant_claim = \"org\"\n",
        keys_dir.join("rsa.pub.pem").display(),
        keys_dir.join("ec.pub.pem").display()
    );
    let (hub, data) = hub_with_config(dir.path(), toml).await;
    let printed = std::process::Command::new(BIN)
        .args(["--config"])
        .arg(data.with_extension("toml"))
        .arg("config")
        .output()
        .expect("config");
    assert!(
        !String::from_utf8_lossy(&printed.stdout).contains(secret),
        "the secret is never printed"
    );

    let now = chrono::Utc::now().timestamp();
    let claims = |role: &str, org: Option<&str>, exp: i64| {
        let mut c = json!({"sub": "svc", "hub_role": role, "iss": "https://idp.example", "aud": "llm-analytics-hub", "exp": exp});
        if let Some(o) = org {
            c["org"] = json!(o);
        }
        c
    };
    let hs = |c: &Value| {
        encode(
            &Header::new(Algorithm::HS256),
            c,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("hs256")
    };
    let rsa = std::fs::read(keys_dir.join("rsa.pem")).expect("rsa");
    let rs = |c: &Value| {
        encode(
            &Header::new(Algorithm::RS256),
            c,
            &EncodingKey::from_rsa_pem(&rsa).expect("rsa key"),
        )
        .expect("rs256")
    };
    let ec = std::fs::read(keys_dir.join("ec.pem")).expect("ec");
    let es = |c: &Value| {
        encode(
            &Header::new(Algorithm::ES256),
            c,
            &EncodingKey::from_ec_pem(&ec).expect("ec key"),
        )
        .expect("es256")
    };

    // Admin (HS256) posts events of two tenants; a tenant's RS256 token reads its own.
    let admin = hs(&claims("admin", None, now + 600));
    let events: Vec<Value> = (0..10)
        .map(|i| event(i, Some(if i < 4 { "acme" } else { "globex" })))
        .collect();
    let (status, body) = call(
        &hub,
        "POST",
        "/api/v1/events/batch",
        Some(&admin),
        Some(ndjson(&events)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let acme = rs(&claims("read", Some("acme"), now + 600));
    let (status, answer) = sql(&hub, &acme, "SELECT count(*) AS n FROM events").await;
    assert_eq!((status, &answer["rows"][0]["n"]), (200, &json!(4)), "{answer}");
    let ingest = es(&claims("ingest", None, now + 600));
    assert_eq!(
        sql(&hub, &ingest, "SELECT 1").await.0,
        403,
        "an ingest token cannot query"
    );
    assert_eq!(
        call(
            &hub,
            "POST",
            "/api/v1/events/batch",
            Some(&ingest),
            Some(ndjson(&[event(20, None)]))
        )
        .await
        .0,
        200
    );

    // Every defect: 401, the same answer for each.
    let mut wrong_issuer = claims("read", None, now + 600);
    wrong_issuer["iss"] = json!("https://evil.example");
    let mut tampered = rs(&claims("read", Some("acme"), now + 600));
    let flipped = if tampered.ends_with('A') { 'B' } else { 'A' };
    tampered.pop();
    tampered.push(flipped);
    use base64::Engine;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims("admin", None, now + 600))
    );
    let other_secret = encode(
        &Header::new(Algorithm::HS256),
        &claims("admin", None, now + 600),
        &EncodingKey::from_secret(b"another-secret-of-more-than-32-bytes"),
    )
    .expect("hs256");
    for (what, token) in [
        ("expired", hs(&claims("read", None, now - 3600))),
        ("wrong issuer", hs(&wrong_issuer)),
        ("tampered", tampered),
        ("alg none", none),
        ("another key", other_secret),
        ("a role the Hub does not know", hs(&claims("root", None, now + 600))),
    ] {
        let (status, body) = call(&hub, "GET", "/api/v1/events", Some(&token), None).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"]["message"], "invalid credentials", "{what}");
    }
}

/// `curl` against the Hub with `args`; (exit success, stdout).
fn curl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn https_on_the_http_port_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    openssl(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    );
    let port = crate::harness::free_port();
    let mut child = std::process::Command::new(BIN)
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("HTTP_TLS_CERT", dir.path().join("cert.pem"))
        .env("HTTP_TLS_KEY", dir.path().join("key.pem"))
        .env("PGWIRE_ENABLED", "false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let cert = dir.path().join("cert.pem");
    let cert = cert.to_str().expect("utf8");
    let url = format!("https://127.0.0.1:{port}/ready");
    wait_for("HTTPS to answer", Duration::from_secs(60), async || {
        assert!(child.try_wait().expect("child").is_none(), "the Hub exited");
        let (ok, body) = curl(&["--cacert", cert, &url]);
        (ok && body.contains(r#""status":"ready""#)).then_some(body)
    })
    .await;
    let _stop = Stop(child);
    // The certificate is verified (no -k) and plain HTTP is not served on that port.
    let (ok, body) = curl(&[
        "--cacert",
        cert,
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"sql": "SELECT 1 AS one"}"#,
        &format!("https://127.0.0.1:{port}/api/v1/sql"),
    ]);
    assert!(ok && body.contains(r#""one":1"#), "{body}");
    let (ok, _) = curl(&[&format!("http://127.0.0.1:{port}/health")]);
    assert!(!ok, "plain HTTP on the HTTPS port fails");
}

/// A wire login bound to a tenant (`[[pgwire.users]] tenant`): simple and extended protocol,
/// catalog views and pg_catalog all see that tenant only; an unbound login sees everything.
#[tokio::test(flavor = "multi_thread")]
async fn a_wire_login_bound_to_a_tenant_sees_only_its_rows() {
    use crate::pgwire::{connect_to, query_i64, simple_rows};
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let port = crate::harness::free_port();
    let toml = format!(
        "[pgwire]\nport = {port}\n[[pgwire.users]]\nname = \"ops\"\npassword = \"ops-pass\"\n[[pgwire.users]]\nname = \"acme\"\npassword = \"acme-pass\"\ntenant = \"acme\"\n"
    );
    // The harness turns the wire endpoint off unless the environment turns it on.
    let hub = Hub::start_with(
        &data,
        HubOptions {
            config_toml: Some(toml),
            env: vec![("PGWIRE_ENABLED".into(), "true".into())],
            ..HubOptions::default()
        },
    )
    .await;
    let events: Vec<Value> = (0..10)
        .map(|i| event(i, Some(if i < 3 { "acme" } else { "globex" })))
        .collect();
    assert_eq!(hub.post_ndjson(ndjson(&events)).await.0, 200);
    let conn = |user: &str, password: &str| {
        format!("host=127.0.0.1 port={port} user={user} password={password} dbname=hub sslmode=disable")
    };
    let ops = connect_to(&conn("ops", "ops-pass")).await.expect("ops");
    let acme = connect_to(&conn("acme", "acme-pass")).await.expect("acme");

    let count = "SELECT count(*) FROM events";
    assert_eq!(query_i64(&ops, count, &[]).await, 10);
    assert_eq!(query_i64(&acme, count, &[]).await, 3, "extended protocol");
    let simple = simple_rows(&acme.simple_query(count).await.expect("simple"));
    assert_eq!(simple, vec![vec![Some("3".to_string())]], "simple protocol");
    // A parameter naming another tenant finds nothing; subqueries and joins stay inside.
    let other: String = "globex".into();
    assert_eq!(
        query_i64(&acme, "SELECT count(*) FROM events WHERE tenant = $1", &[&other]).await,
        0
    );
    for statement in [
        "SELECT count(*) FROM events e JOIN events f ON e.event_id = f.event_id",
        "SELECT count(*) FROM (SELECT tenant FROM events UNION ALL SELECT tenant FROM events WHERE tenant <> 'acme') AS u",
        "SELECT count(*) FROM events WHERE event_id IN (SELECT event_id FROM events)",
    ] {
        assert_eq!(query_i64(&acme, statement, &[]).await, 3, "{statement}");
    }
    let analyze = acme.simple_query("EXPLAIN ANALYZE SELECT count(*) FROM events").await;
    let e = analyze.expect_err("EXPLAIN ANALYZE refused for a tenant login");
    assert!(format!("{e:?}").contains("EXPLAIN ANALYZE is not available"), "{e:?}");
    assert!(
        ops.simple_query("EXPLAIN ANALYZE SELECT count(*) FROM events")
            .await
            .is_ok()
    );
    // The catalog a BI tool reads lists what the tenant can read, and the rollups by tenant.
    let tables = simple_rows(
        &acme
            .simple_query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")
            .await
            .expect("tables"),
    );
    let names: Vec<String> = tables.into_iter().filter_map(|r| r[0].clone()).collect();
    assert!(
        names.contains(&"events".to_string()) && names.contains(&"llm_tenant_model_1m".to_string()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("llm_provider_model")), "{names:?}");
    let hidden = acme.simple_query("SELECT count(*) FROM llm_provider_model_1m").await;
    assert!(
        hidden.is_err(),
        "a table without a tenant column does not exist for the tenant"
    );
    let pg_class = simple_rows(
        &acme
            .simple_query("SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'llm_provider_model_1m'")
            .await
            .expect("pg_class"),
    );
    assert_eq!(pg_class, vec![vec![Some("0".to_string())]]);
    assert_eq!(
        query_i64(&ops, count, &[]).await,
        10,
        "the unbound login still sees every tenant"
    );

    // API keys as passwords (user = the key's name; loopback, so no TLS needed): a tenant's key
    // sees its rows, an admin key every row.
    // (A key created by the CLI counts within a second.)
    let login = async |user: &str, key: &str| {
        wait_for("the new key accepted", Duration::from_secs(10), async || {
            connect_to(&conn(user, key)).await.ok()
        })
        .await
    };
    let grafana_key = create_key(&data, "acme-grafana", "read", Some("acme"));
    let by_key = login("acme-grafana", &grafana_key).await;
    assert_eq!(query_i64(&by_key, count, &[]).await, 3);
    assert_eq!(
        query_i64(&by_key, "SELECT count(*) FROM late_events", &[]).await,
        0,
        "late_events has a tenant column: the tenant reads it"
    );
    let admin_key = create_key(&data, "ops-key", "admin", None);
    let by_admin = login("ops-key", &admin_key).await;
    assert_eq!(query_i64(&by_admin, count, &[]).await, 10);
    // The key under another name, a made-up key, an ingest key, a revoked key: refused.
    for (user, password, says) in [
        (
            "someone",
            grafana_key.as_str(),
            "password authentication failed for user \"someone\"",
        ),
        ("acme-grafana", "lah_not-a-key", "password authentication failed"),
        ("acme-grafana", "acme-pass", "password authentication failed"),
    ] {
        let e = connect_to(&conn(user, password)).await.expect_err(user);
        let e = e.as_db_error().map(|d| format!("{} {}", d.code().code(), d.message()));
        assert!(
            e.as_ref().is_some_and(|m| m.contains(says) && m.starts_with("28P01")),
            "{user}: {e:?}"
        );
    }
    let ingest_key = create_key(&data, "acme-app", "ingest", Some("acme"));
    let e = wait_for("the ingest key known", Duration::from_secs(10), async || {
        let e = connect_to(&conn("acme-app", &ingest_key))
            .await
            .expect_err("ingest key");
        let e = e
            .as_db_error()
            .map(|d| format!("{} {}", d.code().code(), d.message()))?;
        e.contains("may not run SQL").then_some(e)
    })
    .await;
    assert!(e.starts_with("28000"), "{e}");
    keys(&data, &["revoke", "--name", "acme-grafana"]);
    wait_until("the revoked key refused", Duration::from_secs(10), async || {
        connect_to(&conn("acme-grafana", &grafana_key)).await.is_err()
    })
    .await;
    // A configured user still logs in with its password.
    assert_eq!(query_i64(&acme, count, &[]).await, 3);
}

/// With `[postgres]` configured, keys live in `hub_api_keys`: a key file's keys are copied in
/// at start, a key created by the CLI works on two instances at once, and one revoked over
/// HTTP on one instance is refused by the other within seconds.
#[tokio::test(flavor = "multi_thread")]
async fn keys_in_postgres_are_shared_by_every_instance() {
    let db = crate::pg::TestDb::create("keys").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_data).expect("a");
    std::fs::create_dir_all(&b_data).expect("b");
    // A key made before PostgreSQL was configured (in a's key file).
    let old_key = create_key(&a_data, "from-file", "read", None);
    let env = vec![
        ("AUTH_MODE".to_string(), "required".to_string()),
        ("DATABASE_URL".to_string(), db.url.clone()),
    ];
    let a = Hub::start_with(
        &a_data,
        HubOptions {
            env: env.clone(),
            ..HubOptions::default()
        },
    )
    .await;
    let b = Hub::start_with(
        &b_data,
        HubOptions {
            env: env.clone(),
            ..HubOptions::default()
        },
    )
    .await;
    let listed = keys_env(&b_data, &["list"], &env);
    assert!(
        listed.contains("from-file\tread"),
        "the file's key was copied in: {listed}"
    );
    let admin = keys_env(&b_data, &["create", "--name", "ops", "--role", "admin"], &env);
    assert!(admin.contains("PostgreSQL table hub_api_keys"), "{admin}");
    let admin = admin.lines().next().expect("key").trim().to_string();
    for hub in [&a, &b] {
        wait_until("the key works on both instances", Duration::from_secs(10), async || {
            call(hub, "GET", "/api/v1/keys", Some(&admin), None).await.0 == 200
        })
        .await;
        assert_eq!(
            sql(hub, &old_key, "SELECT 1 AS one").await.0,
            200,
            "the copied key works"
        );
    }
    // Created over HTTP on a, used on b; revoked on a, refused on b.
    let (status, created) = call(
        &a,
        "POST",
        "/api/v1/keys",
        Some(&admin),
        Some(json!({"name": "dash", "role": "read", "tenant": "acme"}).to_string()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let dash = created["key"].as_str().expect("key").to_string();
    wait_until("b accepts the new key", Duration::from_secs(10), async || {
        sql(&b, &dash, "SELECT count(*) AS n FROM events").await.0 == 200
    })
    .await;
    let (status, dup) = call(
        &b,
        "POST",
        "/api/v1/keys",
        Some(&admin),
        Some(json!({"name": "dash", "role": "read"}).to_string()),
    )
    .await;
    assert_eq!(status, 400, "names are unique across instances: {dup}");
    assert_eq!(call(&a, "DELETE", "/api/v1/keys/dash", Some(&admin), None).await.0, 200);
    assert_eq!(
        sql(&a, &dash, "SELECT 1 AS one").await.0,
        401,
        "refused at once where revoked"
    );
    wait_until("b refuses the revoked key", Duration::from_secs(10), async || {
        sql(&b, &dash, "SELECT 1 AS one").await.0 == 401
    })
    .await;
    let (_, listed) = call(&b, "GET", "/api/v1/keys", Some(&admin), None).await;
    let dash_row = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["name"] == "dash")
        .cloned()
        .expect("dash listed");
    assert!(dash_row["revoked_at"].is_string(), "{dash_row}");
    // Nothing secret in the table: only hashes.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .expect("connect");
    let stored: Vec<String> = sqlx::query_scalar("SELECT sha256 FROM hub_api_keys")
        .fetch_all(&mut conn)
        .await
        .expect("rows");
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|h| h.len() == 64 && !h.contains("lah_")));
}

/// A child process ended (by its own PID) when the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The JWK of an RSA public key (`kid`, RS256), from its PEM via `openssl`.
fn rsa_jwk(dir: &Path, pem: &str, kid: &str) -> Value {
    use base64::Engine;
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(["rsa", "-pubin", "-in", pem, "-modulus", "-noout"])
        .output()
        .expect("openssl rsa -modulus");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.trim().trim_start_matches("Modulus=");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    json!({
        "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
        "n": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes), "e": "AQAB",
    })
}

/// A JWKS URL: fetched at start, re-fetched when a token names an unknown `kid` (the
/// provider rotated its keys), and its last keys kept while the provider is down.
#[tokio::test(flavor = "multi_thread")]
async fn jwks_from_a_url_follows_key_rotation_and_survives_the_provider_going_away() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let dir = tempfile::tempdir().expect("tempdir");
    let keys_dir = dir.path();
    for name in ["one", "two"] {
        openssl(keys_dir, &["genrsa", "-out", &format!("{name}.pem"), "2048"]);
        openssl(
            keys_dir,
            &[
                "rsa",
                "-in",
                &format!("{name}.pem"),
                "-pubout",
                "-out",
                &format!("{name}.pub.pem"),
            ],
        );
    }
    let www = keys_dir.join("www");
    std::fs::create_dir_all(&www).expect("www");
    let publish = |jwks: Value| {
        let tmp = www.join("jwks.json.tmp");
        std::fs::write(&tmp, jwks.to_string()).expect("write jwks");
        std::fs::rename(&tmp, www.join("jwks.json")).expect("publish jwks");
    };
    publish(json!({"keys": [rsa_jwk(keys_dir, "one.pub.pem", "k1")]}));
    let port = crate::harness::free_port();
    let idp = Child(
        std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&www)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server"),
    );
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    wait_until("the JWKS server", Duration::from_secs(20), async || {
        reqwest::get(&url).await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    let toml = format!(
        "[auth]\nmode = \"required\"\n[auth.jwt]\njwks_url = \"{url}\"\njwks_refresh_secs = 3600\njwks_min_refresh_secs = 1\n"
    );
    let (hub, _data) = hub_with_config(dir.path(), toml).await;
    let exp = chrono::Utc::now().timestamp() + 600;
    let token = |pem: &str, kid: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        let key = std::fs::read(keys_dir.join(pem)).expect("pem");
        encode(
            &header,
            &json!({"sub": "svc", "role": "read", "exp": exp}),
            &EncodingKey::from_rsa_pem(&key).expect("rsa"),
        )
        .expect("token")
    };
    let k1 = token("one.pem", "k1");
    let k2 = token("two.pem", "k2");
    let query = "SELECT 1 AS one";
    assert_eq!(sql(&hub, &k1, query).await.0, 200, "k1 fetched at start");
    assert_eq!(sql(&hub, &k2, query).await.0, 401, "k2 not published yet");

    // The provider rotates to k2: a k2 token makes the Hub fetch early; k1 is then gone.
    publish(json!({"keys": [rsa_jwk(keys_dir, "two.pub.pem", "k2")]}));
    wait_until("k2 accepted after the rotation", Duration::from_secs(15), async || {
        sql(&hub, &k2, query).await.0 == 200
    })
    .await;
    assert_eq!(sql(&hub, &k1, query).await.0, 401, "k1 was rotated out");
    // A k2 token signed by the wrong key (k1's) under k2's kid: refused.
    let mut forged = Header::new(Algorithm::RS256);
    forged.kid = Some("k2".into());
    let forged = encode(
        &forged,
        &json!({"sub": "svc", "role": "admin", "exp": exp}),
        &EncodingKey::from_rsa_pem(&std::fs::read(keys_dir.join("one.pem")).expect("pem")).expect("rsa"),
    )
    .expect("forged");
    assert_eq!(sql(&hub, &forged, query).await.0, 401);

    // The provider goes away: an unknown kid makes the Hub try (and fail) to fetch; the keys
    // it has stay in force.
    drop(idp);
    assert_eq!(sql(&hub, &token("one.pem", "k3"), query).await.0, 401);
    wait_until("the failed fetch logged", Duration::from_secs(15), async || {
        hub.log_text().contains("JWKS not re-fetched")
    })
    .await;
    assert_eq!(
        sql(&hub, &k2, query).await.0,
        200,
        "the last keys fetched stay in force"
    );
}
