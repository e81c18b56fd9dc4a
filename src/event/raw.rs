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

impl RawPayload<'_> {
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
