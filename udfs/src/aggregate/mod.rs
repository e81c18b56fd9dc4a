//! Aggregate functions, one per file.

pub mod changepoints;
pub mod detect_seasonality;
pub mod forecast;
pub mod p50;
pub mod p95;
pub mod p99;
pub mod quantile_sketch;
mod series_udaf;
pub mod sketch_merge;
pub mod spearman_corr;
pub mod xcorr;
