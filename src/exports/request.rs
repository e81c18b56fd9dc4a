//! What an export asks for, validated before anything runs.

use serde::{Deserialize, Serialize};

use super::ExportError;

/// Body of `POST /api/v1/exports`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"table": "events", "start": "2026-12-01T00:00:00Z", "end": "2026-12-02T00:00:00Z", "destination": "file:///var/lib/llm-analytics-hub/exports/", "partition_by": ["date", "model"]}))]
pub struct ExportRequest {
    /// `events`, `late_events` or a continuous query's output table (with `start`/`end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Inclusive lower bound of the time column (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Exclusive upper bound of the time column (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// A read-only query instead of `table` (the rules of `POST /api/v1/sql`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// `file:///absolute/dir/` or `s3://bucket/prefix/`.
    pub destination: String,
    /// Hive-style partition columns; `date` is the day of the time column.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// `zstd` (default), `snappy` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Rows per Parquet row group (default 122,880).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_group_rows: Option<usize>,
}

/// The time column of a Hub table, if it has one the export knows.
pub fn time_column_of(table: &str) -> &'static str {
    match table {
        crate::event::EVENTS_TABLE => "timestamp",
        crate::stream::late::LATE_EVENTS_TABLE => "event_time",
        _ => "window_start",
    }
}

/// Parquet compression of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd level 3.
    Zstd,
    /// Snappy.
    Snappy,
    /// None.
    None,
}

/// A request checked and turned into the query to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The statement whose rows are exported.
    pub sql: String,
    /// Column the manifest reports min/max of, when the result has it.
    pub time_column: Option<String>,
    /// Partition columns (`date` is `__hub_date`, computed in `sql`).
    pub partition_by: Vec<String>,
    /// Compression.
    pub compression: Compression,
    /// Rows per row group.
    pub row_group_rows: usize,
}

/// Name of the computed day column used for `partition_by = ["date"]`.
pub const DATE_COLUMN: &str = "__hub_date";

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn timestamp(field: &str, value: &str) -> Result<String, ExportError> {
    let t = chrono::DateTime::parse_from_rfc3339(value)
        .map_err(|e| ExportError::Invalid(format!("`{field}` is not an RFC 3339 time ({value}): {e}")))?;
    Ok(t.with_timezone(&chrono::Utc)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string())
}

impl ExportRequest {
    /// Checks the request and builds the query. `known_table` tells whether a table exists.
    pub fn plan(&self, known_table: impl Fn(&str) -> bool) -> Result<Plan, ExportError> {
        let compression = match self.compression.as_deref().unwrap_or("zstd") {
            "zstd" => Compression::Zstd,
            "snappy" => Compression::Snappy,
            "none" | "uncompressed" => Compression::None,
            other => {
                return Err(ExportError::Invalid(format!(
                    "`compression` must be zstd, snappy or none, not `{other}`"
                )));
            }
        };
        let row_group_rows = self.row_group_rows.unwrap_or(122_880);
        if !(1_000..=10_000_000).contains(&row_group_rows) {
            return Err(ExportError::Invalid(
                "`row_group_rows` must be between 1,000 and 10,000,000".into(),
            ));
        }
        for p in &self.partition_by {
            if p.is_empty() || p.len() > 64 || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ExportError::Invalid(format!(
                    "`partition_by` entry `{p}` is not a column name"
                )));
            }
        }
        if self.partition_by.len() > 4 {
            return Err(ExportError::Invalid("at most 4 `partition_by` columns".into()));
        }
        let (source, time_column) = match (&self.table, &self.sql) {
            (Some(table), None) => {
                if !known_table(table) {
                    return Err(ExportError::Invalid(format!("no table `{table}`")));
                }
                let tc = time_column_of(table);
                let mut filters = Vec::new();
                if let Some(start) = &self.start {
                    filters.push(format!("{} >= TIMESTAMP '{}'", quote(tc), timestamp("start", start)?));
                }
                if let Some(end) = &self.end {
                    filters.push(format!("{} < TIMESTAMP '{}'", quote(tc), timestamp("end", end)?));
                }
                let filter = if filters.is_empty() {
                    String::new()
                } else {
                    format!(" WHERE {}", filters.join(" AND "))
                };
                (format!("SELECT * FROM {}{filter}", quote(table)), Some(tc.to_string()))
            }
            (None, Some(sql)) => {
                if self.start.is_some() || self.end.is_some() {
                    return Err(ExportError::Invalid(
                        "`start`/`end` go with `table`; put the time range in the `sql`".into(),
                    ));
                }
                (format!("SELECT * FROM ({sql}) AS export_source"), None)
            }
            _ => return Err(ExportError::Invalid("give exactly one of `table` or `sql`".into())),
        };
        let wants_date = self.partition_by.iter().any(|p| p == "date");
        let date_from = time_column.clone().unwrap_or_else(|| "timestamp".into());
        let select = if wants_date {
            format!(
                "SELECT *, to_char({}, '%Y-%m-%d') AS {DATE_COLUMN} FROM ({source}) AS s",
                quote(&date_from)
            )
        } else {
            source
        };
        let partition_by: Vec<String> = self
            .partition_by
            .iter()
            .map(|p| {
                if p == "date" {
                    DATE_COLUMN.to_string()
                } else {
                    p.clone()
                }
            })
            .collect();
        // No ORDER BY: a sort would hold the whole export in memory (or spill it); the writer
        // keeps one open file per partition instead, a bounded number at a time.
        let sql = select;
        Ok(Plan {
            sql,
            time_column,
            partition_by,
            compression,
            row_group_rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: serde_json::Value) -> ExportRequest {
        serde_json::from_value(json).expect("request")
    }

    #[test]
    fn table_requests_become_range_queries() {
        let plan = req(serde_json::json!({
            "table": "events", "start": "2026-11-20T00:00:00Z", "end": "2026-11-21T00:00:00+01:00",
            "destination": "file:///tmp/x/", "partition_by": ["date", "source_module"]
        }))
        .plan(|t| t == "events")
        .expect("valid");
        assert_eq!(
            plan.sql,
            "SELECT *, to_char(\"timestamp\", '%Y-%m-%d') AS __hub_date FROM (SELECT * FROM \"events\" WHERE \"timestamp\" >= TIMESTAMP '2026-11-20T00:00:00.000000Z' AND \"timestamp\" < TIMESTAMP '2026-11-20T23:00:00.000000Z') AS s"
        );
        assert_eq!(plan.compression, Compression::Zstd);
    }

    #[test]
    fn bad_requests_name_their_problem() {
        let err = |j: serde_json::Value| req(j).plan(|t| t == "events").expect_err("invalid").to_string();
        assert!(err(serde_json::json!({"table": "nope", "destination": "file:///x/"})).contains("nope"));
        assert!(
            err(serde_json::json!({"table": "events", "start": "yesterday", "destination": "file:///x/"}))
                .contains("start")
        );
        assert!(
            err(serde_json::json!({"sql": "SELECT 1", "table": "events", "destination": "file:///x/"}))
                .contains("exactly one")
        );
        assert!(
            err(serde_json::json!({"table": "events", "compression": "brotli", "destination": "file:///x/"}))
                .contains("compression")
        );
        assert!(
            err(serde_json::json!({"table": "events", "partition_by": ["a/../b"], "destination": "file:///x/"}))
                .contains("partition_by")
        );
    }
}
