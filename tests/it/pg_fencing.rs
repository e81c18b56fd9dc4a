//! The sink's guarantees at the library level against the real PostgreSQL: compare-and-set of
//! offsets between two instances that both believe they own a partition, and the circuit
//! breaker in front of an unreachable database.

use std::time::{Duration, Instant};

use llm_analytics_hub::event::decode_batch_body;
use llm_analytics_hub::metrics::Metrics;
use llm_analytics_hub::sinks::postgres::{PostgresConfig, PostgresSink};
use llm_analytics_hub::sinks::{RollupSink, SinkError, SourcePosition};
use llm_analytics_hub::stream::catalog::CqDefinition;
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
    let mut c = PostgresConfig {
        url: Some(url.into()),
        instance_id: Some(instance.into()),
        ..PostgresConfig::default()
    };
    config(&mut c);
    let (_tx, rx) = watch::channel(vec![base_query()]);
    PostgresSink::connect(&c, "g-fence", rx, Metrics::new().expect("metrics"))
        .await
        .expect("sink")
}

fn lines(seed: u64, n: usize) -> Vec<Vec<u8>> {
    generated(seed, n, 0.0).into_iter().map(String::into_bytes).collect()
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
    let (l1, l2, l3) = (lines(91, 1_000), lines(92, 1_000), lines(93, 1_000));
    let batch = |l: &[Vec<u8>]| decode_batch_body(&l.join(&b'\n'), 0).expect("decode").batch;

    a.write(&batch(&l1), &[], &pos(0, 0, 1_000), None)
        .await
        .expect("a writes first");
    let mut conn = db.connect().await;
    let after_a = stored(&mut conn, "pm_1m").await;
    assert_same("after a", &after_a, &oracle(&l1, 1).await);

    // b still believes there is no row: refused, and nothing of its batch is written.
    let refused = b.write(&batch(&l2), &[], &pos(0, 0, 1_000), None).await;
    assert!(matches!(refused, Err(SinkError::Fenced(_))), "{refused:?}");
    assert_eq!(
        stored(&mut conn, "pm_1m").await,
        after_a,
        "a refused write leaves no trace"
    );

    // After re-reading the stored offset b continues from a's progress ...
    assert_eq!(b.load_positions(&parts).await.expect("reload"), vec![Some(1_000)]);
    b.write(&batch(&l2), &[], &pos(0, 1_000, 2_000), None)
        .await
        .expect("b continues");
    // ... and now a is the stale one.
    let stale = a.write(&batch(&l3), &[], &pos(0, 2_000, 3_000), None).await;
    assert!(matches!(stale, Err(SinkError::Fenced(_))), "{stale:?}");
    // A partition an instance never loaded is refused too.
    let unowned = a.write(&batch(&l3), &[], &pos(1, 0, 10), None).await;
    assert!(matches!(unowned, Err(SinkError::Fenced(_))), "{unowned:?}");
    // A batch consumed before a rebalance and written after its instance re-read the offsets:
    // the compare-and-set matches (a expects 2,000), but its records 1,500.. were counted by b.
    assert_eq!(a.load_positions(&parts).await.expect("reload"), vec![Some(2_000)]);
    let overlapping = a.write(&batch(&l3), &[], &pos(0, 1_500, 2_500), None).await;
    assert!(
        matches!(&overlapping, Err(SinkError::Fenced(m)) if m.contains("starts at offset 1500, before the stored offset 2000")),
        "{overlapping:?}"
    );

    let both: Vec<Vec<u8>> = l1.iter().chain(&l2).cloned().collect();
    assert_same("a then b", &stored(&mut conn, "pm_1m").await, &oracle(&both, 1).await);
    let (next, by): (i64, String) =
        sqlx::query_as("SELECT next_offset, updated_by FROM hub_kafka_offsets WHERE consumer_group = 'g-fence'")
            .fetch_one(&mut conn)
            .await
            .expect("offset row");
    assert_eq!((next, by.as_str()), (2_000, "b"));
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
    let batch = decode_batch_body(&lines(94, 10).join(&b'\n'), 0).expect("decode").batch;
    assert!(s.ready());
    for _ in 0..3 {
        let r = s.write(&batch, &[], &[], None).await;
        assert!(
            matches!(&r, Err(SinkError::Database { transient: true, .. })),
            "a refused connection is a transient database error: {r:?}"
        );
    }
    assert!(!s.ready(), "open after 3 failures");
    assert_eq!(s.status()["circuit_breaker"], "open");
    let started = Instant::now();
    let r = s.write(&batch, &[], &[], None).await;
    assert!(
        matches!(&r, Err(SinkError::Unavailable(m)) if m.contains("circuit breaker open")),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(100), "fails fast while open");
}
