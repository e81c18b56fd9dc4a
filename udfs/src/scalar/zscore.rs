//! `zscore(x, mean, stddev) -> DOUBLE`: `(x − mean) / stddev`.
//!
//! Any NULL argument → NULL. `stddev = 0` (or negative, or NaN) → NULL: a constant baseline
//! has no scale, so no score. NaN `x`/`mean` propagate as NaN (IEEE arithmetic).

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

/// Implementation of `zscore`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ZScore {
    signature: Signature,
}

/// The `zscore` scalar function.
pub fn udf() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::from(ZScore {
        signature: Signature::exact(vec![DataType::Float64; 3], Volatility::Immutable),
    }))
}

/// The z-score, or `None` when `stddev` is not a positive number.
#[inline]
pub fn zscore(x: f64, mean: f64, stddev: f64) -> Option<f64> {
    (stddev > 0.0).then(|| (x - mean) / stddev)
}

impl ScalarUDFImpl for ZScore {
    fn name(&self) -> &str {
        "zscore"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (Some(x), Some(m), Some(s)) = (
            arrays[0].as_primitive_opt::<Float64Type>(),
            arrays[1].as_primitive_opt::<Float64Type>(),
            arrays[2].as_primitive_opt::<Float64Type>(),
        ) else {
            return exec_err!("zscore expects three DOUBLE arguments");
        };
        let out: Float64Array = (0..x.len())
            .map(|i| {
                if x.is_null(i) || m.is_null(i) || s.is_null(i) {
                    None
                } else {
                    zscore(x.value(i), m.value(i), s.value(i))
                }
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}
