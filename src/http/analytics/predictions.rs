//! `GET /api/v1/analytics/predictions` (`forecast()` over a metric series per group) and
//! `POST /api/v1/analytics/predict` (`forecast()` over posted points).

use axum::Json;
use axum::extract::Query;
use axum::extract::State;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::super::AppState;
use super::super::error::ApiError;
use super::super::metrics_api::{Row, catalog, run_rows};
use super::super::series::{self, ParamError, Series, ident, parse_time, string_lit};
use super::{MAX_ROWS, group_list, integer, metric_series, number};
use crate::auth::Principal;

/// Longest horizon (steps) of one forecast.
pub const MAX_HORIZON: i64 = 1_000;
/// Most points of a posted series.
pub const MAX_POSTED_POINTS: usize = 10_000;
/// Fewest points `forecast()` fits a model on.
pub const MIN_POINTS: usize = 10;

/// The model settings of a forecast.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Steps ahead.
    pub horizon: i64,
    /// `auto`, `ets` or `mstl:P[,P2...]`.
    pub method: String,
    /// Prediction-interval coverage.
    pub level: f64,
}

impl Model {
    /// Checks horizon (1..=1000, default 10), method and level (0 < level < 1, default 0.95).
    pub fn parse(horizon: Option<i64>, method: Option<&str>, level: Option<f64>) -> Result<Self, ParamError> {
        let horizon = horizon.unwrap_or(10);
        if !(1..=MAX_HORIZON).contains(&horizon) {
            return Err(ParamError::new(
                "horizon",
                format!("must be between 1 and {MAX_HORIZON}"),
            ));
        }
        let method = method.map_or("auto", str::trim).to_ascii_lowercase();
        let valid = match method.as_str() {
            "auto" | "ets" => true,
            m => m.strip_prefix("mstl:").is_some_and(|periods| {
                !periods.is_empty()
                    && periods
                        .split(',')
                        .all(|p| p.trim().parse::<u32>().is_ok_and(|p| (2..=5000).contains(&p)))
            }),
        };
        if !valid {
            return Err(ParamError::new(
                "method",
                format!("unknown method {method:?}: auto, ets or mstl:P[,P2...] (season lengths 2..=5000 in rows)"),
            ));
        }
        let level = level.unwrap_or(0.95);
        if !(level > 0.0 && level < 1.0) {
            return Err(ParamError::new("level", "must be between 0 and 1 (exclusive)"));
        }
        Ok(Self { horizon, method, level })
    }

    /// `forecast(ts, value, horizon, 'method', level)`.
    fn call(&self, ts: &str, value: &str) -> String {
        format!(
            "forecast({ts}, {value}, {}, {}, {})",
            self.horizon,
            string_lit(&self.method),
            self.level
        )
    }
}

/// The statement forecasting `field` of the series per group.
pub fn series_sql(series: &Series<'_>, field: &str, model: &Model) -> String {
    let groups = group_list(&series.group_by);
    let group_by = if series.group_by.is_empty() {
        String::new()
    } else {
        let cols: Vec<String> = series.group_by.iter().map(|g| ident(g)).collect();
        format!(" GROUP BY {}", cols.join(", "))
    };
    // By time first: ordered by the group columns first, DataFusion 55 drops `time` from
    // the sort (it takes the groups, a key of the aggregate, as a key of the unnested rows).
    let order: Vec<String> = std::iter::once(ident(series::TIME))
        .chain(series.group_by.iter().map(|g| ident(g)))
        .collect();
    format!(
        "SELECT {groups}f['ts'] AS \"time\", f['yhat'] AS \"yhat\", f['lower'] AS \"lower\", f['upper'] AS \"upper\" \
         FROM (SELECT {groups}unnest({}) AS f FROM ({}) AS s{group_by}) AS x ORDER BY {}",
        model.call("\"time\"", &ident(field)),
        series.sql(),
        order.join(", ")
    )
}

/// The statement forecasting posted points (`(µs since the epoch, value)`), passed as one
/// string literal (no per-point tokens, whatever the count).
pub fn points_sql(points: &[(i64, f64)], model: &Model) -> String {
    let packed: Vec<String> = points.iter().map(|(ts, v)| format!("{ts}:{v}")).collect();
    let ts = "arrow_cast(to_timestamp_micros(CAST(split_part(p, ':', 1) AS BIGINT)), 'Timestamp(Microsecond, Some(\"UTC\"))')";
    let value = "CAST(split_part(p, ':', 2) AS DOUBLE)";
    format!(
        "SELECT f['ts'] AS \"time\", f['yhat'] AS \"yhat\", f['lower'] AS \"lower\", f['upper'] AS \"upper\" \
         FROM (SELECT unnest({}) AS f FROM (SELECT unnest(string_to_array({}, ';')) AS p) AS s) AS x ORDER BY \"time\"",
        model.call(ts, value),
        string_lit(&packed.join(";"))
    )
}

/// Parameters of `GET /api/v1/analytics/predictions`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PredictionParams {
    /// `<family or table>.<numeric column>`, e.g. `llm_provider_model.requests`.
    #[param(example = "llm_provider_model.requests")]
    metric: String,
    /// Window of the series (as for timeseries).
    #[param(pattern = "^(1m|5m|15m|1h|6h|1d|1w|1mo)$")]
    window: Option<String>,
    /// Inclusive start of the history (RFC 3339). Default: `end` − 100 windows.
    #[param(format = DateTime)]
    start: Option<String>,
    /// Exclusive end of the history (RFC 3339). Default: now.
    #[param(format = DateTime)]
    end: Option<String>,
    /// Steps (windows) ahead, 1..=1000 (default 10).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000)]
    horizon: Option<String>,
    /// `auto` (default), `ets` or `mstl:P[,P2...]`.
    #[param(pattern = "^(auto|ets|mstl:[0-9]+(,[0-9]+)*)$")]
    method: Option<String>,
    /// Prediction-interval coverage, 0 < level < 1 (default 0.95).
    #[param(value_type = Option<f64>, exclusive_minimum = 0, exclusive_maximum = 1)]
    level: Option<String>,
    /// Group columns (comma list; default all of the table's; empty: totals). One forecast
    /// per group.
    group_by: Option<String>,
}

/// A forecast.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "metric": "llm_provider_model.requests", "window": "1m", "horizon": 2, "method": "auto", "level": 0.95, "group_by": ["model"],
    "sql": "SELECT ...",
    "predictions": [{"model": "gpt-4o", "time": "2026-12-06T12:00:00Z", "yhat": 31.2, "lower": 22.9, "upper": 39.5}],
    "truncated": false
}))]
pub struct Predictions {
    /// The metric (`null` for posted points).
    pub metric: Option<String>,
    /// Window of the series (`null` for posted points).
    pub window: Option<String>,
    /// Steps ahead.
    pub horizon: i64,
    /// The method.
    pub method: String,
    /// Interval coverage.
    pub level: f64,
    /// The group columns of each prediction.
    pub group_by: Vec<String>,
    /// The statement run (the same as through `/api/v1/sql`).
    pub sql: String,
    /// `{<group columns>, "time", "yhat", "lower", "upper"}` by time then group. A group with
    /// fewer than 10 points has none.
    #[schema(value_type = Vec<Object>)]
    pub predictions: Vec<Row>,
    /// More than 10,000 rows: the first 10,000 are returned.
    pub truncated: bool,
}

/// Forecast of a metric.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/predictions",
    tag = "analytics",
    summary = "Forecast of a metric series",
    description = "`forecast()` (docs/functions.md#forecast) over the metric's series per group: `horizon` windows ahead with a prediction interval. The history spans at most 10,000 windows; at most 10,000 rows are returned. Needs the `read` role.",
    params(PredictionParams),
    responses(
        (status = 200, description = "The forecast", body = Predictions),
        (status = 400, description = "A parameter is invalid (named in the message), or the model cannot be fitted", body = super::super::openapi::ErrorBody),
        super::super::openapi::QueryErrors,
        super::super::openapi::AuthErrors,
    )
)]
pub async fn predictions(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    params: Result<Query<PredictionParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let principal = super::super::auth::principal(principal);
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_parameter", e.body_text()))?;
    let horizon = integer("horizon", p.horizon.as_deref(), 10, i64::MIN, i64::MAX)?;
    let level = number("level", p.level.as_deref(), 0.95, f64::MIN, f64::MAX)?;
    let model = Model::parse(Some(horizon), p.method.as_deref(), Some(level))?;
    let families = catalog(&state, &principal).await?;
    let (series, _, field) = metric_series(
        &families,
        "metric",
        &p.metric,
        p.window.as_deref(),
        p.start.as_deref(),
        p.end.as_deref(),
        p.group_by.as_deref(),
        Vec::new(),
    )?;
    let sql = series_sql(&series, &field, &model);
    let (predictions, truncated) = run_rows(&state, &principal, &sql, MAX_ROWS).await?;
    Ok(Json(Predictions {
        metric: Some(p.metric.trim().to_string()),
        window: series.window.map(|w| w.suffix().to_string()),
        horizon: model.horizon,
        method: model.method,
        level: model.level,
        group_by: series.group_by.clone(),
        sql,
        predictions,
        truncated,
    })
    .into_response())
}

/// One posted point.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// Time (RFC 3339).
    #[schema(format = DateTime)]
    pub ts: String,
    /// Value.
    pub value: f64,
}

/// Body of `POST /api/v1/analytics/predict`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "points": [
        {"ts": "2026-12-06T10:00:00Z", "value": 10.0}, {"ts": "2026-12-06T10:01:00Z", "value": 12.0},
        {"ts": "2026-12-06T10:02:00Z", "value": 11.0}, {"ts": "2026-12-06T10:03:00Z", "value": 13.0},
        {"ts": "2026-12-06T10:04:00Z", "value": 12.5}, {"ts": "2026-12-06T10:05:00Z", "value": 14.0},
        {"ts": "2026-12-06T10:06:00Z", "value": 13.5}, {"ts": "2026-12-06T10:07:00Z", "value": 15.0},
        {"ts": "2026-12-06T10:08:00Z", "value": 14.5}, {"ts": "2026-12-06T10:09:00Z", "value": 16.0}
    ],
    "horizon": 3, "method": "ets", "level": 0.9
}))]
pub struct PredictRequest {
    /// 10 to 10,000 points, in any order (ordered by `ts`; evenly spaced gives meaningful steps).
    #[schema(min_items = 10, max_items = 10000)]
    pub points: Vec<Point>,
    /// Steps ahead, 1..=1000 (default 10).
    #[schema(minimum = 1, maximum = 1000)]
    pub horizon: Option<i64>,
    /// `auto` (default), `ets` or `mstl:P[,P2...]`.
    #[schema(pattern = "^(auto|ets|mstl:[0-9]+(,[0-9]+)*)$")]
    pub method: Option<String>,
    /// Prediction-interval coverage, 0 < level < 1 (default 0.95).
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    pub level: Option<f64>,
}

/// Forecast of posted points.
#[utoipa::path(
    post,
    path = "/api/v1/analytics/predict",
    tag = "analytics",
    summary = "Forecast of a posted series",
    description = "`forecast()` (docs/functions.md#forecast) over the posted points (10 to 10,000), run through the query engine like any SQL. Output times continue the series' median spacing. Needs the `read` role.",
    request_body = PredictRequest,
    responses(
        (status = 200, description = "The forecast", body = Predictions),
        (status = 400, description = "A field is invalid (named in the message), or the model cannot be fitted", body = super::super::openapi::ErrorBody),
        (status = 408, description = "Took longer than `query.timeout_secs`", body = super::super::openapi::ErrorBody),
        (status = 413, description = "Body larger than `http.max_body_bytes`", body = super::super::openapi::ErrorBody),
        (status = 415, description = "Not `Content-Type: application/json`", body = super::super::openapi::ErrorBody),
        (status = 422, description = "JSON that does not match the body's schema, or a memory or result-size limit reached", body = super::super::openapi::ErrorBody),
        super::super::openapi::AuthErrors,
    )
)]
pub async fn predict(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    body: Result<Json<PredictRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let principal = super::super::auth::principal(principal);
    let Json(req) = body.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let model = Model::parse(req.horizon, req.method.as_deref(), req.level)?;
    if !(MIN_POINTS..=MAX_POSTED_POINTS).contains(&req.points.len()) {
        return Err(ParamError::new(
            "points",
            format!(
                "{} points: between {MIN_POINTS} and {MAX_POSTED_POINTS} are needed",
                req.points.len()
            ),
        )
        .into());
    }
    let mut points = Vec::with_capacity(req.points.len());
    for (i, p) in req.points.iter().enumerate() {
        let ts =
            parse_time("points", &p.ts).map_err(|e| ParamError::new("points", format!("[{i}].ts: {}", e.message)))?;
        if !p.value.is_finite() {
            return Err(ParamError::new("points", format!("[{i}].value is not a finite number")).into());
        }
        points.push((ts.timestamp_micros(), p.value));
    }
    let sql = points_sql(&points, &model);
    let (predictions, truncated) = run_rows(&state, &principal, &sql, MAX_ROWS).await?;
    Ok(Json(Predictions {
        metric: None,
        window: None,
        horizon: model.horizon,
        method: model.method,
        level: model.level,
        group_by: Vec::new(),
        sql: if sql.len() > 2_000 {
            format!(
                "{}... ({} bytes)",
                sql.chars().take(2_000).collect::<String>(),
                sql.len()
            )
        } else {
            sql
        },
        predictions,
        truncated,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_parameters_are_checked() {
        let m = Model::parse(None, None, None).expect("defaults");
        assert_eq!((m.horizon, m.method.as_str(), m.level), (10, "auto", 0.95));
        assert_eq!(Model::parse(Some(0), None, None).expect_err("h").param, "horizon");
        assert_eq!(Model::parse(Some(1001), None, None).expect_err("h").param, "horizon");
        assert_eq!(
            Model::parse(None, Some("prophet"), None).expect_err("m").param,
            "method"
        );
        assert_eq!(Model::parse(None, Some("mstl:"), None).expect_err("m").param, "method");
        assert_eq!(
            Model::parse(None, Some("mstl:24,x"), None).expect_err("m").param,
            "method"
        );
        assert_eq!(
            Model::parse(None, Some("ets'); --"), None).expect_err("m").param,
            "method"
        );
        assert!(Model::parse(None, Some("MSTL:24,168"), None).is_ok());
        assert_eq!(Model::parse(None, None, Some(1.0)).expect_err("l").param, "level");
        assert_eq!(Model::parse(None, None, Some(f64::NAN)).expect_err("l").param, "level");
    }

    #[test]
    fn posted_points_are_one_literal() {
        let model = Model::parse(Some(3), Some("ets"), Some(0.9)).expect("model");
        let sql = points_sql(&[(1_767_225_600_000_000, -1.5), (1_767_225_660_000_000, 2.0)], &model);
        assert!(sql.contains("'1767225600000000:-1.5;1767225660000000:2'"), "{sql}");
        assert!(sql.contains(", 3, 'ets', 0.9)"), "{sql}");
    }
}
