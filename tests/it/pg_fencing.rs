//! The sink's guarantees at the library level against the real PostgreSQL: the engine's
//! emitted states of two instances merged into one row per window and key (a window emitted
//! again is stored once), compare-and-set of offsets between two instances that both believe
//! they own a partition, and the circuit breaker in front of an unreachable database.

use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use llm_analytics_hub::event::{decode_batch_body, events_schema};
use llm_analytics_hub::metrics::Metrics;
use llm_analytics_hub::sinks::postgres::{PostgresConfig, PostgresSink};
use llm_analytics_hub::sinks::{RollupSink, SinkError, SourcePosition};
use llm_analytics_hub::stream::catalog::CqDefinition;
use llm_analytics_hub::stream::plan::CqPlan;
use llm_analytics_hub::stream::rewrite::rewrite;
use llm_analytics_hub::stream::state_sink::{QueryEmissions, StateSink};
use llm_analytics_hub::stream::window::window_spec;
use tokio::sync::watch;

use crate::harness::{free_port, generated};
use crate::pg::{QUERIES, TestDb, assert_same, oracle, stored};

fn base_query() -> CqDefinition {
    let (_, select) = QUERIES[0].1.split_once(" AS").expect("CREATE ... AS SELECT");
    CqDefinition {
        name: QUERIES[0].0.into(),
        sql: select.trim().into(),
        options: Default::default(),
        paused: false,
        created_at_us: 0,
    }
}

async fn sink(url: &str, instance: &str, config: impl FnOnce(&mut PostgresConfig)) -> PostgresSink {
    sink_of(url, instance, config, vec![base_query()]).await
}

async fn sink_of(
    url: &str,
    instance: &str,
    config: impl FnOnce(&mut PostgresConfig),
    queries: Vec<CqDefinition>,
) -> PostgresSink {
    let mut c = PostgresConfig {
        url: Some(url.into()),
        instance_id: Some(instance.into()),
        ..PostgresConfig::default()
    };
    config(&mut c);
    let (_tx, rx) = watch::channel(queries);
    PostgresSink::connect(&c, "g-fence", instance, rx, Metrics::new().expect("metrics"))
        .await
        .expect("sink")
}

fn lines(seed: u64, n: usize) -> Vec<Vec<u8>> {
    generated(seed, n, 0.0).into_iter().map(String::into_bytes).collect()
}

fn batch(l: &[Vec<u8>]) -> RecordBatch {
    decode_batch_body(&l.join(&b'\n'), 0).expect("decode").batch
}

/// What the streaming engine hands the sink for `l` in one emission: pm_1m's accumulator
/// states planned the way the engine plans the query, as partial states of two micro-batches
/// (several rows of one window and key, to be merged).
async fn states_of(l: &[Vec<u8>]) -> Vec<RecordBatch> {
    let schema = events_schema();
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let rewritten = rewrite(&base_query().sql, &columns, false).expect("rewrite");
    let spec = window_spec(&rewritten.window).await.expect("window");
    let plan = CqPlan::build(&rewritten.sql, spec, &schema).await.expect("plan");
    let (first, second) = l.split_at(l.len() / 2);
    let mut states = plan.partial(batch(first)).await.expect("partial aggregate");
    states.extend(plan.partial(batch(second)).await.expect("partial aggregate"));
    states
}

/// One query's single emission through [`StateSink::write_states`].
async fn write(
    sink: &PostgresSink,
    name: &str,
    states: Vec<RecordBatch>,
) -> Result<(), llm_analytics_hub::stream::state_sink::StateSinkError> {
    let emissions = [states];
    sink.write_states(&[QueryEmissions {
        name,
        emissions: &emissions,
    }])
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_instances_emitted_windows_merge_into_one_row_and_a_window_emitted_again_counts_once() {
    let db = TestDb::create("states").await;
    let a = sink(&db.url, "a", |_| {}).await;
    let b = sink(&db.url, "b", |_| {}).await;
    // Same generator start: a's and b's events fall into the same windows and models.
    let (l1, l2, l3) = (lines(95, 2_000), lines(96, 2_000), lines(97, 500));
    let mut conn = db.connect().await;

    write(&a, "pm_1m", states_of(&l1).await).await.expect("a's windows");
    assert_same("a's share", &stored(&mut conn, "pm_1m").await, &oracle(&l1, 1).await);
    write(&b, "pm_1m", states_of(&l2).await).await.expect("b's windows");
    let both: Vec<Vec<u8>> = l1.iter().chain(&l2).cloned().collect();
    let merged = stored(&mut conn, "pm_1m").await;
    assert_same("a's and b's shares merged", &merged, &oracle(&both, 1).await);

    // A restart emits a's windows again: stored once.
    write(&a, "pm_1m", states_of(&l1).await).await.expect("a again");
    assert_eq!(
        stored(&mut conn, "pm_1m").await,
        merged,
        "a window emitted twice counts once"
    );
    // An updating emission: a's newer state of the same windows replaces its older one.
    let a_later: Vec<Vec<u8>> = l1.iter().chain(&l3).cloned().collect();
    write(&a, "pm_1m", states_of(&a_later).await).await.expect("a's update");
    let all: Vec<Vec<u8>> = both.iter().chain(&l3).cloned().collect();
    assert_same(
        "a's update merged with b",
        &stored(&mut conn, "pm_1m").await,
        &oracle(&all, 1).await,
    );
    let parts: i64 = sqlx::query_scalar("SELECT count(DISTINCT _store) FROM hub_parts.pm_1m")
        .fetch_one(&mut conn)
        .await
        .expect("parts");
    assert_eq!(parts, 2, "one part per instance");
    // A query the sink does not store is not an error (nothing to write).
    write(&a, "not_stored", states_of(&l3).await)
        .await
        .expect("unknown query");
}

fn pos(partition: i32, first: i64, next: i64) -> Vec<SourcePosition> {
    vec![SourcePosition {
        topic: "t".into(),
        partition,
        first,
        next,
    }]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_instance_cannot_overwrite_newer_offsets() {
    let db = TestDb::create("fence").await;
    let a = sink(&db.url, "a", |_| {}).await;
    let b = sink(&db.url, "b", |_| {}).await;
    let parts = vec![("t".to_string(), 0)];
    assert_eq!(a.load_positions(&parts).await.expect("load"), vec![None]);
    assert_eq!(b.load_positions(&parts).await.expect("load"), vec![None]);
    let mut conn = db.connect().await;
    let offsets = async |conn: &mut sqlx::PgConnection| -> Option<(i64, String)> {
        sqlx::query_as("SELECT next_offset, updated_by FROM hub_kafka_offsets WHERE consumer_group = 'g-fence'")
            .fetch_optional(conn)
            .await
            .expect("offset row")
    };

    a.write(&[], &pos(0, 0, 1_000), None).await.expect("a writes first");
    assert_eq!(offsets(&mut conn).await, Some((1_000, "a".to_string())));

    // b still believes there is no row: refused, and nothing of its write lands.
    let refused = b.write(&[], &pos(0, 0, 1_000), None).await;
    assert!(matches!(refused, Err(SinkError::Fenced(_))), "{refused:?}");
    assert_eq!(
        offsets(&mut conn).await,
        Some((1_000, "a".to_string())),
        "a refused write leaves no trace"
    );

    // After re-reading the stored offset b continues from a's progress ...
    assert_eq!(b.load_positions(&parts).await.expect("reload"), vec![Some(1_000)]);
    b.write(&[], &pos(0, 1_000, 2_000), None).await.expect("b continues");
    // ... and now a is the stale one.
    let stale = a.write(&[], &pos(0, 2_000, 3_000), None).await;
    assert!(matches!(stale, Err(SinkError::Fenced(_))), "{stale:?}");
    // A partition an instance never loaded is refused too.
    let unowned = a.write(&[], &pos(1, 0, 10), None).await;
    assert!(matches!(unowned, Err(SinkError::Fenced(_))), "{unowned:?}");
    // A batch consumed before a rebalance and written after its instance re-read the offsets:
    // the compare-and-set matches (a expects 2,000), but its records 1,500.. were counted by b.
    assert_eq!(a.load_positions(&parts).await.expect("reload"), vec![Some(2_000)]);
    let overlapping = a.write(&[], &pos(0, 1_500, 2_500), None).await;
    assert!(
        matches!(&overlapping, Err(SinkError::Fenced(m)) if m.contains("starts at offset 1500, before the stored offset 2000")),
        "{overlapping:?}"
    );
    assert_eq!(offsets(&mut conn).await, Some((2_000, "b".to_string())));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_circuit_breaker_opens_on_an_unreachable_database() {
    let url = format!("postgres://postgres@127.0.0.1:{}/nowhere", free_port());
    let s = sink(&url, "x", |c| {
        c.create_database = false;
        c.acquire_timeout_ms = 300;
        c.breaker_failure_threshold = 3;
        c.breaker_open_secs = 60;
    })
    .await;
    assert!(s.ready());
    for _ in 0..3 {
        let r = s.write(&[], &[], None).await;
        assert!(
            matches!(&r, Err(SinkError::Database { transient: true, .. })),
            "a refused connection is a transient database error: {r:?}"
        );
    }
    assert!(!s.ready(), "open after 3 failures");
    assert_eq!(s.status()["circuit_breaker"], "open");
    let started = Instant::now();
    let r = s.write(&[], &[], None).await;
    assert!(
        matches!(&r, Err(SinkError::Unavailable(m)) if m.contains("circuit breaker open")),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(100), "fails fast while open");
}

/// One step's emissions of `pm_1m_copy` (first, so a failure there comes before `pm_1m`) and
/// of `pm_1m`.
fn copy_first(emissions: &[Vec<RecordBatch>]) -> [QueryEmissions<'_>; 2] {
    ["pm_1m_copy", "pm_1m"].map(|name| QueryEmissions { name, emissions })
}

/// The input tokens `pm_1m_copy` holds.
async fn copy_tokens(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT sum(input_tokens)::bigint FROM pm_1m_copy")
        .fetch_one(conn)
        .await
        .expect("sum")
}

/// The engine hands the sink every query's emissions of a step in one call, written in one
/// transaction; a table whose write can never succeed (changed under the Hub) is rolled back
/// alone and the others are stored.
#[tokio::test(flavor = "multi_thread")]
async fn one_step_of_several_queries_is_one_write_and_a_broken_table_does_not_stop_the_others() {
    let db = TestDb::create("step").await;
    let copy = CqDefinition {
        name: "pm_1m_copy".into(),
        ..base_query()
    };
    let a = sink_of(&db.url, "a", |_| {}, vec![base_query(), copy]).await;
    let (l1, l2) = (lines(98, 1_000), lines(99, 1_000));
    let first = [states_of(&l1).await];
    a.write_states(&copy_first(&first)).await.expect("both queries");
    let mut conn = db.connect().await;
    assert_same("pm_1m", &stored(&mut conn, "pm_1m").await, &oracle(&l1, 1).await);
    assert_same(
        "its copy",
        &stored(&mut conn, "pm_1m_copy").await,
        &oracle(&l1, 1).await,
    );

    let tokens_before: i64 = copy_tokens(&mut conn).await;
    // An operator drops a column the Hub writes: that table cannot take rows any more.
    sqlx::query("ALTER TABLE pm_1m_copy DROP COLUMN requests")
        .execute(&mut conn)
        .await
        .expect("alter");
    // The next step's emission holds the whole state so far of the windows (l1 and l2).
    let both: Vec<Vec<u8>> = l1.iter().chain(&l2).cloned().collect();
    let second = [states_of(&both).await];
    a.write_states(&copy_first(&second))
        .await
        .expect("a broken table is not retried");
    assert_same(
        "pm_1m stored",
        &stored(&mut conn, "pm_1m").await,
        &oracle(&both, 1).await,
    );
    let status = a.status();
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("pm_1m_copy:") && e.contains("requests")),
        "the sink's last error names the table it could not write and why: {status}"
    );
    let tokens_after: i64 = copy_tokens(&mut conn).await;
    assert_eq!(tokens_after, tokens_before, "the broken table's write was rolled back");
}
