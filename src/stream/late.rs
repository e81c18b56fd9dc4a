//! The `late_events` table: events that arrived after every window they belong to had closed.
//! Each row carries the event's `tenant` (when the query's input has one), so a tenant-bound
//! key sees its own late events and no one else's.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, new_null_array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::event::schema::timestamp_type;
use crate::storage::health::StorageHealth;
use crate::storage::local::{LocalStore, LocalStoreConfig};
use crate::storage::{EventStore, StorageError};

/// Name of the table.
pub const LATE_EVENTS_TABLE: &str = "late_events";

/// Directory of the table under the engine's directory.
const DIR: &str = "_late_events_v2";

/// Directory of the table before it had a `tenant` column (migrated at the first start).
const DIR_V1: &str = "_late_events";

fn columns_v1() -> Vec<Field> {
    vec![
        Field::new("query", DataType::Utf8, false),
        Field::new("event_id", DataType::Utf8, true),
        Field::new("event_time", timestamp_type(), false),
        Field::new("window_end", timestamp_type(), false),
        Field::new("watermark", timestamp_type(), false),
        Field::new("detected_at", timestamp_type(), false),
        Field::new("reason", DataType::Utf8, false),
    ]
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = columns_v1();
    fields.push(Field::new(crate::query::tenant::TENANT_COLUMN, DataType::Utf8, true));
    Arc::new(Schema::new(fields))
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
    /// Its tenant, if the query's input has a `tenant` column.
    pub tenant: Option<String>,
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
            Arc::new(events.iter().map(|e| e.tenant.as_deref()).collect::<StringArray>()),
        ],
    )
}

/// Opens the table's store in `engine_dir`. A store written before the table had a `tenant`
/// column is copied over once (its rows get a null tenant: only unbound keys see them) and
/// then removed.
pub async fn open(
    engine_dir: &Path,
    config: LocalStoreConfig,
    health: StorageHealth,
) -> Result<LocalStore, StorageError> {
    let store = LocalStore::open_table(
        engine_dir.join(DIR),
        schema(),
        Some("event_time".into()),
        config.clone(),
        None,
        health.clone(),
    )?;
    let old_dir = engine_dir.join(DIR_V1);
    if old_dir.is_dir() {
        let old = LocalStore::open_table(
            old_dir.clone(),
            Arc::new(Schema::new(columns_v1())),
            Some("event_time".into()),
            config,
            None,
            health,
        )?;
        let reading = format!("reading {}", old_dir.display());
        let mut stream = SessionContext::new()
            .read_table(old.table_provider())
            .map_err(StorageError::format(reading.clone()))?
            .execute_stream()
            .await
            .map_err(StorageError::format(reading.clone()))?;
        let mut rows = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(StorageError::format(reading.clone()))?;
            rows += batch.num_rows();
            let mut columns = batch.columns().to_vec();
            columns.push(new_null_array(&DataType::Utf8, batch.num_rows()));
            let batch =
                RecordBatch::try_new(schema(), columns).map_err(StorageError::format("adding the tenant column"))?;
            store.append(batch).await?;
        }
        store.flush().await?;
        drop(old);
        std::fs::remove_dir_all(&old_dir).map_err(StorageError::io(format!("removing {}", old_dir.display())))?;
        tracing::info!(rows, "late_events: moved to a table with a tenant column");
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_batch(rows: usize) -> RecordBatch {
        let ts = |v: i64| Arc::new(TimestampMicrosecondArray::from(vec![v; rows]).with_timezone("UTC")) as ArrayRef;
        RecordBatch::try_new(
            Arc::new(Schema::new(columns_v1())),
            vec![
                Arc::new(StringArray::from(vec!["q"; rows])),
                Arc::new(StringArray::from(vec![Some("e1"); rows])),
                ts(1),
                ts(2),
                ts(3),
                ts(4),
                Arc::new(StringArray::from(vec!["late"; rows])),
            ],
        )
        .expect("batch")
    }

    #[tokio::test]
    async fn a_table_without_the_tenant_column_is_moved_over_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LocalStoreConfig::default();
        let health = StorageHealth::default();
        {
            let old = LocalStore::open_table(
                dir.path().join(DIR_V1),
                Arc::new(Schema::new(columns_v1())),
                Some("event_time".into()),
                config.clone(),
                None,
                health.clone(),
            )
            .expect("old store");
            old.append(v1_batch(3)).await.expect("flushed rows");
            old.flush().await.expect("flush");
            old.append(v1_batch(2)).await.expect("rows still in the WAL");
        }
        let store = open(dir.path(), config.clone(), health.clone()).await.expect("open");
        assert!(!dir.path().join(DIR_V1).exists(), "the old table is removed");
        let ctx = SessionContext::new();
        ctx.register_table("late_events", store.table_provider())
            .expect("register");
        let rows = ctx
            .sql("SELECT count(*) AS n, count(tenant) AS t, min(reason) AS r FROM late_events")
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let out = datafusion::arrow::util::pretty::pretty_format_batches(&rows)
            .expect("format")
            .to_string();
        assert!(out.contains("| 5 | 0 | late |"), "{out}");
        drop(store);
        // A second start finds nothing to move and keeps the rows.
        let store = open(dir.path(), config, health).await.expect("reopen");
        let ctx = SessionContext::new();
        ctx.register_table("late_events", store.table_provider())
            .expect("register");
        let n = ctx
            .sql("SELECT count(*) AS n FROM late_events")
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let out = datafusion::arrow::util::pretty::pretty_format_batches(&n)
            .expect("format")
            .to_string();
        assert!(out.contains("| 5 |"), "{out}");
    }
}
