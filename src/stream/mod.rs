//! The streaming engine: continuous SQL queries over event-time windows.
//!
//! A continuous query is planned once by DataFusion, split into partial and final
//! aggregation ([`plan`]), and run on every micro-batch of accepted events ([`query`]):
//! accumulator state is kept per (window, group key) — [`fixed`] for tumbling and hopping
//! windows, [`session`] for sessions, which merge — merged while the window is open and
//! finalized when the watermark passes its end. Output rows ([`emit`]: final rows, or versions
//! for updating emission) go to a durable table named after the query ([`output`]); events too
//! late for their window go to `late_events`. [`engine`] owns the queries and runs them on one
//! task fed by the ingest path.

pub mod catalog;
pub mod create;
pub mod emit;
pub mod engine;
pub mod fixed;
pub mod keys;
pub mod lanes;
pub mod late;
pub mod merge;
pub mod output;
pub mod plan;
pub mod query;
pub mod rewrite;
pub mod session;
pub mod shared;
pub mod shipped;
pub mod state_sink;
pub mod window;

use crate::error::ErrorDetail;
use crate::error::{Classify, ErrorClass};
use datafusion::error::DataFusionError;

pub use engine::{StreamEngine, StreamHandle};

/// Errors of continuous queries.
#[derive(Debug, thiserror::Error)]
pub enum CqError {
    /// The definition is invalid (SQL, window, name, options): rejected at registration.
    #[error("{0}")]
    Invalid(String),
    /// A query with this name (or a table with this name) already exists.
    #[error("a continuous query or table named `{0}` already exists")]
    Duplicate(String),
    /// No query with this name.
    #[error("no continuous query named `{0}`")]
    NotFound(String),
    /// Execution failed on some micro-batch.
    #[error("execution failed: {0}")]
    Execution(#[source] DataFusionError),
    /// Storage of outputs, late events or definitions failed.
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// The engine task is gone (shutting down).
    #[error("the streaming engine is not running")]
    Stopped,
    /// A bug: a broken invariant (a message) or an operation that should not fail (its error is
    /// the source).
    #[error("internal error: {0}")]
    Internal(#[source] ErrorDetail),
}

impl CqError {
    /// An operation that should not fail did (`e` is the source).
    pub(crate) fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(ErrorDetail::of(e))
    }

    /// [`CqError::internal`] after what was being done (`context: e`).
    pub(crate) fn internal_in<E: std::error::Error + Send + Sync + 'static>(
        context: impl Into<String>,
    ) -> impl FnOnce(E) -> Self {
        let context = context.into();
        move |e| Self::Internal(ErrorDetail::context(context, e))
    }

    /// A broken invariant, with no underlying error.
    pub(crate) fn bug(message: impl Into<String>) -> Self {
        Self::Internal(ErrorDetail::message(message))
    }

    /// Planning errors are the user's (unknown column, bad type, unknown function).
    pub(crate) fn from_planning(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::Internal(_) => Self::internal(e),
            root => Self::Invalid(root.message().to_string()),
        }
    }

    pub(crate) fn from_execution(e: DataFusionError) -> Self {
        Self::Execution(e)
    }
}

impl Classify for CqError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Invalid(_) | Self::Duplicate(_) | Self::NotFound(_) => ErrorClass::User,
            Self::Storage(_) | Self::Stopped => ErrorClass::External,
            Self::Execution(_) | Self::Internal(_) => ErrorClass::Internal,
        }
    }
}

#[cfg(test)]
mod error_tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn internal_errors_keep_their_cause() {
        let e = CqError::internal_in("renaming /cq/checkpoint.tmp")(std::io::Error::other("disk on fire"));
        assert_eq!(
            e.to_string(),
            "internal error: renaming /cq/checkpoint.tmp: disk on fire"
        );
        let cause = e
            .source()
            .and_then(|d| d.source())
            .and_then(|s| s.downcast_ref::<std::io::Error>());
        assert!(cause.is_some(), "{e:?}");
        // The cause is printed inline: the chain does not repeat it.
        assert_eq!(
            crate::error::chain(&e),
            "internal error: renaming /cq/checkpoint.tmp: disk on fire"
        );
        assert_eq!(e.class(), ErrorClass::Internal);
        // A broken invariant has no cause.
        let bug = CqError::bug("window kind changed");
        assert_eq!(crate::error::chain(&bug), "internal error: window kind changed");
        assert!(bug.source().and_then(|d| d.source()).is_none());
        // Execution keeps DataFusion's error.
        let exec = CqError::from_execution(DataFusionError::Execution("division by zero".into()));
        assert_eq!(exec.to_string(), "execution failed: Execution error: division by zero");
        assert!(exec.source().is_some());
    }
}

#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod updating_tests;
