//! Engine tests: the oracle comparison against batch DataFusion, lateness, future events,
//! idle advance, and the glob test that plans every shipped query.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Float64Type, Int64Type, SchemaRef, TimestampMicrosecondType};
use datafusion::catalog::MemTable;
use datafusion::prelude::SessionContext;
use rand::{Rng, SeedableRng};

use super::catalog::{CqDefinition, CqOptions};
use super::query::CqRuntime;
use super::shipped::{SHIPPED, shipped_queries};
use crate::event::{decode_batch_body, events_schema};
use crate::generate::{Generator, GeneratorConfig};

pub(super) fn def(name: &str, sql: &str, options: CqOptions) -> CqDefinition {
    CqDefinition {
        name: name.into(),
        sql: sql.into(),
        options,
        paused: false,
        created_at_us: 0,
    }
}

pub(super) fn events(seed: u64, n: usize, disorder_ms: u64, per_sec: f64) -> RecordBatch {
    let mut g = Generator::new(GeneratorConfig {
        seed,
        disorder_ms,
        events_per_sec: per_sec,
        ..GeneratorConfig::default()
    });
    let body: String = (0..n).map(|_| g.next_event(None) + "\n").collect();
    let out = decode_batch_body(body.as_bytes(), 0).expect("decode");
    assert!(out.rejected.is_empty());
    out.batch
}

/// Far future "now" so the future bound never interferes with historical test data.
pub(super) const NOW: i64 = 4_000_000_000_000_000;

/// `all` cut into consecutive batches of random sizes (1..5000 rows) drawn from `seed`.
pub(super) fn random_slices(all: &RecordBatch, seed: u64) -> Vec<RecordBatch> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut slices = Vec::new();
    let mut offset = 0;
    while offset < all.num_rows() {
        let len = rng.random_range(1..5000).min(all.num_rows() - offset);
        slices.push(all.slice(offset, len));
        offset += len;
    }
    slices
}

pub(super) async fn feed(rt: &mut CqRuntime, all: &RecordBatch, seed: u64) -> (Vec<RecordBatch>, usize) {
    let mut out = Vec::new();
    let mut late = 0;
    for slice in random_slices(all, seed) {
        let p = rt.on_batch(&slice, NOW, false).await.expect("batch");
        out.extend(p.output);
        late += p.late.len();
    }
    out.extend(rt.finish().await.expect("close"));
    (out, late)
}

pub(super) type Row = BTreeMap<String, String>;

/// Rows keyed by their group columns, values rendered for comparison (floats rounded).
pub(super) fn keyed(batches: &[RecordBatch], keys: &[&str]) -> HashMap<Vec<String>, Row> {
    let mut map = HashMap::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let mut row = Row::new();
            for (f, c) in b.schema().fields().iter().zip(b.columns()) {
                let v = if c.is_null(i) {
                    "NULL".to_string()
                } else if let Some(a) = c.as_primitive_opt::<Float64Type>() {
                    format!("{:.6e}", a.value(i))
                } else if let Some(a) = c.as_primitive_opt::<Int64Type>() {
                    a.value(i).to_string()
                } else if matches!(c.data_type(), datafusion::arrow::datatypes::DataType::Timestamp(_, _)) {
                    let us =
                        datafusion::arrow::compute::cast(c, &crate::event::schema::timestamp_type()).expect("cast");
                    us.as_primitive::<TimestampMicrosecondType>().value(i).to_string()
                } else if let Some(a) = c.as_string_opt::<i32>() {
                    a.value(i).to_string()
                } else if let Some(a) = c.as_binary_opt::<i32>() {
                    format!("{} bytes", a.value(i).len())
                } else {
                    datafusion::arrow::util::display::array_value_to_string(c, i).unwrap_or_default()
                };
                row.insert(f.name().clone(), v);
            }
            let key = keys.iter().map(|k| row.get(*k).cloned().unwrap_or_default()).collect();
            assert!(map.insert(key, row).is_none(), "one row per window and key");
        }
    }
    map
}

pub(super) async fn batch_sql(all: &RecordBatch, sql: &str) -> Vec<RecordBatch> {
    let mut ctx = SessionContext::new();
    crate::query::register_functions(&mut ctx).expect("functions");
    let table = MemTable::try_new(all.schema(), vec![vec![all.clone()]]).expect("table");
    ctx.register_table("events", Arc::new(table)).expect("register");
    ctx.sql(sql)
        .await
        .expect("plan oracle")
        .collect()
        .await
        .expect("run oracle")
}

pub(super) fn compare(stream: &HashMap<Vec<String>, Row>, oracle: &HashMap<Vec<String>, Row>, float_cols: &[&str]) {
    assert_eq!(stream.len(), oracle.len(), "same windows x keys");
    for (key, o) in oracle {
        let s = stream
            .get(key)
            .unwrap_or_else(|| panic!("window {key:?} missing from the stream output"));
        for (col, ov) in o {
            let sv = s.get(col).unwrap_or_else(|| panic!("column {col} missing"));
            if float_cols.contains(&col.as_str()) && ov != "NULL" && sv != "NULL" {
                let (a, b): (f64, f64) = (sv.parse().expect("f"), ov.parse().expect("f"));
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{key:?} {col}: stream {a} vs oracle {b}"
                );
            } else {
                assert_eq!(sv, ov, "{key:?} {col}");
            }
        }
    }
}

/// The 1-minute shipped rollup and the 5-minute rollup merged from it, fed 200k out-of-order
/// events in random batch sizes, equal a batch computation over all events at once.
#[tokio::test]
async fn oracle_shipped_rollups_match_batch_computation() {
    let all = events(99, 200_000, 3_000, 400.0);
    let shipped = shipped_queries().expect("shipped");
    let one = shipped
        .iter()
        .find(|(n, _)| n == "llm_provider_model_1m")
        .expect("1m")
        .clone();
    let five = shipped
        .iter()
        .find(|(n, _)| n == "llm_provider_model_5m")
        .expect("5m")
        .clone();
    let mut rt1 = CqRuntime::new(def(&one.0, &one.1, CqOptions::default()), &events_schema())
        .await
        .expect("plan 1m");
    let mut rt5 = CqRuntime::new(
        def(
            &five.0,
            &five.1,
            CqOptions {
                allowed_lateness_ms: 0,
                ..CqOptions::default()
            },
        ),
        &rt1.output_schema(),
    )
    .await
    .expect("plan 5m");
    let (out1, late) = feed(&mut rt1, &all, 1).await;
    assert_eq!(late, 0, "disorder (3 s) is within the allowed lateness (5 s)");
    let mut out5 = Vec::new();
    for b in &out1 {
        out5.extend(rt5.on_batch(b, NOW, false).await.expect("5m batch").output);
    }
    out5.extend(rt5.finish().await.expect("close 5m"));

    let keys = ["window_start", "provider", "model"];
    let floats = [
        "error_rate",
        "latency_sum",
        "latency_sum_sq",
        "avg_latency_ms",
        "stddev_latency_ms",
        "cost_usd",
    ];
    for (minutes, out) in [(1, &out1), (5, &out5)] {
        let oracle = batch_sql(
            &all,
            &format!(
                "SELECT date_bin(INTERVAL '{minutes} minutes', timestamp) AS window_start, provider, model,
                        count(*) AS requests,
                        sum(CASE WHEN status IN ('error', 'timeout') THEN 1 ELSE 0 END) AS errors,
                        avg(CASE WHEN status IN ('error', 'timeout') THEN 1.0 ELSE 0.0 END) AS error_rate,
                        count(latency_ms) AS latency_count, sum(latency_ms) AS latency_sum,
                        sum(latency_ms * latency_ms) AS latency_sum_sq, avg(latency_ms) AS avg_latency_ms,
                        min(latency_ms) AS min_latency_ms, max(latency_ms) AS max_latency_ms,
                        stddev(latency_ms) AS stddev_latency_ms,
                        sketch_quantile(quantile_sketch(latency_ms), 0.5) AS p50_latency_ms,
                        sketch_quantile(quantile_sketch(latency_ms), 0.95) AS p95_latency_ms,
                        sketch_quantile(quantile_sketch(latency_ms), 0.99) AS p99_latency_ms,
                        sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                        sum(total_tokens) AS total_tokens, sum(cost_usd) AS cost_usd
                 FROM events WHERE model IS NOT NULL GROUP BY 1, 2, 3"
            ),
        )
        .await;
        let mut stream = keyed(out, &keys);
        for row in stream.values_mut() {
            row.remove("window_end");
            row.remove("latency_sketch");
        }
        compare(&stream, &keyed(&oracle, &keys), &floats);
    }
    let total: i64 = out1
        .iter()
        .map(|b| {
            b.column_by_name("requests")
                .expect("r")
                .as_primitive::<Int64Type>()
                .iter()
                .flatten()
                .sum::<i64>()
        })
        .sum();
    assert!(total > 150_000, "most events are LLM calls: {total}");
}

#[tokio::test]
async fn hopping_windows_match_batch_computation() {
    let all = events(5, 20_000, 2_000, 200.0);
    let sql = "SELECT window_start, window_end, provider, count(*) AS n, sum(input_tokens) AS tokens, max(latency_ms) AS max_ms
               FROM events WHERE provider IS NOT NULL GROUP BY hop(timestamp, INTERVAL '1 minute', INTERVAL '3 minutes'), provider";
    let mut rt = CqRuntime::new(def("hop", sql, CqOptions::default()), &events_schema())
        .await
        .expect("plan");
    let (out, late) = feed(&mut rt, &all, 2).await;
    assert_eq!(late, 0);
    let mut oracle_batches = Vec::new();
    for shift in 0..3 {
        oracle_batches.extend(
            batch_sql(
                &all,
                &format!(
                    "SELECT date_bin(INTERVAL '1 minute', timestamp) - INTERVAL '{shift} minutes' AS window_start, provider,
                            count(*) AS n, sum(input_tokens) AS tokens, max(latency_ms) AS max_ms
                     FROM events WHERE provider IS NOT NULL GROUP BY 1, 2"
                ),
            )
            .await,
        );
    }
    // Each hopping window is the union of three 1-minute bins: add the bins up.
    let oracle = batch_sql(
        &concat_batches(&oracle_batches[0].schema(), &oracle_batches).expect("concat"),
        "SELECT window_start, provider, CAST(sum(n) AS BIGINT) AS n, CAST(sum(tokens) AS BIGINT) AS tokens, max(max_ms) AS max_ms FROM events GROUP BY 1, 2",
    )
    .await;
    let mut stream = keyed(&out, &["window_start", "provider"]);
    for row in stream.values_mut() {
        row.remove("window_end");
    }
    compare(&stream, &keyed(&oracle, &["window_start", "provider"]), &[]);
}

pub(super) fn one_event(id: u128, ts: &str, model: &str) -> RecordBatch {
    let json = format!(
        r#"{{"event_id":"{}","timestamp":"{ts}","source_module":"m","event_type":"telemetry","payload":{{"model":"{model}","latency_ms":10}}}}"#,
        uuid::Uuid::from_u128(id)
    );
    decode_batch_body(json.as_bytes(), 0).expect("decode").batch
}

pub(super) fn counts(out: &[RecordBatch]) -> Vec<(i64, i64)> {
    let mut v = Vec::new();
    for b in out {
        let s = b
            .column_by_name("window_start")
            .expect("ws")
            .as_primitive::<TimestampMicrosecondType>();
        let n = b.column_by_name("n").expect("n").as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            v.push((s.value(i) / 60_000_000, n.value(i)));
        }
    }
    v.sort_unstable();
    v
}

pub(super) const COUNT_SQL: &str =
    "SELECT window_start, window_end, count(*) AS n FROM events GROUP BY tumble(timestamp, INTERVAL '1 minute')";

#[tokio::test]
async fn lateness_inside_updates_beyond_goes_to_late_table() {
    let options = CqOptions {
        allowed_lateness_ms: 10_000,
        ..CqOptions::default()
    };
    let mut rt = CqRuntime::new(def("late", COUNT_SQL, options), &events_schema())
        .await
        .expect("plan");
    let base = 29_453_760; // 2026-01-01T00:00Z in minutes
    let mut out = Vec::new();
    out.extend(
        rt.on_batch(&one_event(1, "2026-01-01T00:00:30Z", "a"), NOW, false)
            .await
            .expect("b")
            .output,
    );
    out.extend(
        rt.on_batch(&one_event(2, "2026-01-01T00:01:05Z", "a"), NOW, false)
            .await
            .expect("b")
            .output,
    );
    assert!(out.is_empty(), "watermark 00:00:55 has not passed 00:01");
    // Late but inside the lateness: 00:00:59 while max is 00:01:05 → counted in window 0.
    let p = rt
        .on_batch(&one_event(3, "2026-01-01T00:00:59Z", "a"), NOW, false)
        .await
        .expect("b");
    assert!(p.late.is_empty());
    out.extend(p.output);
    // Advance: max 00:01:20 → watermark 00:01:10 closes window 0 with 2 events.
    out.extend(
        rt.on_batch(&one_event(4, "2026-01-01T00:01:20Z", "a"), NOW, false)
            .await
            .expect("b")
            .output,
    );
    assert_eq!(counts(&out), vec![(base, 2)]);
    // Beyond the lateness: window 0 is closed → late table, not counted.
    let p = rt
        .on_batch(&one_event(5, "2026-01-01T00:00:10Z", "a"), NOW, false)
        .await
        .expect("b");
    assert_eq!(p.late.len(), 1);
    assert_eq!(
        p.late[0].event_id.as_deref(),
        Some(uuid::Uuid::from_u128(5).to_string().as_str())
    );
    assert!(p.output.is_empty());
    out.extend(rt.finish().await.expect("close"));
    assert_eq!(counts(&out), vec![(base, 2), (base + 1, 2)]);
    assert_eq!(rt.status().late_events, 1);
}

#[tokio::test]
async fn a_future_event_does_not_close_every_window() {
    let options = CqOptions {
        allowed_lateness_ms: 1_000,
        max_future_ms: 60_000,
        ..CqOptions::default()
    };
    let mut rt = CqRuntime::new(def("future", COUNT_SQL, options), &events_schema())
        .await
        .expect("plan");
    let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:05:00Z")
        .expect("ts")
        .timestamp_micros();
    rt.on_batch(&one_event(1, "2026-01-01T00:04:30Z", "a"), now, false)
        .await
        .expect("b");
    let p = rt
        .on_batch(&one_event(2, "2027-06-01T00:00:00Z", "a"), now, false)
        .await
        .expect("b");
    assert!(p.output.iter().all(|b| b.num_rows() == 0) || counts(&p.output).iter().all(|(m, _)| *m <= 29_453_765));
    let watermark = rt.watermark().expect("watermark");
    assert!(
        watermark <= now + 60_000_000,
        "watermark {watermark} bounded by now + 60 s"
    );
    // A normal event in the current window is still on time.
    let p = rt
        .on_batch(&one_event(3, "2026-01-01T00:05:30Z", "a"), now, false)
        .await
        .expect("b");
    assert!(
        p.late.is_empty(),
        "the future event did not push the watermark a year ahead"
    );
}

/// Two Kafka partitions ten minutes apart (a backlog on one): the watermark follows the slower
/// one, so its events are counted instead of late; once it stops delivering for the idle
/// timeout, the faster one alone moves event time.
#[tokio::test]
async fn the_slowest_partition_holds_the_watermark_until_it_goes_idle() {
    use super::lanes::{LaneMark, Lanes};
    const S: i64 = 1_000_000;
    let options = CqOptions {
        allowed_lateness_ms: 1_000,
        idle_timeout_ms: 10_000,
        ..CqOptions::default()
    };
    let idle = 10 * S;
    let mark = |lane: &str, t: Option<&str>| LaneMark {
        lane: lane.into(),
        max_event_us: t.map(|t| chrono::DateTime::parse_from_rfc3339(t).expect("ts").timestamp_micros()),
    };
    let mut lanes = Lanes::default();
    let mut rt = CqRuntime::new(def("lanes", COUNT_SQL, options.clone()), &events_schema())
        .await
        .expect("plan");
    let base = 29_453_760; // 2026-01-01T00:00Z in minutes
    let mut out = Vec::new();
    let run = async |rt: &mut CqRuntime, lanes: &mut Lanes, marks: &[LaneMark], batch: &RecordBatch, now: i64| {
        lanes.observe(marks, now);
        rt.set_input_bound(lanes.bound(now, idle));
        rt.on_batch(batch, now, false).await.expect("batch")
    };
    // Partition 0 is at 00:10; partition 1 is assigned but not read yet: nothing advances.
    // (Checked below, after the first batch: the status names the partition holding it.)
    let p = run(
        &mut rt,
        &mut lanes,
        &[mark("t/0", Some("2026-01-01T00:10:00Z")), mark("t/1", None)],
        &one_event(1, "2026-01-01T00:10:00Z", "a"),
        NOW,
    )
    .await;
    assert!(p.output.is_empty());
    assert_eq!(rt.watermark(), None);
    assert_eq!(
        rt.status().watermark_held_by.as_deref(),
        Some("t/1 (assigned, nothing read yet)")
    );
    // Partition 1's backlog from 00:00:30 is on time, and moves the watermark as it goes.
    let p = run(
        &mut rt,
        &mut lanes,
        &[mark("t/1", Some("2026-01-01T00:00:30Z")), mark("t/0", None)],
        &one_event(2, "2026-01-01T00:00:30Z", "a"),
        NOW + S,
    )
    .await;
    assert!(p.late.is_empty(), "the lagging partition's event is not late");
    out.extend(p.output);
    let p = run(
        &mut rt,
        &mut lanes,
        &[mark("t/1", Some("2026-01-01T00:01:30Z"))],
        &one_event(3, "2026-01-01T00:01:30Z", "a"),
        NOW + 2 * S,
    )
    .await;
    assert!(p.late.is_empty());
    out.extend(p.output);
    assert_eq!(counts(&out), vec![(base, 1)], "00:00 closed by partition 1's progress");
    assert_eq!(
        rt.status().watermark_held_by.as_deref(),
        Some("t/1 at 2026-01-01T00:01:30Z")
    );
    // Partition 0 goes on; partition 1 stops delivering: after the idle timeout it no longer
    // holds event time back, and the windows up to partition 0's close.
    let p = run(
        &mut rt,
        &mut lanes,
        &[mark("t/0", Some("2026-01-01T00:10:05Z"))],
        &one_event(4, "2026-01-01T00:10:05Z", "a"),
        NOW + 11 * S,
    )
    .await;
    out.extend(p.output);
    assert_eq!(counts(&out), vec![(base, 1)], "partition 1 was active 9 s ago");
    rt.set_input_bound(lanes.bound(NOW + 12 * S + 1, idle));
    out.extend(rt.on_tick(NOW + 12 * S + 1).await.expect("tick").rows);
    assert_eq!(counts(&out), vec![(base, 1), (base + 1, 1)]);
    assert_eq!(rt.status().late_events, 0);
    assert_eq!(
        rt.status().watermark_held_by,
        None,
        "the only active partition is the fastest"
    );

    // The same input without lanes: the first partition's 00:10 makes the backlog late.
    let mut plain = CqRuntime::new(def("plain", COUNT_SQL, options), &events_schema())
        .await
        .expect("plan");
    plain
        .on_batch(&one_event(1, "2026-01-01T00:10:00Z", "a"), NOW, false)
        .await
        .expect("batch");
    let p = plain
        .on_batch(&one_event(2, "2026-01-01T00:00:30Z", "a"), NOW + S, false)
        .await
        .expect("batch");
    assert_eq!(p.late.len(), 1);
}

#[tokio::test]
async fn idle_streams_advance_and_close_the_last_window() {
    let options = CqOptions {
        allowed_lateness_ms: 1_000,
        idle_timeout_ms: 50,
        ..CqOptions::default()
    };
    let mut rt = CqRuntime::new(def("idle", COUNT_SQL, options), &events_schema())
        .await
        .expect("plan");
    let p = rt
        .on_batch(&one_event(1, "2026-01-01T00:00:59.900Z", "a"), NOW, false)
        .await
        .expect("b");
    assert!(p.output.is_empty());
    // 1.3 s of the caller's clock without input (no sleeping: time is passed in).
    let out = rt.on_tick(NOW + 1_300_000).await.expect("tick");
    assert_eq!(counts(&out.rows), vec![(29_453_760, 1)], "closed by idle advance");
}

/// Every file in `queries/` is compiled in and plans, in order, against its source.
#[tokio::test]
async fn every_shipped_query_plans() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("queries dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".sql"))
        .map(|n| n.trim_end_matches(".sql").to_string())
        .collect();
    files.sort();
    let mut listed: Vec<String> = SHIPPED.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "queries/*.sql and stream::shipped::SHIPPED must list the same files"
    );
    let mut schemas: HashMap<String, SchemaRef> = HashMap::from([("events".to_string(), events_schema())]);
    for (name, sql) in shipped_queries().expect("parse") {
        let source = super::query::source_of(&sql).expect("source");
        let schema = schemas
            .get(&source)
            .unwrap_or_else(|| panic!("{name} reads {source}, which is not defined before it"));
        let rt = CqRuntime::new(def(&name, &sql, CqOptions::default()), schema)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        schemas.insert(name, rt.output_schema());
    }
}

/// A query planned over only its input columns (what a projecting decoder builds) emits
/// exactly what it emits over the full `events` schema.
#[tokio::test]
async fn projected_input_gives_the_same_rollup() {
    let options = CqOptions {
        allowed_lateness_ms: 5_000,
        ..CqOptions::default()
    };
    let full = CqRuntime::new(
        def("p_full", crate::bench::ROLLUP_SQL, options.clone()),
        &events_schema(),
    )
    .await
    .expect("plans");
    let mut columns = full.input_columns().to_vec();
    columns.sort();
    assert_eq!(
        columns,
        [
            "cost_usd",
            "event_id",
            "input_tokens",
            "latency_ms",
            "model",
            "provider",
            "status",
            "timestamp"
        ]
    );
    let projection = crate::event::Projection::new(full.input_columns()).expect("columns");
    let mut narrow = CqRuntime::new(def("p_narrow", crate::bench::ROLLUP_SQL, options), &projection.schema())
        .await
        .expect("plans over the projection");
    let mut full = full;
    let all = events(5, 20_000, 2000, 200.0);
    let indices: Vec<usize> = projection
        .columns()
        .iter()
        .map(|c| all.schema().index_of(c).expect("column"))
        .collect();
    let (a, _) = feed(&mut full, &all, 9).await;
    let (b, _) = feed(&mut narrow, &all.project(&indices).expect("project"), 9).await;
    let keys = ["window_start", "provider", "model"];
    assert!(!a.is_empty());
    assert_eq!(keyed(&a, &keys), keyed(&b, &keys));
}

/// Batches aggregated ahead on other threads ([`CqRuntime::preparer`], as `bench rollup`
/// does) give the same rows and late events as batches aggregated in order, also when events
/// arrive late enough that some rows of an ahead-aggregated batch must be left out.
#[tokio::test]
async fn batches_aggregated_ahead_give_the_same_rollup() {
    let options = CqOptions {
        allowed_lateness_ms: 2_000,
        ..CqOptions::default()
    };
    let sql = crate::bench::ROLLUP_SQL;
    let mut in_order = CqRuntime::new(def("in_order", sql, options.clone()), &events_schema())
        .await
        .expect("plans");
    let mut ahead = CqRuntime::new(def("ahead", sql, options), &events_schema())
        .await
        .expect("plans");
    // 20 s of disorder against 2 s of lateness: many events are late.
    let all = events(17, 30_000, 20_000, 300.0);
    let (expected, expected_late) = feed(&mut in_order, &all, 4).await;
    assert!(expected_late > 100, "the test needs late events, got {expected_late}");

    // The same batches, each aggregated before the runtime has seen any of them, on worker tasks.
    let preparer = ahead.preparer();
    let tasks: Vec<_> = random_slices(&all, 4)
        .into_iter()
        .map(|s| {
            let p = preparer.clone();
            tokio::spawn(async move { p.prepare(s).await.expect("partial") })
        })
        .collect();
    let (mut got, mut got_late) = (Vec::new(), 0);
    for task in tasks {
        let p = ahead
            .on_prepared(task.await.expect("task"), NOW, false)
            .await
            .expect("batch");
        got.extend(p.output);
        got_late += p.late.len();
    }
    got.extend(ahead.finish().await.expect("close"));
    assert_eq!(got_late, expected_late);
    let keys = ["window_start", "provider", "model"];
    assert!(!expected.is_empty());
    assert_eq!(keyed(&got, &keys), keyed(&expected, &keys));
}
