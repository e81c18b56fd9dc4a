//! Shared pieces of the anomaly window functions: the result struct, the classification rule
//! and a frame-driven [`PartitionEvaluator`] that delegates the baseline statistic.
//!
//! # Result
//! `STRUCT<score DOUBLE, baseline DOUBLE, spread DOUBLE, is_anomaly BOOLEAN, kind VARCHAR,
//! severity VARCHAR>` where `score = (x − baseline) / spread`.
//!
//! # Classification rule (threshold `t > 0`, score `z`)
//! * `|z| < t` → `is_anomaly = false`, kind `normal`, severity `none`.
//! * `t ≤ z < 2t` → kind `high`; `z ≥ 2t` → kind `spike`;
//!   `−2t < z ≤ −t` → kind `low`; `z ≤ −2t` → kind `drop`.
//! * severity from `r = |z| / t`: `[1, 1.5)` low, `[1.5, 2)` medium, `[2, 3)` high, `≥ 3` critical.
//! * Baseline with spread 0 (constant baseline): `x = baseline` → score 0, normal;
//!   otherwise score NULL, `is_anomaly = true`, kind `spike`/`drop` by sign, severity `critical`.
//! * Fewer than [`MIN_BASELINE`] valid (non-NULL, non-NaN) baseline values → score NULL,
//!   `is_anomaly = false`, kind `insufficient_data`, severity `none`.
//! * NULL or NaN current value → the whole struct is NULL.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::PartitionEvaluator;

/// Minimum number of valid baseline values for a score.
pub const MIN_BASELINE: usize = 2;

/// The fields of the result struct.
pub fn result_fields() -> Fields {
    Fields::from(vec![
        Field::new("score", DataType::Float64, true),
        Field::new("baseline", DataType::Float64, true),
        Field::new("spread", DataType::Float64, true),
        Field::new("is_anomaly", DataType::Boolean, true),
        Field::new("kind", DataType::Utf8, true),
        Field::new("severity", DataType::Utf8, true),
    ])
}

/// One evaluated row.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `(x − baseline) / spread`, if defined.
    pub score: Option<f64>,
    /// Baseline centre (mean, median, or seasonal fit).
    pub baseline: Option<f64>,
    /// Baseline scale (stddev, scaled MAD, or residual stddev).
    pub spread: Option<f64>,
    /// Whether the row is anomalous.
    pub is_anomaly: bool,
    /// `normal`, `high`, `spike`, `low`, `drop` or `insufficient_data`.
    pub kind: &'static str,
    /// `none`, `low`, `medium`, `high` or `critical`.
    pub severity: &'static str,
}

/// Applies the classification rule of the module documentation.
pub fn classify(x: f64, baseline: Option<f64>, spread: Option<f64>, threshold: f64) -> Verdict {
    let insufficient = Verdict {
        score: None,
        baseline,
        spread,
        is_anomaly: false,
        kind: "insufficient_data",
        severity: "none",
    };
    let (Some(b), Some(s)) = (baseline, spread) else {
        return insufficient;
    };
    if !(b.is_finite() && s.is_finite()) {
        return insufficient;
    }
    if s <= 0.0 {
        if x == b {
            return Verdict {
                score: Some(0.0),
                is_anomaly: false,
                kind: "normal",
                severity: "none",
                ..insufficient
            };
        }
        let kind = if x > b { "spike" } else { "drop" };
        return Verdict {
            score: None,
            is_anomaly: true,
            kind,
            severity: "critical",
            ..insufficient
        };
    }
    let z = (x - b) / s;
    let r = z.abs() / threshold;
    let (is_anomaly, kind) = if r < 1.0 {
        (false, "normal")
    } else if z > 0.0 {
        (true, if r >= 2.0 { "spike" } else { "high" })
    } else {
        (true, if r >= 2.0 { "drop" } else { "low" })
    };
    let severity = match r {
        r if r < 1.0 => "none",
        r if r < 1.5 => "low",
        r if r < 2.0 => "medium",
        r if r < 3.0 => "high",
        _ => "critical",
    };
    Verdict {
        score: Some(z),
        is_anomaly,
        kind,
        severity,
        ..insufficient
    }
}

impl Verdict {
    /// As a struct scalar of [`result_fields`].
    pub fn to_scalar(&self) -> Result<ScalarValue> {
        let values = vec![
            ScalarValue::Float64(self.score).to_array()?,
            ScalarValue::Float64(self.baseline).to_array()?,
            ScalarValue::Float64(self.spread).to_array()?,
            ScalarValue::Boolean(Some(self.is_anomaly)).to_array()?,
            ScalarValue::Utf8(Some(self.kind.to_string())).to_array()?,
            ScalarValue::Utf8(Some(self.severity.to_string())).to_array()?,
        ];
        let arr = datafusion::arrow::array::StructArray::try_new(result_fields(), values, None)?;
        Ok(ScalarValue::Struct(Arc::new(arr)))
    }
}

/// The NULL result struct.
pub fn null_result() -> Result<ScalarValue> {
    ScalarValue::try_from(DataType::Struct(result_fields()))
}

/// A baseline statistic: `(centre, spread)` of the valid frame values.
pub type BaselineFn = fn(&mut [f64]) -> (Option<f64>, Option<f64>);

/// Frame-driven evaluator shared by `anomaly` and `anomaly_robust`.
///
/// DataFusion calls [`PartitionEvaluator::evaluate`] once per row of the partition, in order,
/// with that row's frame; the evaluator counts the calls to know the current row. The current
/// row is always excluded from its own baseline.
#[derive(Debug)]
pub struct FrameAnomalyEvaluator {
    row: usize,
    baseline: BaselineFn,
    scratch: Vec<f64>,
    name: &'static str,
}

impl FrameAnomalyEvaluator {
    /// An evaluator using `baseline` as the statistic.
    pub fn new(name: &'static str, baseline: BaselineFn) -> Self {
        Self {
            row: 0,
            baseline,
            scratch: Vec::new(),
            name,
        }
    }
}

/// Reads the threshold argument (must be a positive number, constant in the partition).
pub fn threshold_at(name: &str, values: &[ArrayRef], row: usize) -> Result<f64> {
    let Some(t) = values.get(1).and_then(|a| a.as_primitive_opt::<Float64Type>()) else {
        return exec_err!("{name}: threshold must be a DOUBLE");
    };
    if t.is_null(row) || t.value(row).is_nan() || t.value(row) <= 0.0 {
        return exec_err!("{name}: threshold must be a positive number");
    }
    Ok(t.value(row))
}

impl PartitionEvaluator for FrameAnomalyEvaluator {
    fn uses_window_frame(&self) -> bool {
        true
    }

    fn evaluate(&mut self, values: &[ArrayRef], range: &Range<usize>) -> Result<ScalarValue> {
        let row = self.row;
        self.row += 1;
        let Some(x) = values[0].as_primitive_opt::<Float64Type>() else {
            return exec_err!("{}: value must be a DOUBLE", self.name);
        };
        if row >= x.len() {
            return exec_err!("{}: row {row} outside the partition of {} rows", self.name, x.len());
        }
        let threshold = threshold_at(self.name, values, row)?;
        if x.is_null(row) || x.value(row).is_nan() {
            return null_result();
        }
        self.scratch.clear();
        for i in range.clone() {
            if i != row && x.is_valid(i) && !x.value(i).is_nan() {
                self.scratch.push(x.value(i));
            }
        }
        if self.scratch.len() < MIN_BASELINE {
            return classify(x.value(row), None, None, threshold).to_scalar();
        }
        let (centre, spread) = (self.baseline)(&mut self.scratch);
        classify(x.value(row), centre, spread, threshold).to_scalar()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_rule() {
        let v = classify(13.0, Some(10.0), Some(1.0), 3.0);
        assert_eq!(
            (v.score, v.is_anomaly, v.kind, v.severity),
            (Some(3.0), true, "high", "low")
        );
        let v = classify(4.0, Some(10.0), Some(1.0), 3.0);
        assert_eq!((v.is_anomaly, v.kind, v.severity), (true, "drop", "high"));
        let v = classify(10.0 + 9.5, Some(10.0), Some(1.0), 3.0);
        assert_eq!((v.kind, v.severity), ("spike", "critical"));
        let v = classify(8.0, Some(10.0), Some(1.0), 3.0);
        assert_eq!((v.is_anomaly, v.kind, v.severity), (false, "normal", "none"));
        let v = classify(5.0, Some(5.0), Some(0.0), 3.0);
        assert_eq!((v.score, v.is_anomaly), (Some(0.0), false));
        let v = classify(6.0, Some(5.0), Some(0.0), 3.0);
        assert_eq!((v.score, v.is_anomaly, v.kind), (None, true, "spike"));
        let v = classify(6.0, None, None, 3.0);
        assert_eq!(v.kind, "insufficient_data");
    }
}
