//! `changepoints(ts, value) -> LIST<ts>`: the `ts` values at which the series (ordered by `ts`)
//! changes regime, found by Bayesian online changepoint detection (Adams & MacKay) with a
//! Normal–Gamma prior (`augurs-changepoint` default detector, hazard λ = 250) on the
//! standardised series (so the result does not depend on the unit of `value`).
//!
//! The first row is never reported. Rows with NULL `ts` or NULL/NaN value are skipped. No rows →
//! NULL; fewer than 3 points or a constant series → empty list.

use std::sync::Arc;

use augurs_changepoint::{Detector, NormalGammaDetector};
use datafusion::arrow::array::Int64Array;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility};

use super::series_udaf::{SeriesEval, accumulator, coerce_args, state_fields};
use crate::series::SeriesBuffer;

/// Implementation of `changepoints`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Changepoints {
    signature: Signature,
}

/// The `changepoints` aggregate.
pub fn udaf() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::from(Changepoints {
        signature: Signature::user_defined(Volatility::Immutable),
    }))
}

fn list_type(ts_type: &DataType) -> DataType {
    DataType::new_list(ts_type.clone(), true)
}

/// Row indices (> 0) where a new regime starts.
pub fn detect(y: &[f64]) -> Vec<usize> {
    if y.len() < 3 {
        return Vec::new();
    }
    let n = y.len() as f64;
    let mean = y.iter().sum::<f64>() / n;
    let sd = (y.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
    if sd <= 0.0 {
        return Vec::new();
    }
    let z: Vec<f64> = y.iter().map(|v| (v - mean) / sd).collect();
    // the detector reports the last index of the previous regime (0 = the series start)
    let mut cps: Vec<usize> = NormalGammaDetector::default()
        .detect_changepoints(&z)
        .into_iter()
        .filter(|&i| i > 0)
        .map(|i| i + 1)
        .filter(|&i| i < y.len())
        .collect();
    cps.sort_unstable();
    cps.dedup();
    cps
}

impl AggregateUDFImpl for Changepoints {
    fn name(&self) -> &str {
        "changepoints"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_args("changepoints(ts, value)", 2..=2, 1, &[], arg_types)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(list_type(&arg_types[0]))
    }

    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let ts_type = acc_args.expr_fields[0].data_type().clone();
        accumulator(ChangepointEval { ts_type })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        state_fields::<ChangepointEval>(args)
    }
}

/// The result of `changepoints` over the buffered `(ts, value)` rows.
#[derive(Debug)]
struct ChangepointEval {
    ts_type: DataType,
}

impl SeriesEval for ChangepointEval {
    const KEYED: bool = true;
    const VALUES: usize = 1;

    fn evaluate(&self, buf: &SeriesBuffer) -> Result<ScalarValue> {
        if buf.is_empty() {
            return ScalarValue::try_from(list_type(&self.ts_type));
        }
        let (keys, cols) = buf.sorted();
        let ts: Int64Array = detect(&cols[0]).into_iter().map(|i| keys[i]).collect();
        let ts = cast(&ts, &self.ts_type)?;
        let values = (0..ts.len())
            .map(|i| ScalarValue::try_from_array(&ts, i))
            .collect::<Result<Vec<_>>>()?;
        Ok(ScalarValue::List(ScalarValue::new_list_nullable(
            &values,
            &self.ts_type,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_level_shift() {
        let y: Vec<f64> = (0..100)
            .map(|i| if i < 60 { 0.0 } else { 10.0 } + ((i * i * 7919) % 1009) as f64 / 1009.0)
            .collect();
        assert_eq!(detect(&y), vec![60]);
        assert!(detect(&[3.0; 50]).is_empty());
    }
}
