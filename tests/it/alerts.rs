//! Alerts against the real binary: rules over continuous-query outputs, one signed webhook
//! notification per transition to a real HTTP receiver, `hub_alerts`, restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::cq;
use crate::harness::{Hub, HubOptions, wait_for, wait_until};
use crate::live::SseClient;

const SECRET: &str = "test-webhook-secret";

/// A request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
    answered: u16,
}

/// A webhook receiver on a loopback port: fails the first `fail_first` requests with 500, and
/// every request while `down` with 503.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<std::sync::Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl Receiver {
    async fn start(fail_first: usize, down: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let r = Self {
            url,
            got: Arc::default(),
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
            down: Arc::new(AtomicBool::new(down)),
        };
        let state = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    let status = if state.down.load(Ordering::SeqCst) {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else if state
                        .fail_first
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    };
                    state.got.lock().unwrap().push(Received {
                        headers,
                        body: body.to_vec(),
                        answered: status.as_u16(),
                    });
                    status
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Bodies of the requests answered 200, in order, after checking their signature.
    fn delivered(&self) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|r| r.answered == 200)
            .map(|r| {
                let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
                let signature = r.headers["x-hub-signature-256"].to_str().expect("signature");
                assert_eq!(
                    signature,
                    llm_analytics_hub::alerts::notify::signature(SECRET.as_bytes(), &r.body)
                );
                assert_eq!(
                    r.headers["x-hub-alert-id"].to_str().expect("id"),
                    body["id"].as_str().expect("id")
                );
                body
            })
            .collect()
    }
}

/// Per-model average latency per minute.
const LATENCY: &str = "SELECT window_start, window_end, model, count(*) AS n, avg(latency_ms) AS latency FROM events GROUP BY tumble(timestamp, INTERVAL '1 minute'), model";

fn call(id: u128, ts: &str, model: &str, latency: f64) -> String {
    json!({
        "event_id": uuid::Uuid::from_u128(id).to_string(), "timestamp": ts, "source_module": "llm-app",
        "event_type": "telemetry", "payload": {"provider": "openai", "model": model, "latency_ms": latency}
    })
    .to_string()
}

/// Three calls per model and minute `from..to` of 2024-05-01T10:00; `m-a` is 10× slower in
/// minute `spike`.
fn minutes(from: u32, to: u32, spike: Option<u32>) -> String {
    let mut lines = Vec::new();
    for minute in from..to {
        for (k, model) in ["m-a", "m-b"].iter().enumerate() {
            let normal = 100.0 + f64::from((minute * 7 + k as u32 * 3) % 5);
            let latency = if spike == Some(minute) && *model == "m-a" {
                normal * 10.0
            } else {
                normal
            };
            for j in 0..3u32 {
                let id = u128::from(minute) * 100 + k as u128 * 10 + u128::from(j) + 1;
                lines.push(call(
                    id,
                    &format!(
                        "2024-05-01T{:02}:{:02}:{:02}Z",
                        10 + minute / 60,
                        minute % 60,
                        10 + j * 10
                    ),
                    model,
                    latency,
                ));
            }
        }
    }
    lines.join("\n")
}

fn opts(data_env: Vec<(String, String)>) -> HubOptions {
    let mut o = cq::opts();
    o.env = data_env;
    o.env.push(("ALERTS_WEBHOOK_SECRET".into(), SECRET.into()));
    o
}

async fn create_rule(hub: &Hub, rule: Value) -> (u16, Value) {
    hub.post_json("/api/v1/alerts/rules", rule.to_string()).await
}

fn spike_rule(url: &str) -> Value {
    json!({
        "name": "latency_spike",
        "anomaly": {"metric": "lat_1m.latency", "method": "zscore", "threshold": 3.0, "baseline_windows": 10},
        "severity": "critical",
        "notify": [{"url": url, "headers": {"x-team": "llm-platform"}}]
    })
}

/// A Hub on `data` with the `lat_1m` query and the spike rule, notifying a receiver that
/// refuses connections while `down`.
async fn hub_with_spike_rule(data: &std::path::Path, down: bool) -> (Receiver, Hub) {
    let receiver = Receiver::start(0, down).await;
    let hub = Hub::start_with(data, opts(vec![])).await;
    cq::register_ok(&hub, "lat_1m", LATENCY, json!({})).await;
    let (s, body) = create_rule(&hub, spike_rule(&receiver.url)).await;
    assert_eq!(s, 201, "{body}");
    (receiver, hub)
}

#[tokio::test]
async fn a_latency_spike_fires_once_and_resolves_once_with_signed_retried_notifications() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(&dir.path().join("data"), opts(vec![])).await;
    let receiver = Receiver::start(2, false).await;
    cq::register_ok(&hub, "lat_1m", LATENCY, json!({})).await;

    // Refusals name the field.
    for (rule, status, want) in [
        (
            json!({"name": "x", "anomaly": {"metric": "nope.latency"}}),
            400,
            "`nope` is not a continuous query",
        ),
        (
            json!({"name": "x", "anomaly": {"metric": "lat_1m.model"}}),
            400,
            "not a number",
        ),
        (
            json!({"name": "x", "anomaly": {"metric": "lat_1m.latency"}, "group_by": ["n"]}),
            400,
            "group_by",
        ),
        (
            json!({"name": "x", "query": "SELECT model, n AS value FROM lat_1m"}),
            400,
            "window_start",
        ),
        (
            json!({"name": "x", "query": "SELECT timestamp AS window_start, 1 AS value FROM events"}),
            400,
            "continuous query",
        ),
        (json!({"name": "x"}), 400, "exactly one of"),
    ] {
        let (s, body) = create_rule(&hub, rule.clone()).await;
        assert_eq!(s, status, "{rule}: {body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(want), "{rule}: {message}");
    }
    let (s, body) = create_rule(&hub, spike_rule(&receiver.url)).await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["source"], "lat_1m");
    assert_eq!(body["groups"], json!(["model"]));
    assert_eq!(body["rule"]["name"], "latency_spike");
    // Header values may be credentials: not shown back.
    assert_eq!(body["rule"]["notify"][0]["headers"]["x-team"], "***");
    let (s, _) = create_rule(&hub, spike_rule(&receiver.url)).await;
    assert_eq!(s, 409);

    // 12 normal minutes, m-a 10× slower in minute 12, normal again, then an event that closes
    // every window.
    hub.post_ok(minutes(0, 16, Some(12))).await;
    hub.post_ok(call(99_999, "2024-05-01T10:20:00Z", "m-b", 100.0)).await;

    let delivered = wait_for(
        "firing and resolved notifications",
        Duration::from_secs(60),
        async || {
            let d = receiver.delivered();
            (d.len() >= 2).then_some(d)
        },
    )
    .await;
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    let (firing, resolved) = (&delivered[0], &delivered[1]);
    assert_eq!(firing["state"], "firing");
    assert_eq!(firing["rule"], "latency_spike");
    assert_eq!(firing["severity"], "critical");
    assert_eq!(firing["group"], json!({"model": "m-a"}));
    assert_eq!(firing["at"], "2024-05-01T10:13:00Z", "{firing}");
    assert!(
        firing["detail"].as_str().expect("detail").contains("is a spike"),
        "{firing}"
    );
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["group"], json!({"model": "m-a"}));
    assert_eq!(resolved["at"], "2024-05-01T10:14:00Z", "{resolved}");
    // The receiver failed twice: three requests carried the firing, one was taken.
    let all = receiver.all();
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(all.iter().filter(|r| r.answered == 500).count(), 2);
    assert!(all.iter().all(|r| r.headers["x-team"] == "llm-platform"));
    assert!(
        all[..3]
            .iter()
            .all(|r| r.headers["x-hub-alert-id"] == firing["id"].as_str().expect("id"))
    );

    // The same answer as the SQL function, and the table of transitions.
    let anomalies = hub
        .rows(
            "SELECT model, window_start FROM (SELECT model, window_start, anomaly(latency, 3.0) OVER (PARTITION BY model ORDER BY window_start ROWS BETWEEN 10 PRECEDING AND 1 PRECEDING) AS a FROM lat_1m) WHERE a['is_anomaly'] ORDER BY window_start",
        )
        .await;
    assert_eq!(
        anomalies,
        vec![json!({"model": "m-a", "window_start": "2024-05-01T10:12:00Z"})]
    );
    let table = hub
        .rows("SELECT rule, state, group_key, severity FROM hub_alerts ORDER BY at")
        .await;
    assert_eq!(
        table,
        vec![
            json!({"rule": "latency_spike", "state": "firing", "group_key": "model=m-a", "severity": "critical"}),
            json!({"rule": "latency_spike", "state": "resolved", "group_key": "model=m-a", "severity": "critical"}),
        ]
    );
    assert_eq!(hub.get_json("/api/v1/alerts").await, json!({"alerts": []}));
    // And on the live `alerts` topic.
    let mut sse = SseClient::open(&hub, "topic=alerts&after=0", &[]).await;
    let rows = sse.rows(2).await;
    assert_eq!(rows[0].1["state"], "firing");
    assert_eq!(rows[1].1["state"], "resolved");
    assert_eq!(hub.delete("/api/v1/alerts/rules/latency_spike").await, 204);
    assert_eq!(hub.delete("/api/v1/alerts/rules/latency_spike").await, 404);
}

#[tokio::test]
async fn a_restart_mid_alert_neither_resends_nor_loses_a_transition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (receiver, mut hub) = hub_with_spike_rule(&data, true).await;
    // Minutes 0..=12 with the spike in 12, and an event that closes minute 12 only.
    hub.post_ok(minutes(0, 13, Some(12))).await;
    hub.post_ok(call(99_999, "2024-05-01T10:13:10Z", "m-b", 100.0)).await;
    wait_until("the firing to be logged", Duration::from_secs(60), async || {
        !hub.rows("SELECT id FROM hub_alerts").await.is_empty()
    })
    .await;
    wait_until("a delivery attempt to fail", Duration::from_secs(30), async || {
        !receiver.all().is_empty()
    })
    .await;
    let firing_id = receiver.all()[0].headers["x-hub-alert-id"]
        .to_str()
        .expect("id")
        .to_string();
    // Killed while the receiver is down: the firing was never delivered.
    hub.kill9();
    receiver.down.store(false, Ordering::SeqCst);
    let hub = Hub::start_with(&data, opts(vec![])).await;
    let delivered = wait_for("the firing after the restart", Duration::from_secs(60), async || {
        let d = receiver.delivered();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(delivered[0]["id"], firing_id.as_str());
    assert_eq!(delivered[0]["state"], "firing");
    // The group is still firing after the restart.
    let current = hub.get_json("/api/v1/alerts").await;
    assert_eq!(current["alerts"][0]["state"], "firing", "{current}");
    assert_eq!(current["alerts"][0]["group"], json!({"model": "m-a"}));
    // Normal minutes resolve it: exactly one resolved, and the firing was not sent again.
    hub.post_ok(minutes(13, 16, None)).await;
    hub.post_ok(call(99_998, "2024-05-01T10:20:00Z", "m-b", 100.0)).await;
    let delivered = wait_for("the resolved notification", Duration::from_secs(60), async || {
        let d = receiver.delivered();
        (d.len() >= 2).then_some(d)
    })
    .await;
    let states: Vec<&str> = delivered.iter().map(|d| d["state"].as_str().expect("state")).collect();
    assert_eq!(states, ["firing", "resolved"]);
    let table = hub.rows("SELECT state FROM hub_alerts ORDER BY at").await;
    assert_eq!(table, vec![json!({"state": "firing"}), json!({"state": "resolved"})]);
}

fn spend(id: u128, ts: &str, tenant: &str, cost: f64) -> String {
    json!({
        "event_id": uuid::Uuid::from_u128(id).to_string(), "timestamp": ts, "source_module": "llm-app",
        "event_type": "telemetry", "payload": {"model": "m-a", "tenant": tenant, "cost_usd": cost}
    })
    .to_string()
}

#[tokio::test]
async fn budgets_fire_once_per_threshold_and_period_and_query_rules_follow_their_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(&dir.path().join("data"), opts(vec![])).await;
    let receiver = Receiver::start(0, false).await;
    cq::register_ok(
        &hub,
        "cost_1m",
        "SELECT window_start, window_end, tenant, sum(cost_usd) AS cost FROM events WHERE tenant IS NOT NULL GROUP BY tumble(timestamp, INTERVAL '1 minute'), tenant",
        json!({}),
    )
    .await;
    let (s, body) = create_rule(
        &hub,
        json!({"name": "daily_budget", "budget": {"metric": "cost_1m.cost", "period": "day", "limit": 100.0},
               "group_by": ["tenant"], "notify": [{"url": receiver.url}]}),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = create_rule(
        &hub,
        json!({"name": "big_minute", "query": "SELECT window_start, tenant, cost AS value FROM cost_1m WHERE cost > 40", "group_by": ["tenant"]}),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    // Day 1: 50, 35 (85 %), 12 (97 %), 10 (107 %), 1; other tenants stay under.
    let day1 = [50.0, 35.0, 12.0, 10.0, 1.0];
    let mut id = 0;
    for (minute, cost) in day1.iter().enumerate() {
        // One minute at a time, so each window is evaluated as it closes.
        id += 1;
        hub.post_ok(spend(id, &format!("2024-05-01T23:5{minute}:00Z"), "acme", *cost))
            .await;
        id += 1;
        hub.post_ok(spend(id, &format!("2024-05-01T23:5{minute}:30Z"), "tiny", 1.0))
            .await;
    }
    // Day 2: 90 in its first minute (80 % of the new day), then a closing event.
    id += 1;
    hub.post_ok(spend(id, "2024-05-02T00:00:10Z", "acme", 90.0)).await;
    id += 1;
    hub.post_ok(spend(id, "2024-05-02T00:05:00Z", "tiny", 1.0)).await;

    let delivered = wait_for("four budget notifications", Duration::from_secs(60), async || {
        let d = receiver.delivered();
        (d.len() >= 4).then_some(d)
    })
    .await;
    let fired: Vec<(String, String, String)> = delivered
        .iter()
        .map(|d| {
            assert_eq!(d["state"], "firing", "{d}");
            (
                d["group"]["tenant"].as_str().expect("tenant").to_string(),
                d["group"]["threshold"].as_str().expect("threshold").to_string(),
                d["group"]["period"].as_str().expect("period").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("80%", "2024-05-01"),
        ("95%", "2024-05-01"),
        ("100%", "2024-05-01"),
        ("80%", "2024-05-02"),
    ]
    .iter()
    .map(|(t, p)| ("acme".to_string(), t.to_string(), p.to_string()))
    .collect();
    assert_eq!(fired, want);
    // The query rule: acme's 50 fired, its 35 resolved, day 2's 90 fired again.
    let rows = wait_for("the query rule's transitions", Duration::from_secs(30), async || {
        let rows = hub
            .rows("SELECT state, at FROM hub_alerts WHERE rule = 'big_minute' ORDER BY at, state")
            .await;
        (rows.len() >= 3).then_some(rows)
    })
    .await;
    assert_eq!(
        rows,
        vec![
            json!({"state": "firing", "at": "2024-05-01T23:51:00Z"}),
            json!({"state": "resolved", "at": "2024-05-01T23:52:00Z"}),
            json!({"state": "firing", "at": "2024-05-02T00:01:00Z"}),
        ]
    );
    // Day 1's thresholds resolved at the new period: logged, not posted.
    let resolved = hub
        .rows("SELECT count(*) AS n FROM hub_alerts WHERE rule = 'daily_budget' AND state = 'resolved'")
        .await;
    assert_eq!(resolved[0]["n"], 3);
    assert_eq!(receiver.all().len(), 4);
}

#[tokio::test]
async fn a_rule_whose_source_is_gone_says_why_and_resumes_when_it_is_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (receiver, mut hub) = hub_with_spike_rule(&data, false).await;
    assert_eq!(cq::delete(&hub, "lat_1m").await, 204);
    assert!(hub.terminate().success());
    // Restarted without its source: the rule is kept and says what it waits for.
    let hub = Hub::start_with(&data, opts(vec![])).await;
    let rules = hub.get_json("/api/v1/alerts/rules").await;
    let error = rules["rules"][0]["last_error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("`lat_1m` is not a continuous query"), "{rules}");
    // The query is back: the rule resolves on its own and alerts again.
    cq::register_ok(&hub, "lat_1m", LATENCY, json!({})).await;
    wait_until("the rule to resolve its source", Duration::from_secs(30), async || {
        hub.get_json("/api/v1/alerts/rules").await["rules"][0]["last_error"].is_null()
    })
    .await;
    hub.post_ok(minutes(0, 14, Some(12))).await;
    hub.post_ok(call(99_999, "2024-05-01T10:20:00Z", "m-b", 100.0)).await;
    let delivered = wait_for("the firing", Duration::from_secs(60), async || {
        let d = receiver.delivered();
        (d.len() >= 2).then_some(d)
    })
    .await;
    assert_eq!(delivered[0]["state"], "firing");
    assert_eq!(delivered[0]["group"], json!({"model": "m-a"}));
}
