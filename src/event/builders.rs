//! Arrow column builders for decoded events, optionally for a subset of the columns
//! (a [`Projection`]): events are still validated in full, only the batch is narrower.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;

use super::schema::events_schema;
use super::validate::{Id, Parsed};

/// Number of columns of the `events` schema.
const COLUMNS: usize = 25;

/// A subset of the `events` columns, in schema order.
#[derive(Debug, Clone)]
pub struct Projection {
    mask: [bool; COLUMNS],
    schema: SchemaRef,
}

/// A projection named a column the `events` table does not have.
#[derive(Debug, thiserror::Error)]
#[error("`events` has no column `{0}`")]
pub struct UnknownColumn(pub String);

impl Projection {
    /// The columns named in `columns` (any order, duplicates allowed), kept in schema order.
    pub fn new<S: AsRef<str>>(columns: &[S]) -> Result<Self, UnknownColumn> {
        let full = events_schema();
        let mut mask = [false; COLUMNS];
        for c in columns {
            let i = full
                .index_of(c.as_ref())
                .map_err(|_| UnknownColumn(c.as_ref().to_string()))?;
            if let Some(m) = mask.get_mut(i) {
                *m = true;
            }
        }
        let fields: Vec<_> = full
            .fields()
            .iter()
            .zip(mask)
            .filter(|(_, keep)| *keep)
            .map(|(f, _)| Arc::clone(f))
            .collect();
        Ok(Self {
            mask,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// Every column.
    pub fn all() -> Self {
        Self {
            mask: [true; COLUMNS],
            schema: events_schema(),
        }
    }

    /// The projected schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Names of the projected columns, in schema order.
    pub fn columns(&self) -> Vec<String> {
        self.schema.fields().iter().map(|f| f.name().clone()).collect()
    }

    fn keeps(&self, i: usize) -> bool {
        self.mask.get(i).copied().unwrap_or(false)
    }
}

/// Column builders in schema order; `None` for columns outside the projection.
pub(crate) struct Builders {
    schema: SchemaRef,
    rows: usize,
    event_id: Option<StringBuilder>,
    timestamp: Option<TimestampMicrosecondBuilder>,
    ingest_time: Option<TimestampMicrosecondBuilder>,
    source_module: Option<StringBuilder>,
    event_type: Option<StringBuilder>,
    schema_version: Option<StringBuilder>,
    severity: Option<StringBuilder>,
    environment: Option<StringBuilder>,
    correlation_id: Option<StringBuilder>,
    parent_event_id: Option<StringBuilder>,
    tags: Option<StringBuilder>,
    operation: Option<StringBuilder>,
    provider: Option<StringBuilder>,
    model: Option<StringBuilder>,
    latency_ms: Option<Float64Builder>,
    ttft_ms: Option<Float64Builder>,
    input_tokens: Option<Int64Builder>,
    output_tokens: Option<Int64Builder>,
    total_tokens: Option<Int64Builder>,
    cost_usd: Option<Float64Builder>,
    status: Option<StringBuilder>,
    error_type: Option<StringBuilder>,
    user_id: Option<StringBuilder>,
    tenant: Option<StringBuilder>,
    payload: Option<StringBuilder>,
}

#[inline(always)]
fn str_opt(b: &mut Option<StringBuilder>, v: Option<&str>) {
    if let Some(b) = b {
        b.append_option(v);
    }
}

#[inline(always)]
fn str_val(b: &mut Option<StringBuilder>, v: &str) {
    if let Some(b) = b {
        b.append_value(v);
    }
}

#[inline(always)]
fn f64_opt(b: &mut Option<Float64Builder>, v: Option<f64>) {
    if let Some(b) = b {
        b.append_option(v);
    }
}

#[inline(always)]
fn i64_opt(b: &mut Option<Int64Builder>, v: Option<i64>) {
    if let Some(b) = b {
        b.append_option(v);
    }
}

#[inline(always)]
fn uuid_opt(b: &mut Option<StringBuilder>, v: Option<&Id<'_>>) {
    if let Some(b) = b {
        match v {
            Some(Id::Canonical(text)) => b.append_value(text),
            Some(Id::Parsed(uuid)) => {
                let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
                b.append_value(uuid.hyphenated().encode_lower(&mut buf));
            }
            None => b.append_null(),
        }
    }
}

fn finish_str(b: &mut Option<StringBuilder>, out: &mut Vec<ArrayRef>) {
    if let Some(b) = b {
        out.push(Arc::new(b.finish()));
    }
}

impl Builders {
    pub fn with_capacity(rows: usize, payload_bytes: usize, projection: &Projection) -> Self {
        let mut column = 0usize;
        let mut next = || {
            column += 1;
            projection.keeps(column - 1)
        };
        let s =
            |keep: bool, bytes_per_row: usize| keep.then(|| StringBuilder::with_capacity(rows, rows * bytes_per_row));
        let ts = |keep: bool| keep.then(|| TimestampMicrosecondBuilder::with_capacity(rows));
        let f = |keep: bool| keep.then(|| Float64Builder::with_capacity(rows));
        let i = |keep: bool| keep.then(|| Int64Builder::with_capacity(rows));
        Self {
            schema: projection.schema(),
            rows: 0,
            event_id: s(next(), 36),
            timestamp: ts(next()),
            ingest_time: ts(next()),
            source_module: s(next(), 16),
            event_type: s(next(), 10),
            schema_version: s(next(), 5),
            severity: s(next(), 5),
            environment: s(next(), 10),
            correlation_id: s(next(), 36),
            parent_event_id: s(next(), 36),
            tags: s(next(), 8),
            operation: s(next(), 4),
            provider: s(next(), 8),
            model: s(next(), 12),
            latency_ms: f(next()),
            ttft_ms: f(next()),
            input_tokens: i(next()),
            output_tokens: i(next()),
            total_tokens: i(next()),
            cost_usd: f(next()),
            status: s(next(), 2),
            error_type: s(next(), 2),
            user_id: s(next(), 10),
            tenant: s(next(), 8),
            payload: next().then(|| StringBuilder::with_capacity(rows, payload_bytes)),
        }
    }

    pub fn append(&mut self, e: &Parsed<'_>, ingest_time_us: i64) {
        self.rows += 1;
        uuid_opt(&mut self.event_id, Some(&e.event_id));
        if let Some(b) = &mut self.timestamp {
            b.append_value(e.timestamp_us);
        }
        if let Some(b) = &mut self.ingest_time {
            b.append_value(ingest_time_us);
        }
        str_val(&mut self.source_module, &e.source_module);
        str_val(&mut self.event_type, &e.event_type);
        str_val(&mut self.schema_version, &e.schema_version);
        str_val(&mut self.severity, &e.severity);
        str_opt(&mut self.environment, e.environment.as_deref());
        str_opt(&mut self.correlation_id, e.correlation_id.as_deref());
        uuid_opt(&mut self.parent_event_id, e.parent_event_id.as_ref());
        str_opt(&mut self.tags, e.tags);
        str_opt(&mut self.operation, e.operation.as_deref());
        str_opt(&mut self.provider, e.provider.as_deref());
        str_opt(&mut self.model, e.model.as_deref());
        f64_opt(&mut self.latency_ms, e.latency_ms);
        f64_opt(&mut self.ttft_ms, e.ttft_ms);
        i64_opt(&mut self.input_tokens, e.input_tokens);
        i64_opt(&mut self.output_tokens, e.output_tokens);
        i64_opt(&mut self.total_tokens, e.total_tokens);
        f64_opt(&mut self.cost_usd, e.cost_usd);
        str_opt(&mut self.status, e.status.as_deref());
        str_opt(&mut self.error_type, e.error_type.as_deref());
        str_opt(&mut self.user_id, e.user_id.as_deref());
        str_opt(&mut self.tenant, e.tenant.as_deref());
        str_val(&mut self.payload, e.payload);
    }

    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let mut c: Vec<ArrayRef> = Vec::with_capacity(COLUMNS);
        let ts = |b: &mut Option<TimestampMicrosecondBuilder>, out: &mut Vec<ArrayRef>| {
            if let Some(b) = b {
                out.push(Arc::new(b.finish().with_timezone("UTC")));
            }
        };
        let f = |b: &mut Option<Float64Builder>, out: &mut Vec<ArrayRef>| {
            if let Some(b) = b {
                out.push(Arc::new(b.finish()));
            }
        };
        let i = |b: &mut Option<Int64Builder>, out: &mut Vec<ArrayRef>| {
            if let Some(b) = b {
                out.push(Arc::new(b.finish()));
            }
        };
        finish_str(&mut self.event_id, &mut c);
        ts(&mut self.timestamp, &mut c);
        ts(&mut self.ingest_time, &mut c);
        finish_str(&mut self.source_module, &mut c);
        finish_str(&mut self.event_type, &mut c);
        finish_str(&mut self.schema_version, &mut c);
        finish_str(&mut self.severity, &mut c);
        finish_str(&mut self.environment, &mut c);
        finish_str(&mut self.correlation_id, &mut c);
        finish_str(&mut self.parent_event_id, &mut c);
        finish_str(&mut self.tags, &mut c);
        finish_str(&mut self.operation, &mut c);
        finish_str(&mut self.provider, &mut c);
        finish_str(&mut self.model, &mut c);
        f(&mut self.latency_ms, &mut c);
        f(&mut self.ttft_ms, &mut c);
        i(&mut self.input_tokens, &mut c);
        i(&mut self.output_tokens, &mut c);
        i(&mut self.total_tokens, &mut c);
        f(&mut self.cost_usd, &mut c);
        finish_str(&mut self.status, &mut c);
        finish_str(&mut self.error_type, &mut c);
        finish_str(&mut self.user_id, &mut c);
        finish_str(&mut self.tenant, &mut c);
        finish_str(&mut self.payload, &mut c);
        let rows = std::mem::take(&mut self.rows);
        RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            c,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
    }
}
