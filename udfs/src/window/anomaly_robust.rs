//! `anomaly_robust(x, threshold) OVER (… ROWS BETWEEN n PRECEDING AND 1 PRECEDING)`
//!
//! Robust variant of `anomaly`: baseline centre = median of the valid frame values (current
//! row excluded), spread = 1.4826 · MAD (median absolute deviation), so that the score is the
//! Iglewicz–Hoaglin modified z-score `0.6745 · (x − median) / MAD` and is comparable to a
//! z-score for normal data while ignoring outliers inside the baseline. Result and
//! classification: see [`super::anomaly_common`].

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::Result;
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl};

use super::anomaly_common::{FrameAnomalyEvaluator, result_fields};

/// Consistency constant making MAD estimate the standard deviation of normal data.
pub const MAD_SCALE: f64 = 1.482_602_218_505_602;

/// Implementation of `anomaly_robust`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AnomalyRobust {
    signature: Signature,
}

/// The `anomaly_robust` window function.
pub fn udwf() -> Arc<WindowUDF> {
    Arc::new(WindowUDF::from(AnomalyRobust {
        signature: Signature::exact(vec![DataType::Float64; 2], Volatility::Immutable),
    }))
}

/// Median of `v` (sorts `v` in place; `v` non-empty, no NaN).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median and scaled MAD.
pub fn median_mad(values: &mut [f64]) -> (Option<f64>, Option<f64>) {
    let m = median(values);
    for v in values.iter_mut() {
        *v = (*v - m).abs();
    }
    let mad = median(values);
    (Some(m), Some(MAD_SCALE * mad))
}

impl WindowUDFImpl for AnomalyRobust {
    fn name(&self) -> &str {
        "anomaly_robust"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(&self, _args: PartitionEvaluatorArgs) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(FrameAnomalyEvaluator::new("anomaly_robust", median_mad)))
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Field::new(field_args.name(), DataType::Struct(result_fields()), true).into())
    }
}
