//! The validation rules of an event, shared by both decoders (serde and the scanner): they see
//! the same raw field texts, so they accept and reject the same events with the same reasons.

use std::borrow::Cow;

use super::fields;
use super::raw::{EventFields, PayloadFields, RawPayload};
use super::reject::{FieldError, RejectKind};

/// Accepted severities, in increasing order.
pub const SEVERITIES: [&str; 5] = ["debug", "info", "warning", "error", "critical"];
/// Accepted `payload.status` values.
pub const STATUSES: [&str; 3] = ["ok", "error", "timeout"];
/// `schema_version` assumed when the field is absent.
pub const DEFAULT_SCHEMA_VERSION: &str = "1.0.0";

/// A fully validated event, borrowing from the request body where possible.
pub(crate) struct Parsed<'a> {
    pub event_id: Id<'a>,
    pub timestamp_us: i64,
    pub source_module: Cow<'a, str>,
    pub event_type: Cow<'a, str>,
    pub schema_version: Cow<'a, str>,
    pub severity: Cow<'a, str>,
    pub environment: Option<Cow<'a, str>>,
    pub correlation_id: Option<Cow<'a, str>>,
    pub parent_event_id: Option<Id<'a>>,
    pub tags: Option<&'a str>,
    pub operation: Option<Cow<'a, str>>,
    pub provider: Option<Cow<'a, str>>,
    pub model: Option<Cow<'a, str>>,
    pub latency_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    pub status: Option<Cow<'a, str>>,
    pub error_type: Option<Cow<'a, str>>,
    pub user_id: Option<Cow<'a, str>>,
    pub tenant: Option<Cow<'a, str>>,
    pub payload: &'a str,
}

/// A validated UUID: its text when that is the canonical form already (lower-case hyphenated,
/// what is stored; the usual case, checked without parsing), the parsed value otherwise.
pub(crate) enum Id<'a> {
    /// Canonical text, stored as is.
    Canonical(Cow<'a, str>),
    /// Any other accepted spelling (upper case, braces, no hyphens, `urn:uuid:`).
    Parsed(uuid::Uuid),
}

impl<'a> Id<'a> {
    fn parse(field: &str, text: Cow<'a, str>) -> Result<Self, FieldError> {
        if fields::is_canonical_uuid(text.as_bytes()) {
            return Ok(Self::Canonical(text));
        }
        fields::uuid(field, &text).map(Self::Parsed)
    }
}

/// First present of several aliases of one field, with the name it was found under.
fn first_of<'a>(candidates: &[(&'static str, Option<&'a str>)]) -> (&'static str, Option<&'a str>) {
    candidates
        .iter()
        .find(|(_, v)| v.is_some())
        .copied()
        .unwrap_or((candidates.first().map_or("", |c| c.0), None))
}

fn parse_payload(raw: &str) -> Result<PayloadFields<'_>, FieldError> {
    if !raw.starts_with('{') {
        return Err(FieldError::new(
            RejectKind::PayloadNotObject,
            "field `payload` must be a JSON object",
        ));
    }
    serde_json::from_str::<RawPayload<'_>>(raw)
        .map(|p| PayloadFields::from(&p))
        .map_err(|e| FieldError::new(RejectKind::InvalidValue, format!("field `payload`: {e}")))
}

fn tags_error() -> FieldError {
    FieldError::new(
        RejectKind::InvalidType,
        "field `tags` must be an object whose values are strings",
    )
}

fn validate_tags(text: &str) -> Result<&str, FieldError> {
    let ok = text.starts_with('{') && serde_json::from_str::<fields::StringMap>(text).is_ok();
    if ok { Ok(text) } else { Err(tags_error()) }
}

fn check_schema_version(version: &str) -> Result<(), FieldError> {
    // The major version (before the first `.`) must be 1.
    if version == "1" || version.starts_with("1.") {
        Ok(())
    } else {
        Err(FieldError::new(
            RejectKind::UnsupportedSchemaVersion,
            format!("schema_version {version:?} is not supported (supported: 1.x.y)"),
        ))
    }
}

/// What a decoder already learned about an event while finding its fields (the scanner reads
/// the payload's fields and checks the tags in the same pass); `default()` for none of it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Prescanned<'a> {
    /// The payload's fields, when the payload is an object the decoder read.
    pub payload: Option<PayloadFields<'a>>,
    /// Whether `tags` is an object of strings, when the decoder could tell.
    pub tags_ok: Option<bool>,
    /// The event's text holds no backslash, so no string in it has escapes.
    pub verbatim: bool,
}

/// Validates one event's fields: the single rule set both decoders use.
#[inline]
pub(crate) fn parse_event<'a>(env: &EventFields<'a>, pre: &Prescanned<'a>) -> Result<Parsed<'a>, FieldError> {
    let v = pre.verbatim;
    let event_id = Id::parse("event_id", fields::required_string_in(v, "event_id", env.event_id)?)?;
    let ts_text = fields::required_string_in(v, "timestamp", env.timestamp)?;
    let timestamp_us = fields::rfc3339_micros("timestamp", &ts_text)?;
    let source_module = fields::required_string_in(v, "source_module", env.source_module)?;
    let event_type = fields::required_string_in(v, "event_type", env.event_type)?;
    let schema_version = fields::opt_string_in(v, "schema_version", env.schema_version)?
        .unwrap_or(Cow::Borrowed(DEFAULT_SCHEMA_VERSION));
    check_schema_version(&schema_version)?;
    let severity = fields::opt_string_in(v, "severity", env.severity)?.unwrap_or(Cow::Borrowed("info"));
    if !SEVERITIES.contains(&severity.as_ref()) {
        return Err(FieldError::new(
            RejectKind::InvalidValue,
            format!("field `severity` must be one of {SEVERITIES:?}, got {severity:?}"),
        ));
    }
    let environment = fields::opt_string_in(v, "environment", env.environment)?;
    let correlation_id = fields::opt_string_in(v, "correlation_id", env.correlation_id)?;
    let parent_event_id = fields::opt_string_in(v, "parent_event_id", env.parent_event_id)?
        .map(|p| Id::parse("parent_event_id", p))
        .transpose()?;
    let tags = env
        .tags
        .map(|t| match pre.tags_ok {
            Some(true) => Ok(t),
            Some(false) => Err(tags_error()),
            None => validate_tags(t),
        })
        .transpose()?;
    let payload_raw = env.payload.ok_or_else(|| FieldError::missing("payload"))?;
    let parsed_payload;
    let p = match &pre.payload {
        Some(p) => p,
        None => {
            parsed_payload = parse_payload(payload_raw)?;
            &parsed_payload
        }
    };

    let (name, raw) = first_of(&[
        ("payload.operation", p.operation),
        ("payload.gen_ai.operation.name", p.otel_operation),
    ]);
    let operation = fields::opt_string_in(v, name, raw)?;
    let (name, raw) = first_of(&[
        ("payload.provider", p.provider),
        ("payload.gen_ai.provider.name", p.otel_provider),
        ("payload.gen_ai.system", p.otel_system),
    ]);
    let provider = fields::opt_string_in(v, name, raw)?;
    let (name, raw) = first_of(&[
        ("payload.model", p.model),
        ("payload.gen_ai.response.model", p.otel_response_model),
        ("payload.gen_ai.request.model", p.otel_request_model),
    ]);
    let model = fields::opt_string_in(v, name, raw)?;
    let latency_ms = fields::opt_non_negative_f64("payload.latency_ms", p.latency_ms)?;
    let ttft_ms = fields::opt_non_negative_f64("payload.ttft_ms", p.ttft_ms)?;
    let (name, raw) = first_of(&[
        ("payload.input_tokens", p.input_tokens),
        ("payload.gen_ai.usage.input_tokens", p.otel_input_tokens),
        ("payload.gen_ai.usage.prompt_tokens", p.otel_prompt_tokens),
    ]);
    let input_tokens = fields::opt_non_negative_i64(name, raw)?;
    let (name, raw) = first_of(&[
        ("payload.output_tokens", p.output_tokens),
        ("payload.gen_ai.usage.output_tokens", p.otel_output_tokens),
        ("payload.gen_ai.usage.completion_tokens", p.otel_completion_tokens),
    ]);
    let output_tokens = fields::opt_non_negative_i64(name, raw)?;
    let total_tokens = match fields::opt_non_negative_i64("payload.total_tokens", p.total_tokens)? {
        Some(t) => Some(t),
        None if input_tokens.is_some() || output_tokens.is_some() => {
            Some(input_tokens.unwrap_or(0).saturating_add(output_tokens.unwrap_or(0)))
        }
        None => None,
    };
    let cost_usd = fields::opt_non_negative_f64("payload.cost_usd", p.cost_usd)?;
    let (name, raw) = first_of(&[
        ("payload.error_type", p.error_type),
        ("payload.error.type", p.otel_error_type),
    ]);
    let error_type = fields::opt_string_in(v, name, raw)?;
    let status = match fields::opt_string_in(v, "payload.status", p.status)? {
        Some(s) if STATUSES.contains(&s.as_ref()) => Some(s),
        Some(s) => {
            return Err(FieldError::new(
                RejectKind::InvalidValue,
                format!("field `payload.status` must be one of {STATUSES:?}, got {s:?}"),
            ));
        }
        None if error_type.is_some() => Some(Cow::Borrowed("error")),
        None if p.has_llm_fields() => Some(Cow::Borrowed("ok")),
        None => None,
    };
    let user_id = fields::opt_string_in(v, "payload.user_id", p.user_id)?;
    let tenant = fields::opt_string_in(v, "payload.tenant", p.tenant)?;

    Ok(Parsed {
        event_id,
        timestamp_us,
        source_module,
        event_type,
        schema_version,
        severity,
        environment,
        correlation_id,
        parent_event_id,
        tags,
        operation,
        provider,
        model,
        latency_ms,
        ttft_ms,
        input_tokens,
        output_tokens,
        total_tokens,
        cost_usd,
        status,
        error_type,
        user_id,
        tenant,
        payload: payload_raw,
    })
}
