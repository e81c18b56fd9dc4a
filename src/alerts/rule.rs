//! Alert rules as users write them (`POST /api/v1/alerts/rules`), checked before they are kept.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One rule. Exactly one of `query`, `anomaly` and `budget` says when a group breaches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "latency_spike",
    "anomaly": {"metric": "llm_provider_model_1m.p95_latency_ms", "method": "zscore", "threshold": 3.0, "baseline_windows": 30},
    "for": "0s",
    "severity": "critical",
    "notify": [{"url": "https://hooks.example.com/hub", "headers": {"X-Team": "llm-platform"}}]
}))]
pub struct AlertRule {
    /// Letters, digits and `_`, starting with a letter; unique.
    pub name: String,
    /// SQL over a continuous query's table returning the breaching rows of each window:
    /// `window_start`, the `group_by` columns and a numeric `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Breaches when a metric's value is anomalous against its own recent windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<AnomalySpec>,
    /// Breaches when a metric's sum over a calendar period passes a share of a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpec>,
    /// Columns that tell groups apart (each group has its own state). Anomaly rules default to
    /// every text column of the table; budget rules sum over these.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// How long (event time) a group must breach before it fires: `0s` (default), `2m`, `1h`.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_duration: Option<String>,
    /// `info`, `warning` (default) or `critical`.
    #[serde(default = "default_severity")]
    pub severity: String,
    /// Webhooks told of every `firing` and `resolved` transition.
    #[serde(default)]
    pub notify: Vec<Webhook>,
}

fn default_severity() -> String {
    "warning".into()
}

/// `{metric, method, threshold}`: the `anomaly` SQL functions over a rollup's column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnomalySpec {
    /// `<continuous query>.<numeric column>`, e.g. `llm_provider_model_1m.p95_latency_ms`.
    pub metric: String,
    /// `zscore` (mean and standard deviation, `anomaly`) or `robust` (median and MAD,
    /// `anomaly_robust`).
    #[serde(default = "default_method")]
    pub method: String,
    /// Score (in spreads from the baseline) at which a value is anomalous; default 3.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Earlier windows of the same group the baseline is built from (2..=1000, default 30).
    #[serde(default = "default_baseline")]
    pub baseline_windows: u32,
}

fn default_method() -> String {
    "zscore".into()
}
fn default_threshold() -> f64 {
    3.0
}
fn default_baseline() -> u32 {
    30
}

/// Spend (or any summable metric) over a calendar period against a limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// `<continuous query>.<numeric column>`, e.g. `llm_tenant_model_1h.cost_usd`.
    pub metric: String,
    /// `day`, `week` (from Monday) or `month`, in UTC, of the windows' event time.
    pub period: String,
    /// The budget per group and period.
    pub limit: f64,
    /// Shares of the limit that fire, in percent (default 80, 95, 100); each fires once per
    /// group and period.
    #[serde(default = "default_thresholds")]
    pub thresholds_percent: Vec<f64>,
}

fn default_thresholds() -> Vec<f64> {
    vec![80.0, 95.0, 100.0]
}

/// Where a transition is posted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Extra request headers (e.g. an authorization the receiver wants).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// How a rule decides, once checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The user's SQL.
    Query(String),
    /// Anomaly of `column` in `table`.
    Anomaly {
        /// Source table.
        table: String,
        /// Numeric column.
        column: String,
        /// `anomaly` or `anomaly_robust`.
        function: &'static str,
        /// Score threshold.
        threshold: f64,
        /// Preceding windows in the baseline.
        baseline: u32,
    },
    /// Sum of `column` per period against `limit`.
    Budget {
        /// Source table.
        table: String,
        /// Numeric column.
        column: String,
        /// The period.
        period: Period,
        /// The limit.
        limit: f64,
        /// Ascending shares of the limit, percent.
        thresholds: Vec<f64>,
    },
}

/// A calendar period (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// From midnight.
    Day,
    /// From Monday midnight.
    Week,
    /// From the first of the month.
    Month,
}

impl Period {
    /// Start of the period holding `us` (µs since the epoch), and its label (`2024-05`,
    /// `2024-W18`, `2024-05-01`).
    pub fn of(self, us: i64) -> (i64, String) {
        use chrono::{Datelike, NaiveTime, TimeZone, Utc};
        let t = Utc.timestamp_micros(us).single().unwrap_or_default();
        let date = t.date_naive();
        let start = match self {
            Period::Day => date,
            Period::Week => date - chrono::Duration::days(i64::from(date.weekday().num_days_from_monday())),
            Period::Month => date.with_day(1).unwrap_or(date),
        };
        let label = match self {
            Period::Day => start.format("%Y-%m-%d").to_string(),
            Period::Week => format!("{}-W{:02}", start.iso_week().year(), start.iso_week().week()),
            Period::Month => start.format("%Y-%m").to_string(),
        };
        (start.and_time(NaiveTime::MIN).and_utc().timestamp_micros(), label)
    }
}

/// A rule that passed the checks, with what it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedRule {
    /// As the user wrote it.
    pub rule: AlertRule,
    /// What decides.
    pub condition: Condition,
    /// `for`, in µs of event time.
    pub for_us: i64,
}

const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];

/// `<table>.<column>` with both parts identifiers.
fn metric(field: &str, text: &str) -> Result<(String, String), String> {
    let (table, column) = text
        .split_once('.')
        .ok_or_else(|| format!("{field}: expected `<continuous query>.<column>`, got `{text}`"))?;
    for part in [table, column] {
        if !is_identifier(part) {
            return Err(format!("{field}: `{part}` is not a plain name (letters, digits, `_`)"));
        }
    }
    Ok((table.to_string(), column.to_string()))
}

/// Letters, digits and `_`, starting with a letter or `_`, at most 63 bytes.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl AlertRule {
    /// Checks what can be checked without the tables; errors name the field.
    pub fn check(self) -> Result<CheckedRule, String> {
        if !is_identifier(&self.name) {
            return Err(format!(
                "name: `{}` must be letters, digits and `_` (at most 63), starting with a letter",
                self.name
            ));
        }
        if !SEVERITIES.contains(&self.severity.as_str()) {
            return Err(format!(
                "severity: `{}` must be one of {}",
                self.severity,
                SEVERITIES.join(", ")
            ));
        }
        for g in &self.group_by {
            if !is_identifier(g) {
                return Err(format!("group_by: `{g}` is not a plain column name"));
            }
        }
        if self.notify.len() > 10 {
            return Err("notify: at most 10 webhooks per rule".into());
        }
        for (i, w) in self.notify.iter().enumerate() {
            let url = reqwest::Url::parse(&w.url).map_err(|e| format!("notify[{i}].url: `{}`: {e}", w.url))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!(
                    "notify[{i}].url: only http and https URLs, not `{}`",
                    url.scheme()
                ));
            }
            for (k, v) in &w.headers {
                if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                    || reqwest::header::HeaderValue::from_str(v).is_err()
                {
                    return Err(format!("notify[{i}].headers: `{k}` is not a valid header"));
                }
            }
        }
        let for_us = match self.for_duration.as_deref().map(str::trim) {
            None | Some("0" | "0s" | "0m") => 0,
            Some(text) => {
                let d = crate::config::duration::parse_duration(text).map_err(|e| format!("for: {e}"))?;
                i64::try_from(d.as_micros()).map_err(|_| "for: out of range".to_string())?
            }
        };
        let condition = match (&self.query, &self.anomaly, &self.budget) {
            (Some(q), None, None) => {
                if q.trim().is_empty() || q.len() > 10_000 {
                    return Err("query: must be one SELECT of at most 10,000 characters".into());
                }
                Condition::Query(q.clone())
            }
            (None, Some(a), None) => {
                let (table, column) = metric("anomaly.metric", &a.metric)?;
                let function = match a.method.as_str() {
                    "zscore" => "anomaly",
                    "robust" => "anomaly_robust",
                    other => return Err(format!("anomaly.method: `{other}` must be zscore or robust")),
                };
                if !(a.threshold.is_finite() && a.threshold > 0.0) {
                    return Err("anomaly.threshold: must be a positive number".into());
                }
                if !(2..=1000).contains(&a.baseline_windows) {
                    return Err("anomaly.baseline_windows: must be between 2 and 1000".into());
                }
                Condition::Anomaly {
                    table,
                    column,
                    function,
                    threshold: a.threshold,
                    baseline: a.baseline_windows,
                }
            }
            (None, None, Some(b)) => {
                let (table, column) = metric("budget.metric", &b.metric)?;
                let period = match b.period.as_str() {
                    "day" => Period::Day,
                    "week" => Period::Week,
                    "month" => Period::Month,
                    other => return Err(format!("budget.period: `{other}` must be day, week or month")),
                };
                if !(b.limit.is_finite() && b.limit > 0.0) {
                    return Err("budget.limit: must be a positive number".into());
                }
                let mut thresholds = b.thresholds_percent.clone();
                if thresholds.is_empty()
                    || thresholds.len() > 10
                    || thresholds.iter().any(|t| !(t.is_finite() && *t > 0.0))
                {
                    return Err("budget.thresholds_percent: 1 to 10 positive percentages".into());
                }
                thresholds.sort_by(f64::total_cmp);
                thresholds.dedup();
                Condition::Budget {
                    table,
                    column,
                    period,
                    limit: b.limit,
                    thresholds,
                }
            }
            _ => return Err("exactly one of query, anomaly and budget says when the rule breaches".into()),
        };
        Ok(CheckedRule {
            rule: self,
            condition,
            for_us,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: serde_json::Value) -> Result<CheckedRule, String> {
        serde_json::from_value::<AlertRule>(json)
            .map_err(|e| e.to_string())?
            .check()
    }

    #[test]
    fn rules_are_checked_field_by_field() {
        let ok = rule(serde_json::json!({
            "name": "spike", "anomaly": {"metric": "t_1m.p95"}, "for": "2m", "notify": [{"url": "http://127.0.0.1:9/x"}]
        }))
        .expect("valid");
        assert_eq!(ok.for_us, 120_000_000);
        assert!(matches!(
            ok.condition,
            Condition::Anomaly {
                function: "anomaly",
                baseline: 30,
                ..
            }
        ));
        for (json, want) in [
            (serde_json::json!({"name": "1x", "query": "SELECT 1"}), "name:"),
            (serde_json::json!({"name": "a"}), "exactly one of"),
            (
                serde_json::json!({"name": "a", "query": "x", "budget": {"metric": "t.c", "period": "day", "limit": 1}}),
                "exactly one of",
            ),
            (
                serde_json::json!({"name": "a", "anomaly": {"metric": "nodot"}}),
                "anomaly.metric",
            ),
            (
                serde_json::json!({"name": "a", "anomaly": {"metric": "t.c; drop"}}),
                "anomaly.metric",
            ),
            (
                serde_json::json!({"name": "a", "anomaly": {"metric": "t.c", "method": "magic"}}),
                "anomaly.method",
            ),
            (
                serde_json::json!({"name": "a", "anomaly": {"metric": "t.c", "threshold": -1}}),
                "anomaly.threshold",
            ),
            (
                serde_json::json!({"name": "a", "budget": {"metric": "t.c", "period": "year", "limit": 1}}),
                "budget.period",
            ),
            (
                serde_json::json!({"name": "a", "budget": {"metric": "t.c", "period": "day", "limit": 0}}),
                "budget.limit",
            ),
            (
                serde_json::json!({"name": "a", "query": "SELECT 1", "for": "soon"}),
                "for:",
            ),
            (
                serde_json::json!({"name": "a", "query": "SELECT 1", "severity": "meh"}),
                "severity:",
            ),
            (
                serde_json::json!({"name": "a", "query": "SELECT 1", "notify": [{"url": "file:///etc/passwd"}]}),
                "notify[0].url",
            ),
            (
                serde_json::json!({"name": "a", "query": "SELECT 1", "group_by": ["a b"]}),
                "group_by:",
            ),
        ] {
            let e = rule(json.clone()).expect_err(&json.to_string());
            assert!(e.starts_with(want) || e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn periods_start_in_utc() {
        // 2024-05-15T13:45:00Z, a Wednesday.
        let us = 1_715_780_700_000_000;
        assert_eq!(Period::Day.of(us), (1_715_731_200_000_000, "2024-05-15".into()));
        assert_eq!(Period::Week.of(us), (1_715_558_400_000_000, "2024-W20".into()));
        assert_eq!(Period::Month.of(us), (1_714_521_600_000_000, "2024-05".into()));
    }
}
