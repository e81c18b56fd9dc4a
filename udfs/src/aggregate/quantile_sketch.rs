//! `quantile_sketch` — builds a DDSketch (1% relative accuracy) of its numeric argument and returns it serialized (BINARY). NULL, NaN and ±inf inputs are skipped; a group with no counted value gives NULL.
//!
//! See `docs/functions.md` for the SQL signature, examples and edge cases.

use std::sync::Arc;

use datafusion::logical_expr::AggregateUDF;

use crate::sketch::udaf::SketchUdaf;
use crate::sketch::{SketchInput, SketchOutput};

/// The `quantile_sketch` aggregate.
pub fn udaf() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::from(SketchUdaf::new(
        "quantile_sketch",
        SketchInput::Values,
        SketchOutput::Sketch,
    )))
}
