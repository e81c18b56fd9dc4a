//! `hub_alerts`: every transition as a table (SQL over HTTP and the wire, Grafana annotations)
//! and as the rows of the live `alerts` topic.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;

use super::store::Transition;
use crate::event::schema::timestamp_type;

/// The table's name.
pub const HUB_ALERTS: &str = "hub_alerts";

/// Its columns.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("at", timestamp_type(), false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("group_key", DataType::Utf8, false),
        Field::new("tenant", DataType::Utf8, true),
        Field::new("value", DataType::Float64, true),
        Field::new("detail", DataType::Utf8, false),
        Field::new("since", timestamp_type(), false),
        Field::new("labels", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("recorded_at", timestamp_type(), false),
    ]))
}

/// `transitions` as rows of [`schema`].
pub fn batch<'a>(
    transitions: impl ExactSizeIterator<Item = &'a Transition> + Clone,
) -> Result<RecordBatch, ArrowError> {
    let ts = |f: fn(&Transition) -> i64| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from_iter_values(transitions.clone().map(f)).with_timezone("UTC"))
    };
    let text = |f: fn(&Transition) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(transitions.clone().map(f)))
    };
    let tenant: StringArray = transitions.clone().map(|t| t.labels.get("tenant").cloned()).collect();
    let value: Float64Array = transitions.clone().map(|t| t.value).collect();
    let labels: Vec<String> = transitions
        .clone()
        .map(|t| serde_json::to_string(&t.labels).unwrap_or_default())
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            ts(|t| t.at_us),
            text(|t| &t.rule),
            text(|t| &t.state),
            text(|t| &t.severity),
            text(|t| &t.group_key),
            Arc::new(tenant),
            Arc::new(value),
            text(|t| &t.detail),
            ts(|t| t.since_us),
            Arc::new(StringArray::from(labels)),
            text(|t| &t.id),
            ts(|t| t.recorded_at_us),
        ],
    )
}
