//! One continuous query's output table in PostgreSQL, written from the streaming engine's
//! emissions (one executor per query: the table holds exactly what the query's own table in
//! the Hub holds, with the same lateness, watermark and updating rules).
//!
//! The engine hands over the accumulator states of the windows it emits. Each instance's
//! states land in `hub_parts.<name>` keyed by its data directory (`_store`), window and key
//! (replaced on every emission, so an emission written twice after a restart is stored once);
//! the table's row is the merge of every instance's part (`PartialReduce`), finalized (`Final`
//! and the rest of the plan) and upserted: the SELECT's columns, the group columns `_g*` and
//! the merged states `_s*`. With one instance the row is the engine's own; with several (a
//! Kafka consumer group) each window's shares are merged exactly, percentiles to the sketch.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::kernels::zip::zip;
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimestampMicrosecondType};
use sqlx::PgConnection;

use super::columns::{PgKind, bind, quote_ident, read_column, to_pg};
use crate::sinks::SinkError;
use crate::stream::catalog::CqDefinition;
use crate::stream::emit::OutputLayout;
use crate::stream::keys::KeyCodec;
use crate::stream::plan::CqPlan;
use crate::stream::rewrite::{self, key_column};
use crate::stream::window::{Span, WindowSpec, window_spec};

/// Longest table name: PostgreSQL allows 63 bytes and partitions add `_p202611`.
const MAX_TABLE_NAME: usize = 54;

/// The schema of the per-instance parts tables (one per stored query, named after it).
const PARTS_SCHEMA: &str = "hub_parts";

/// A query's output table and the plan pieces that maintain it.
#[derive(Debug)]
pub struct RollupTable {
    /// Query name = table name.
    pub name: String,
    /// Input table (`events` or another query).
    pub source: String,
    /// The SELECT as registered.
    pub sql: String,
    plan: CqPlan,
    layout: OutputLayout,
    user_kinds: Vec<PgKind>,
    state_kinds: Vec<PgKind>,
    /// Index of `window_start` among the SELECT's columns.
    ws_user: usize,
    /// Indices in plan output of `__cq_k0..` (window_start, then the other group keys).
    key_out: Vec<usize>,
    /// Indices in state rows of the same keys.
    key_state: Vec<usize>,
    codec: KeyCodec,
    retention: Option<&'static str>,
    /// Months whose partition exists in committed state (plain PostgreSQL path).
    months: Mutex<HashSet<i64>>,
    /// Months whose partition the open transaction created or checked; they join `months`
    /// only when it commits (a rolled-back creation must be attempted again).
    pending_months: Mutex<HashSet<i64>>,
}

fn config_err(name: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError::Config(format!("continuous query `{name}` cannot be stored in PostgreSQL: {e}"))
}

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> SinkError {
    SinkError::Internal(crate::error::ErrorDetail::of(e))
}

fn db(e: sqlx::Error) -> SinkError {
    super::classify_db(e)
}

impl RollupTable {
    /// Plans `def` over input with `input_schema` and checks every column can be stored.
    pub async fn new(def: &CqDefinition, source: &str, input_schema: &SchemaRef) -> Result<Self, SinkError> {
        let name = def.name.clone();
        if name.len() > MAX_TABLE_NAME {
            return Err(config_err(&name, format!("names longer than {MAX_TABLE_NAME} bytes")));
        }
        let columns: Vec<String> = input_schema.fields().iter().map(|f| f.name().clone()).collect();
        let rewritten = rewrite::rewrite(&def.sql, &columns, true).map_err(|e| config_err(&name, e))?;
        let spec = window_spec(&rewritten.window).await.map_err(|e| config_err(&name, e))?;
        if matches!(spec, WindowSpec::Session { .. }) {
            return Err(config_err(
                &name,
                "session windows are not supported by the Postgres sink",
            ));
        }
        let plan = CqPlan::build(&rewritten.sql, spec, input_schema)
            .await
            .map_err(|e| config_err(&name, e))?;
        let layout = OutputLayout::new(&plan.output_schema, rewritten.key_columns).map_err(|e| config_err(&name, e))?;
        let user = layout.user_schema();
        let ws_user = user
            .index_of("window_start")
            .map_err(|_| config_err(&name, "the SELECT has no window_start"))?;
        let kinds = |schema: &SchemaRef| -> Result<Vec<PgKind>, SinkError> {
            schema
                .fields()
                .iter()
                .map(|f| {
                    PgKind::of(f.data_type()).map_err(|e| config_err(&name, format!("column `{}`: {e}", f.name())))
                })
                .collect()
        };
        let user_kinds = kinds(&user)?;
        let state_kinds = kinds(&plan.state_schema)?;
        let key_out = (0..rewritten.key_columns)
            .map(|i| plan.output_schema.index_of(&key_column(i)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        let key_state: Vec<usize> = std::iter::once(plan.window_start_idx)
            .chain((0..plan.group_len).filter(|i| *i != plan.window_start_idx && *i != plan.window_end_idx))
            .collect();
        if key_state.len() != key_out.len() {
            return Err(SinkError::Internal(crate::error::ErrorDetail::message(format!(
                "`{name}`: {} state keys but {} output keys",
                key_state.len(),
                key_out.len()
            ))));
        }
        let key_types: Vec<DataType> = key_state
            .iter()
            .map(|i| plan.state_schema.field(*i).data_type().clone())
            .collect();
        let codec = KeyCodec::new(&key_types).map_err(internal)?;
        Ok(Self {
            name,
            source: source.to_string(),
            sql: def.sql.clone(),
            retention: retention_for(spec),
            plan,
            layout,
            user_kinds,
            state_kinds,
            ws_user,
            key_out,
            key_state,
            codec,
            months: Mutex::new(HashSet::new()),
            pending_months: Mutex::new(HashSet::new()),
        })
    }

    /// The SELECT's columns: what downstream queries read.
    pub fn user_schema(&self) -> SchemaRef {
        self.layout.user_schema()
    }

    fn group_names(&self) -> Vec<String> {
        (0..self.plan.group_len).map(|i| format!("_g{i}")).collect()
    }

    /// `_g*` then `_s*`: one per state column.
    fn state_names(&self) -> Vec<String> {
        let groups = self.plan.group_len;
        (0..self.plan.state_schema.fields().len())
            .map(|i| {
                if i < groups {
                    format!("_g{i}")
                } else {
                    format!("_s{}", i - groups)
                }
            })
            .collect()
    }

    fn user_names(&self) -> Vec<String> {
        self.user_schema().fields().iter().map(|f| f.name().clone()).collect()
    }

    fn key_columns(&self) -> Vec<String> {
        std::iter::once("window_start".to_string())
            .chain(self.group_names())
            .map(|c| quote_ident(&c))
            .collect()
    }

    /// Creates the table (hypertable or partitioned) if missing; returns the storage kind.
    pub async fn create(&self, conn: &mut PgConnection) -> Result<String, SinkError> {
        let mut ddl: Vec<String> = Vec::new();
        for (i, (name, kind)) in self.user_names().iter().zip(&self.user_kinds).enumerate() {
            let not_null = if i == self.ws_user { " NOT NULL" } else { "" };
            ddl.push(format!("{} {}{not_null}", quote_ident(name), kind.sql()));
        }
        for (name, kind) in self.state_names().iter().zip(&self.state_kinds) {
            ddl.push(format!("{} {}", quote_ident(name), kind.sql()));
        }
        ddl.push("_updated_at timestamptz NOT NULL DEFAULT now()".into());
        let storage: String = sqlx::query_scalar("SELECT hub_create_rollup_table($1, $2, $3, $4::interval)")
            .bind(&self.name)
            .bind(ddl.join(", "))
            .bind(self.key_columns().join(", "))
            .bind(self.retention)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
        Ok(storage)
    }

    /// Whether an existing table has this query's columns (a table left by a deleted query of
    /// the same name may not): `Ok(Err(reason))` when it does not.
    pub async fn check_columns(&self, conn: &mut PgConnection) -> Result<Result<(), String>, SinkError> {
        let existing: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(&self.name)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        let wanted: Vec<String> = self.user_names().into_iter().chain(self.state_names()).collect();
        let missing: Vec<&String> = wanted.iter().filter(|c| !existing.contains(c)).collect();
        if missing.is_empty() {
            Ok(Ok(()))
        } else {
            Ok(Err(format!(
                "table `{}` exists with other columns (missing {missing:?}); drop it or rename the query",
                self.name
            )))
        }
    }

    /// The table holding each instance's states of this query (`hub_parts.<name>`): one row
    /// per data directory (`_store`), window and key, replaced by every later emission of the
    /// same window and key, so writing an emission twice stores it once.
    fn parts_table(&self) -> String {
        format!("{PARTS_SCHEMA}.{}", quote_ident(&self.name))
    }

    /// The unique key of [`Self::parts_table`]: the table's key, then the data directory.
    fn parts_keys(&self) -> Vec<String> {
        let mut keys = self.key_columns();
        keys.push("_store".into());
        keys
    }

    /// Creates [`Self::parts_table`] if missing (its schema is made by the migrations).
    pub async fn create_parts(&self, conn: &mut PgConnection) -> Result<(), SinkError> {
        let mut ddl = vec![
            "_store text NOT NULL".to_string(),
            "window_start timestamptz NOT NULL".to_string(),
        ];
        for (name, kind) in self.state_names().iter().zip(&self.state_kinds) {
            ddl.push(format!("{} {}", quote_ident(name), kind.sql()));
        }
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(self.parts_table())
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
        if exists {
            return Ok(());
        }
        let keys = self.parts_keys();
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} ({}, UNIQUE NULLS NOT DISTINCT ({}))",
            self.parts_table(),
            ddl.join(", "),
            keys.join(", ")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Stores `states` (the engine's states of emitted windows, in emission order) as data
    /// directory `store`'s part, then rewrites each touched row of the table as the merge of
    /// every store's part: with one instance that is the engine's own row; with several (a
    /// Kafka consumer group), each instance's share of the window merged by the same
    /// accumulators the engine uses, so a percentile is exact to the sketch.
    pub async fn write_states(
        &self,
        conn: &mut PgConnection,
        store: &str,
        emissions: &[Vec<RecordBatch>],
    ) -> Result<(), SinkError> {
        let mut merged_emissions = Vec::with_capacity(emissions.len());
        for emission in emissions {
            let own = self.own_layout(emission)?;
            if own.is_empty() {
                continue;
            }
            let reduced = self.plan.reduce(own).await.map_err(internal)?;
            merged_emissions.push(concat_batches(&self.plan.state_schema, &reduced).map_err(internal)?);
        }
        let latest = self.latest_per_key(&merged_emissions)?;
        if latest.num_rows() == 0 {
            return Ok(());
        }
        self.ensure_partitions(conn, &latest).await?;
        self.upsert_parts(conn, store, &latest).await?;
        let parts = self.load_parts(conn, &latest).await?;
        let merged = self.plan.reduce(vec![parts]).await.map_err(internal)?;
        let merged = concat_batches(&self.plan.state_schema, &merged).map_err(internal)?;
        let finals = self.plan.finalize(vec![merged.clone()]).await.map_err(internal)?;
        let finals = concat_batches(&self.plan.output_schema, &finals).map_err(internal)?;
        self.upsert(conn, &merged, &finals).await
    }

    /// The engine's state batches in the sink's state schema (the same plan of the same SQL;
    /// checked column by column).
    fn own_layout(&self, states: &[RecordBatch]) -> Result<Vec<RecordBatch>, SinkError> {
        let schema = &self.plan.state_schema;
        let mut own = Vec::with_capacity(states.len());
        for b in states.iter().filter(|b| b.num_rows() > 0) {
            let same = b.num_columns() == schema.fields().len()
                && b.columns()
                    .iter()
                    .zip(schema.fields())
                    .all(|(c, f)| c.data_type() == f.data_type());
            if !same {
                return Err(SinkError::Internal(crate::error::ErrorDetail::message(format!(
                    "`{}`: the engine's states do not have the sink's layout",
                    self.name
                ))));
            }
            own.push(RecordBatch::try_new(Arc::clone(schema), b.columns().to_vec()).map_err(internal)?);
        }
        Ok(own)
    }

    /// Merged emissions (one row per window and key each), oldest first, keeping the last row
    /// of each window and key (an updating query emits a key again with its newer state).
    fn latest_per_key(&self, emissions: &[RecordBatch]) -> Result<RecordBatch, SinkError> {
        let schema = &self.plan.state_schema;
        let all = concat_batches(schema, emissions).map_err(internal)?;
        let keys = self.codec.encode(&all, &self.key_state).map_err(internal)?;
        let mut last: HashMap<_, u32> = HashMap::with_capacity(keys.len());
        for (row, key) in (0u32..).zip(keys) {
            last.insert(key, row);
        }
        if last.len() == all.num_rows() {
            return Ok(all);
        }
        let mut rows: Vec<u32> = last.into_values().collect();
        rows.sort_unstable();
        let indices = UInt32Array::from(rows);
        let columns = all
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        RecordBatch::try_new(Arc::clone(schema), columns).map_err(internal)
    }

    /// Replaces `store`'s states of the windows and keys in `states`.
    async fn upsert_parts(&self, conn: &mut PgConnection, store: &str, states: &RecordBatch) -> Result<(), SinkError> {
        let names: Vec<String> = self.state_names().iter().map(|n| quote_ident(n)).collect();
        let mut params = vec![format!("${}::timestamptz[]", 2)];
        params.extend(
            self.state_kinds
                .iter()
                .enumerate()
                .map(|(i, k)| format!("${}::{}", i + 3, k.array_cast())),
        );
        let updates: Vec<String> = names
            .iter()
            .skip(self.plan.group_len)
            .map(|n| format!("{n} = EXCLUDED.{n}"))
            .collect();
        let keys = self.parts_keys();
        let sql = format!(
            "INSERT INTO {} (_store, window_start, {}) SELECT $1, * FROM unnest({}) ON CONFLICT ({}) DO {}",
            self.parts_table(),
            names.join(", "),
            params.join(", "),
            keys.join(", "),
            if updates.is_empty() {
                "NOTHING".to_string()
            } else {
                format!("UPDATE SET {}", updates.join(", "))
            }
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(store);
        query = bind(
            query,
            to_pg(states.column(self.plan.window_start_idx), PgKind::Timestamp)?,
        );
        for (i, kind) in self.state_kinds.iter().enumerate() {
            query = bind(query, to_pg(states.column(i), *kind)?);
        }
        query.execute(&mut *conn).await.map_err(db)?;
        Ok(())
    }

    /// Every store's states of the windows and keys in `states`.
    async fn load_parts(&self, conn: &mut PgConnection, states: &RecordBatch) -> Result<RecordBatch, SinkError> {
        let groups = self.group_names();
        let names = self.state_names();
        let select: Vec<String> = names
            .iter()
            .zip(&self.state_kinds)
            .map(|(n, k)| k.select_expr(&format!("t.{}", quote_ident(n))))
            .collect();
        let params: Vec<String> = (0..groups.len())
            .map(|i| format!("${}::{}", i + 1, self.state_kinds[i].array_cast()))
            .collect();
        let aliases: Vec<String> = (0..groups.len()).map(|i| format!("c{i}")).collect();
        let ws = self.plan.window_start_idx;
        let mut on = vec![format!("t.window_start = k.c{ws}")];
        on.extend(
            groups
                .iter()
                .enumerate()
                .map(|(i, g)| format!("t.{} IS NOT DISTINCT FROM k.c{i}", quote_ident(g))),
        );
        let sql = format!(
            "SELECT {} FROM {} t JOIN unnest({}) AS k({}) ON {}",
            select.join(", "),
            self.parts_table(),
            params.join(", "),
            aliases.join(", "),
            on.join(" AND ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for i in 0..groups.len() {
            query = bind(query, to_pg(states.column(i), self.state_kinds[i])?);
        }
        let rows = query.fetch_all(&mut *conn).await.map_err(db)?;
        let schema = &self.plan.state_schema;
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| read_column(&rows, i, self.state_kinds[i], f.data_type()))
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        RecordBatch::try_new(Arc::clone(schema), columns).map_err(internal)
    }

    async fn ensure_partitions(&self, conn: &mut PgConnection, delta: &RecordBatch) -> Result<(), SinkError> {
        let starts = delta
            .column(self.plan.window_start_idx)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::PrimitiveArray<TimestampMicrosecondType>>()
            .ok_or_else(|| {
                SinkError::Internal(crate::error::ErrorDetail::message("window_start is not a µs timestamp"))
            })?;
        let mut months: Vec<i64> = starts.iter().flatten().map(month_of).collect();
        months.sort_unstable();
        months.dedup();
        let missing: Vec<i64> = {
            let known = super::lock(&self.months);
            months.into_iter().filter(|m| !known.contains(m)).collect()
        };
        for month in missing {
            let at = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(month).ok_or_else(|| {
                SinkError::Internal(crate::error::ErrorDetail::message(format!(
                    "window start {month} out of range"
                )))
            })?;
            sqlx::query("SELECT hub_ensure_partition($1, $2)")
                .bind(&self.name)
                .bind(at)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            super::lock(&self.pending_months).insert(month);
        }
        Ok(())
    }

    /// The transaction that ran [`Self::apply`] committed (`true`) or was abandoned (`false`).
    pub fn settle(&self, committed: bool) {
        let pending: Vec<i64> = super::lock(&self.pending_months).drain().collect();
        if committed {
            super::lock(&self.months).extend(pending);
        }
    }

    async fn upsert(
        &self,
        conn: &mut PgConnection,
        merged: &RecordBatch,
        finals: &RecordBatch,
    ) -> Result<(), SinkError> {
        // Match each merged state row with its output row (HAVING may have dropped some).
        let out_keys = self.codec.encode(finals, &self.key_out).map_err(internal)?;
        let by_key: HashMap<_, u32> = out_keys.into_iter().zip(0u32..).collect();
        let state_keys = self.codec.encode(merged, &self.key_state).map_err(internal)?;
        let indices: UInt32Array = state_keys.iter().map(|k| by_key.get(k).copied()).collect();
        let user = self.layout.user_rows(finals).map_err(internal)?;
        let mut arrays = Vec::new();
        for (i, kind) in self.user_kinds.iter().enumerate() {
            let mut col = take(user.column(i).as_ref(), &indices, None).map_err(internal)?;
            if i == self.ws_user && col.null_count() > 0 {
                // A row HAVING filtered out keeps its key and state; window_start stays set.
                let ws = datafusion::arrow::compute::cast(merged.column(self.plan.window_start_idx), col.data_type())
                    .map_err(internal)?;
                let present = datafusion::arrow::compute::is_not_null(&col).map_err(internal)?;
                col = zip(&present, &col, &ws).map_err(internal)?;
            }
            arrays.push((to_pg(&col, *kind)?, kind));
        }
        for (i, kind) in self.state_kinds.iter().enumerate() {
            arrays.push((to_pg(merged.column(i), *kind)?, kind));
        }
        let names: Vec<String> = self
            .user_names()
            .into_iter()
            .chain(self.state_names())
            .map(|n| quote_ident(&n))
            .collect();
        let params: Vec<String> = arrays
            .iter()
            .enumerate()
            .map(|(i, (_, k))| format!("${}::{}", i + 1, k.array_cast()))
            .collect();
        let keys = self.key_columns();
        let updates: Vec<String> = names
            .iter()
            .filter(|n| !keys.contains(n))
            .map(|n| format!("{n} = EXCLUDED.{n}"))
            .chain(std::iter::once("_updated_at = now()".to_string()))
            .collect();
        let sql = format!(
            "INSERT INTO {} ({}) SELECT * FROM unnest({}) ON CONFLICT ({}) DO UPDATE SET {}",
            quote_ident(&self.name),
            names.join(", "),
            params.join(", "),
            keys.join(", "),
            updates.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (array, _) in arrays {
            query = bind(query, array);
        }
        query.execute(&mut *conn).await.map_err(db)?;
        Ok(())
    }
}

/// First instant (µs) of the UTC month holding `us`.
fn month_of(us: i64) -> i64 {
    use chrono::Datelike;
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us)
        .and_then(|t| {
            chrono::NaiveDate::from_ymd_opt(t.year(), t.month(), 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc().timestamp_micros())
        })
        .unwrap_or(us)
}

/// Retention of a window size (TimescaleDB path; seed's multi-tier retention): minute windows
/// 7 days, up to an hour 90 days, up to a day 1 year, longer windows kept.
fn retention_for(spec: WindowSpec) -> Option<&'static str> {
    let size_us = match spec {
        WindowSpec::Tumble { size: Span::Micros(us) } => us,
        WindowSpec::Hop { size_us, .. } => size_us,
        _ => return None,
    };
    const MINUTE: i64 = 60_000_000;
    Some(match size_us {
        s if s <= 15 * MINUTE => "7 days",
        s if s <= 60 * MINUTE => "90 days",
        s if s <= 24 * 60 * MINUTE => "365 days",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_retention() {
        // 2026-11-27T10:00:00Z → 2026-11-01T00:00:00Z
        assert_eq!(month_of(1_795_773_600_000_000), 1_793_491_200_000_000);
        assert_eq!(
            retention_for(WindowSpec::Tumble {
                size: Span::Micros(60_000_000)
            }),
            Some("7 days")
        );
        assert_eq!(retention_for(WindowSpec::Tumble { size: Span::Months(1) }), None);
    }
}
