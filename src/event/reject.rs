//! Why an event was rejected: a machine-readable kind plus a human-readable reason.

use serde::Serialize;

/// The validation rule an event broke. The snake_case name is the `error_type` label of
/// `events_errors_total` and the `error_type` field of HTTP rejection entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    /// The bytes are not valid JSON.
    MalformedJson,
    /// A required field is absent or null.
    MissingField,
    /// A field has the wrong JSON type (string where a number is expected, ...).
    InvalidType,
    /// `timestamp` is not an RFC 3339 date-time.
    InvalidTimestamp,
    /// `payload` is not a JSON object.
    PayloadNotObject,
    /// A field has the right type but a value outside its domain (negative tokens, unknown
    /// severity, malformed UUID, ...).
    InvalidValue,
    /// `schema_version` has a major version this build does not understand.
    UnsupportedSchemaVersion,
    /// `payload.tenant` names another tenant than the credential's.
    TenantMismatch,
}

impl RejectKind {
    /// The snake_case label of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::MissingField => "missing_field",
            Self::InvalidType => "invalid_type",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::PayloadNotObject => "payload_not_object",
            Self::InvalidValue => "invalid_value",
            Self::UnsupportedSchemaVersion => "unsupported_schema_version",
            Self::TenantMismatch => "tenant_mismatch",
        }
    }
}

/// One rejected event of a batch.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rejection {
    /// 0-based position of the event in the request (array element or non-blank NDJSON line).
    pub index: usize,
    /// The rule that was broken.
    pub error_type: RejectKind,
    /// What exactly was wrong, naming the field.
    pub reason: String,
    /// `source_module` of the event when it could be read (metrics label), else `None`.
    #[serde(skip)]
    pub source_module: Option<String>,
    /// `event_type` of the event when it could be read (metrics label), else `None`.
    #[serde(skip)]
    pub event_type: Option<String>,
}

/// A rejection before the index and labels are known.
#[derive(Debug)]
pub(crate) struct FieldError {
    pub kind: RejectKind,
    pub reason: String,
}

impl FieldError {
    pub fn new(kind: RejectKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }

    pub fn missing(field: &str) -> Self {
        Self::new(RejectKind::MissingField, format!("missing required field `{field}`"))
    }
}
