//! JSON → Arrow `RecordBatch` decoding of events: the hot path of the product.
//!
//! Events are parsed into borrowed views (no `serde_json::Value`), validated field by field and
//! appended straight into Arrow builders. Validation is per event: a bad event is reported with
//! its index and reason while the good events of the same request are kept.

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::error::ArrowError;

use super::fields;
use super::raw::{RawEvent, RawPayload};
use super::reject::{FieldError, RejectKind, Rejection};
use super::schema::events_schema;

/// Accepted severities, in increasing order.
pub const SEVERITIES: [&str; 5] = ["debug", "info", "warning", "error", "critical"];
/// Accepted `payload.status` values.
pub const STATUSES: [&str; 3] = ["ok", "error", "timeout"];
/// `schema_version` assumed when the field is absent.
pub const DEFAULT_SCHEMA_VERSION: &str = "1.0.0";

/// A fully validated event, borrowing from the request body where possible.
struct Parsed<'a> {
    event_id: uuid::Uuid,
    timestamp_us: i64,
    source_module: Cow<'a, str>,
    event_type: Cow<'a, str>,
    schema_version: Cow<'a, str>,
    severity: Cow<'a, str>,
    environment: Option<Cow<'a, str>>,
    correlation_id: Option<Cow<'a, str>>,
    parent_event_id: Option<uuid::Uuid>,
    tags: Option<&'a str>,
    operation: Option<Cow<'a, str>>,
    provider: Option<Cow<'a, str>>,
    model: Option<Cow<'a, str>>,
    latency_ms: Option<f64>,
    ttft_ms: Option<f64>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    total_tokens: Option<i64>,
    cost_usd: Option<f64>,
    status: Option<Cow<'a, str>>,
    error_type: Option<Cow<'a, str>>,
    user_id: Option<Cow<'a, str>>,
    tenant: Option<Cow<'a, str>>,
    payload: &'a str,
}

/// First present of several aliases of one field, with the name it was found under.
fn first_of<'a>(
    candidates: &[(&'static str, Option<&'a serde_json::value::RawValue>)],
) -> (&'static str, Option<&'a serde_json::value::RawValue>) {
    candidates
        .iter()
        .find(|(_, v)| v.is_some())
        .copied()
        .unwrap_or((candidates.first().map_or("", |c| c.0), None))
}

fn parse_payload<'a>(raw: &'a serde_json::value::RawValue) -> Result<RawPayload<'a>, FieldError> {
    if !raw.get().starts_with('{') {
        return Err(FieldError::new(
            RejectKind::PayloadNotObject,
            "field `payload` must be a JSON object",
        ));
    }
    serde_json::from_str(raw.get())
        .map_err(|e| FieldError::new(RejectKind::InvalidValue, format!("field `payload`: {e}")))
}

fn validate_tags(raw: &serde_json::value::RawValue) -> Result<&str, FieldError> {
    let text = raw.get();
    let ok = text.starts_with('{') && serde_json::from_str::<fields::StringMap>(text).is_ok();
    if ok {
        Ok(text)
    } else {
        Err(FieldError::new(
            RejectKind::InvalidType,
            "field `tags` must be an object whose values are strings",
        ))
    }
}

fn check_schema_version(version: &str) -> Result<(), FieldError> {
    let major = version.split('.').next().unwrap_or_default();
    if major == "1" {
        Ok(())
    } else {
        Err(FieldError::new(
            RejectKind::UnsupportedSchemaVersion,
            format!("schema_version {version:?} is not supported (supported: 1.x.y)"),
        ))
    }
}

fn parse_event<'a>(env: &RawEvent<'a>) -> Result<Parsed<'a>, FieldError> {
    let event_id = fields::uuid("event_id", &fields::required_string("event_id", env.event_id)?)?;
    let ts_text = fields::required_string("timestamp", env.timestamp)?;
    let timestamp_us = fields::rfc3339_micros("timestamp", &ts_text)?;
    let source_module = fields::required_string("source_module", env.source_module)?;
    let event_type = fields::required_string("event_type", env.event_type)?;
    let schema_version =
        fields::opt_string("schema_version", env.schema_version)?.unwrap_or(Cow::Borrowed(DEFAULT_SCHEMA_VERSION));
    check_schema_version(&schema_version)?;
    let severity = fields::opt_string("severity", env.severity)?.unwrap_or(Cow::Borrowed("info"));
    if !SEVERITIES.contains(&severity.as_ref()) {
        return Err(FieldError::new(
            RejectKind::InvalidValue,
            format!("field `severity` must be one of {SEVERITIES:?}, got {severity:?}"),
        ));
    }
    let environment = fields::opt_string("environment", env.environment)?;
    let correlation_id = fields::opt_string("correlation_id", env.correlation_id)?;
    let parent_event_id = fields::opt_string("parent_event_id", env.parent_event_id)?
        .map(|p| fields::uuid("parent_event_id", &p))
        .transpose()?;
    let tags = env.tags.map(validate_tags).transpose()?;
    let payload_raw = env.payload.ok_or_else(|| FieldError::missing("payload"))?;
    let p = parse_payload(payload_raw)?;

    let (name, raw) = first_of(&[
        ("payload.operation", p.operation),
        ("payload.gen_ai.operation.name", p.otel_operation),
    ]);
    let operation = fields::opt_string(name, raw)?;
    let (name, raw) = first_of(&[
        ("payload.provider", p.provider),
        ("payload.gen_ai.provider.name", p.otel_provider),
        ("payload.gen_ai.system", p.otel_system),
    ]);
    let provider = fields::opt_string(name, raw)?;
    let (name, raw) = first_of(&[
        ("payload.model", p.model),
        ("payload.gen_ai.response.model", p.otel_response_model),
        ("payload.gen_ai.request.model", p.otel_request_model),
    ]);
    let model = fields::opt_string(name, raw)?;
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
    let error_type = fields::opt_string(name, raw)?;
    let status = match fields::opt_string("payload.status", p.status)? {
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
    let user_id = fields::opt_string("payload.user_id", p.user_id)?;
    let tenant = fields::opt_string("payload.tenant", p.tenant)?;

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
        payload: payload_raw.get(),
    })
}

/// Column builders in schema order.
struct Builders {
    event_id: StringBuilder,
    timestamp: TimestampMicrosecondBuilder,
    ingest_time: TimestampMicrosecondBuilder,
    source_module: StringBuilder,
    event_type: StringBuilder,
    schema_version: StringBuilder,
    severity: StringBuilder,
    environment: StringBuilder,
    correlation_id: StringBuilder,
    parent_event_id: StringBuilder,
    tags: StringBuilder,
    operation: StringBuilder,
    provider: StringBuilder,
    model: StringBuilder,
    latency_ms: Float64Builder,
    ttft_ms: Float64Builder,
    input_tokens: Int64Builder,
    output_tokens: Int64Builder,
    total_tokens: Int64Builder,
    cost_usd: Float64Builder,
    status: StringBuilder,
    error_type: StringBuilder,
    user_id: StringBuilder,
    tenant: StringBuilder,
    payload: StringBuilder,
}

impl Builders {
    fn with_capacity(rows: usize, payload_bytes: usize) -> Self {
        let s = |bytes_per_row: usize| StringBuilder::with_capacity(rows, rows * bytes_per_row);
        Self {
            event_id: s(36),
            timestamp: TimestampMicrosecondBuilder::with_capacity(rows),
            ingest_time: TimestampMicrosecondBuilder::with_capacity(rows),
            source_module: s(16),
            event_type: s(10),
            schema_version: s(5),
            severity: s(5),
            environment: s(10),
            correlation_id: s(36),
            parent_event_id: s(36),
            tags: s(8),
            operation: s(4),
            provider: s(8),
            model: s(12),
            latency_ms: Float64Builder::with_capacity(rows),
            ttft_ms: Float64Builder::with_capacity(rows),
            input_tokens: Int64Builder::with_capacity(rows),
            output_tokens: Int64Builder::with_capacity(rows),
            total_tokens: Int64Builder::with_capacity(rows),
            cost_usd: Float64Builder::with_capacity(rows),
            status: s(2),
            error_type: s(2),
            user_id: s(10),
            tenant: s(8),
            payload: StringBuilder::with_capacity(rows, payload_bytes),
        }
    }

    fn append(&mut self, e: &Parsed<'_>, ingest_time_us: i64) {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        self.event_id
            .append_value(e.event_id.hyphenated().encode_lower(&mut buf));
        self.timestamp.append_value(e.timestamp_us);
        self.ingest_time.append_value(ingest_time_us);
        self.source_module.append_value(&e.source_module);
        self.event_type.append_value(&e.event_type);
        self.schema_version.append_value(&e.schema_version);
        self.severity.append_value(&e.severity);
        self.environment.append_option(e.environment.as_deref());
        self.correlation_id.append_option(e.correlation_id.as_deref());
        match e.parent_event_id {
            Some(p) => self.parent_event_id.append_value(p.hyphenated().encode_lower(&mut buf)),
            None => self.parent_event_id.append_null(),
        }
        self.tags.append_option(e.tags);
        self.operation.append_option(e.operation.as_deref());
        self.provider.append_option(e.provider.as_deref());
        self.model.append_option(e.model.as_deref());
        self.latency_ms.append_option(e.latency_ms);
        self.ttft_ms.append_option(e.ttft_ms);
        self.input_tokens.append_option(e.input_tokens);
        self.output_tokens.append_option(e.output_tokens);
        self.total_tokens.append_option(e.total_tokens);
        self.cost_usd.append_option(e.cost_usd);
        self.status.append_option(e.status.as_deref());
        self.error_type.append_option(e.error_type.as_deref());
        self.user_id.append_option(e.user_id.as_deref());
        self.tenant.append_option(e.tenant.as_deref());
        self.payload.append_value(e.payload);
    }

    fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.timestamp.finish().with_timezone("UTC")),
            Arc::new(self.ingest_time.finish().with_timezone("UTC")),
            Arc::new(self.source_module.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.schema_version.finish()),
            Arc::new(self.severity.finish()),
            Arc::new(self.environment.finish()),
            Arc::new(self.correlation_id.finish()),
            Arc::new(self.parent_event_id.finish()),
            Arc::new(self.tags.finish()),
            Arc::new(self.operation.finish()),
            Arc::new(self.provider.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.latency_ms.finish()),
            Arc::new(self.ttft_ms.finish()),
            Arc::new(self.input_tokens.finish()),
            Arc::new(self.output_tokens.finish()),
            Arc::new(self.total_tokens.finish()),
            Arc::new(self.cost_usd.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.error_type.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.tenant.finish()),
            Arc::new(self.payload.finish()),
        ];
        RecordBatch::try_new(events_schema(), columns)
    }
}

/// The outcome of decoding one request: the accepted events as one batch, and the rejects.
#[derive(Debug)]
pub struct DecodedBatch {
    /// Accepted events, in input order, with the `events` schema.
    pub batch: RecordBatch,
    /// Rejected events with index and reason, in input order.
    pub rejected: Vec<Rejection>,
    /// Number of events in the request (accepted + rejected).
    pub total: usize,
}

/// Errors that concern a whole request body rather than one event.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body holds no event.
    #[error("request body holds no event")]
    Empty,
    /// A JSON array body is not valid JSON as a whole, so its elements cannot be told apart.
    #[error("request body is not a valid JSON array: {0} (send NDJSON to get per-line errors)")]
    MalformedArray(String),
    /// Building the Arrow batch failed (a bug, never user input).
    #[error("building the Arrow batch failed: {0}")]
    Arrow(#[from] ArrowError),
}

/// Decodes many events into one `RecordBatch`.
pub struct EventDecoder {
    builders: Builders,
    ingest_time_us: i64,
    rejected: Vec<Rejection>,
    total: usize,
}

impl EventDecoder {
    /// A decoder for about `rows` events totalling about `bytes` bytes, stamping each
    /// accepted event with `ingest_time_us`.
    pub fn new(rows: usize, bytes: usize, ingest_time_us: i64) -> Self {
        Self {
            builders: Builders::with_capacity(rows, bytes),
            ingest_time_us,
            rejected: Vec::new(),
            total: 0,
        }
    }

    /// Decodes one event given as its JSON bytes. Returns `false` if it was rejected.
    pub fn push(&mut self, json: &[u8]) -> bool {
        self.push_parsed(json, serde_json::from_slice::<RawEvent<'_>>(json))
    }

    /// Like [`Self::push`] for text already known to be UTF-8 (skips re-validation).
    pub fn push_str(&mut self, json: &str) -> bool {
        self.push_parsed(json.as_bytes(), serde_json::from_str::<RawEvent<'_>>(json))
    }

    fn push_parsed(&mut self, json: &[u8], parsed: Result<RawEvent<'_>, serde_json::Error>) -> bool {
        let index = self.total;
        self.total += 1;
        // serde would also map a JSON array onto the struct's fields by position.
        let is_object = json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let env = match parsed {
            Ok(env) if is_object => env,
            Ok(_) => {
                self.reject(
                    index,
                    RejectKind::InvalidType,
                    "event must be a JSON object".to_string(),
                );
                return false;
            }
            Err(e) => {
                let (kind, reason) = if e.is_syntax() || e.is_eof() {
                    (RejectKind::MalformedJson, format!("malformed JSON: {e}"))
                } else if !is_object {
                    (RejectKind::InvalidType, "event must be a JSON object".to_string())
                } else {
                    (RejectKind::InvalidValue, format!("invalid event: {e}"))
                };
                self.reject(index, kind, reason);
                return false;
            }
        };
        match parse_event(&env) {
            Ok(parsed) => {
                self.builders.append(&parsed, self.ingest_time_us);
                true
            }
            Err(err) => {
                let label = |raw| fields::opt_string("", raw).ok().flatten().map(Cow::into_owned);
                self.rejected.push(Rejection {
                    index,
                    error_type: err.kind,
                    reason: err.reason,
                    source_module: label(env.source_module),
                    event_type: label(env.event_type),
                });
                false
            }
        }
    }

    fn reject(&mut self, index: usize, kind: RejectKind, reason: String) {
        self.rejected.push(Rejection {
            index,
            error_type: kind,
            reason,
            source_module: None,
            event_type: None,
        });
    }

    /// Finishes the batch and returns it with the rejects; the decoder can be reused.
    pub fn finish(&mut self) -> Result<DecodedBatch, BodyError> {
        let batch = self.builders.finish()?;
        Ok(DecodedBatch {
            batch,
            rejected: std::mem::take(&mut self.rejected),
            total: std::mem::replace(&mut self.total, 0),
        })
    }
}

/// Decodes newline-delimited JSON: one event per non-blank line.
pub fn decode_ndjson(body: &[u8], ingest_time_us: i64) -> Result<DecodedBatch, BodyError> {
    let estimate = body.len() / 512 + 1;
    let mut decoder = EventDecoder::new(estimate, body.len(), ingest_time_us);
    // Validate UTF-8 once for the whole body when possible; a body with invalid bytes falls
    // back to per-line validation so only the affected lines are rejected.
    let text = std::str::from_utf8(body).ok();
    let mut start = 0;
    while start < body.len() {
        let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
        let line = &body[start..end];
        if !line.iter().all(u8::is_ascii_whitespace) {
            match text {
                Some(t) => decoder.push_str(&t[start..end]),
                None => decoder.push(line),
            };
        }
        start = end + 1;
    }
    if decoder.total == 0 {
        return Err(BodyError::Empty);
    }
    decoder.finish()
}

/// Decodes a JSON array of events.
pub fn decode_json_array(body: &[u8], ingest_time_us: i64) -> Result<DecodedBatch, BodyError> {
    let items: Vec<&serde_json::value::RawValue> =
        serde_json::from_slice(body).map_err(|e| BodyError::MalformedArray(e.to_string()))?;
    if items.is_empty() {
        return Err(BodyError::Empty);
    }
    let mut decoder = EventDecoder::new(items.len(), body.len(), ingest_time_us);
    for item in items {
        decoder.push(item.get().as_bytes());
    }
    decoder.finish()
}

/// Decodes a batch body: a JSON array when its first non-blank byte is `[`, NDJSON otherwise.
pub fn decode_batch_body(body: &[u8], ingest_time_us: i64) -> Result<DecodedBatch, BodyError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(BodyError::Empty),
        Some(b'[') => decode_json_array(body, ingest_time_us),
        Some(_) => decode_ndjson(body, ingest_time_us),
    }
}

/// Decodes a body holding exactly one event.
pub fn decode_single(body: &[u8], ingest_time_us: i64) -> Result<DecodedBatch, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    let mut decoder = EventDecoder::new(1, body.len(), ingest_time_us);
    decoder.push(body);
    decoder.finish()
}
