//! Shared sketch machinery: the DDSketch itself and the (groups) accumulators that the sketch
//! aggregates (`quantile_sketch`, `sketch_merge`, `p50`, `p95`, `p99`) are built from.

pub mod accumulator;
pub mod ddsketch;
pub mod udaf;

pub use accumulator::{SketchAccumulator, SketchGroupsAccumulator, SketchInput, SketchOutput};
pub use ddsketch::DDSketch;
