//! The SQL a rule runs over its source table for a range of windows, and its answer read back
//! as breaches per window.

use std::collections::BTreeMap;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};

use super::rule::Condition;
use super::state::{Breach, group_key};
use crate::event::time::rfc3339;

/// `"name"`.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A timestamp literal.
pub fn at(us: i64) -> String {
    format!("TIMESTAMP '{}'", rfc3339(us))
}

/// The source's windows after `cursor_us` (final ones, for updating queries), oldest first.
pub fn windows_sql(table: &str, has_final: bool, cursor_us: Option<i64>, limit: usize) -> String {
    let mut filters = Vec::new();
    if let Some(c) = cursor_us {
        filters.push(format!("window_start > {}", at(c)));
    }
    if has_final {
        filters.push("\"_final\"".to_string());
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filters.join(" AND "))
    };
    format!(
        "SELECT DISTINCT window_start, window_end FROM {}{filter} ORDER BY window_start LIMIT {limit}",
        quote(table)
    )
}

/// The breaching rows (with `window_start`) of windows starting in `[from_us, to_us]`.
/// `width_us` is the windows' length (for the anomaly baseline's reach). Budget rules are
/// asked one window at a time (`from_us == to_us`): their sums run from the period's start.
pub fn breaches_sql(condition: &Condition, group_by: &[String], from_us: i64, to_us: i64, width_us: i64) -> String {
    let groups: Vec<String> = group_by.iter().map(|g| quote(g)).collect();
    match condition {
        Condition::Query(q) => format!(
            "SELECT * FROM ({q}) AS rule_query WHERE window_start >= {} AND window_start <= {}",
            at(from_us),
            at(to_us)
        ),
        Condition::Anomaly {
            table,
            column,
            function,
            threshold,
            baseline,
        } => {
            let reach = from_us.saturating_sub(width_us.saturating_mul(i64::from(*baseline) + 1));
            let partition = if groups.is_empty() {
                String::new()
            } else {
                format!("PARTITION BY {} ", groups.join(", "))
            };
            let selected = groups.iter().map(|g| format!("{g}, ")).collect::<String>();
            format!(
                "SELECT * FROM (SELECT {selected}window_start, CAST({c} AS DOUBLE) AS value, \
                 {function}(CAST({c} AS DOUBLE), {threshold:?}) OVER ({partition}ORDER BY window_start \
                 ROWS BETWEEN {baseline} PRECEDING AND 1 PRECEDING) AS a \
                 FROM {t} WHERE window_start >= {} AND window_start <= {}) AS s \
                 WHERE window_start >= {} AND a['is_anomaly']",
                at(reach),
                at(to_us),
                at(from_us),
                c = quote(column),
                t = quote(table),
            )
        }
        Condition::Budget {
            table,
            column,
            period,
            limit,
            thresholds,
        } => {
            let (start, _) = period.of(to_us);
            let lowest = limit * thresholds.first().copied().unwrap_or(100.0) / 100.0;
            let selected = groups.iter().map(|g| format!("{g}, ")).collect::<String>();
            let group = if groups.is_empty() {
                String::new()
            } else {
                format!(" GROUP BY {}", groups.join(", "))
            };
            format!(
                "SELECT {selected}sum(CAST({c} AS DOUBLE)) AS value FROM {t} \
                 WHERE window_start >= {} AND window_start <= {}{group} HAVING sum(CAST({c} AS DOUBLE)) >= {lowest:?}",
                at(start),
                at(to_us),
                c = quote(column),
                t = quote(table),
            )
        }
    }
}

/// Reads the answer of [`breaches_sql`]: breaches by window start (`window`: the one window a
/// budget rule was asked about; other rules' rows name their window).
pub fn read_breaches(
    condition: &Condition,
    group_by: &[String],
    batches: &[RecordBatch],
    window: Option<i64>,
) -> Result<BTreeMap<i64, Vec<Breach>>, String> {
    let mut out: BTreeMap<i64, Vec<Breach>> = BTreeMap::new();
    for batch in batches {
        if batch.num_rows() == 0 {
            continue;
        }
        let starts = match window {
            Some(w) => {
                std::sync::Arc::new(datafusion::arrow::array::Int64Array::from(vec![w; batch.num_rows()])) as ArrayRef
            }
            None => {
                let starts = batch
                    .column_by_name("window_start")
                    .ok_or("the rule's rows have no window_start column")?;
                let micros =
                    cast(starts, &DataType::Timestamp(TimeUnit::Microsecond, None)).map_err(|e| e.to_string())?;
                cast(&micros, &DataType::Int64).map_err(|e| e.to_string())?
            }
        };
        let starts = starts.as_primitive::<Int64Type>();
        let json = crate::query::format::json_rows(std::slice::from_ref(batch)).map_err(|e| e.to_string())?;
        let rows: Vec<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_slice(&json).map_err(|e| e.to_string())?;
        for (i, row) in rows.iter().enumerate() {
            if starts.is_null(i) {
                continue;
            }
            let mut labels = BTreeMap::new();
            for g in group_by {
                let v = row
                    .get(g)
                    .ok_or_else(|| format!("the rule's rows have no `{g}` column (group_by)"))?;
                labels.insert(g.clone(), label(v));
            }
            let value = row.get("value").and_then(serde_json::Value::as_f64);
            for (labels, detail) in details(condition, labels, value, row, starts.value(i)) {
                out.entry(starts.value(i)).or_default().push(Breach {
                    key: group_key(&labels),
                    labels,
                    value,
                    detail,
                });
            }
        }
    }
    Ok(out)
}

fn label(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The breaches one row stands for (a budget row: one per threshold passed) and their detail.
fn details(
    condition: &Condition,
    labels: BTreeMap<String, String>,
    value: Option<f64>,
    row: &serde_json::Map<String, serde_json::Value>,
    window: i64,
) -> Vec<(BTreeMap<String, String>, String)> {
    match condition {
        Condition::Query(_) => vec![(labels, String::new())],
        Condition::Anomaly { column, .. } => {
            let a = row.get("a");
            let field = |k: &str| a.and_then(|a| a.get(k)).cloned().unwrap_or(serde_json::Value::Null);
            let detail = format!(
                "{column} {} is a {} ({} severity): score {}, baseline {}",
                value.map_or("null".into(), |v| format!("{v:.3}")),
                label(&field("kind")),
                label(&field("severity")),
                field("score").as_f64().map_or("n/a".into(), |s| format!("{s:.2}")),
                field("baseline").as_f64().map_or("n/a".into(), |b| format!("{b:.3}")),
            );
            vec![(labels, detail)]
        }
        Condition::Budget {
            column,
            period,
            limit,
            thresholds,
            ..
        } => {
            let Some(v) = value else { return Vec::new() };
            let (_, period_label) = period.of(window);
            thresholds
                .iter()
                .filter(|t| v >= limit * *t / 100.0)
                .map(|t| {
                    let mut l = labels.clone();
                    l.insert("threshold".into(), format!("{t}%"));
                    l.insert("period".into(), period_label.clone());
                    let detail = format!(
                        "{column} {v:.2} of {limit} ({:.1}%) in {period_label}, past {t}%",
                        100.0 * v / limit
                    );
                    (l, detail)
                })
                .collect()
        }
    }
}
