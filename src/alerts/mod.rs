//! Alerting: rules over continuous-query outputs (SQL, anomaly specs, budgets), evaluated when
//! their source emits, with `pending → firing → resolved` per group, one signed webhook
//! notification per transition, and the `hub_alerts` table of every transition.

pub mod config;
pub mod engine;
pub mod notify;
pub mod rule;
pub mod sql;
pub mod state;
pub mod store;
pub mod table;

pub use config::AlertsConfig;
pub use engine::{AlertView, Alerts, AlertsDeps, RuleView};
pub use rule::AlertRule;

use crate::error::{Classify, ErrorClass};

/// Errors of the alert engine.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// A rule that cannot work as written (the message names the field).
    #[error("{0}")]
    Invalid(String),
    /// No such rule.
    #[error("no alert rule named `{0}`")]
    NotFound(String),
    /// A rule of that name exists.
    #[error("an alert rule named `{0}` exists; delete it first")]
    Exists(String),
    /// The rules or the transition log could not be read or written.
    #[error("alert storage")]
    Storage(#[from] crate::storage::StorageError),
    /// A rule's SQL failed.
    #[error("evaluating")]
    Query(#[from] crate::query::QueryError),
}

impl Classify for AlertsError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Invalid(_) | Self::NotFound(_) | Self::Exists(_) => ErrorClass::User,
            Self::Storage(e) => e.class(),
            Self::Query(e) => e.class(),
        }
    }
}
