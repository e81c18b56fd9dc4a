//! HTTP errors: a status and a JSON body `{"error": {"code", "message"}}`. Internal details
//! are logged, never returned.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{Classify, ErrorClass};
use crate::ingest::IngestError;
use crate::query::{GuardError, QueryError};
use crate::storage::StorageError;
use crate::storage::health::FaultKind;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with the given status, machine-readable code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500, logging the detail and returning a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).retry_after(retry_after_secs)
    }

    /// The same error, answered with `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = super::openapi::ErrorBody {
            error: super::openapi::ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match &e {
            QueryError::Guard(GuardError::Refused(_)) => Self::new(StatusCode::FORBIDDEN, "read_only", e.to_string()),
            QueryError::Guard(GuardError::FileAccess(_)) => {
                Self::new(StatusCode::FORBIDDEN, "file_access", e.to_string())
            }
            QueryError::Guard(GuardError::TooComplex(_)) => Self::bad_request("query_too_complex", e.to_string()),
            QueryError::Guard(_) => Self::bad_request("invalid_sql", e.to_string()),
            QueryError::Invalid(_) => Self::bad_request("invalid_query", e.to_string()),
            QueryError::Timeout(_) => Self::new(StatusCode::REQUEST_TIMEOUT, "query_timeout", e.to_string()),
            QueryError::Resources(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "resources_exhausted", e.to_string())
            }
            QueryError::ResultTooLarge(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "result_too_large", e.to_string())
            }
            QueryError::Busy { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_queries", e.to_string()).retry_after(1)
            }
            QueryError::FilesChanged(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "files_changed", e.to_string()).retry_after(1)
            }
            QueryError::Internal { .. } => Self::internal(e),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        if let IngestError::Storage(StorageError::MemoryFull { .. }) = &e {
            tracing::warn!(error = %crate::error::chain(&e), "ingest refused: the flush is behind");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "memory_full",
                "events arrive faster than the data disk takes them (storage.max_memory_bytes reached); nothing was accepted, retry later",
            )
            .retry_after(1);
        }
        if let IngestError::Storage(storage) = &e
            && let Some(kind) = storage.fault_kind()
        {
            tracing::warn!(error = %crate::error::chain(&e), "ingest refused: storage unavailable");
            let cause = match kind {
                FaultKind::NoSpace => "the data disk is full",
                FaultKind::LowSpace => "free space on the data disk is below storage.min_free_bytes",
                FaultKind::ReadOnly => "the data directory is read-only",
                FaultKind::Io => "the data disk reports I/O errors",
            };
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                format!(
                    "storage unavailable ({}): {cause}; nothing was accepted, retry later",
                    kind.as_str()
                ),
            )
            .retry_after(5);
        }
        match e.class() {
            ErrorClass::External => {
                tracing::error!(error = %crate::error::chain(&e), "ingest failed");
                Self::unavailable(
                    "events could not be stored right now; nothing was accepted, retry later",
                    1,
                )
            }
            ErrorClass::User | ErrorClass::Internal => Self::internal(e),
        }
    }
}

/// Maps body-reading failures: 413 when over the limit, 400 otherwise.
pub fn body_rejection(rejection: &axum::extract::rejection::BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "request body exceeds the limit of {limit} bytes (http.max_body_bytes); split it into smaller batches"
            ),
        )
    } else {
        ApiError::bad_request("invalid_body", rejection.body_text())
    }
}
