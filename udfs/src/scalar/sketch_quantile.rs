//! `sketch_quantile(sketch BINARY, q DOUBLE) -> DOUBLE`: the approximate `q`-quantile of a
//! serialized sketch (rank `floor(q·(n−1))`, within the sketch's 1% relative error).
//!
//! NULL sketch or NULL `q` → NULL; an empty sketch → NULL; `q` outside `[0, 1]` or a corrupt /
//! foreign binary → execution error.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

use crate::sketch::DDSketch;

/// Implementation of `sketch_quantile`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SketchQuantile {
    signature: Signature,
}

/// The `sketch_quantile` scalar function.
pub fn udf() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::from(SketchQuantile {
        signature: Signature::exact(vec![DataType::Binary, DataType::Float64], Volatility::Immutable),
    }))
}

impl ScalarUDFImpl for SketchQuantile {
    fn name(&self) -> &str {
        "sketch_quantile"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (Some(sketches), Some(qs)) = (
            arrays[0].as_binary_opt::<i32>(),
            arrays[1].as_primitive_opt::<Float64Type>(),
        ) else {
            return exec_err!("sketch_quantile expects (BINARY, DOUBLE)");
        };
        let out = (0..sketches.len())
            .map(|i| {
                if sketches.is_null(i) || qs.is_null(i) {
                    return Ok(None);
                }
                DDSketch::from_bytes(sketches.value(i))?.quantile(qs.value(i))
            })
            .collect::<Result<Float64Array>>()?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}
