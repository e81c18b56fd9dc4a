//! Borrowed views of one event as it arrives: every field is a raw JSON slice, typed later
//! by `fields`, so a wrong type yields an error naming the field.

use serde::Deserialize;
use serde_json::value::RawValue;

/// The envelope. Unknown top-level keys are ignored (forward compatibility).
#[derive(Deserialize)]
pub(crate) struct RawEvent<'a> {
    #[serde(borrow, default)]
    pub event_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub source_module: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub event_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub schema_version: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub severity: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub environment: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub correlation_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub parent_event_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub tags: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub payload: Option<&'a RawValue>,
}

/// The LLM telemetry fields of a payload, under our names and the OpenTelemetry GenAI
/// semantic-convention names. Other payload keys are ignored here and stay reachable through
/// the `payload` JSON column.
#[derive(Deserialize)]
pub(crate) struct RawPayload<'a> {
    #[serde(borrow, default)]
    pub operation: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "gen_ai.operation.name")]
    pub otel_operation: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub provider: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "gen_ai.provider.name")]
    pub otel_provider: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "gen_ai.system")]
    pub otel_system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub model: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "gen_ai.response.model")]
    pub otel_response_model: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "gen_ai.request.model")]
    pub otel_request_model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub latency_ms: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub ttft_ms: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub input_tokens: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "gen_ai.usage.input_tokens")]
    pub otel_input_tokens: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "gen_ai.usage.prompt_tokens")]
    pub otel_prompt_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub output_tokens: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "gen_ai.usage.output_tokens")]
    pub otel_output_tokens: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "gen_ai.usage.completion_tokens")]
    pub otel_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub total_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub cost_usd: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub status: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub error_type: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "error.type")]
    pub otel_error_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub user_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub tenant: Option<&'a RawValue>,
}

/// The envelope's fields as raw JSON text slices (`None` when absent or `null`): what both
/// decoders (serde and the scanner) hand to the shared validation.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct EventFields<'a> {
    pub event_id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub source_module: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub schema_version: Option<&'a str>,
    pub severity: Option<&'a str>,
    pub environment: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub parent_event_id: Option<&'a str>,
    pub tags: Option<&'a str>,
    pub payload: Option<&'a str>,
}

impl<'a> From<&RawEvent<'a>> for EventFields<'a> {
    fn from(e: &RawEvent<'a>) -> Self {
        let g = |v: Option<&'a RawValue>| v.map(RawValue::get);
        Self {
            event_id: g(e.event_id),
            timestamp: g(e.timestamp),
            source_module: g(e.source_module),
            event_type: g(e.event_type),
            schema_version: g(e.schema_version),
            severity: g(e.severity),
            environment: g(e.environment),
            correlation_id: g(e.correlation_id),
            parent_event_id: g(e.parent_event_id),
            tags: g(e.tags),
            payload: g(e.payload),
        }
    }
}

/// The payload's LLM fields as raw JSON text slices (see [`RawPayload`] for the names).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct PayloadFields<'a> {
    pub operation: Option<&'a str>,
    pub otel_operation: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub otel_provider: Option<&'a str>,
    pub otel_system: Option<&'a str>,
    pub model: Option<&'a str>,
    pub otel_response_model: Option<&'a str>,
    pub otel_request_model: Option<&'a str>,
    pub latency_ms: Option<&'a str>,
    pub ttft_ms: Option<&'a str>,
    pub input_tokens: Option<&'a str>,
    pub otel_input_tokens: Option<&'a str>,
    pub otel_prompt_tokens: Option<&'a str>,
    pub output_tokens: Option<&'a str>,
    pub otel_output_tokens: Option<&'a str>,
    pub otel_completion_tokens: Option<&'a str>,
    pub total_tokens: Option<&'a str>,
    pub cost_usd: Option<&'a str>,
    pub status: Option<&'a str>,
    pub error_type: Option<&'a str>,
    pub otel_error_type: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub tenant: Option<&'a str>,
}

impl<'a> From<&RawPayload<'a>> for PayloadFields<'a> {
    fn from(p: &RawPayload<'a>) -> Self {
        let g = |v: Option<&'a RawValue>| v.map(RawValue::get);
        Self {
            operation: g(p.operation),
            otel_operation: g(p.otel_operation),
            provider: g(p.provider),
            otel_provider: g(p.otel_provider),
            otel_system: g(p.otel_system),
            model: g(p.model),
            otel_response_model: g(p.otel_response_model),
            otel_request_model: g(p.otel_request_model),
            latency_ms: g(p.latency_ms),
            ttft_ms: g(p.ttft_ms),
            input_tokens: g(p.input_tokens),
            otel_input_tokens: g(p.otel_input_tokens),
            otel_prompt_tokens: g(p.otel_prompt_tokens),
            output_tokens: g(p.output_tokens),
            otel_output_tokens: g(p.otel_output_tokens),
            otel_completion_tokens: g(p.otel_completion_tokens),
            total_tokens: g(p.total_tokens),
            cost_usd: g(p.cost_usd),
            status: g(p.status),
            error_type: g(p.error_type),
            otel_error_type: g(p.otel_error_type),
            user_id: g(p.user_id),
            tenant: g(p.tenant),
        }
    }
}

impl PayloadFields<'_> {
    /// Whether any GenAI/LLM fact is present (used to default `status`).
    pub fn has_llm_fields(&self) -> bool {
        [
            self.provider,
            self.otel_provider,
            self.otel_system,
            self.model,
            self.otel_response_model,
            self.otel_request_model,
            self.latency_ms,
            self.input_tokens,
            self.otel_input_tokens,
            self.output_tokens,
            self.otel_output_tokens,
        ]
        .iter()
        .any(Option::is_some)
    }
}
