//! `anomaly_seasonal(x, threshold, period) OVER (PARTITION BY … ORDER BY …)`
//!
//! Seasonal-aware anomaly detection for metrics with cycles (e.g. `period = 24` for hourly data
//! with a daily cycle, `1440` for per-minute data). The partition is decomposed once with MSTL
//! (augurs-mstl / stlrs, robust STL fits) into trend + seasonal + remainder; for each row `baseline` = trend +
//! seasonal (the expected value), `spread` = 1.4826 · MAD of the partition's remainders, and
//! `score = (x − baseline) / spread`. Result struct and classification are those of `anomaly`
//! (see [`super::anomaly_common`]).
//!
//! Unlike `anomaly`, this is a **whole-partition** (non-causal) function: the window frame is
//! ignored and every row's baseline uses the full partition, which is what a seasonal
//! decomposition needs. Use it for offline analysis over a bounded time range.
//!
//! Edge cases: NULL/NaN values are linearly interpolated for the decomposition (leading/
//! trailing ones take the nearest value) and get a NULL result; a partition with fewer than
//! `2 · period + 1` rows, or with fewer than 2 valid values, gives `insufficient_data` for every
//! row; `period < 2` or a non-constant `threshold`/`period` → execution error.

use std::sync::Arc;

use augurs_mstl::stlrs;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl};

use super::anomaly_common::{classify, null_result, result_fields, threshold_at};
use super::anomaly_robust::{MAD_SCALE, median};

/// Implementation of `anomaly_seasonal`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AnomalySeasonal {
    signature: Signature,
}

/// The `anomaly_seasonal` window function.
pub fn udwf() -> Arc<WindowUDF> {
    Arc::new(WindowUDF::from(AnomalySeasonal {
        signature: Signature::exact(
            vec![DataType::Float64, DataType::Float64, DataType::Int64],
            Volatility::Immutable,
        ),
    }))
}

/// Fills NULL/NaN gaps by linear interpolation (ends take the nearest valid value).
fn interpolate(x: &[Option<f64>]) -> Option<Vec<f64>> {
    let valid: Vec<usize> = (0..x.len()).filter(|&i| x[i].is_some()).collect();
    let (&first, &last) = (valid.first()?, valid.last()?);
    let mut out = vec![0.0; x.len()];
    let mut prev = first;
    for (i, o) in out.iter_mut().enumerate() {
        *o = match x[i] {
            Some(v) => {
                prev = i;
                v
            }
            None if i < first => x[first].unwrap_or_default(),
            None if i > last => x[last].unwrap_or_default(),
            None => {
                let next = valid.iter().copied().find(|&j| j > i).unwrap_or(last);
                let (a, b) = (x[prev].unwrap_or_default(), x[next].unwrap_or_default());
                a + (b - a) * (i - prev) as f64 / (next - prev) as f64
            }
        };
    }
    Some(out)
}

/// `(expected value per row, spread)` from an MSTL decomposition, or `None` if too short.
pub fn seasonal_baseline(y: &[f64], period: usize) -> Result<Option<(Vec<f64>, f64)>> {
    if y.len() < period.saturating_mul(2).saturating_add(1) {
        return Ok(None);
    }
    let y32: Vec<f32> = y.iter().map(|&v| v as f32).collect();
    // robust STL (iteratively reweighted) so that a spike does not leak into the seasonal
    // component of the same hour on other days
    let mut stl = stlrs::StlParams::new();
    stl.robust(true);
    let mut params = stlrs::MstlParams::new();
    params.stl_params(stl);
    let fit = params
        .fit(&y32, &[period])
        .map_err(|e| datafusion::common::DataFusionError::Execution(format!("anomaly_seasonal: {e}")))?;
    let remainder: Vec<f64> = fit.remainder().iter().map(|&r| f64::from(r)).collect();
    let expected: Vec<f64> = y.iter().zip(&remainder).map(|(v, r)| v - r).collect();
    let mut dev = remainder.clone();
    let m = median(&mut dev);
    for d in dev.iter_mut() {
        *d = (*d - m).abs();
    }
    Ok(Some((expected, MAD_SCALE * median(&mut dev))))
}

impl WindowUDFImpl for AnomalySeasonal {
    fn name(&self) -> &str {
        "anomaly_seasonal"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(&self, _args: PartitionEvaluatorArgs) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(SeasonalEvaluator))
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Field::new(field_args.name(), DataType::Struct(result_fields()), true).into())
    }
}

#[derive(Debug)]
struct SeasonalEvaluator;

impl PartitionEvaluator for SeasonalEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        if num_rows == 0 {
            return Ok(datafusion::arrow::array::new_empty_array(&DataType::Struct(
                result_fields(),
            )));
        }
        let Some(x) = values[0].as_primitive_opt::<Float64Type>() else {
            return exec_err!("anomaly_seasonal: value must be a DOUBLE");
        };
        let threshold = threshold_at("anomaly_seasonal", values, 0)?;
        let period = match values.get(2).and_then(|a| a.as_primitive_opt::<Int64Type>()) {
            Some(p) if p.is_valid(0) && p.value(0) >= 2 => usize::try_from(p.value(0)).unwrap_or(usize::MAX),
            _ => return exec_err!("anomaly_seasonal: period must be an integer >= 2"),
        };
        let raw: Vec<Option<f64>> = (0..num_rows)
            .map(|i| x.is_valid(i).then(|| x.value(i)).filter(|v| !v.is_nan()))
            .collect();
        let baseline = if raw.iter().flatten().count() < 2 {
            None
        } else {
            interpolate(&raw)
                .map(|y| seasonal_baseline(&y, period))
                .transpose()?
                .flatten()
        };
        let rows = raw
            .iter()
            .enumerate()
            .map(|(i, v)| match (v, &baseline) {
                (None, _) => null_result(),
                (Some(v), Some((expected, spread))) => {
                    classify(*v, Some(expected[i]), Some(*spread), threshold).to_scalar()
                }
                (Some(v), None) => classify(*v, None, None, threshold).to_scalar(),
            })
            .collect::<Result<Vec<_>>>()?;
        ScalarValue::iter_to_array(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_gaps() {
        let got = interpolate(&[None, Some(1.0), None, Some(3.0), None]).expect("some");
        assert_eq!(got, vec![1.0, 1.0, 2.0, 3.0, 3.0]);
        assert_eq!(interpolate(&[None, None]), None);
    }

    #[test]
    fn seasonal_spike_stands_out() {
        let mut y: Vec<f64> = (0..120)
            .map(|i| 50.0 + 30.0 * (2.0 * std::f64::consts::PI * i as f64 / 12.0).sin() + ((i * 37) % 7) as f64 * 0.3)
            .collect();
        // at the cycle's trough, a value that is normal at the peak: anomalous only seasonally
        y[63] += 25.0;
        let (expected, spread) = seasonal_baseline(&y, 12).expect("fit").expect("long enough");
        let z = (y[63] - expected[63]) / spread;
        assert!(z > 6.0, "z = {z}");
        let typical = (y[30] - expected[30]).abs() / spread;
        assert!(typical < 3.0, "typical = {typical}");
    }
}
