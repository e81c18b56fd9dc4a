//! Session windows: an oracle comparison against sessions computed in plain Rust over all
//! events at once, merging, the gap boundary, lateness, and the restart checkpoint.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use rand::{Rng, SeedableRng};

use super::catalog::CqOptions;
use super::query::CqRuntime;
use super::tests::{NOW, def};
use crate::event::time::rfc3339;
use crate::event::{decode_batch_body, events_schema};

const BASE: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
const SEC: i64 = 1_000_000;
const GAP: i64 = 30 * SEC;

/// One generated event: (user, time µs, latency ms, tokens).
type Ev = (String, i64, f64, i64);

fn ndjson(events: &[Ev]) -> RecordBatch {
    ndjson_from(events, 1)
}

/// Events as a decoded batch; event ids count up from `first_id`.
fn ndjson_from(events: &[Ev], first_id: u128) -> RecordBatch {
    let body: String = events
        .iter()
        .enumerate()
        .map(|(i, (user, ts, latency, tokens))| {
            format!(
                r#"{{"event_id":"{}","timestamp":"{}","source_module":"m","event_type":"telemetry","payload":{{"model":"x","user_id":"{user}","latency_ms":{latency},"input_tokens":{tokens}}}}}"#,
                uuid::Uuid::from_u128(i as u128 + first_id),
                rfc3339(*ts)
            ) + "\n"
        })
        .collect();
    let out = decode_batch_body(body.as_bytes(), 0).expect("decode");
    assert!(out.rejected.is_empty(), "{:?}", out.rejected.first());
    out.batch
}

/// Users with bursts of activity: mostly short pauses (< gap), some long ones (> gap), some
/// exactly one gap (a new session). Returned in arrival order: time order disturbed by up to
/// `disorder` µs.
fn generate(seed: u64, users: usize, per_user: usize, disorder: i64) -> Vec<Ev> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut all = Vec::with_capacity(users * per_user);
    for u in 0..users {
        let mut ts = BASE + rng.random_range(0..600 * SEC);
        for _ in 0..per_user {
            let p: f64 = rng.random();
            ts += if p < 0.88 {
                rng.random_range(100_000..20 * SEC)
            } else if p < 0.90 {
                GAP
            } else if p < 0.91 {
                GAP - 1
            } else {
                rng.random_range(GAP..300 * SEC)
            };
            let latency = f64::from(rng.random_range(1_000..1_000_000)) / 1000.0;
            all.push((format!("u{u:03}"), ts, latency, rng.random_range(0..1000)));
        }
    }
    let mut keyed: Vec<(i64, Ev)> = all
        .into_iter()
        .map(|e| (e.1 + rng.random_range(0..disorder), e))
        .collect();
    keyed.sort_by_key(|(arrival, e)| (*arrival, e.1));
    keyed.into_iter().map(|(_, e)| e).collect()
}

/// (user, window_start) → (window_end, count, tokens, min latency, max latency).
type Sessions = BTreeMap<(String, i64), (i64, i64, i64, f64, f64)>;

/// Sessions per user computed directly: sort each user's events, cut where the pause is at
/// least the gap.
fn oracle(events: &[Ev], keep: impl Fn(&Ev) -> bool) -> Sessions {
    let mut by_user: HashMap<&str, Vec<&Ev>> = HashMap::new();
    for e in events.iter().filter(|e| keep(e)) {
        by_user.entry(e.0.as_str()).or_default().push(e);
    }
    let mut out = Sessions::new();
    for (user, mut evs) in by_user {
        evs.sort_by_key(|e| e.1);
        let mut i = 0;
        while i < evs.len() {
            let mut j = i;
            while j + 1 < evs.len() && evs[j + 1].1 - evs[j].1 < GAP {
                j += 1;
            }
            let s = &evs[i..=j];
            let min = s.iter().map(|e| e.2).fold(f64::INFINITY, f64::min);
            let max = s.iter().map(|e| e.2).fold(f64::NEG_INFINITY, f64::max);
            out.insert(
                (user.to_string(), s[0].1),
                (
                    s[s.len() - 1].1 + GAP,
                    s.len() as i64,
                    s.iter().map(|e| e.3).sum(),
                    min,
                    max,
                ),
            );
            i = j + 1;
        }
    }
    out
}

fn rows(batches: &[RecordBatch]) -> Sessions {
    let mut out = Sessions::new();
    for b in batches {
        let col = |n: &str| b.column_by_name(n).unwrap_or_else(|| panic!("column {n}"));
        let ws = col("window_start").as_primitive::<TimestampMicrosecondType>();
        let we = col("window_end").as_primitive::<TimestampMicrosecondType>();
        let user = col("user_id").as_string::<i32>();
        let n = col("n").as_primitive::<Int64Type>();
        let tokens = col("tokens").as_primitive::<Int64Type>();
        let (lo, hi) = (
            col("min_ms").as_primitive::<Float64Type>(),
            col("max_ms").as_primitive::<Float64Type>(),
        );
        for i in 0..b.num_rows() {
            let key = (user.value(i).to_string(), ws.value(i));
            let value = (we.value(i), n.value(i), tokens.value(i), lo.value(i), hi.value(i));
            assert!(
                out.insert(key.clone(), value).is_none(),
                "session {key:?} emitted twice"
            );
        }
    }
    out
}

const SESSION_SQL: &str = "SELECT window_start, window_end, user_id, count(*) AS n, sum(input_tokens) AS tokens,
        min(latency_ms) AS min_ms, max(latency_ms) AS max_ms
    FROM events WHERE latency_ms < 950
    GROUP BY session(timestamp, INTERVAL '30 seconds'), user_id";

/// 60k events of 150 users, up to 3 s out of order, fed in random batch sizes: every session
/// equals the one computed directly (counts, sums, min and max exactly), and state never holds
/// more than the open sessions.
#[tokio::test]
async fn oracle_sessions_match_direct_computation() {
    let events = generate(11, 150, 400, 3 * SEC);
    let all = ndjson(&events);
    let options = CqOptions {
        allowed_lateness_ms: 5_000,
        ..CqOptions::default()
    };
    let mut rt = CqRuntime::new(def("sessions", SESSION_SQL, options), &events_schema())
        .await
        .expect("plan");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let (mut out, mut offset, mut max_open) = (Vec::new(), 0, 0);
    while offset < all.num_rows() {
        let len = rng.random_range(1..3000).min(all.num_rows() - offset);
        let p = rt.on_batch(&all.slice(offset, len), NOW, false).await.expect("batch");
        assert!(p.late.is_empty(), "disorder (3 s) is within the lateness (5 s)");
        out.extend(p.output);
        max_open = max_open.max(rt.status().open_windows);
        offset += len;
    }
    let closed_before_end = rows(&out).len();
    out.extend(rt.finish().await.expect("finish"));
    let expected = oracle(&events, |e| e.2 < 950.0);
    let got = rows(&out);
    assert!(expected.len() > 5_000, "many sessions: {}", expected.len());
    assert!(
        closed_before_end > expected.len() / 2,
        "sessions close as the watermark passes"
    );
    assert!(max_open <= 2 * 150, "state bounded by open sessions: {max_open}");
    let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).take(5).collect();
    assert!(missing.is_empty(), "missing sessions {missing:?}");
    assert_eq!(got.len(), expected.len(), "no extra sessions");
    for (key, want) in &expected {
        assert_eq!(got.get(key), Some(want), "session {key:?}");
    }
}

fn event_at(id: u128, user: &str, secs: i64) -> RecordBatch {
    ndjson_from(&[(user.to_string(), BASE + secs * SEC, 10.0 + id as f64, 1)], id)
}

const MERGE_SQL: &str = "SELECT window_start, window_end, user_id, count(*) AS n, sum(input_tokens) AS tokens,
        min(latency_ms) AS min_ms, max(latency_ms) AS max_ms
    FROM events GROUP BY session(timestamp, INTERVAL '30 seconds'), user_id";

#[tokio::test]
async fn an_event_between_two_sessions_merges_them_and_late_events_are_kept() {
    let options = CqOptions {
        allowed_lateness_ms: 60_000,
        ..CqOptions::default()
    };
    let mut rt = CqRuntime::new(def("merge", MERGE_SQL, options), &events_schema())
        .await
        .expect("plan");
    let mut out = Vec::new();
    for (id, secs) in [(1, 0), (2, 50)] {
        out.extend(
            rt.on_batch(&event_at(id, "u", secs), NOW, false)
                .await
                .expect("b")
                .output,
        );
    }
    assert_eq!(rt.status().open_windows, 2, "50 s apart: two sessions");
    // 25 s is within 30 s of both: one session.
    out.extend(rt.on_batch(&event_at(3, "u", 25), NOW, false).await.expect("b").output);
    assert_eq!(rt.status().open_windows, 1, "merged");
    // Exactly one gap after the last event: a new session.
    out.extend(rt.on_batch(&event_at(4, "u", 80), NOW, false).await.expect("b").output);
    assert_eq!(rt.status().open_windows, 2);
    assert!(out.is_empty(), "nothing closed yet (watermark 00:00:20)");
    // Another user far ahead: watermark 00:02:00 closes both sessions of `u`.
    let p = rt.on_batch(&event_at(5, "v", 180), NOW, false).await.expect("b");
    let got = rows(&p.output);
    assert_eq!(
        got.into_iter().collect::<Vec<_>>(),
        vec![
            (("u".into(), BASE), (BASE + 80 * SEC, 3, 3, 11.0, 13.0)),
            (("u".into(), BASE + 80 * SEC), (BASE + 110 * SEC, 1, 1, 14.0, 14.0)),
        ]
    );
    assert_eq!(p.closed.len(), p.output.len(), "final mode: output rows go downstream");
    // Behind the watermark (00:02:00): could belong to an emitted session → late, with the
    // end of its own session and a reason.
    let p = rt.on_batch(&event_at(6, "u", 100), NOW, false).await.expect("b");
    assert_eq!(p.late.len(), 1);
    assert_eq!(p.late[0].window_end, BASE + 130 * SEC);
    assert_eq!(p.late[0].event_id, Some(uuid::Uuid::from_u128(6).to_string()));
    assert!(rt.late_reason().contains("session"));
    // At the watermark is on time.
    let p = rt.on_batch(&event_at(7, "w", 120), NOW, false).await.expect("b");
    assert!(p.late.is_empty());
    let rest = rows(&rt.finish().await.expect("finish"));
    assert_eq!(
        rest.keys().cloned().collect::<Vec<_>>(),
        vec![("v".into(), BASE + 180 * SEC), ("w".into(), BASE + 120 * SEC)]
    );
    let (wm, open_since) = rt.session_checkpoint().expect("session checkpoint");
    assert_eq!((wm, open_since), (i64::MAX, None));
}

#[tokio::test]
async fn session_queries_need_window_end_and_a_fixed_gap() {
    for (sql, needle) in [
        (
            "SELECT window_start, count(*) AS n FROM events GROUP BY session(timestamp, INTERVAL '1 minute')",
            "window_end",
        ),
        (
            "SELECT window_start, window_end, count(*) AS n FROM events GROUP BY session(timestamp, INTERVAL '1 month')",
            "fixed duration",
        ),
        (
            "SELECT window_start, window_end, count(*) AS n FROM events GROUP BY session(timestamp, 'soon')",
            "INTERVAL",
        ),
    ] {
        match CqRuntime::new(def("s", sql, CqOptions::default()), &events_schema()).await {
            Err(super::CqError::Invalid(m)) => assert!(m.contains(needle), "{sql}: {m}"),
            other => panic!("{sql}: {:?}", other.map(|_| ())),
        }
    }
}
