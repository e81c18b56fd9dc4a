//! `GET /api/v1/stream`: live events, continuous-query rows and alerts over Server-Sent Events
//! and WebSocket, against the real binary.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::cq::{self, PER_MODEL, event};
use crate::harness::{Hub, HubOptions, wait_until};

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// A Server-Sent Events client over reqwest.
pub struct SseClient {
    response: reqwest::Response,
    buf: String,
}

impl SseClient {
    /// Opens `GET /api/v1/stream?<query>` with extra headers; panics unless it is a 200 stream.
    pub async fn open(hub: &Hub, query: &str, headers: &[(&str, &str)]) -> Self {
        let mut request = hub.client.get(hub.url(&format!("/api/v1/stream?{query}")));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("GET /api/v1/stream");
        assert_eq!(response.status(), 200, "stream?{query}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("content type")
            .to_string();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Self {
            response,
            buf: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped); panics after 30 s without one.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().to_string();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        any = true;
                    }
                }
                if any {
                    return Some(ev);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .expect("an event within 30 s")
                .expect("stream body");
            match chunk {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }

    /// The next `n` row events: (token, row).
    pub async fn rows(&mut self, n: usize) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while out.len() < n {
            let ev = self.next().await.expect("the stream ended early");
            assert_eq!(ev.event, "row", "{ev:?}");
            let row: Value = serde_json::from_str(&ev.data).expect("row JSON");
            out.push((ev.id.expect("row id"), row));
        }
        out
    }
}

fn ids(rows: &[(String, Value)]) -> Vec<String> {
    rows.iter()
        .map(|(_, r)| r["event_id"].as_str().expect("event_id").to_string())
        .collect()
}

fn uuid(id: u128) -> String {
    uuid::Uuid::from_u128(id).to_string()
}

/// Events `from..to`, models alternating `m-a` (odd ids) and `m-b`.
fn events(from: u128, to: u128) -> String {
    (from..to)
        .map(|i| event(i, "2024-05-01T10:00:00Z", if i % 2 == 1 { "m-a" } else { "m-b" }))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn events_follow_with_filters_and_resume_after_the_last_token_without_gaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(&dir.path().join("data"), cq::opts()).await;

    // Refusals name the problem.
    let r = hub.get("/api/v1/stream?topic=events&no_such_column=1").await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("json");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("`no_such_column` is not a column"), "{message}");
    let r = hub.get("/api/v1/stream?topic=cq:nope").await;
    assert_eq!(r.status(), 404);
    let r = hub.get("/api/v1/stream?after=not-a-token").await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("after:"),
        "{body}"
    );

    let mut sse = SseClient::open(&hub, "topic=events&model=m-a", &[]).await;
    hub.post_ok(events(1, 21)).await;
    // Only m-a (odd ids), in the order they were stored.
    let first = sse.rows(5).await;
    assert_eq!(ids(&first), [1, 3, 5, 7, 9].map(uuid));
    assert!(first.iter().all(|(_, r)| r["model"] == "m-a"));
    let token = first[4].0.clone();
    drop(sse);

    // Disconnected: more events are stored meanwhile.
    hub.post_ok(events(21, 31)).await;
    let mut sse = SseClient::open(&hub, &format!("topic=events&model=m-a&after={token}"), &[]).await;
    let rest = sse.rows(10).await;
    let want: Vec<String> = (11..31).filter(|i| i % 2 == 1).map(uuid).collect();
    assert_eq!(ids(&rest), want);
    // Nothing more than that: the next row is the next event stored.
    hub.post_ok(event(41, "2024-05-01T10:00:00Z", "m-a")).await;
    assert_eq!(ids(&sse.rows(1).await), vec![uuid(41)]);

    // Browsers resend the last id as Last-Event-ID; `after=0` is everything still held.
    let mut sse = SseClient::open(&hub, "topic=events&model=m-a", &[("last-event-id", &token)]).await;
    assert_eq!(ids(&sse.rows(1).await), vec![uuid(11)]);
    let mut sse = SseClient::open(&hub, "topic=events&after=0", &[]).await;
    assert_eq!(ids(&sse.rows(3).await), [1, 2, 3].map(uuid));
}

#[tokio::test]
async fn a_resume_point_older_than_the_history_gets_a_gap_notice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(
        &dir.path().join("data"),
        HubOptions {
            config_toml: Some("[stream]\nshipped_queries = false\n[live]\nhistory_rows = 10\n".into()),
            ..HubOptions::default()
        },
    )
    .await;
    let mut sse = SseClient::open(&hub, "topic=events", &[]).await;
    hub.post_ok(events(1, 6)).await;
    let token = sse.rows(1).await[0].0.clone();
    drop(sse);
    for start in [6, 16, 26] {
        hub.post_ok(events(start, start + 10)).await;
    }
    let mut sse = SseClient::open(&hub, &format!("topic=events&after={token}"), &[]).await;
    let gap = sse.next().await.expect("gap");
    assert_eq!(gap.event, "gap", "{gap:?}");
    let notice: Value = serde_json::from_str(&gap.data).expect("gap JSON");
    assert_eq!(notice["after"], 1);
    assert_eq!(notice["oldest_held"], 26);
    assert_eq!(notice["restarted"], false);
    // Then the 10 rows held: events 26..35.
    assert_eq!(ids(&sse.rows(10).await), (26..36).map(uuid).collect::<Vec<_>>());
}

async fn ws_connect(
    hub: &Hub,
    query: &str,
    recv_buffer: Option<u32>,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let addr: std::net::SocketAddr = hub.base.trim_start_matches("http://").parse().expect("address");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    let stream = socket.connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/api/v1/stream?{query}");
    let (ws, response) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// The next text message as JSON; panics after 30 s.
async fn ws_next(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("a message within 30 s")
        .map(|m| m.expect("WebSocket message"))
}

#[tokio::test]
async fn every_row_a_continuous_query_emits_arrives_in_order_over_websocket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(&dir.path().join("data"), cq::opts()).await;
    cq::register_ok(&hub, "per_model", PER_MODEL, serde_json::json!({})).await;
    let mut ws = ws_connect(&hub, "topic=cq:per_model", None).await;
    // Six minutes of two models, then an event that closes them all.
    let mut lines = Vec::new();
    for minute in 0..6u128 {
        for (k, model) in ["m-a", "m-b"].iter().enumerate() {
            for j in 0..3u128 {
                let id = minute * 100 + k as u128 * 10 + j + 1;
                lines.push(event(
                    id,
                    &format!("2024-05-01T10:0{minute}:{:02}Z", 10 + j * 10),
                    model,
                ));
            }
        }
    }
    lines.push(event(9999, "2024-05-01T10:10:00Z", "m-a"));
    hub.post_ok(lines.join("\n")).await;

    let mut got = Vec::new();
    while got.len() < 12 {
        match ws_next(&mut ws).await.expect("open") {
            Message::Text(text) => {
                let msg: Value = serde_json::from_str(&text).expect("JSON");
                assert_eq!(msg["type"], "row", "{msg}");
                assert!(msg["token"].as_str().is_some_and(|t| t.contains('-')), "{msg}");
                got.push(msg["row"].clone());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // In emission order (window by window), and exactly the rows the table holds.
    let starts: Vec<&str> = got
        .iter()
        .map(|r| r["window_start"].as_str().expect("window_start"))
        .collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted);
    // Subscribers see rows as they are emitted, just before the table has them.
    let table = crate::harness::wait_for("the table to hold the 12 rows", Duration::from_secs(30), async || {
        let rows = hub.rows("SELECT * FROM per_model ORDER BY window_start, model").await;
        (rows.len() == 12).then_some(rows)
    })
    .await;
    let mut received = got.clone();
    received.sort_by_key(|r| (r["window_start"].to_string(), r["model"].to_string()));
    assert_eq!(received, table);
    assert!(got.iter().all(|r| r["n"] == 3 && r["tokens"] == 30), "{got:?}");
    ws.close(None).await.expect("close");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn a_client_that_does_not_keep_up_is_cut_off_with_a_reason_and_can_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start_with(
        &dir.path().join("data"),
        HubOptions {
            config_toml: Some(
                "[stream]\nshipped_queries = false\n[live]\nclient_buffer_chunks = 4\nsend_timeout_secs = 300\nhistory_rows = 100000\n"
                    .into(),
            ),
            ..HubOptions::default()
        },
    )
    .await;
    // A client with a 4 KiB receive window that reads nothing while 40 batches (~12 MB of
    // rows, more than the loopback socket buffers take) are stored.
    let mut ws = ws_connect(&hub, "topic=events", Some(4096)).await;
    let rss_before = rss_kib(hub.pid());
    let batch: Vec<String> = crate::harness::generated(7, 500, 0.0);
    for _ in 0..40 {
        let body = hub.post_ok(batch.join("\n")).await;
        assert_eq!(body["accepted"], 500, "{body}");
    }
    let rss_after = rss_kib(hub.pid());
    eprintln!("hub RSS: {rss_before} KiB before, {rss_after} KiB after storing 20,000 events with a stalled client");
    // Now it reads: what the server had in flight, then the close with its reason.
    let mut rows = 0;
    let close = loop {
        match ws_next(&mut ws).await {
            Some(Message::Text(text)) => {
                let msg: Value = serde_json::from_str(&text).expect("JSON");
                match msg["type"].as_str() {
                    Some("row") => rows += 1,
                    Some("close") => break msg,
                    other => panic!("unexpected message type {other:?}: {msg}"),
                }
            }
            Some(other) => panic!("expected text before the close, got {other:?}"),
            None => panic!("the connection ended without a close reason after {rows} rows"),
        }
    };
    let reason = close["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("too slow: more than the 4 chunks buffered"),
        "{reason}"
    );
    assert!(rows < 20_000, "a cut-off client got every row ({rows})");
    match ws_next(&mut ws).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 1013);
            assert!(frame.reason.starts_with("too slow"), "{}", frame.reason);
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // The close names the last row the client got: resuming with it continues with the very
    // next row (every row is still held here).
    let token = close["token"].as_str().expect("token");
    let (epoch, last) = token.split_once('-').expect("token shape");
    let last: u64 = last.parse().expect("sequence");
    assert_eq!(last, rows as u64, "the client got rows 1..={rows}");
    let mut sse = SseClient::open(&hub, &format!("topic=events&after={token}"), &[]).await;
    let next = sse.rows(1).await;
    assert_eq!(next[0].0, format!("{epoch}-{}", last + 1));
    let metrics = hub.metrics_text().await;
    assert!(metrics.contains("live_cut_off_total 1"), "{metrics}");
    drop(sse);
    wait_until("every stream to be released", Duration::from_secs(10), async || {
        hub.metrics_text().await.contains("live_subscribers 0")
    })
    .await;
}
