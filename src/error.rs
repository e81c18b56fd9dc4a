//! Error classification shared by every layer: who caused it and whether retrying may help.

use std::sync::Arc;

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

/// An error with every cause in its `source` chain, `outer: inner: innermost` (for logs; an
/// answer to a client shows only the outer message).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        // Variants that print their source inline (`{0}`) would repeat it.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// What a one-field error variant says: a message, the error it came from, or both
/// (`message: error`). The error is kept as the `source`, so [`chain`] and the
/// logs see it, and shared, so the variant stays `Clone`. For variants that take both plain
/// messages and errors ([`crate::stream::CqError::Internal`],
/// [`crate::exports::ExportError::Destination`], ...).
#[derive(Debug, Clone)]
pub struct ErrorDetail {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ErrorDetail {
    /// A message with no underlying error.
    pub fn message(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// `source`, said as is.
    pub fn of(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::context("", source)
    }

    /// `source`, said after what was being done (`context: source`).
    pub fn context(context: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            message: context.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// An already boxed `source` (e.g. `ParquetError::External`), after `context` when it is
    /// not empty.
    pub fn boxed(context: impl Into<String>, source: Box<dyn std::error::Error + Send + Sync>) -> Self {
        Self {
            message: context.into(),
            source: Some(Arc::from(source)),
        }
    }
}

impl From<String> for ErrorDetail {
    fn from(message: String) -> Self {
        Self::message(message)
    }
}

impl From<&str> for ErrorDetail {
    fn from(message: &str) -> Self {
        Self::message(message)
    }
}

impl std::fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            None => f.write_str(&self.message),
            Some(source) if self.message.is_empty() => write!(f, "{source}"),
            Some(source) => write!(f, "{}: {source}", self.message),
        }
    }
}

impl std::error::Error for ErrorDetail {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_shows_every_cause_once() {
        let io = std::io::Error::other("disk on fire");
        let storage = crate::storage::StorageError::Io {
            context: "appending".into(),
            source: io,
        };
        // `StorageError::Io` prints its source inline: it is not repeated.
        assert_eq!(chain(&storage), "appending: disk on fire");
        let unavailable = crate::sinks::SinkError::Unavailable("timeout".into());
        assert_eq!(chain(&unavailable), "database unavailable: timeout");
        // A database error keeps the driver's error as its source.
        let db = crate::sinks::SinkError::Database {
            transient: true,
            sqlstate: Some("57P01".into()),
            source: Box::new(std::io::Error::other("terminating connection")),
        };
        assert!(std::error::Error::source(&db).is_some());
        assert_eq!(
            chain(&db),
            "database unavailable (SQLSTATE 57P01): terminating connection"
        );
    }
}
