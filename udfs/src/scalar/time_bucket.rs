//! `time_bucket(width, ts) -> TIMESTAMP`: the start of the fixed-width bucket `ts` falls in,
//! as TimescaleDB's `time_bucket` (what Grafana's `$__timeGroup` expands to on a TimescaleDB
//! datasource, e.g. `time_bucket('300.000s', ts)`).
//!
//! `width` is an `INTERVAL` without months (`INTERVAL '5 minutes'`) or text: a number and a unit
//! (`'300.000s'`, `'5m'`, `'1h'`, `'250ms'`, `'5 minutes'`, `'1 day'`; units `us`, `ms`, `s`,
//! `m`/`min`, `h`, `d`, `w` and their long forms). Buckets are aligned, like TimescaleDB, on
//! 2000-01-03 00:00:00 UTC (a Monday), so daily and smaller buckets start at midnight UTC and
//! weekly ones on Mondays. The result has the type (unit and time zone) of `ts`. NULL width or
//! timestamp → NULL; a width that is not positive, has months or does not parse is an error.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

/// TimescaleDB's default origin, 2000-01-03 00:00:00 UTC, in microseconds since the epoch.
const ORIGIN_MICROS: i64 = 946_857_600_000_000;

/// Implementation of `time_bucket`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimeBucket {
    signature: Signature,
}

/// The `time_bucket` scalar function.
pub fn udf() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::from(TimeBucket {
        signature: Signature::user_defined(Volatility::Immutable),
    }))
}

/// Parses a bucket width given as text into microseconds.
pub fn parse_width_micros(text: &str) -> Option<i64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().ok()?;
    let unit_micros: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1e6,
        "us" | "µs" | "usec" | "microsecond" | "microseconds" => 1.0,
        "ms" | "msec" | "millisecond" | "milliseconds" => 1e3,
        "m" | "min" | "mins" | "minute" | "minutes" => 60e6,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600e6,
        "d" | "day" | "days" => 86_400e6,
        "w" | "week" | "weeks" => 604_800e6,
        _ => return None,
    };
    let micros = (value * unit_micros).round();
    (micros.is_finite() && micros >= 1.0 && micros < i64::MAX as f64).then_some(micros as i64)
}

/// The width in microseconds of an interval scalar, `None` for NULL.
fn interval_micros(value: &ScalarValue) -> Result<Option<i64>> {
    let micros = match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) => {
            if v.months != 0 {
                return exec_err!("time_bucket: month intervals are not supported");
            }
            i64::from(v.days)
                .checked_mul(86_400_000_000)
                .and_then(|d| d.checked_add(v.nanoseconds / 1000))
                .ok_or_else(|| too_wide(value))?
        }
        ScalarValue::IntervalDayTime(Some(v)) => i64::from(v.days)
            .checked_mul(86_400_000_000)
            .and_then(|d| d.checked_add(i64::from(v.milliseconds) * 1000))
            .ok_or_else(|| too_wide(value))?,
        ScalarValue::IntervalYearMonth(Some(_)) => return exec_err!("time_bucket: month intervals are not supported"),
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            match parse_width_micros(s) {
                Some(m) => m,
                None => return exec_err!("time_bucket: invalid bucket width {s:?} (expected e.g. '300s', '5m', '1h')"),
            }
        }
        v if v.is_null() => return Ok(None),
        v => return exec_err!("time_bucket: unsupported bucket width {v}"),
    };
    if micros <= 0 {
        return exec_err!("time_bucket: the bucket width must be positive");
    }
    Ok(Some(micros))
}

/// The error for a width past the microsecond range (about 292,000 years).
fn too_wide(value: &ScalarValue) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::Execution(format!(
        "time_bucket: the bucket width {value} is too wide (at most about 292,000 years)"
    ))
}

/// Units of `unit` per microsecond as (multiplier, divisor).
fn per_micro(unit: TimeUnit) -> (i64, i64) {
    match unit {
        TimeUnit::Second => (1, 1_000_000),
        TimeUnit::Millisecond => (1, 1000),
        TimeUnit::Microsecond => (1, 1),
        TimeUnit::Nanosecond => (1000, 1),
    }
}

/// The bucket start of `ts` (in `unit`) for a width in microseconds.
fn bucket(ts: i64, width_micros: i64, unit: TimeUnit) -> Option<i64> {
    let (mul, div) = per_micro(unit);
    if width_micros % div != 0 || ORIGIN_MICROS % div != 0 {
        // A sub-unit width (e.g. 250 ms on a seconds column) cannot be represented.
        return None;
    }
    let width = width_micros.checked_mul(mul)? / div;
    let origin = ORIGIN_MICROS.checked_mul(mul)? / div;
    let offset = ts.checked_sub(origin)?;
    offset.div_euclid(width).checked_mul(width)?.checked_add(origin)
}

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        "time_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [width, ts] = arg_types else {
            return plan_err!("time_bucket expects two arguments: (width, timestamp)");
        };
        let width = match width {
            DataType::Interval(_) | DataType::Null => width.clone(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
            other => return plan_err!("time_bucket: the width must be an interval or text, got {other}"),
        };
        let ts = match ts {
            DataType::Timestamp(..) => ts.clone(),
            DataType::Date32 | DataType::Date64 | DataType::Null => DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            other => return plan_err!("time_bucket: the second argument must be a timestamp, got {other}"),
        };
        Ok(vec![width, ts])
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.get(1) {
            Some(t @ DataType::Timestamp(..)) => Ok(t.clone()),
            _ => Ok(DataType::Timestamp(TimeUnit::Microsecond, None)),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [width, ts] = args.args.as_slice() else {
            return exec_err!("time_bucket expects two arguments");
        };
        let DataType::Timestamp(unit, tz) = ts.data_type() else {
            return exec_err!("time_bucket: the second argument must be a timestamp");
        };
        let ts_array = ts.to_array(rows)?;
        let ts_i64 = datafusion::arrow::compute::cast(&ts_array, &DataType::Int64)?;
        let ts_values = ts_i64.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let widths: Vec<Option<i64>> = match width {
            ColumnarValue::Scalar(s) => vec![interval_micros(s)?; 1],
            ColumnarValue::Array(a) => (0..a.len())
                .map(|i| ScalarValue::try_from_array(a, i).and_then(|v| interval_micros(&v)))
                .collect::<Result<_>>()?,
        };
        let scalar_width = matches!(width, ColumnarValue::Scalar(_));
        let mut out = Vec::with_capacity(ts_values.len());
        for i in 0..ts_values.len() {
            let w = if scalar_width { widths[0] } else { widths[i] };
            let value = match (w, ts_values.is_null(i)) {
                (Some(w), false) => match bucket(ts_values.value(i), w, unit) {
                    Some(b) => Some(b),
                    None => return exec_err!("time_bucket: width {w} µs does not fit the {unit:?} timestamp unit"),
                },
                _ => None,
            };
            out.push(value);
        }
        let ints: ArrayRef = Arc::new(Int64Array::from(out));
        let result = datafusion::arrow::compute::cast(&ints, &DataType::Timestamp(unit, tz))?;
        if matches!(ts, ColumnarValue::Scalar(_)) && scalar_width {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?));
        }
        Ok(ColumnarValue::Array(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grafana_and_postgres_widths() {
        assert_eq!(parse_width_micros("300.000s"), Some(300_000_000));
        assert_eq!(parse_width_micros("5m"), Some(300_000_000));
        assert_eq!(parse_width_micros("5 minutes"), Some(300_000_000));
        assert_eq!(parse_width_micros("1h"), Some(3_600_000_000));
        assert_eq!(parse_width_micros("250ms"), Some(250_000));
        assert_eq!(parse_width_micros("1 day"), Some(86_400_000_000));
        assert_eq!(parse_width_micros("0s"), None);
        assert_eq!(parse_width_micros("5 fortnights"), None);
        assert_eq!(parse_width_micros("abc"), None);
    }

    #[test]
    fn buckets_align_on_the_timescale_origin() {
        // 2026-11-20T10:07:30Z → 10:05:00 for 5 minutes
        let ts = 1_795_169_250_000_000i64;
        assert_eq!(
            bucket(ts, 300_000_000, TimeUnit::Microsecond),
            Some(1_795_169_100_000_000)
        );
        // before the origin: floor, not truncation toward zero
        assert_eq!(bucket(-1, 1_000_000, TimeUnit::Microsecond), Some(-1_000_000));
        // nanosecond and second units
        assert_eq!(
            bucket(ts * 1000 + 5, 300_000_000, TimeUnit::Nanosecond),
            Some(1_795_169_100_000_000_000)
        );
        assert_eq!(
            bucket(1_795_169_250, 300_000_000, TimeUnit::Second),
            Some(1_795_169_100)
        );
        assert_eq!(bucket(1_795_169_250, 250_000, TimeUnit::Second), None);
    }
}
