//! `GET /api/v1/analytics/anomalies`: `anomaly`, `anomaly_robust` or `anomaly_seasonal` over a
//! metric series, the rows they flag.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::super::AppState;
use super::super::error::ApiError;
use super::super::metrics_api::{Row, catalog, rfc3339, run_rows};
use super::super::series::{self, ParamError, Series, ident, string_lit};
use super::{MAX_ROWS, group_list, integer, metric_series, number, partition_by};
use crate::auth::Principal;

/// Severities of the anomaly functions, lowest first.
const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

/// Parameters of `GET /api/v1/analytics/anomalies`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnomalyParams {
    /// `<family or table>.<numeric column>`, e.g. `llm_provider_model.p95_latency_ms`.
    #[param(example = "llm_provider_model.p95_latency_ms")]
    metric: String,
    /// Window of the series (as for timeseries; merged from a finer table when needed).
    #[param(pattern = "^(1m|5m|15m|1h|6h|1d|1w|1mo)$")]
    window: Option<String>,
    /// Inclusive start (RFC 3339). Default: `end` − 100 windows.
    #[param(format = DateTime)]
    start: Option<String>,
    /// Exclusive end (RFC 3339). Default: now.
    #[param(format = DateTime)]
    end: Option<String>,
    /// `|score|` at which a value is an anomaly, 0 < t ≤ 1000 (default 3).
    #[param(value_type = Option<f64>, exclusive_minimum = 0, maximum = 1000)]
    threshold: Option<String>,
    /// `zscore` (`anomaly`: mean and standard deviation of the baseline, default), `robust`
    /// (`anomaly_robust`: median and MAD) or `seasonal` (`anomaly_seasonal`, needs `period`).
    #[param(pattern = "^(zscore|robust|seasonal)$")]
    method: Option<String>,
    /// Season length in windows for `method=seasonal`, 2..=5000.
    #[param(value_type = Option<i64>, minimum = 2, maximum = 5000)]
    period: Option<String>,
    /// Trailing baseline in windows for `zscore`/`robust`, 2..=10000 (default 60): `ROWS
    /// BETWEEN n PRECEDING AND 1 PRECEDING`.
    #[param(value_type = Option<i64>, minimum = 2, maximum = 10000)]
    baseline_windows: Option<String>,
    /// Lowest severity returned: `low` (default), `medium`, `high` or `critical`.
    #[param(pattern = "^(low|medium|high|critical)$")]
    severity: Option<String>,
    /// Group columns (comma list; default all of the table's; empty: totals). Each group is
    /// its own series (`PARTITION BY`).
    group_by: Option<String>,
}

/// `GET /api/v1/analytics/anomalies`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "metric": "llm_provider_model.p95_latency_ms", "window": "1m", "source_table": "llm_provider_model_1m", "merged_from": null,
    "method": "zscore", "threshold": 3.0, "start": "2026-12-06T10:20:00Z", "end": "2026-12-06T12:00:00Z", "group_by": ["provider", "model"],
    "sql": "SELECT ...",
    "anomalies": [{"time": "2026-12-06T11:30:00Z", "provider": "openai", "model": "gpt-4o", "value": 9120.5, "score": 28.2, "baseline": 1850.3, "spread": 257.6, "kind": "spike", "severity": "critical"}],
    "truncated": false
}))]
pub struct Anomalies {
    /// The metric.
    pub metric: String,
    /// Window of the series.
    pub window: Option<String>,
    /// The table read.
    pub source_table: String,
    /// The finer table the series was merged from (null when read as stored).
    pub merged_from: Option<String>,
    /// `zscore`, `robust` or `seasonal`.
    pub method: String,
    /// The threshold.
    pub threshold: f64,
    /// Start of the range.
    pub start: String,
    /// End of the range.
    pub end: String,
    /// The group columns of each anomaly.
    pub group_by: Vec<String>,
    /// The statement run (the same as through `/api/v1/sql`).
    pub sql: String,
    /// `{"time", <group columns>, "value", "score", "baseline", "spread", "kind", "severity"}`
    /// of every flagged window, by time then group. `kind`: `high`, `spike`, `low`, `drop`;
    /// `severity`: `low`, `medium`, `high`, `critical` (docs/functions.md#anomaly).
    #[schema(value_type = Vec<Object>)]
    pub anomalies: Vec<Row>,
    /// More than 10,000 anomalies: the first 10,000 are returned.
    pub truncated: bool,
}

/// What the anomaly statement needs besides the series.
#[derive(Debug, Clone, PartialEq)]
pub struct Detector {
    /// `zscore`, `robust` or `seasonal`.
    pub method: &'static str,
    /// The threshold.
    pub threshold: f64,
    /// Season length (seasonal).
    pub period: Option<i64>,
    /// Trailing baseline rows (zscore, robust).
    pub baseline: Option<i64>,
    /// Lowest severity returned.
    pub min_severity: &'static str,
}

impl Detector {
    /// Checks the detector parameters.
    pub fn parse(
        method: Option<&str>,
        threshold: Option<&str>,
        period: Option<&str>,
        baseline: Option<&str>,
        severity: Option<&str>,
    ) -> Result<Self, ParamError> {
        let method = match method.map(str::trim).unwrap_or("zscore") {
            "zscore" => "zscore",
            "robust" => "robust",
            "seasonal" => "seasonal",
            other => {
                return Err(ParamError::new(
                    "method",
                    format!("unknown method {other:?}: zscore, robust or seasonal"),
                ));
            }
        };
        let threshold = number("threshold", threshold, 3.0, f64::MIN_POSITIVE, 1000.0)?;
        let (period, baseline) = if method == "seasonal" {
            if baseline.is_some() {
                return Err(ParamError::new(
                    "baseline_windows",
                    "not used by method=seasonal (its baseline is the whole series)",
                ));
            }
            let period = period.ok_or_else(|| ParamError::new("period", "required with method=seasonal"))?;
            (Some(integer("period", Some(period), 0, 2, 5000)?), None)
        } else {
            if period.is_some() {
                return Err(ParamError::new("period", "only used by method=seasonal"));
            }
            (None, Some(integer("baseline_windows", baseline, 60, 2, 10_000)?))
        };
        let min_severity = match severity.map(str::trim) {
            None => "low",
            Some(s) => SEVERITIES.into_iter().find(|x| *x == s).ok_or_else(|| {
                ParamError::new(
                    "severity",
                    format!("unknown severity {s:?}: low, medium, high or critical"),
                )
            })?,
        };
        Ok(Self {
            method,
            threshold,
            period,
            baseline,
            min_severity,
        })
    }

    /// The statement: the series, the anomaly function over it per group, the flagged rows.
    pub fn sql(&self, series: &Series<'_>, field: &str) -> String {
        let groups = group_list(&series.group_by);
        let f = ident(field);
        let t = self.threshold;
        let call = match (self.method, self.period, self.baseline) {
            ("seasonal", Some(p), _) => format!(
                "anomaly_seasonal({f}, {t}, {p}) OVER ({}ORDER BY \"time\")",
                partition_by(&series.group_by)
            ),
            (method, _, b) => format!(
                "{}({f}, {t}) OVER ({}ORDER BY \"time\" ROWS BETWEEN {} PRECEDING AND 1 PRECEDING)",
                if method == "robust" {
                    "anomaly_robust"
                } else {
                    "anomaly"
                },
                partition_by(&series.group_by),
                b.unwrap_or(60)
            ),
        };
        let severities: Vec<String> = SEVERITIES
            .iter()
            .skip_while(|s| **s != self.min_severity)
            .map(|s| string_lit(s))
            .collect();
        let order: Vec<String> = std::iter::once(ident(series::TIME))
            .chain(series.group_by.iter().map(|g| ident(g)))
            .collect();
        format!(
            "SELECT \"time\", {groups}\"value\", a['score'] AS \"score\", a['baseline'] AS \"baseline\", a['spread'] AS \"spread\", a['kind'] AS \"kind\", a['severity'] AS \"severity\" \
             FROM (SELECT \"time\", {groups}{f} AS \"value\", {call} AS a FROM ({}) AS s) AS x \
             WHERE a['is_anomaly'] AND a['severity'] IN ({}) ORDER BY {}",
            series.sql(),
            severities.join(", "),
            order.join(", ")
        )
    }
}

/// Anomalies of a metric.
#[utoipa::path(
    get,
    path = "/api/v1/analytics/anomalies",
    tag = "analytics",
    summary = "Anomalies of a metric series",
    description = "Runs `anomaly` (zscore), `anomaly_robust` or `anomaly_seasonal` (docs/functions.md) over the metric's series per group and returns the windows flagged, with their score, baseline, kind and severity; the answer is that of the statement returned in `sql` run through `/api/v1/sql`. The range spans at most 10,000 windows; at most 10,000 anomalies are returned. Needs the `read` role.",
    params(AnomalyParams),
    responses(
        (status = 200, description = "The flagged windows", body = Anomalies),
        (status = 400, description = "A parameter is invalid (named in the message)", body = super::super::openapi::ErrorBody),
        super::super::openapi::QueryErrors,
        super::super::openapi::AuthErrors,
    )
)]
pub async fn anomalies(
    State(state): State<AppState>,
    principal: Option<axum::Extension<Principal>>,
    params: Result<Query<AnomalyParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let principal = super::super::auth::principal(principal);
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_parameter", e.body_text()))?;
    let detector = Detector::parse(
        p.method.as_deref(),
        p.threshold.as_deref(),
        p.period.as_deref(),
        p.baseline_windows.as_deref(),
        p.severity.as_deref(),
    )?;
    let families = catalog(&state, &principal).await?;
    let (series, merged, field) = metric_series(
        &families,
        "metric",
        &p.metric,
        p.window.as_deref(),
        p.start.as_deref(),
        p.end.as_deref(),
        p.group_by.as_deref(),
        Vec::new(),
    )?;
    let sql = detector.sql(&series, &field);
    let (anomalies, truncated) = run_rows(&state, &principal, &sql, MAX_ROWS).await?;
    Ok(Json(Anomalies {
        metric: p.metric.trim().to_string(),
        window: series.window.map(|w| w.suffix().to_string()),
        source_table: series.table.name.clone(),
        merged_from: merged.then(|| series.table.name.clone()),
        method: detector.method.to_string(),
        threshold: detector.threshold,
        start: rfc3339(series.start),
        end: rfc3339(series.end),
        group_by: series.group_by.clone(),
        sql,
        anomalies,
        truncated,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detector_parameters_are_checked() {
        let ok = Detector::parse(None, None, None, None, None).expect("defaults");
        assert_eq!(
            (ok.method, ok.threshold, ok.baseline, ok.min_severity),
            ("zscore", 3.0, Some(60), "low")
        );
        let err = |m, t, p, b, s| Detector::parse(m, t, p, b, s).expect_err("refused").param;
        assert_eq!(err(Some("magic"), None, None, None, None), "method");
        assert_eq!(err(None, Some("-1"), None, None, None), "threshold");
        assert_eq!(err(None, Some("abc"), None, None, None), "threshold");
        assert_eq!(err(Some("seasonal"), None, None, None, None), "period");
        assert_eq!(err(Some("seasonal"), None, Some("1"), None, None), "period");
        assert_eq!(
            err(Some("seasonal"), None, Some("24"), Some("10"), None),
            "baseline_windows"
        );
        assert_eq!(err(None, None, Some("24"), None, None), "period");
        assert_eq!(err(None, None, None, Some("1"), None), "baseline_windows");
        assert_eq!(err(None, None, None, None, Some("warning")), "severity");
        let seasonal = Detector::parse(Some("seasonal"), Some("4"), Some("24"), None, Some("high")).expect("ok");
        assert_eq!((seasonal.period, seasonal.min_severity), (Some(24), "high"));
    }
}
