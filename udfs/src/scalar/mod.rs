//! Scalar functions, one per file.

pub mod sketch_quantile;
pub mod time_bucket;
pub mod zscore;
