//! Where the states of emitted windows go before their rows enter the query's own table: the
//! PostgreSQL rollup sink (implemented there; the engine knows only this trait).
//!
//! One executor per continuous query: the engine decides what a window holds (lateness,
//! watermarks, updating emission) and the sink stores exactly that. The engine hands the sink
//! a query's states first and appends the rows to its output store only once the sink took
//! them; a restart re-emits every window the store does not hold, and the sink's write
//! replaces what the same instance wrote for that window and key before, so a window written
//! twice is stored once.

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;

/// Why a sink did not take states (the engine keeps the rows and retries on its next tick).
pub type StateSinkError = Box<dyn std::error::Error + Send + Sync>;

/// One query's emissions, oldest first. Each emission is rows of the query's state schema
/// holding, merged, the whole state so far of every window and key it covers (several rows of
/// one window and key are partial states to merge); a later emission of the same window and
/// key replaces an earlier one.
#[derive(Debug, Clone, Copy)]
pub struct QueryEmissions<'a> {
    /// The query.
    pub name: &'a str,
    /// Its emissions, oldest first.
    pub emissions: &'a [Vec<RecordBatch>],
}

/// Stores the accumulator states of emitted windows.
#[async_trait]
pub trait StateSink: Send + Sync + std::fmt::Debug {
    /// Stores what every query in `queries` emitted in one engine step, all at once (the
    /// engine calls this once per step, not once per query). `Ok` once they are durable (a
    /// query the sink does not keep, or whose write can never succeed, is skipped and its
    /// status says why); `Err` only when retrying later can succeed, and then none is stored.
    async fn write_states(&self, queries: &[QueryEmissions<'_>]) -> Result<(), StateSinkError>;
}
