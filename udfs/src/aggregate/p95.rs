//! `p95` — approximate 95th percentile (DDSketch, 1% relative accuracy, rank floor(0.95·(n−1))).
//!
//! See `docs/functions.md` for the SQL signature, examples and edge cases.

use std::sync::Arc;

use datafusion::logical_expr::AggregateUDF;

use crate::sketch::udaf::SketchUdaf;
use crate::sketch::{SketchInput, SketchOutput};

/// The `p95` aggregate.
pub fn udaf() -> Arc<AggregateUDF> {
    Arc::new(AggregateUDF::from(SketchUdaf::new(
        "p95",
        SketchInput::Values,
        SketchOutput::Quantile(0.95),
    )))
}
