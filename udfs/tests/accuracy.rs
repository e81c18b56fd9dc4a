//! Accuracy against independent references: the fixtures in `tests/fixtures/*.json` were
//! produced by `tests/fixtures/make_fixtures.py` with numpy, scipy and statsmodels. Every
//! check below runs the SQL functions through a DataFusion session.

#![allow(clippy::expect_used)]

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// A session with the library registered, `target_partitions` partitions (so partial/final
/// aggregation and sketch merging are exercised when > 1).
fn session(partitions: usize) -> SessionContext {
    let mut ctx = SessionContext::new_with_config(
        SessionConfig::new()
            .with_target_partitions(partitions)
            .with_batch_size(1024),
    );
    llm_analytics_udfs::register_all(&mut ctx).expect("register");
    ctx
}

/// Registers table `name(g BIGINT, i BIGINT, x DOUBLE[, y DOUBLE])`, split into `chunks`
/// batches/partitions.
fn register(ctx: &SessionContext, name: &str, g: Vec<i64>, x: Vec<f64>, y: Option<Vec<f64>>, chunks: usize) {
    let n = x.len();
    let mut fields = vec![
        Field::new("g", DataType::Int64, false),
        Field::new("i", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
    ];
    if y.is_some() {
        fields.push(Field::new("y", DataType::Float64, true));
    }
    let schema = Arc::new(Schema::new(fields));
    let per = n.div_ceil(chunks.max(1)).max(1);
    let mut parts = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + per).min(n);
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(g[start..end].to_vec())),
            Arc::new(Int64Array::from((start as i64..end as i64).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(x[start..end].to_vec())),
        ];
        if let Some(y) = &y {
            cols.push(Arc::new(Float64Array::from(y[start..end].to_vec())));
        }
        parts.push(vec![RecordBatch::try_new(schema.clone(), cols).expect("batch")]);
        start = end;
    }
    let table = MemTable::try_new(schema, parts).expect("memtable");
    ctx.register_table(name, Arc::new(table)).expect("register table");
}

async fn query(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql).await.expect("plan").collect().await.expect("execute")
}

fn f64_col(batches: &[RecordBatch], col: usize) -> Vec<Option<f64>> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b.column(col).as_primitive::<Float64Type>().clone();
            (0..a.len())
                .map(move |i| a.is_valid(i).then(|| a.value(i)))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn assert_rel(got: f64, want: f64, tol: f64, what: &str) {
    let err = if want == 0.0 {
        got.abs()
    } else {
        (got - want).abs() / want.abs()
    };
    assert!(
        err <= tol,
        "{what}: got {got}, want {want}, relative error {err} > {tol}"
    );
}

#[tokio::test]
async fn quantiles_within_one_percent_of_exact() {
    let fx = fixture("quantiles.json");
    let alpha = fx["alpha"].as_f64().expect("alpha");
    let groups = fx["groups"].as_object().expect("groups");
    for partitions in [1, 4] {
        let ctx = session(partitions);
        let mut g = Vec::new();
        let mut x = Vec::new();
        let names: Vec<&String> = groups.keys().collect();
        for (gi, name) in names.iter().enumerate() {
            let vals = floats(&groups[*name]["values"]);
            g.extend(std::iter::repeat_n(gi as i64, vals.len()));
            x.extend(vals);
        }
        register(&ctx, "t", g, x, None, 8);
        let qs = [
            "0.0", "0.01", "0.1", "0.25", "0.5", "0.75", "0.9", "0.95", "0.99", "0.999", "1.0",
        ];
        let select: Vec<String> = qs.iter().map(|q| format!("sketch_quantile(s, {q})")).collect();
        // grouped path, through a per-"minute" rollup merged again (sketch_merge of sketches)
        let sql = format!(
            "WITH minute AS (SELECT g, i / 500 AS m, quantile_sketch(x) AS s FROM t GROUP BY g, i / 500), \
                  hour AS (SELECT g, sketch_merge(s) AS s FROM minute GROUP BY g) \
             SELECT g, {}, (SELECT p50(x) FROM t t2 WHERE t2.g = hour.g), \
                    (SELECT p95(x) FROM t t2 WHERE t2.g = hour.g), (SELECT p99(x) FROM t t2 WHERE t2.g = hour.g) \
             FROM hour ORDER BY g",
            select.join(", ")
        );
        let batches = query(&ctx, &sql).await;
        let mut checked = 0;
        for (gi, name) in names.iter().enumerate() {
            let exact = &groups[*name]["exact"];
            for (k, q) in qs.iter().enumerate() {
                let got = f64_col(&batches, k + 1)[gi].expect("non-null quantile");
                let want = exact[*q].as_f64().expect("exact");
                assert_rel(
                    got,
                    want,
                    alpha + 1e-9,
                    &format!("{name} q={q} partitions={partitions}"),
                );
                checked += 1;
            }
            for (k, q) in [(qs.len() + 1, "0.5"), (qs.len() + 2, "0.95"), (qs.len() + 3, "0.99")] {
                let got = f64_col(&batches, k)[gi].expect("non-null p");
                assert_rel(
                    got,
                    exact[q].as_f64().expect("exact"),
                    alpha + 1e-9,
                    &format!("{name} p{q}"),
                );
                checked += 1;
            }
        }
        assert_eq!(checked, names.len() * (qs.len() + 3));
    }
}

#[tokio::test]
async fn rollup_equals_direct_sketch() {
    let fx = fixture("quantiles.json");
    let vals = floats(&fx["groups"]["lognormal"]["values"]);
    let ctx = session(4);
    register(&ctx, "t", vec![0; vals.len()], vals, None, 6);
    let sql = "SELECT (SELECT quantile_sketch(x) FROM t) = \
                      (SELECT sketch_merge(s) FROM (SELECT quantile_sketch(x) AS s FROM t GROUP BY i % 37))";
    let b = query(&ctx, sql).await;
    assert!(
        b[0].column(0).as_boolean().value(0),
        "merged minute sketches differ from the direct sketch"
    );
}

#[tokio::test]
async fn zscore_matches_scipy() {
    let fx = fixture("anomaly.json");
    let x = floats(&fx["values"]);
    let z = &fx["zscore_fixed"];
    let ctx = session(1);
    register(&ctx, "t", vec![0; x.len()], x, None, 1);
    let sql = format!(
        "SELECT zscore(x, {}, {}) FROM t ORDER BY i",
        z["mean"].as_f64().expect("mean"),
        z["stddev"].as_f64().expect("sd")
    );
    let got = f64_col(&query(&ctx, &sql).await, 0);
    let want = floats(&z["scores"]);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g.expect("score") - w).abs() < 1e-9, "row {i}: {g:?} vs {w}");
    }
}

async fn check_trailing(func: &str, key: &str) {
    let fx = fixture("anomaly.json");
    let x = floats(&fx["values"]);
    let w = fx["window"].as_i64().expect("window");
    let ctx = session(2);
    register(&ctx, "t", vec![0; x.len()], x, None, 3);
    let sql = format!(
        "SELECT a['score'], a['baseline'], a['spread'], a['is_anomaly'] FROM \
           (SELECT i, {func}(x, 3.0) OVER (PARTITION BY g ORDER BY i ROWS BETWEEN {w} PRECEDING AND 1 PRECEDING) AS a FROM t) \
         ORDER BY i"
    );
    let b = query(&ctx, &sql).await;
    let (score, base, spread) = (f64_col(&b, 0), f64_col(&b, 1), f64_col(&b, 2));
    let reference = fx[key].as_array().expect("reference");
    let mut flagged = Vec::new();
    for (i, r) in reference.iter().enumerate() {
        if r.is_null() {
            assert_eq!(score[i], None, "row {i} has no baseline");
            continue;
        }
        let close = |g: Option<f64>, w: &Value, what: &str| {
            let w = w.as_f64().expect("number");
            let g = g.unwrap_or_else(|| panic!("row {i} {what} is NULL"));
            assert!(
                (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                "{func} row {i} {what}: {g} vs {w}"
            );
        };
        close(base[i], &r["baseline"], "baseline");
        close(spread[i], &r["spread"], "spread");
        close(score[i], &r["score"], "score");
        if r["score"].as_f64().expect("score").abs() >= 3.0 {
            flagged.push(i);
        }
    }
    // the injected spike and drop are found
    assert!(
        flagged.contains(&150) && flagged.contains(&220),
        "{func} flagged {flagged:?}"
    );
}

#[tokio::test]
async fn anomaly_matches_numpy_trailing_window() {
    check_trailing("anomaly", "trailing_zscore").await;
}

#[tokio::test]
async fn anomaly_robust_matches_scipy_mad() {
    check_trailing("anomaly_robust", "trailing_robust").await;
}

#[tokio::test]
async fn spearman_matches_scipy() {
    let fx = fixture("correlation.json");
    for case in fx["spearman"].as_array().expect("cases") {
        let (x, y) = (floats(&case["x"]), floats(&case["y"]));
        let ctx = session(3);
        register(&ctx, "t", vec![0; x.len()], x, Some(y), 4);
        let got = f64_col(&query(&ctx, "SELECT spearman_corr(x, y) FROM t").await, 0)[0].expect("value");
        let want = case["spearman"].as_f64().expect("reference");
        assert!((got - want).abs() < 1e-12, "{}: {got} vs {want}", case["name"]);
    }
}

#[tokio::test]
async fn xcorr_matches_numpy() {
    let fx = fixture("correlation.json");
    let xc = &fx["xcorr"];
    let (x, y) = (floats(&xc["x"]), floats(&xc["y"]));
    let ctx = session(3);
    register(&ctx, "t", vec![0; x.len()], x, Some(y), 4);
    let max_lag = xc["max_lag"].as_i64().expect("max_lag");
    let b = query(
        &ctx,
        &format!("SELECT r['best_lag'], r['coefficient'] FROM (SELECT xcorr(i, x, y, {max_lag}) AS r FROM t)"),
    )
    .await;
    let lag = b[0].column(0).as_primitive::<Int64Type>().value(0);
    let coef = f64_col(&b, 1)[0].expect("coefficient");
    assert_eq!(lag, xc["best_lag"].as_i64().expect("lag"));
    assert!((coef - xc["coefficient"].as_f64().expect("coef")).abs() < 1e-12);
    // every lag against numpy's corrcoef
    for (k, want) in xc["per_lag"].as_object().expect("per lag") {
        let k: i64 = k.parse().expect("lag key");
        let (xs, ys) = (floats(&xc["x"]), floats(&xc["y"]));
        let got = llm_analytics_udfs::aggregate::xcorr::lagged(&xs, &ys, k).expect("valid lag");
        assert!((got - want.as_f64().expect("r")).abs() < 1e-12, "lag {k}");
    }
}

#[tokio::test]
async fn ets_forecast_close_to_statsmodels() {
    let fx = fixture("forecast.json");
    let h = fx["horizon"].as_i64().expect("horizon");
    for s in fx["series"].as_array().expect("series") {
        let y = floats(&s["values"]);
        let ctx = session(2);
        register(&ctx, "t", vec![0; y.len()], y, None, 3);
        let sql = format!(
            "SELECT f['ts'], f['yhat'], f['lower'], f['upper'] FROM \
               (SELECT unnest(forecast(i, x, {h}, 'ets', 0.95)) AS f FROM t)"
        );
        let b = query(&ctx, &sql).await;
        let ts: Vec<i64> = b
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        let n = s["values"].as_array().expect("values").len() as i64;
        assert_eq!(ts, (n..n + h).collect::<Vec<_>>());
        let (yhat, lower, upper) = (f64_col(&b, 1), f64_col(&b, 2), f64_col(&b, 3));
        let (ryhat, rlower, rupper) = (floats(&s["yhat"]), floats(&s["lower"]), floats(&s["upper"]));
        for k in 0..h as usize {
            let (yh, lo, up) = (
                yhat[k].expect("yhat"),
                lower[k].expect("lower"),
                upper[k].expect("upper"),
            );
            // point forecasts within 1% of statsmodels' ETS(A,A,N) fit
            assert_rel(yh, ryhat[k], 0.01, &format!("{} yhat h={k}", s["name"]));
            // intervals: ordered, and their width within 35% of statsmodels'
            assert!(lo < yh && yh < up);
            let (w, rw) = (up - lo, rupper[k] - rlower[k]);
            assert_rel(w, rw, 0.35, &format!("{} interval width h={k}", s["name"]));
        }
    }
}

#[tokio::test]
async fn seasonality_detected_and_forecast_follows_cycle() {
    let fx = fixture("forecast.json");
    let s = &fx["seasonal"];
    let y = floats(&s["values"]);
    let period = s["period"].as_i64().expect("period");
    let ctx = session(2);
    register(&ctx, "t", vec![0; y.len()], y, None, 3);
    let b = query(&ctx, "SELECT detect_seasonality(i, x) FROM t").await;
    let list = b[0].column(0).as_list::<i32>().value(0);
    let periods = list.as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(periods.first().copied(), Some(period), "periods {periods:?}");
    let b = query(
        &ctx,
        "SELECT f['yhat'] FROM (SELECT unnest(forecast(i, x, 24)) AS f FROM t)",
    )
    .await;
    let yhat: Vec<f64> = f64_col(&b, 0).into_iter().map(|v| v.expect("yhat")).collect();
    let truth = floats(&s["next_cycle_truth"]);
    let mae = yhat.iter().zip(&truth).map(|(a, b)| (a - b).abs()).sum::<f64>() / truth.len() as f64;
    // noise sd is 1 and amplitude 20: a non-seasonal forecast would have MAE ≈ 12.7
    assert!(mae < 2.5, "seasonal forecast MAE {mae}");
}
