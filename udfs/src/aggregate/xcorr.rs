//! `xcorr(ts, x, y, max_lag) -> STRUCT<best_lag BIGINT, coefficient DOUBLE>`: lagged
//! cross-correlation of two series ordered by `ts`.
//!
//! For every lag `k` in `[-max_lag, max_lag]`, `r(k)` is the Pearson correlation of the pairs
//! `(x[t], y[t + k])` over the overlapping positions (`t` indexes rows sorted by `ts`, rows
//! assumed evenly spaced). A positive `best_lag` means **`y` follows `x`** by that many rows
//! ("latency of A follows errors of B": `xcorr(ts, errors_b, latency_a, 10)` > 0).
//! `best_lag` maximises `|r(k)|`; ties go to the smallest `|k|`, then to the positive lag.
//! Lags with fewer than 3 overlapping pairs or a constant side are skipped; if no lag is
//! valid the result is NULL. Rows with NULL `ts` or NULL/NaN values are skipped.
//! `max_lag` must be a constant integer ≥ 0 (else a planning/execution error).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility};

use super::series_udaf::{SeriesEval, accumulator, coerce_args, state_fields};
use crate::series::{SeriesBuffer, constant_arg, pearson};

/// Minimum overlapping pairs for a lag to count.
pub const MIN_PAIRS: usize = 3;

/// Implementation of `xcorr`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct XCorr {
    signature: Signature,
}

/// The `xcorr` aggregate.
pub fn udaf() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::from(XCorr {
        signature: Signature::user_defined(Volatility::Immutable),
    }))
}

fn result_fields() -> Fields {
    Fields::from(vec![
        Field::new("best_lag", DataType::Int64, true),
        Field::new("coefficient", DataType::Float64, true),
    ])
}

/// Correlation at lag `k` (`y` shifted `k` rows after `x`).
pub fn lagged(x: &[f64], y: &[f64], k: i64) -> Option<f64> {
    let n = x.len().min(y.len());
    let s = k.unsigned_abs() as usize;
    if s >= n || n - s < MIN_PAIRS {
        return None;
    }
    if k >= 0 {
        pearson(&x[..n - s], &y[s..n])
    } else {
        pearson(&x[s..n], &y[..n - s])
    }
}

/// `(best_lag, coefficient)` over `[-max_lag, max_lag]`.
pub fn best_lag(x: &[f64], y: &[f64], max_lag: i64) -> Option<(i64, f64)> {
    let mut best: Option<(i64, f64)> = None;
    // A lag as long as the series leaves no pairs: stop there, not at a client's `max_lag`
    // (`i64::MAX` would otherwise spin for ever).
    let longest = i64::try_from(x.len().min(y.len())).unwrap_or(i64::MAX);
    // visit 0, 1, -1, 2, -2, … so that strict `>` keeps the tie-break rule
    for m in 0..=max_lag.min(longest) {
        for k in if m == 0 { vec![0] } else { vec![m, -m] } {
            if let Some(r) = lagged(x, y, k)
                && best.is_none_or(|(_, b)| r.abs() > b.abs() + 1e-12)
            {
                best = Some((k, r));
            }
        }
    }
    best
}

impl AggregateUDFImpl for XCorr {
    fn name(&self) -> &str {
        "xcorr"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_args("xcorr(ts, x, y, max_lag)", 4..=4, 2, &[DataType::Int64], arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(result_fields()))
    }

    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let max_lag = match constant_arg("xcorr", "max_lag", &acc_args.exprs[3])? {
            ScalarValue::Int64(Some(v)) if v >= 0 => v,
            other => return exec_err!("xcorr: max_lag must be a non-negative integer, got {other}"),
        };
        accumulator(XCorrEval { max_lag })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        state_fields::<XCorrEval>(args)
    }
}

/// The result of `xcorr` over the buffered `(ts, x, y)` rows.
#[derive(Debug)]
struct XCorrEval {
    max_lag: i64,
}

impl SeriesEval for XCorrEval {
    const KEYED: bool = true;
    const VALUES: usize = 2;

    fn evaluate(&self, buf: &SeriesBuffer) -> Result<ScalarValue> {
        let (_, cols) = buf.sorted();
        let (lag, r) = match best_lag(&cols[0], &cols[1], self.max_lag) {
            Some((lag, r)) => (Some(lag), Some(r)),
            None => return ScalarValue::try_from(DataType::Struct(result_fields())),
        };
        let arrays = vec![ScalarValue::Int64(lag).to_array()?, ScalarValue::Float64(r).to_array()?];
        let s = datafusion::arrow::array::StructArray::try_new(result_fields(), arrays, None)?;
        Ok(ScalarValue::Struct(Arc::new(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_shift() {
        let x: Vec<f64> = (0..50).map(|i| ((i * 7919) % 31) as f64).collect();
        let y: Vec<f64> = (0..50)
            .map(|i| if i >= 3 { x[i - 3] * 2.0 + 1.0 } else { 0.0 })
            .collect();
        let (lag, r) = best_lag(&x, &y, 5).expect("valid");
        assert_eq!(lag, 3);
        assert!((r - 1.0).abs() < 1e-12);
        let (lag, _) = best_lag(&y, &x, 5).expect("valid");
        assert_eq!(lag, -3);
    }
}
