//! Event-time windows: tumbling (fixed size or calendar months), hopping and session, and the
//! per-query UDFs that assign events to them (`__window_start`, `__window_starts`,
//! `__window_end`, `__session_time`), so that the SQL plan and the engine's lateness checks use
//! the same arithmetic.
//!
//! Session windows are assigned in two steps: the plan groups events into gap-sized *buckets*
//! (`__window_start` floors to a multiple of the gap), which never split a session because any
//! two events of one bucket are less than a gap apart; the engine then merges the buckets'
//! accumulator states into sessions (see [`super::session`]).

use std::sync::Arc;

use chrono::{Datelike, TimeZone, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, ListBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNanoType, IntervalUnit, TimestampMicrosecondType};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::prelude::SessionContext;

use super::CqError;
use super::rewrite::WindowCall;
use crate::event::schema::timestamp_type;

/// Microseconds per day.
const DAY_US: i64 = 86_400_000_000;
/// 1970-01-05 was a Monday: weekly windows start on Mondays.
const MONDAY_ORIGIN_US: i64 = 4 * DAY_US;

/// A window length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Span {
    /// A fixed number of microseconds.
    Micros(i64),
    /// Calendar months (UTC); only tumbling windows.
    Months(i32),
}

impl Span {
    /// Builds a span from an interval's (months, days, nanoseconds).
    pub fn from_interval(months: i32, days: i32, nanos: i64) -> Result<Self, String> {
        match (months, days, nanos) {
            (m, 0, 0) if m > 0 => Ok(Self::Months(m)),
            (0, d, n) if d >= 0 && n >= 0 && (d > 0 || n >= 1000) => Ok(Self::Micros(i64::from(d) * DAY_US + n / 1000)),
            _ => Err("window intervals must be positive and either whole months or days/hours/minutes/seconds".into()),
        }
    }

    /// Human-readable form (for messages and names).
    pub fn describe(&self) -> String {
        match self {
            Self::Months(m) => format!("{m} month(s)"),
            Self::Micros(us) => format!("{}s", *us as f64 / 1e6),
        }
    }
}

/// Smallest window size, hop slide or session gap a continuous query may use.
pub const MIN_WINDOW_US: i64 = 1_000_000;

/// How events are assigned to windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WindowSpec {
    /// Non-overlapping windows of `size`.
    Tumble {
        /// Window length.
        size: Span,
    },
    /// Windows of `size` starting every `slide`; each event is in `size / slide` windows.
    Hop {
        /// Distance between window starts, µs.
        slide_us: i64,
        /// Window length, µs.
        size_us: i64,
    },
    /// Sessions per group key: events less than `gap` apart belong to the same session. In the
    /// plan the "window" is a gap-sized bucket; the engine merges buckets into sessions.
    Session {
        /// Inactivity gap that closes a session, µs.
        gap_us: i64,
    },
}

fn floor_to(ts: i64, origin: i64, step: i64) -> i64 {
    ts - (ts - origin).rem_euclid(step)
}

fn month_start(ts: i64, months: i32) -> i64 {
    let Some(t) = chrono::DateTime::from_timestamp_micros(ts) else {
        return ts;
    };
    let index = t.year() * 12 + t.month0() as i32;
    let start = index - index.rem_euclid(months);
    Utc.with_ymd_and_hms(start.div_euclid(12), (start.rem_euclid(12) + 1) as u32, 1, 0, 0, 0)
        .single()
        .map_or(ts, |d| d.timestamp_micros())
}

fn add_months(ts: i64, months: i32) -> i64 {
    let Some(t) = chrono::DateTime::from_timestamp_micros(ts) else {
        return ts;
    };
    let index = t.year() * 12 + t.month0() as i32 + months;
    Utc.with_ymd_and_hms(index.div_euclid(12), (index.rem_euclid(12) + 1) as u32, 1, 0, 0, 0)
        .single()
        .map_or(ts, |d| d.timestamp_micros())
}

impl WindowSpec {
    /// Validates sizes: positive, at least [`MIN_WINDOW_US`] (a smaller window multiplies the
    /// state and the output rows per second of event time), hop size / slide at most 1000.
    pub fn validate(&self) -> Result<(), String> {
        let short = |what: &str, us: i64| {
            (us > 0 && us < MIN_WINDOW_US).then(|| {
                format!(
                    "{what} of {} is below the 1 second minimum of continuous queries",
                    Span::Micros(us).describe()
                )
            })
        };
        let too_short = match *self {
            Self::Tumble { size: Span::Micros(us) } => short("window size", us),
            Self::Tumble { .. } => None,
            Self::Hop { slide_us, .. } => short("hop slide", slide_us),
            Self::Session { gap_us } => short("session gap", gap_us),
        };
        if let Some(message) = too_short {
            return Err(message);
        }
        match *self {
            Self::Tumble { size: Span::Micros(us) } if us <= 0 => Err("window size must be positive".into()),
            Self::Tumble { .. } => Ok(()),
            Self::Session { gap_us } if gap_us <= 0 => Err("session gap must be positive".into()),
            Self::Session { .. } => Ok(()),
            Self::Hop { slide_us, size_us } => {
                if slide_us <= 0 || size_us <= 0 {
                    Err("hop slide and size must be positive".into())
                } else if size_us % slide_us != 0 {
                    Err("hop size must be a whole multiple of the slide".into())
                } else if size_us / slide_us > 1000 {
                    Err("hop size / slide must be at most 1000".into())
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The (single) tumbling window start of `ts`, or the latest hopping window start.
    pub fn latest_start(&self, ts: i64) -> i64 {
        match *self {
            Self::Tumble { size: Span::Micros(us) } => {
                let origin = if us % (7 * DAY_US) == 0 { MONDAY_ORIGIN_US } else { 0 };
                floor_to(ts, origin, us)
            }
            Self::Tumble { size: Span::Months(m) } => month_start(ts, m),
            Self::Hop { slide_us, .. } => floor_to(ts, 0, slide_us),
            Self::Session { gap_us } => floor_to(ts, 0, gap_us),
        }
    }

    /// The end of the window starting at `start` (for sessions: of the bucket).
    pub fn end_of(&self, start: i64) -> i64 {
        match *self {
            Self::Tumble { size: Span::Micros(us) } => start.saturating_add(us),
            Self::Tumble { size: Span::Months(m) } => add_months(start, m),
            Self::Hop { size_us, .. } => start.saturating_add(size_us),
            Self::Session { gap_us } => start.saturating_add(gap_us),
        }
    }

    /// Every window start containing `ts`, oldest first.
    pub fn starts(&self, ts: i64, out: &mut Vec<i64>) {
        out.clear();
        match *self {
            Self::Hop { slide_us, size_us } => {
                let latest = floor_to(ts, 0, slide_us);
                let mut start = latest - size_us + slide_us;
                while start <= latest {
                    out.push(start);
                    start += slide_us;
                }
            }
            _ => out.push(self.latest_start(ts)),
        }
    }

    /// End of the earliest window containing `ts`: once the watermark reaches it, some window
    /// of this event is closed and the event is late. For sessions that is any time after `ts`:
    /// an event behind the watermark could belong to a session that has already been emitted
    /// (sessions close when the watermark passes last event + gap), so it is late.
    pub fn earliest_end(&self, ts: i64) -> i64 {
        match *self {
            Self::Hop { slide_us, .. } => floor_to(ts, 0, slide_us) + slide_us,
            Self::Session { .. } => ts.saturating_add(1),
            _ => self.end_of(self.latest_start(ts)),
        }
    }

    /// The earliest start of a window that is still open at watermark `w` (every window ending
    /// at or before `w` is closed): no row this query emits later has an earlier window start.
    /// For sessions this is `w` itself; the caller takes the open sessions into account.
    pub fn first_open_start(&self, w: i64) -> i64 {
        match *self {
            Self::Tumble { .. } => self.latest_start(w),
            // The smallest slide-aligned start s with s + size > w.
            Self::Hop { slide_us, size_us } => floor_to(w.saturating_sub(size_us), 0, slide_us) + slide_us,
            Self::Session { .. } => w,
        }
    }

    /// The longest window, µs (months count as 31 days), used to bound replay on restart.
    pub fn max_len_us(&self) -> i64 {
        match *self {
            Self::Tumble { size: Span::Micros(us) } => us,
            Self::Tumble { size: Span::Months(m) } => i64::from(m) * 31 * DAY_US,
            Self::Hop { size_us, .. } => size_us,
            Self::Session { gap_us } => gap_us,
        }
    }

    /// Human-readable description (status API).
    pub fn describe(&self) -> String {
        match *self {
            Self::Tumble { size } => format!("tumble {}", size.describe()),
            Self::Hop { slide_us, size_us } => format!(
                "hop slide {} size {}",
                Span::Micros(slide_us).describe(),
                Span::Micros(size_us).describe()
            ),
            Self::Session { gap_us } => format!("session gap {}", Span::Micros(gap_us).describe()),
        }
    }
}

/// Evaluates an interval expression (`INTERVAL '5 minutes'`) with DataFusion.
async fn eval_span(expr: &str) -> Result<Span, CqError> {
    let ctx = SessionContext::new();
    let df = ctx
        .sql(&format!("SELECT {expr} AS v"))
        .await
        .map_err(|e| CqError::Invalid(format!("window size `{expr}`: {}", e.message())))?;
    let batches = df
        .collect()
        .await
        .map_err(|e| CqError::Invalid(format!("window size `{expr}`: {}", e.message())))?;
    let column = batches
        .first()
        .map(|b| Arc::clone(b.column(0)))
        .ok_or_else(|| CqError::Invalid(format!("window size `{expr}` is empty")))?;
    let as_interval = datafusion::arrow::compute::cast(&column, &DataType::Interval(IntervalUnit::MonthDayNano))
        .map_err(|_| {
            CqError::Invalid(format!(
                "window size `{expr}` must be an INTERVAL, e.g. INTERVAL '1 minute'"
            ))
        })?;
    let values = as_interval.as_primitive::<IntervalMonthDayNanoType>();
    if values.is_empty() || values.is_null(0) {
        return Err(CqError::Invalid(format!(
            "window size `{expr}` must be an INTERVAL, e.g. INTERVAL '1 minute'"
        )));
    }
    let v = values.value(0);
    Span::from_interval(v.months, v.days, v.nanoseconds).map_err(CqError::Invalid)
}

/// The window of a rewritten query.
pub async fn window_spec(call: &WindowCall) -> Result<WindowSpec, CqError> {
    let spec = match call {
        WindowCall::Tumble { size, .. } => WindowSpec::Tumble {
            size: eval_span(size).await?,
        },
        WindowCall::Hop { slide, size, .. } => match (eval_span(slide).await?, eval_span(size).await?) {
            (Span::Micros(slide_us), Span::Micros(size_us)) => WindowSpec::Hop { slide_us, size_us },
            _ => {
                return Err(CqError::Invalid(
                    "hopping windows must use fixed sizes (no months)".into(),
                ));
            }
        },
        WindowCall::Session { gap, .. } => match eval_span(gap).await? {
            Span::Micros(gap_us) => WindowSpec::Session { gap_us },
            Span::Months(_) => {
                return Err(CqError::Invalid(
                    "the session gap must be a fixed duration (no months)".into(),
                ));
            }
        },
    };
    spec.validate().map_err(CqError::Invalid)?;
    Ok(spec)
}

fn timestamps(args: &ScalarFunctionArgs) -> Result<(TimestampMicrosecondArray, bool)> {
    let Some(arg) = args.args.first() else {
        return exec_err!("window function needs a timestamp argument");
    };
    let (array, scalar) = match arg {
        ColumnarValue::Array(a) => (Arc::clone(a), false),
        ColumnarValue::Scalar(s) => (s.to_array()?, true),
    };
    let cast = datafusion::arrow::compute::cast(&array, &timestamp_type())?;
    Ok((cast.as_primitive::<TimestampMicrosecondType>().clone(), scalar))
}

fn finish(array: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    if scalar {
        Ok(ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(
            &array, 0,
        )?))
    } else {
        Ok(ColumnarValue::Array(array))
    }
}

/// Which of the window UDFs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Start,
    Starts,
    End,
    /// The event time itself (as `Timestamp(µs, UTC)`): the argument of the hidden
    /// `min`/`max` aggregates that give each session bucket its first and last event time.
    /// A function rather than the bare column so the optimizer never merges these aggregates
    /// with the user's own `min(timestamp)`.
    Time,
}

/// A window UDF bound to one query's [`WindowSpec`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowUdf {
    spec: WindowSpec,
    kind: Kind,
    signature: Signature,
}

impl WindowUdf {
    fn new(spec: WindowSpec, kind: Kind) -> Self {
        Self {
            spec,
            kind,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for WindowUdf {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Start => "__window_start",
            Kind::Starts => "__window_starts",
            Kind::End => "__window_end",
            Kind::Time => "__session_time",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::Starts => DataType::List(Arc::new(Field::new("item", timestamp_type(), true))),
            _ => timestamp_type(),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let spec = self.spec;
        let (ts, scalar) = timestamps(&args)?;
        let array: ArrayRef = match self.kind {
            Kind::Start => Arc::new(
                ts.unary_opt::<_, TimestampMicrosecondType>(|t| Some(spec.latest_start(t)))
                    .with_timezone("UTC"),
            ),
            Kind::End => Arc::new(
                ts.unary_opt::<_, TimestampMicrosecondType>(|t| Some(spec.end_of(t)))
                    .with_timezone("UTC"),
            ),
            Kind::Time => Arc::new(ts),
            Kind::Starts => {
                let mut builder = ListBuilder::new(TimestampMicrosecondBuilder::new().with_timezone("UTC"));
                let mut starts = Vec::new();
                for i in 0..ts.len() {
                    if ts.is_null(i) {
                        builder.append_null();
                        continue;
                    }
                    spec.starts(ts.value(i), &mut starts);
                    builder.values().append_slice(&starts);
                    builder.append(true);
                }
                Arc::new(builder.finish())
            }
        };
        finish(array, scalar)
    }
}

/// The window UDFs of a query.
pub fn udfs(spec: WindowSpec) -> [ScalarUDF; 4] {
    [
        ScalarUDF::new_from_impl(WindowUdf::new(spec, Kind::Start)),
        ScalarUDF::new_from_impl(WindowUdf::new(spec, Kind::Starts)),
        ScalarUDF::new_from_impl(WindowUdf::new(spec, Kind::End)),
        ScalarUDF::new_from_impl(WindowUdf::new(spec, Kind::Time)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).expect("ts").timestamp_micros()
    }

    #[test]
    fn tumbling_fixed_weeks_and_months() {
        let minute = WindowSpec::Tumble {
            size: Span::Micros(60_000_000),
        };
        assert_eq!(
            minute.latest_start(ts("2026-11-27T10:00:59.999Z")),
            ts("2026-11-27T10:00:00Z")
        );
        assert_eq!(minute.end_of(ts("2026-11-27T10:00:00Z")), ts("2026-11-27T10:01:00Z"));
        let week = WindowSpec::Tumble {
            size: Span::Micros(7 * DAY_US),
        };
        assert_eq!(
            week.latest_start(ts("2026-11-27T10:00:00Z")),
            ts("2026-11-23T00:00:00Z"),
            "Monday"
        );
        let month = WindowSpec::Tumble { size: Span::Months(1) };
        assert_eq!(
            month.latest_start(ts("2026-11-27T10:00:00Z")),
            ts("2026-11-01T00:00:00Z")
        );
        assert_eq!(month.end_of(ts("2026-12-01T00:00:00Z")), ts("2027-01-01T00:00:00Z"));
        assert_eq!(
            month.earliest_end(ts("2026-02-10T00:00:00Z")),
            ts("2026-03-01T00:00:00Z")
        );
        assert_eq!(minute.latest_start(-1), -60_000_000, "before the epoch floors down");
    }

    #[test]
    fn hopping_windows_cover_each_event_size_over_slide_times() {
        let hop = WindowSpec::Hop {
            slide_us: 60_000_000,
            size_us: 300_000_000,
        };
        let mut starts = Vec::new();
        hop.starts(ts("2026-11-27T10:07:30Z"), &mut starts);
        assert_eq!(
            starts,
            vec![
                ts("2026-11-27T10:03:00Z"),
                ts("2026-11-27T10:04:00Z"),
                ts("2026-11-27T10:05:00Z"),
                ts("2026-11-27T10:06:00Z"),
                ts("2026-11-27T10:07:00Z"),
            ]
        );
        assert_eq!(hop.earliest_end(ts("2026-11-27T10:07:30Z")), ts("2026-11-27T10:08:00Z"));
        assert!(
            WindowSpec::Hop {
                slide_us: 7,
                size_us: 10
            }
            .validate()
            .is_err()
        );
        assert!(Span::from_interval(1, 1, 0).is_err());
        assert_eq!(Span::from_interval(0, 1, 0), Ok(Span::Micros(DAY_US)));
    }
}
