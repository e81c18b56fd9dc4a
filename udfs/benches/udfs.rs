//! Criterion benches for the hot functions, run through SQL on an in-memory table:
//!
//! * `quantile_sketch` / `p95` grouped over 1,000,000 rows (1,000 groups), plus DataFusion's
//!   built-in `approx_percentile_cont` on the same data for comparison;
//! * `anomaly` / `anomaly_robust` over 100,000 rows (100 partitions × 1,000 rows, 60-row
//!   trailing frame).
//!
//! `cargo bench -p llm-analytics-udfs --bench udfs`

#![allow(clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

/// Lognormal-ish latencies from a xorshift generator (deterministic).
fn latencies(n: usize) -> Vec<f64> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (uniform().max(1e-12), uniform());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (3.0 + 1.5 * z).exp()
        })
        .collect()
}

fn context(rows: usize, groups: i64) -> SessionContext {
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int64, false),
        Field::new("t", DataType::Int64, false),
        Field::new("x", DataType::Float64, false),
    ]));
    let xs = latencies(rows);
    let batch_rows = 8192;
    let mut partitions = vec![Vec::new(), Vec::new()];
    for (k, start) in (0..rows).step_by(batch_rows).enumerate() {
        let end = (start + batch_rows).min(rows);
        let g: Int64Array = (start..end).map(|i| i as i64 % groups).collect();
        let t: Int64Array = (start..end).map(|i| i as i64 / groups).collect();
        let x = Float64Array::from(xs[start..end].to_vec());
        let cols: Vec<ArrayRef> = vec![Arc::new(g), Arc::new(t), Arc::new(x)];
        if let Ok(b) = RecordBatch::try_new(schema.clone(), cols) {
            partitions[k % 2].push(b);
        }
    }
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    let mut ctx_mut = ctx.clone();
    llm_analytics_udfs::register_all(&mut ctx_mut).expect("register");
    let table = MemTable::try_new(schema, partitions).expect("table");
    ctx.register_table("t", Arc::new(table)).expect("register table");
    ctx
}

fn run(rt: &tokio::runtime::Runtime, ctx: &SessionContext, sql: &str) -> usize {
    rt.block_on(async {
        let batches = ctx.sql(sql).await.expect("plan").collect().await.expect("run");
        batches.iter().map(RecordBatch::num_rows).sum()
    })
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("udfs");
    group.sample_size(10);

    let ctx = context(1_000_000, 1_000);
    for (name, sql) in [
        (
            "quantile_sketch_grouped_1M",
            "SELECT g, quantile_sketch(x) FROM t GROUP BY g",
        ),
        ("p95_grouped_1M", "SELECT g, p95(x) FROM t GROUP BY g"),
        (
            "builtin_approx_percentile_cont_grouped_1M",
            "SELECT g, approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY x) FROM t GROUP BY g",
        ),
    ] {
        assert_eq!(run(&rt, &ctx, sql), 1_000);
        group.bench_function(name, |b| b.iter(|| run(&rt, &ctx, sql)));
    }

    let ctx = context(100_000, 100);
    for (name, f) in [("anomaly_100k", "anomaly"), ("anomaly_robust_100k", "anomaly_robust")] {
        let sql = format!(
            "SELECT count(*) FROM (SELECT {f}(x, 3.0) OVER (PARTITION BY g ORDER BY t \
             ROWS BETWEEN 60 PRECEDING AND 1 PRECEDING) AS a FROM t) WHERE a['is_anomaly']"
        );
        assert_eq!(run(&rt, &ctx, &sql), 1);
        group.bench_function(name, |b| b.iter(|| run(&rt, &ctx, &sql)));
    }
    group.finish();
}

criterion_group!(udf_benches, benches);
criterion_main!(udf_benches);
