//! Synthetic LLM telemetry: several providers and models with their own latency, token and
//! price profiles, ~3% errors and timeouts, traces of parent/child events, several modules and
//! environments, an optional latency spike and out-of-order timestamps. Deterministic for a
//! seed and start time.

mod model;

pub use model::{Generator, GeneratorConfig};
pub mod output;
