//! The Arrow schema of the `events` table: the envelope as typed columns, the common LLM
//! telemetry fields extracted from the payload, and the payload itself as JSON text.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Name of the table every session exposes the stored events as.
pub const EVENTS_TABLE: &str = "events";

/// Column names, in schema order. Kept as constants so decoders, stores and HTTP handlers
/// never disagree on spelling.
pub mod col {
    pub const EVENT_ID: &str = "event_id";
    pub const TIMESTAMP: &str = "timestamp";
    pub const INGEST_TIME: &str = "ingest_time";
    pub const SOURCE_MODULE: &str = "source_module";
    pub const EVENT_TYPE: &str = "event_type";
    pub const SCHEMA_VERSION: &str = "schema_version";
    pub const SEVERITY: &str = "severity";
    pub const ENVIRONMENT: &str = "environment";
    pub const CORRELATION_ID: &str = "correlation_id";
    pub const PARENT_EVENT_ID: &str = "parent_event_id";
    pub const TAGS: &str = "tags";
    pub const OPERATION: &str = "operation";
    pub const PROVIDER: &str = "provider";
    pub const MODEL: &str = "model";
    pub const LATENCY_MS: &str = "latency_ms";
    pub const TTFT_MS: &str = "ttft_ms";
    pub const INPUT_TOKENS: &str = "input_tokens";
    pub const OUTPUT_TOKENS: &str = "output_tokens";
    pub const TOTAL_TOKENS: &str = "total_tokens";
    pub const COST_USD: &str = "cost_usd";
    pub const STATUS: &str = "status";
    pub const ERROR_TYPE: &str = "error_type";
    pub const USER_ID: &str = "user_id";
    pub const TENANT: &str = "tenant";
    pub const PAYLOAD: &str = "payload";
}

/// The event timestamp type: microseconds since the epoch, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        utf8(col::EVENT_ID, false),
        Field::new(col::TIMESTAMP, timestamp_type(), false),
        Field::new(col::INGEST_TIME, timestamp_type(), false),
        utf8(col::SOURCE_MODULE, false),
        utf8(col::EVENT_TYPE, false),
        utf8(col::SCHEMA_VERSION, false),
        utf8(col::SEVERITY, false),
        utf8(col::ENVIRONMENT, true),
        utf8(col::CORRELATION_ID, true),
        utf8(col::PARENT_EVENT_ID, true),
        utf8(col::TAGS, true),
        utf8(col::OPERATION, true),
        utf8(col::PROVIDER, true),
        utf8(col::MODEL, true),
        Field::new(col::LATENCY_MS, DataType::Float64, true),
        Field::new(col::TTFT_MS, DataType::Float64, true),
        Field::new(col::INPUT_TOKENS, DataType::Int64, true),
        Field::new(col::OUTPUT_TOKENS, DataType::Int64, true),
        Field::new(col::TOTAL_TOKENS, DataType::Int64, true),
        Field::new(col::COST_USD, DataType::Float64, true),
        utf8(col::STATUS, true),
        utf8(col::ERROR_TYPE, true),
        utf8(col::USER_ID, true),
        utf8(col::TENANT, true),
        utf8(col::PAYLOAD, false),
    ]))
});

/// The schema of the `events` table.
pub fn events_schema() -> SchemaRef {
    Arc::clone(&SCHEMA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names_are_unique() {
        let schema = events_schema();
        let mut names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let before = names.len();
        names.sort();
        names.dedup();
        assert_eq!(before, names.len());
        assert_eq!(before, 25);
    }
}
