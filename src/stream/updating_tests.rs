//! Updating emission: intermediate versions before a window closes, re-emission of changed
//! keys only, deletions (HAVING, session merges), and final versions equal to final mode.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use rand::{Rng, SeedableRng};

use super::catalog::{CqOptions, EmitMode};
use super::query::CqRuntime;
use super::tests::{NOW, Row, def, events, keyed, one_event};
use crate::event::events_schema;

fn updating(lateness_ms: u64) -> CqOptions {
    CqOptions {
        allowed_lateness_ms: lateness_ms,
        emit: EmitMode::Updating,
        emit_interval_ms: Some(86_400_000), // tests emit explicitly
        ..CqOptions::default()
    }
}

const PER_MODEL: &str = "SELECT window_start, window_end, model, count(*) AS n, sum(latency_ms) AS lat
    FROM events GROUP BY tumble(timestamp, INTERVAL '1 minute'), model";

/// (model, n, _final, _deleted) of version rows, sorted.
fn versions(batches: &[RecordBatch]) -> Vec<(String, Option<i64>, bool, bool)> {
    let mut out = Vec::new();
    for b in batches {
        let model = b.column_by_name("model").expect("model").as_string::<i32>();
        let n = b.column_by_name("n").expect("n").as_primitive::<Int64Type>();
        let fin = b.column_by_name("_final").expect("_final").as_boolean();
        let del = b.column_by_name("_deleted").expect("_deleted").as_boolean();
        let key = b.column_by_name("__cq_k1").expect("key").as_string::<i32>();
        for i in 0..b.num_rows() {
            assert_eq!(model.is_null(i), del.value(i), "deletions carry only the key");
            out.push((
                key.value(i).to_string(),
                (!n.is_null(i)).then(|| n.value(i)),
                fin.value(i),
                del.value(i),
            ));
        }
    }
    out.sort();
    out
}

async fn push(rt: &mut CqRuntime, batch: RecordBatch) -> Vec<RecordBatch> {
    let p = rt.on_batch(&batch, NOW, false).await.expect("batch");
    assert!(p.late.is_empty());
    p.output
}

#[tokio::test]
async fn intermediate_versions_then_final_and_late_updates_reemit_the_key() {
    let mut rt = CqRuntime::new(def("upd", PER_MODEL, updating(10_000)), &events_schema())
        .await
        .expect("plan");
    assert!(rt.store_schema().index_of("_emitted_at").is_ok());
    assert!(
        rt.output_schema().index_of("_emitted_at").is_err(),
        "downstream sees the SELECT only"
    );
    push(&mut rt, one_event(1, "2026-01-01T00:00:10Z", "a")).await;
    push(&mut rt, one_event(2, "2026-01-01T00:00:20Z", "b")).await;
    let first = rt.emit_updates(NOW).await.expect("emit");
    assert!(first.closed.is_empty(), "nothing final yet");
    assert_eq!(
        versions(&first.rows),
        vec![("a".into(), Some(1), false, false), ("b".into(), Some(1), false, false)]
    );
    assert!(
        rt.emit_updates(NOW).await.expect("emit").rows.is_empty(),
        "nothing changed"
    );
    // Max is 00:00:30, so 00:00:05 is late, but inside the lateness: it updates `b` only.
    push(&mut rt, one_event(3, "2026-01-01T00:00:30Z", "a")).await;
    push(&mut rt, one_event(4, "2026-01-01T00:00:05Z", "b")).await;
    let second = rt.emit_updates(NOW).await.expect("emit");
    assert_eq!(
        versions(&second.rows),
        vec![("a".into(), Some(2), false, false), ("b".into(), Some(2), false, false)]
    );
    let at = |b: &[RecordBatch]| {
        b[0].column_by_name("_emitted_at")
            .expect("at")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0)
    };
    assert!(at(&second.rows) > at(&first.rows), "versions are ordered");
    push(&mut rt, one_event(5, "2026-01-01T00:00:40Z", "a")).await;
    let third = rt.emit_updates(NOW).await.expect("emit");
    assert_eq!(
        versions(&third.rows),
        vec![("a".into(), Some(3), false, false)],
        "only the changed key"
    );
    // 00:01:15 - 10 s passes 00:01:00: the window closes with final versions of every key.
    let closing = rt
        .on_batch(&one_event(6, "2026-01-01T00:01:15Z", "a"), NOW, false)
        .await
        .expect("b");
    assert_eq!(
        versions(&closing.output),
        vec![("a".into(), Some(3), true, false), ("b".into(), Some(2), true, false)]
    );
    let closed = keyed(&closing.closed, &["model"]);
    assert_eq!(closed.len(), 2);
    assert!(closing.closed[0].schema().index_of("_final").is_err());
}

#[tokio::test]
async fn keys_filtered_out_by_having_are_deleted() {
    let sql = "SELECT window_start, window_end, model, count(*) AS n FROM events
               GROUP BY tumble(timestamp, INTERVAL '1 minute'), model HAVING count(*) < 2";
    let mut rt = CqRuntime::new(def("having", sql, updating(10_000)), &events_schema())
        .await
        .expect("plan");
    push(&mut rt, one_event(1, "2026-01-01T00:00:10Z", "a")).await;
    push(&mut rt, one_event(2, "2026-01-01T00:00:11Z", "b")).await;
    let v = versions(&rt.emit_updates(NOW).await.expect("e").rows);
    assert_eq!(
        v,
        vec![("a".into(), Some(1), false, false), ("b".into(), Some(1), false, false)]
    );
    push(&mut rt, one_event(3, "2026-01-01T00:00:12Z", "a")).await;
    let v = versions(&rt.emit_updates(NOW).await.expect("e").rows);
    assert_eq!(v, vec![("a".into(), None, false, true)], "a no longer passes HAVING");
    let v = versions(&rt.finish().await.expect("finish"));
    assert_eq!(v, vec![("b".into(), Some(1), true, false)], "a is not emitted again");
}

#[tokio::test]
async fn merged_sessions_delete_the_row_of_the_absorbed_session() {
    let sql = "SELECT window_start, window_end, model, count(*) AS n FROM events
               GROUP BY session(timestamp, INTERVAL '30 seconds'), model";
    let mut rt = CqRuntime::new(def("sess", sql, updating(120_000)), &events_schema())
        .await
        .expect("plan");
    push(&mut rt, one_event(1, "2026-01-01T00:00:00Z", "a")).await;
    push(&mut rt, one_event(2, "2026-01-01T00:00:50Z", "a")).await;
    let starts = |b: &[RecordBatch]| {
        let mut v: Vec<(i64, bool)> = Vec::new();
        for b in b {
            let k0 = b
                .column_by_name("__cq_k0")
                .expect("k0")
                .as_primitive::<TimestampMicrosecondType>();
            let del = b.column_by_name("_deleted").expect("d").as_boolean();
            v.extend((0..b.num_rows()).map(|i| ((k0.value(i) / 1_000_000) % 3600, del.value(i))));
        }
        v.sort_unstable();
        v
    };
    assert_eq!(
        starts(&rt.emit_updates(NOW).await.expect("e").rows),
        vec![(0, false), (50, false)]
    );
    push(&mut rt, one_event(3, "2026-01-01T00:00:25Z", "a")).await;
    let merged = rt.emit_updates(NOW).await.expect("e").rows;
    assert_eq!(
        starts(&merged),
        vec![(0, false), (50, true)],
        "the 00:00:50 session is gone"
    );
    assert_eq!(versions(&merged)[1], ("a".into(), Some(3), false, false));
    // An event before the session start moves the start: the old start is deleted.
    push(&mut rt, one_event(4, "2026-01-01T00:00:00Z", "a")).await;
    push(&mut rt, one_event(5, "2025-12-31T23:59:40Z", "a")).await;
    let moved = rt.emit_updates(NOW).await.expect("e").rows;
    assert_eq!(starts(&moved), vec![(0, true), (3580, false)]);
    let done = rt.finish().await.expect("finish");
    assert_eq!(versions(&done), vec![("a".into(), Some(5), true, false)]);
}

/// Latest version per (window, key) over all emitted versions, without deletions.
fn latest(batches: &[RecordBatch]) -> HashMap<Vec<String>, Row> {
    let all = concat_batches(&batches[0].schema(), batches).expect("concat");
    let rows = keyed_versions(&all);
    let mut best: HashMap<Vec<String>, (i64, Row)> = HashMap::new();
    for (key, at, deleted, row) in rows {
        if best.get(&key).is_none_or(|(t, _)| at > *t) {
            best.insert(key, (at, if deleted { Row::new() } else { row }));
        }
    }
    best.into_iter()
        .filter(|(_, (_, r))| !r.is_empty())
        .map(|(k, (_, mut r))| {
            for c in ["__cq_k0", "__cq_k1", "__cq_k2", "_emitted_at", "_final", "_deleted"] {
                r.remove(c);
            }
            (k, r)
        })
        .collect()
}

fn keyed_versions(b: &RecordBatch) -> Vec<(Vec<String>, i64, bool, Row)> {
    let at = b
        .column_by_name("_emitted_at")
        .expect("at")
        .as_primitive::<TimestampMicrosecondType>();
    let del = b.column_by_name("_deleted").expect("d").as_boolean();
    (0..b.num_rows())
        .map(|i| {
            let one = b.slice(i, 1);
            let row = keyed(std::slice::from_ref(&one), &[])
                .into_values()
                .next()
                .expect("row");
            let key = vec![row["__cq_k0"].clone(), row["__cq_k1"].clone(), row["__cq_k2"].clone()];
            (key, at.value(i), del.value(i), row)
        })
        .collect()
}

/// 20k out-of-order events in random batches with an update emitted after every batch: the
/// final versions, and the latest version of every key, equal what final mode emits.
#[tokio::test]
async fn updating_final_rows_equal_final_mode() {
    let all = events(21, 20_000, 2_000, 300.0);
    let sql = "SELECT window_start, window_end, provider, model, count(*) AS n, sum(input_tokens) AS tokens,
                      min(latency_ms) AS lo, max(latency_ms) AS hi
               FROM events WHERE model IS NOT NULL GROUP BY tumble(timestamp, INTERVAL '1 minute'), provider, model";
    let mut fin = CqRuntime::new(def("f", sql, CqOptions::default()), &events_schema())
        .await
        .expect("plan");
    let mut upd = CqRuntime::new(def("u", sql, updating(5_000)), &events_schema())
        .await
        .expect("plan");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let (mut fin_out, mut closed, mut versions_out) = (Vec::new(), Vec::new(), Vec::new());
    let mut offset = 0;
    let mut updates = 0;
    while offset < all.num_rows() {
        let len = rng.random_range(1..2000).min(all.num_rows() - offset);
        let batch = all.slice(offset, len);
        fin_out.extend(fin.on_batch(&batch, NOW, false).await.expect("f").output);
        let p = upd.on_batch(&batch, NOW, false).await.expect("u");
        closed.extend(p.closed);
        versions_out.extend(p.output);
        let e = upd.emit_updates(NOW).await.expect("emit");
        updates += e.rows.iter().map(RecordBatch::num_rows).sum::<usize>();
        versions_out.extend(e.rows);
        offset += len;
    }
    fin_out.extend(fin.finish().await.expect("f"));
    let end = upd.finish_all().await.expect("u");
    closed.extend(end.closed);
    versions_out.extend(end.rows);
    let keys = ["window_start", "provider", "model"];
    let want = keyed(&fin_out, &keys);
    assert_eq!(keyed(&closed, &keys), want, "final rows downstream equal final mode");
    assert!(updates > want.len(), "intermediate versions were emitted: {updates}");
    let latest: HashMap<Vec<String>, Row> = latest(&versions_out)
        .into_values()
        .map(|r| (keys.iter().map(|k| r[*k].clone()).collect(), r))
        .collect();
    assert_eq!(latest, want, "the latest version of every key is the final row");
}
