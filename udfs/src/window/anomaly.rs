//! `anomaly(x, threshold) OVER (PARTITION BY … ORDER BY … ROWS BETWEEN n PRECEDING AND 1 PRECEDING)`
//!
//! Z-score anomaly detection against a trailing baseline given by the window frame: baseline
//! centre = mean, spread = sample standard deviation (n − 1) of the valid frame values,
//! excluding the current row. Result and classification: see [`super::anomaly_common`].

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::Result;
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl};

use super::anomaly_common::{FrameAnomalyEvaluator, result_fields};

/// Implementation of `anomaly`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Anomaly {
    signature: Signature,
}

/// The `anomaly` window function.
pub fn udwf() -> Arc<WindowUDF> {
    Arc::new(WindowUDF::from(Anomaly {
        signature: Signature::exact(vec![DataType::Float64; 2], Volatility::Immutable),
    }))
}

/// Mean and sample standard deviation (two-pass; `values.len() >= 2`).
pub fn mean_stddev(values: &mut [f64]) -> (Option<f64>, Option<f64>) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (Some(mean), Some((ss / (n - 1.0)).sqrt()))
}

impl WindowUDFImpl for Anomaly {
    fn name(&self) -> &str {
        "anomaly"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(&self, _args: PartitionEvaluatorArgs) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(FrameAnomalyEvaluator::new("anomaly", mean_stddev)))
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Field::new(field_args.name(), DataType::Struct(result_fields()), true).into())
    }
}
