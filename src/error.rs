//! Error classification shared by every layer: who caused it and whether retrying may help.

/// Who is responsible for an error. Decides the HTTP status family and the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request or the data was wrong; the caller must change it.
    User,
    /// A dependency (disk, network, database, broker) failed; retrying may help.
    External,
    /// A bug or broken invariant in the Hub.
    Internal,
}

/// Implemented by every error enum of the crate.
pub trait Classify {
    /// Who caused the error.
    fn class(&self) -> ErrorClass;
    /// Whether the same operation may succeed if retried unchanged.
    fn retryable(&self) -> bool {
        self.class() == ErrorClass::External
    }
}
