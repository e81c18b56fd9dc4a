//! Event-time helpers shared by the API, the stream engine and the generators: the clock in
//! microseconds, RFC 3339 rendering and timestamp literals for DataFusion expressions.

use datafusion::common::ScalarValue;
use datafusion::prelude::{Expr, lit};

/// Wall clock, microseconds since the epoch (the unit of every timestamp column).
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// `micros` as RFC 3339 in UTC with as many fractional digits as needed.
pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map_or_else(
        || micros.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    )
}

/// A `Timestamp(µs, "UTC")` literal for DataFrame filters.
pub fn timestamp_lit(micros: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into())))
}
