//! What a query writes: the shape of its output rows, and for updating emission the
//! *versions* written to its output store.
//!
//! In final mode the store holds the output rows as the SELECT defines them, one per window and
//! key. In updating mode every emitted row is a version: the SELECT's columns (nullable),
//! the hidden key columns `__cq_k0` (= `window_start`), `__cq_k1..` (the other `GROUP BY`
//! expressions), `_emitted_at` (strictly increasing per query), `_final` (the window has closed)
//! and `_deleted` (the (window, key) no longer has a row: its session merged into another or
//! `HAVING` now filters it out). The query's table is a view keeping the latest version of each
//! key that is not deleted; a sink that upserts on the key columns sees the same.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMicrosecondArray, new_null_array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampMicrosecondType};

use super::CqError;
use super::fixed::Produced;
use super::keys::{Key, KeyCodec};
use super::rewrite::{HIDDEN_PREFIX, key_column};
use crate::event::schema::timestamp_type;

/// Version column: when the row was emitted.
pub const EMITTED_AT: &str = "_emitted_at";
/// Version column: the window has closed; this is its last version.
pub const FINAL: &str = "_final";
/// Version column: the (window, key) has no row any more.
pub const DELETED: &str = "_deleted";

/// How the plan's output rows map to what users, downstream queries and the store see.
#[derive(Debug)]
pub struct OutputLayout {
    /// Indices of the SELECT's own columns in the plan output.
    user: Vec<usize>,
    /// The SELECT's own columns.
    user_schema: SchemaRef,
    /// Indices of the hidden key columns (`__cq_k0` first) in the plan output.
    keys: Vec<usize>,
    /// Schema of the store in updating mode.
    versions: Option<SchemaRef>,
    /// Codec of `__cq_k1..`.
    codec: Option<KeyCodec>,
    /// Last `_emitted_at` handed out.
    last_emitted_at: i64,
}

impl OutputLayout {
    /// Layout of a plan output with `key_columns` hidden key columns (updating mode when > 0).
    pub fn new(plan_output: &SchemaRef, key_columns: usize) -> Result<Self, CqError> {
        let user: Vec<usize> = plan_output
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.name().starts_with(HIDDEN_PREFIX))
            .map(|(i, _)| i)
            .collect();
        let user_schema = Arc::new(plan_output.project(&user).map_err(CqError::internal)?);
        let keys = (0..key_columns)
            .map(|i| plan_output.index_of(&key_column(i)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CqError::internal)?;
        let (versions, codec) = if keys.is_empty() {
            (None, None)
        } else {
            let mut fields: Vec<Field> = user_schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect();
            fields.extend(
                keys.iter()
                    .map(|i| plan_output.field(*i).as_ref().clone().with_nullable(true)),
            );
            fields.push(Field::new(EMITTED_AT, timestamp_type(), false));
            fields.push(Field::new(FINAL, DataType::Boolean, false));
            fields.push(Field::new(DELETED, DataType::Boolean, false));
            let types: Vec<DataType> = keys[1..]
                .iter()
                .map(|i| plan_output.field(*i).data_type().clone())
                .collect();
            (Some(Arc::new(Schema::new(fields))), Some(KeyCodec::new(&types)?))
        };
        Ok(Self {
            user,
            user_schema,
            keys,
            versions,
            codec,
            last_emitted_at: i64::MIN,
        })
    }

    /// The SELECT's columns (the table downstream queries read).
    pub fn user_schema(&self) -> SchemaRef {
        Arc::clone(&self.user_schema)
    }

    /// Schema of the output store: versions in updating mode, else the SELECT's columns.
    pub fn store_schema(&self) -> SchemaRef {
        self.versions.clone().unwrap_or_else(|| self.user_schema())
    }

    /// Names of the columns a sink upserts on (updating mode).
    pub fn key_names(&self) -> Vec<String> {
        (0..self.keys.len()).map(key_column).collect()
    }

    /// Whether rows are versions (updating emission).
    pub fn updating(&self) -> bool {
        self.versions.is_some()
    }

    /// Plan output rows → the SELECT's columns.
    pub fn user_rows(&self, batch: &RecordBatch) -> Result<RecordBatch, CqError> {
        let projected = batch.project(&self.user).map_err(CqError::internal)?;
        RecordBatch::try_new(self.user_schema(), projected.columns().to_vec()).map_err(CqError::internal)
    }

    /// Keys of plan output rows, by `window_start`.
    pub fn produced(&self, batches: &[RecordBatch]) -> Result<Produced, CqError> {
        let mut out: HashMap<i64, HashSet<Key>> = HashMap::new();
        for b in batches {
            let columns: Vec<ArrayRef> = self.keys.iter().map(|i| Arc::clone(b.column(*i))).collect();
            for (start, key) in self.keys_of(&columns)? {
                out.entry(start).or_default().insert(key);
            }
        }
        Ok(out)
    }

    /// (window start, key) of rows given their key columns `__cq_k0, __cq_k1, ...` (updating
    /// mode; empty otherwise).
    pub fn keys_of(&self, columns: &[ArrayRef]) -> Result<Vec<(i64, Key)>, CqError> {
        let Some(codec) = &self.codec else {
            return Ok(Vec::new());
        };
        let Some(first) = columns.first() else {
            return Ok(Vec::new());
        };
        let starts = datafusion::arrow::compute::cast(first, &timestamp_type()).map_err(CqError::internal)?;
        let starts = starts.as_primitive::<TimestampMicrosecondType>();
        let fields: Vec<Field> = (0..columns.len())
            .map(|i| Field::new(key_column(i), columns[i].data_type().clone(), true))
            .collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.to_vec()).map_err(CqError::internal)?;
        let indices: Vec<usize> = (1..columns.len()).collect();
        Ok(codec
            .encode(&batch, &indices)?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !starts.is_null(*i))
            .map(|(i, key)| (starts.value(i), key))
            .collect())
    }

    /// A strictly increasing emission time (wall clock when it moves forward).
    pub fn next_emitted_at(&mut self, now_us: i64) -> i64 {
        self.last_emitted_at = now_us.max(self.last_emitted_at.saturating_add(1));
        self.last_emitted_at
    }

    /// Continue `_emitted_at` after what the store already holds (after a restart).
    pub fn resume_emitted_at(&mut self, last: i64) {
        self.last_emitted_at = self.last_emitted_at.max(last);
    }

    fn version(
        &self,
        user: Vec<ArrayRef>,
        keys: Vec<ArrayRef>,
        at: i64,
        is_final: bool,
        deleted: bool,
    ) -> Result<RecordBatch, CqError> {
        let schema = self.store_schema();
        let rows = keys.first().map_or(0, |k| k.len());
        let mut columns = user;
        columns.extend(keys);
        columns.push(Arc::new(
            TimestampMicrosecondArray::from_value(at, rows).with_timezone("UTC"),
        ));
        columns.push(Arc::new(BooleanArray::from(vec![is_final; rows])));
        columns.push(Arc::new(BooleanArray::from(vec![deleted; rows])));
        RecordBatch::try_new(schema, columns).map_err(CqError::internal)
    }

    /// Plan output rows → versions emitted at `at`.
    pub fn versions(&self, batch: &RecordBatch, at: i64, is_final: bool) -> Result<RecordBatch, CqError> {
        let user = self.user.iter().map(|i| Arc::clone(batch.column(*i))).collect();
        let keys = self.keys.iter().map(|i| Arc::clone(batch.column(*i))).collect();
        self.version(user, keys, at, is_final, false)
    }

    /// Deletion versions of (window start, key) rows.
    pub fn deletions(&self, rows: &[(i64, Key)], at: i64, is_final: bool) -> Result<Option<RecordBatch>, CqError> {
        let Some(codec) = &self.codec else { return Ok(None) };
        if rows.is_empty() {
            return Ok(None);
        }
        let starts: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>()).with_timezone("UTC"),
        );
        let key_list: Vec<Key> = rows.iter().map(|r| Arc::clone(&r.1)).collect();
        let mut keys = vec![Arc::clone(&starts)];
        keys.extend(codec.decode(&key_list)?);
        let user = self
            .user_schema
            .fields()
            .iter()
            .map(|f| {
                if f.name() == "window_start" && f.data_type() == &timestamp_type() {
                    Arc::clone(&starts)
                } else {
                    new_null_array(f.data_type(), rows.len())
                }
            })
            .collect();
        self.version(user, keys, at, is_final, true).map(Some)
    }
}
