//! SQL functions for LLM Analytics Hub: scalar UDFs, aggregate UDAFs and window UDWFs over
//! DataFusion: mergeable percentiles (DDSketch), anomaly scoring, rank and lagged correlation,
//! forecasting and seasonality/changepoint detection (augurs). Reference: `docs/functions.md`.
//!
//! Every function lives in its own file under `scalar/`, `aggregate/` or `window/`, and is
//! listed once in [`scalar_udfs`], [`aggregate_udfs`] or [`window_udfs`].

#![cfg_attr(test, allow(clippy::expect_used))]

use std::sync::Arc;

use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};

pub mod aggregate;
pub mod scalar;
pub mod series;
pub mod sketch;
pub mod window;

/// Every scalar function of the library.
pub fn scalar_udfs() -> Vec<Arc<ScalarUDF>> {
    vec![
        scalar::sketch_quantile::udf(),
        scalar::zscore::udf(),
        scalar::time_bucket::udf(),
    ]
}

/// Every aggregate function of the library.
pub fn aggregate_udfs() -> Vec<Arc<AggregateUDF>> {
    vec![
        aggregate::quantile_sketch::udaf(),
        aggregate::sketch_merge::udaf(),
        aggregate::p50::udaf(),
        aggregate::p95::udaf(),
        aggregate::p99::udaf(),
        aggregate::spearman_corr::udaf(),
        aggregate::xcorr::udaf(),
        aggregate::forecast::udaf(),
        aggregate::detect_seasonality::udaf(),
        aggregate::changepoints::udaf(),
    ]
}

/// Every window function of the library.
pub fn window_udfs() -> Vec<Arc<WindowUDF>> {
    vec![
        window::anomaly::udwf(),
        window::anomaly_robust::udwf(),
        window::anomaly_seasonal::udwf(),
    ]
}

/// Registers every function of the library into `registry` (a `SessionContext` or state).
pub fn register_all(registry: &mut dyn FunctionRegistry) -> Result<()> {
    for f in scalar_udfs() {
        registry.register_udf(f)?;
    }
    for f in aggregate_udfs() {
        registry.register_udaf(f)?;
    }
    for f in window_udfs() {
        registry.register_udwf(f)?;
    }
    Ok(())
}

/// Names of every function, in registry order (for docs and the uniqueness test).
pub fn function_names() -> Vec<String> {
    let mut names: Vec<String> = scalar_udfs().iter().map(|f| f.name().to_string()).collect();
    names.extend(aggregate_udfs().iter().map(|f| f.name().to_string()));
    names.extend(window_udfs().iter().map(|f| f.name().to_string()));
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[test]
    fn names_are_unique() {
        let mut names = function_names();
        let total = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), total, "duplicate function names in the registry");
    }

    /// The reference cannot drift from the registry: every function has a `###` heading of its
    /// own in `docs/functions.md` (`p50, p95, p99` share one), and every such heading names a
    /// registered function.
    #[test]
    fn every_function_has_a_section_in_the_reference() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/functions.md"))
            .expect("docs/functions.md");
        let documented: Vec<String> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("### "))
            .flat_map(|h| h.split(',').map(|n| n.trim().to_string()).collect::<Vec<_>>())
            .filter(|n| {
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
            .collect();
        let names = function_names();
        for name in &names {
            assert!(
                documented.contains(name),
                "`{name}` has no `### {name}` section in docs/functions.md"
            );
        }
        for heading in &documented {
            assert!(
                names.contains(heading),
                "docs/functions.md documents `{heading}`, which is not registered"
            );
        }
    }

    #[test]
    fn registers_into_a_session() {
        let mut ctx = SessionContext::new();
        register_all(&mut ctx).expect("registration succeeds");
        for name in function_names() {
            let state = ctx.state();
            let known = state.scalar_functions().contains_key(&name)
                || state.aggregate_functions().contains_key(&name)
                || state.window_functions().contains_key(&name);
            assert!(known, "{name} not registered");
        }
    }
}
