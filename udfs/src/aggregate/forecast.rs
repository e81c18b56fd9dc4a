//! `forecast(ts, value, horizon [, method [, level]])
//!   -> LIST<STRUCT<ts, yhat DOUBLE, lower DOUBLE, upper DOUBLE>>`
//!
//! Fits a model to the group's series (ordered by `ts`) with augurs and forecasts `horizon`
//! steps, one list element per step; use `unnest` to get rows. The step is the median spacing
//! of consecutive `ts` values; output `ts` has the type of the input `ts`.
//!
//! Methods (`method`, default `'auto'`):
//! * `'ets'` — AutoETS (Hyndman–Khandakar model selection by AICc over non-seasonal
//!   ETS models, augurs-ets).
//! * `'mstl:P[,P2…]'` — MSTL decomposition with the given season lengths (in rows), AutoETS on
//!   the deseasonalised trend, seasonal components repeated forward (augurs-mstl).
//! * `'auto'` — `detect_seasonality` on the values: if a period `P` with `2P ≤ n` is found,
//!   `'mstl:P'`, otherwise `'ets'`.
//!
//! `level` (default 0.95) is the prediction-interval coverage, in `(0, 1)`.
//!
//! Edge cases: rows with NULL `ts` or NULL/NaN value are skipped; fewer than [`MIN_POINTS`]
//! points (or fewer than `2P + 1` for MSTL) → NULL; a constant series → `yhat = lower = upper`
//! = the constant; `horizon` must be a constant in `1..=10000`, `method` one of the above and
//! `level` in `(0, 1)`, otherwise an execution error; a model that cannot be fitted is an
//! execution error with augurs' message.

use std::sync::Arc;

use augurs_core::{Fit, Forecast, Predict};
use augurs_ets::AutoETS;
use augurs_ets::trend::AutoETSTrendModel;
use augurs_mstl::MSTLModel;
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StructArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility};

use super::detect_seasonality::detect_periods;
use super::series_udaf::{SeriesEval, accumulator, coerce_args, state_fields};
use crate::series::{SeriesBuffer, constant_arg};

/// Fewest points for which a forecast is attempted.
pub const MIN_POINTS: usize = 10;
/// Largest horizon accepted.
pub const MAX_HORIZON: i64 = 10_000;

/// Implementation of `forecast`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ForecastUdaf {
    signature: Signature,
}

/// The `forecast` aggregate.
pub fn udaf() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::from(ForecastUdaf {
        signature: Signature::user_defined(Volatility::Immutable),
    }))
}

fn item_fields(ts_type: &DataType) -> Fields {
    Fields::from(vec![
        Field::new("ts", ts_type.clone(), true),
        Field::new("yhat", DataType::Float64, true),
        Field::new("lower", DataType::Float64, true),
        Field::new("upper", DataType::Float64, true),
    ])
}

fn list_type(ts_type: &DataType) -> DataType {
    DataType::new_list(DataType::Struct(item_fields(ts_type)), true)
}

/// A parsed `method` argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Detect a season, then MSTL or ETS.
    Auto,
    /// Non-seasonal AutoETS.
    Ets,
    /// MSTL with these periods + AutoETS trend.
    Mstl(Vec<usize>),
}

impl Method {
    /// Parses `'auto'`, `'ets'` or `'mstl:P[,P2…]'` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => return Ok(Method::Auto),
            "ets" => return Ok(Method::Ets),
            _ => {}
        }
        if let Some(p) = s.strip_prefix("mstl:") {
            let periods = p
                .split(',')
                .map(|x| x.trim().parse::<usize>().ok().filter(|&v| v >= 2))
                .collect::<Option<Vec<_>>>();
            if let Some(periods) = periods.filter(|v| !v.is_empty()) {
                return Ok(Method::Mstl(periods));
            }
        }
        exec_err!("forecast: unknown method '{s}'; expected 'auto', 'ets' or 'mstl:P[,P2...]' with periods >= 2")
    }
}

/// Point forecasts and interval bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Point forecasts.
    pub yhat: Vec<f64>,
    /// Lower bounds.
    pub lower: Vec<f64>,
    /// Upper bounds.
    pub upper: Vec<f64>,
}

fn from_forecast(f: Forecast) -> Prediction {
    let (lower, upper) = match f.intervals {
        Some(i) => (i.lower, i.upper),
        None => (vec![f64::NAN; f.point.len()], vec![f64::NAN; f.point.len()]),
    };
    Prediction {
        yhat: f.point,
        lower,
        upper,
    }
}

/// Forecasts `y` (`None` when too short).
pub fn predict(y: &[f64], horizon: usize, method: &Method, level: f64) -> Result<Option<Prediction>> {
    if y.len() < MIN_POINTS {
        return Ok(None);
    }
    let (lo, hi) = y
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    if lo == hi {
        return Ok(Some(Prediction {
            yhat: vec![lo; horizon],
            lower: vec![lo; horizon],
            upper: vec![lo; horizon],
        }));
    }
    let method = match method {
        Method::Auto => match detect_periods(y).into_iter().find(|&p| 2 * (p as usize) < y.len()) {
            Some(p) => Method::Mstl(vec![p as usize]),
            None => Method::Ets,
        },
        m => m.clone(),
    };
    let err = |e: &dyn std::fmt::Display| datafusion::common::DataFusionError::Execution(format!("forecast: {e}"));
    match method {
        Method::Mstl(periods) => {
            let max_p = periods.iter().copied().max().unwrap_or(2);
            if y.len() < 2 * max_p + 1 {
                return Ok(None);
            }
            let trend = AutoETSTrendModel::from(AutoETS::non_seasonal());
            let fit = MSTLModel::new(periods, trend).fit(y).map_err(|e| err(&e))?;
            Ok(Some(from_forecast(fit.predict(horizon, level).map_err(|e| err(&e))?)))
        }
        _ => {
            let fit = AutoETS::non_seasonal().fit(y).map_err(|e| err(&e))?;
            Ok(Some(from_forecast(fit.predict(horizon, level).map_err(|e| err(&e))?)))
        }
    }
}

/// Median positive spacing of sorted keys (1 if there is none).
pub fn median_step(keys: &[i64]) -> i64 {
    // Saturating: timestamps far apart (year 1 to year 9999 and beyond) do not overflow.
    let mut d: Vec<i64> = keys
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .filter(|&d| d > 0)
        .collect();
    if d.is_empty() {
        return 1;
    }
    d.sort_unstable();
    d[d.len() / 2]
}

impl AggregateUDFImpl for ForecastUdaf {
    fn name(&self) -> &str {
        "forecast"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_args(
            "forecast(ts, value, horizon [, method [, level]])",
            3..=5,
            1,
            &[DataType::Int64, DataType::Utf8, DataType::Float64],
            arg_types,
        )
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(list_type(&arg_types[0]))
    }

    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let horizon = match constant_arg("forecast", "horizon", &acc_args.exprs[2])? {
            ScalarValue::Int64(Some(h)) if (1..=MAX_HORIZON).contains(&h) => h as usize,
            other => return exec_err!("forecast: horizon must be an integer in 1..={MAX_HORIZON}, got {other}"),
        };
        let method = match acc_args.exprs.get(3) {
            None => Method::Auto,
            Some(e) => match constant_arg("forecast", "method", e)? {
                ScalarValue::Utf8(Some(s)) => Method::parse(&s)?,
                other => return exec_err!("forecast: method must be a string, got {other}"),
            },
        };
        let level = match acc_args.exprs.get(4) {
            None => 0.95,
            Some(e) => match constant_arg("forecast", "level", e)? {
                ScalarValue::Float64(Some(l)) if l > 0.0 && l < 1.0 => l,
                other => return exec_err!("forecast: level must be in (0, 1), got {other}"),
            },
        };
        let ts_type = acc_args.expr_fields[0].data_type().clone();
        accumulator(ForecastEval {
            horizon,
            method,
            level,
            ts_type,
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        state_fields::<ForecastEval>(args)
    }
}

/// The `horizon` timestamps after `last`, `step` apart; an error naming the problem when they
/// would run past the timestamp range (a series spanning millennia with a long horizon).
fn future_times(last: i64, step: i64, horizon: usize) -> Result<Vec<i64>> {
    (1..=horizon as i64)
        .map(|h| {
            step.checked_mul(h).and_then(|d| last.checked_add(d)).ok_or_else(|| {
                datafusion::error::DataFusionError::Execution(format!(
                    "forecast: {horizon} steps of the series' median interval after its last timestamp run past the timestamp range; use a shorter horizon or a series with a shorter interval"
                ))
            })
        })
        .collect()
}

/// The result of `forecast` over the buffered `(ts, value)` rows.
#[derive(Debug)]
struct ForecastEval {
    horizon: usize,
    method: Method,
    level: f64,
    ts_type: DataType,
}

impl SeriesEval for ForecastEval {
    const KEYED: bool = true;
    const VALUES: usize = 1;

    fn evaluate(&self, buf: &SeriesBuffer) -> Result<ScalarValue> {
        let (keys, cols) = buf.sorted();
        let Some(p) = predict(&cols[0], self.horizon, &self.method, self.level)? else {
            return ScalarValue::try_from(list_type(&self.ts_type));
        };
        let step = median_step(&keys);
        let last = keys.last().copied().unwrap_or(0);
        let ts = Int64Array::from(future_times(last, step, self.horizon)?);
        let ts = cast(&ts, &self.ts_type)?;
        let arrays: Vec<ArrayRef> = vec![
            ts,
            Arc::new(Float64Array::from(p.yhat)),
            Arc::new(Float64Array::from(p.lower)),
            Arc::new(Float64Array::from(p.upper)),
        ];
        let items = StructArray::try_new(item_fields(&self.ts_type), arrays, None)?;
        Ok(ScalarValue::List(Arc::new(datafusion::arrow::array::ListArray::new(
            Arc::new(Field::new_list_field(
                DataType::Struct(item_fields(&self.ts_type)),
                true,
            )),
            datafusion::arrow::buffer::OffsetBuffer::from_lengths([self.horizon]),
            Arc::new(items),
            None,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn future_timestamps_past_the_range_are_an_error_not_an_overflow() {
        assert_eq!(future_times(100, 10, 3).expect("in range"), vec![110, 120, 130]);
        let e = future_times(i64::MAX - 100, 60, 817).expect_err("past i64");
        assert!(e.to_string().contains("run past the timestamp range"), "{e}");
        let e = future_times(0, i64::MAX / 2, 3).expect_err("step times horizon");
        assert!(e.to_string().contains("shorter horizon"), "{e}");
        // Keys spanning more than i64 saturate instead of overflowing.
        assert_eq!(median_step(&[i64::MIN, 0, i64::MAX]), i64::MAX);
    }

    #[test]
    fn parses_methods() {
        assert_eq!(Method::parse("AUTO").expect("ok"), Method::Auto);
        assert_eq!(Method::parse("mstl:24, 168").expect("ok"), Method::Mstl(vec![24, 168]));
        assert!(Method::parse("mstl:").is_err());
        assert!(Method::parse("mstl:1").is_err());
        assert!(Method::parse("arima").is_err());
    }

    #[test]
    fn linear_trend_is_extrapolated() {
        let y: Vec<f64> = (0..40).map(|i| 10.0 + 2.0 * i as f64).collect();
        let p = predict(&y, 3, &Method::Ets, 0.9).expect("fit").expect("long enough");
        for (h, v) in p.yhat.iter().enumerate() {
            let want = 10.0 + 2.0 * (40 + h) as f64;
            assert!((v - want).abs() < 0.5, "h={h} got {v} want {want}");
        }
        assert!(p.lower.iter().zip(&p.yhat).all(|(l, y)| l <= y));
    }

    #[test]
    fn short_and_constant() {
        assert_eq!(predict(&[1.0; 5], 2, &Method::Auto, 0.95).expect("ok"), None);
        let p = predict(&[7.0; 20], 2, &Method::Auto, 0.95).expect("ok").expect("some");
        assert_eq!(p.yhat, vec![7.0, 7.0]);
        assert_eq!(median_step(&[0, 60, 120, 180, 300]), 60);
    }
}
