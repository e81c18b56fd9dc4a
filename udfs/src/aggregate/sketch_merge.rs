//! `sketch_merge` — merges serialized sketches (from `quantile_sketch` or `sketch_merge`) into one; NULL sketches are skipped, a corrupt one is an execution error.
//!
//! See `docs/functions.md` for the SQL signature, examples and edge cases.

use std::sync::Arc;

use datafusion::logical_expr::AggregateUDF;

use crate::sketch::udaf::SketchUdaf;
use crate::sketch::{SketchInput, SketchOutput};

/// The `sketch_merge` aggregate.
pub fn udaf() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::from(SketchUdaf::new(
        "sketch_merge",
        SketchInput::Sketches,
        SketchOutput::Sketch,
    )))
}
