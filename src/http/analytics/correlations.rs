//! `GET /api/v1/analytics/correlations`: Pearson (`corr`), Spearman (`spearman_corr`) and the
//! lagged cross-correlation (`xcorr`) of two metric series, each summed over its groups per
//! window (or one group, with `filter_a`/`filter_b`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::AppState;
use super::super::error::ApiError;
use super::super::metrics_api::{catalog, rfc3339, run_rows};
use super::super::series::{ParamError, Series, ident};
use super::{integer, metric_series};
use crate::auth::Principal;

/// Parameters of `GET /api/v1/analytics/correlations`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CorrelationParams {
    /// First metric, `<family or table>.<column>`.
    #[param(example = "llm_provider_model.requests")]
    metric_a: String,
    /// Second metric, `<family or table>.<column>`.
    #[param(example = "llm_provider_model.p95_latency_ms")]
    metric_b: String,
    /// Largest lag tried by `xcorr`, in windows, 0..=1000 (default 10).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 1000)]
    max_lag: Option<String>,
    /// Window of both series (default: `metric_a`'s table's, else its family's finest).
    #[param(pattern = "^(1m|5m|15m|1h|6h|1d|1w|1mo)$")]
    window: Option<String>,
    /// Inclusive start (RFC 3339). Default: `end` − 100 windows.
    #[param(format = DateTime)]
    start: Option<String>,
    /// Exclusive end (RFC 3339). Default: now.
    #[param(format = DateTime)]
    end: Option<String>,
    /// Only the rows of `metric_a` whose group column has this value: `column:value`, e.g.
    /// `model:gpt-4o`.
    filter_a: Option<String>,
    /// The same for `metric_b`.
    filter_b: Option<String>,
}

/// `GET /api/v1/analytics/correlations`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "metric_a": "llm_provider_model.requests", "metric_b": "llm_provider_model.p95_latency_ms", "window": "1m",
    "start": "2026-12-06T10:20:00Z", "end": "2026-12-06T12:00:00Z", "points": 100,
    "pearson": 0.41, "spearman": 0.38, "best_lag": 2, "lag_coefficient": 0.57, "sql": "WITH a AS (...) ..."
}))]
pub struct Correlation {
    /// First metric.
    pub metric_a: String,
    /// Second metric.
    pub metric_b: String,
    /// Window of both series.
    pub window: Option<String>,
    /// Start of the range.
    pub start: String,
    /// End of the range.
    pub end: String,
    /// Windows present in both series.
    pub points: i64,
    /// Pearson correlation (null: fewer than 2 points or a constant series).
    pub pearson: Option<f64>,
    /// Spearman rank correlation (null as for Pearson).
    pub spearman: Option<f64>,
    /// The lag (in windows) maximising `|r|` in `[-max_lag, max_lag]`; positive: `metric_b`
    /// follows `metric_a`. Null when no lag has 3 overlapping points.
    pub best_lag: Option<i64>,
    /// Pearson correlation at `best_lag`.
    pub lag_coefficient: Option<f64>,
    /// The statement run.
    pub sql: String,
}

/// The statement correlating the `fa` column of series `a` with the `fb` column of `b`.
pub fn sql(a: &Series<'_>, fa: &str, b: &Series<'_>, fb: &str, max_lag: i64) -> String {
    let (fa, fb) = (ident(fa), ident(fb));
    format!(
        "WITH a AS ({}), b AS ({}) \
         SELECT points, pearson, spearman, x['best_lag'] AS best_lag, x['coefficient'] AS lag_coefficient FROM (\
         SELECT count(*) AS points, corr(a.{fa}, b.{fb}) AS pearson, spearman_corr(a.{fa}, b.{fb}) AS spearman, \
         xcorr(a.\"time\", a.{fa}, b.{fb}, {max_lag}) AS x FROM a JOIN b ON a.\"time\" = b.\"time\") AS c",
        a.sql(),
        b.sql()
    )
}

/// Correlation of two metrics.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/correlations",
    tag = "analytics",
    summary = "Correlation of two metric series",
    description = "Each metric's series is summed over its groups per window with the merge rules (or restricted to one group with `filter_a`/`filter_b`), the two are joined on time, and `corr`, `spearman_corr` and `xcorr` (docs/functions.md) run over the pairs. The range spans at most 10,000 windows. Needs the `read` role.",
    params(CorrelationParams),
    responses(
        (status = 200, description = "The coefficients", body = Correlation),
        (status = 400, description = "A parameter is invalid (named in the message)", body = super::super::openapi::ErrorBody),
        super::super::openapi::QueryErrors,
        super::super::openapi::AuthErrors,
    )
)]
pub async fn correlations(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    params: Result<Query<CorrelationParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let principal = super::super::auth::principal(principal);
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_parameter", e.body_text()))?;
    let max_lag = integer("max_lag", p.max_lag.as_deref(), 10, 0, 1000)?;
    let families = catalog(&state, &principal).await?;
    let filters = |param: &'static str, f: &Option<String>| -> Vec<(&'static str, String)> {
        f.iter().map(|v| (param, v.clone())).collect()
    };
    let fa_filters = filters("filter_a", &p.filter_a);
    let fb_filters = filters("filter_b", &p.filter_b);
    let (a, _, fa) = metric_series(
        &families,
        "metric_a",
        &p.metric_a,
        p.window.as_deref(),
        p.start.as_deref(),
        p.end.as_deref(),
        Some(""),
        fa_filters.iter().map(|(k, v)| (*k, v.as_str())).collect(),
    )?;
    // Metric b at metric a's window and range.
    let window = a.window.map(|w| w.suffix());
    let (start, end) = (rfc3339(a.start), rfc3339(a.end));
    let (b, _, fb) = metric_series(
        &families,
        "metric_b",
        &p.metric_b,
        window.or(p.window.as_deref()),
        Some(&start),
        Some(&end),
        Some(""),
        fb_filters.iter().map(|(k, v)| (*k, v.as_str())).collect(),
    )?;
    if a.window.is_none() != b.window.is_none() {
        return Err(ParamError::new("metric_b", "both metrics need windowed tables of the same window").into());
    }
    let sql = sql(&a, &fa, &b, &fb, max_lag);
    let (rows, _) = run_rows(&state, &principal, &sql, 1).await?;
    let row = rows.into_iter().next().unwrap_or_default();
    let f = |k: &str| row.get(k).and_then(Value::as_f64);
    Ok(Json(Correlation {
        metric_a: p.metric_a.trim().to_string(),
        metric_b: p.metric_b.trim().to_string(),
        window: a.window.map(|w| w.suffix().to_string()),
        start,
        end,
        points: row.get("points").and_then(Value::as_i64).unwrap_or(0),
        pearson: f("pearson"),
        spearman: f("spearman"),
        best_lag: row.get("best_lag").and_then(Value::as_i64),
        lag_coefficient: f("lag_coefficient"),
        sql,
    })
    .into_response())
}
