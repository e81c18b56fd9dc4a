//! The `late_events` table: events that arrived after every window they belong to had closed.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;

use crate::event::schema::timestamp_type;

/// Name of the table.
pub const LATE_EVENTS_TABLE: &str = "late_events";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("query", DataType::Utf8, false),
        Field::new("event_id", DataType::Utf8, true),
        Field::new("event_time", timestamp_type(), false),
        Field::new("window_end", timestamp_type(), false),
        Field::new("watermark", timestamp_type(), false),
        Field::new("detected_at", timestamp_type(), false),
        Field::new("reason", DataType::Utf8, false),
    ]))
});

/// Schema of `late_events`.
pub fn schema() -> SchemaRef {
    Arc::clone(&SCHEMA)
}

/// One late event.
#[derive(Debug, Clone)]
pub struct LateEvent {
    /// Event id, if the input had one.
    pub event_id: Option<String>,
    /// Its event time, µs.
    pub event_time: i64,
    /// End of its earliest window (for sessions: of its own session, event time + gap), µs.
    pub window_end: i64,
}

/// Builds a batch of late events of `query` seen at `watermark`, all with `reason`.
pub fn batch(
    query: &str,
    watermark: i64,
    now: i64,
    events: &[LateEvent],
    reason: &str,
) -> Result<RecordBatch, ArrowError> {
    let n = events.len();
    let ts = |v: Vec<i64>| Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) as ArrayRef;
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec![query; n])),
            Arc::new(events.iter().map(|e| e.event_id.as_deref()).collect::<StringArray>()),
            ts(events.iter().map(|e| e.event_time).collect()),
            ts(events.iter().map(|e| e.window_end).collect()),
            ts(vec![watermark; n]),
            ts(vec![now; n]),
            Arc::new(StringArray::from(vec![reason; n])),
        ],
    )
}
