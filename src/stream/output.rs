//! A query's output store and what is read back from it: the table users query (for updating
//! queries a view with the latest version per (window, key)), the final rows downstream queries
//! replay, and where a restarted query resumes. Session queries also keep a small checkpoint
//! file (watermark, earliest open session) that bounds the replay after a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::catalog::{TableProvider, view::ViewTable};
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use super::CqError;
use super::emit::{DELETED, EMITTED_AT, FINAL};
use super::keys::Key;
use super::query::CqRuntime;
use super::window::WindowSpec;
use crate::storage::EventStore;
use crate::storage::local::LocalStore;

/// Name of the session checkpoint file in a query's output directory.
const CHECKPOINT: &str = "session-checkpoint.json";

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A session query's restart point (see [`super::session`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCheckpoint {
    /// Watermark, µs.
    pub watermark_us: i64,
    /// Earliest first event time of a session open at the watermark, µs.
    pub open_since_us: Option<i64>,
}

impl SessionCheckpoint {
    /// Events at or after this time rebuild every session open at the checkpoint or later.
    pub fn replay_from(&self) -> i64 {
        self.open_since_us
            .map_or(self.watermark_us, |o| o.min(self.watermark_us))
    }
}

fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT)
}

/// Reads a session checkpoint; a missing or unreadable one means "replay everything".
pub fn read_checkpoint(dir: &Path) -> Option<SessionCheckpoint> {
    let bytes = std::fs::read(checkpoint_path(dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes a session checkpoint (temp file + rename: a crash leaves the old one or the new one;
/// any checkpoint, however old, gives a correct replay).
pub fn write_checkpoint(dir: &Path, checkpoint: &SessionCheckpoint) -> Result<(), CqError> {
    let path = checkpoint_path(dir);
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(checkpoint).map_err(CqError::internal)?;
    std::fs::write(&tmp, bytes).map_err(CqError::internal_in(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(CqError::internal_in(format!("renaming {}", tmp.display())))
}

/// SQL over `versions` keeping the latest version of each key; `columns` are selected and
/// `filter` (over the version columns) applied.
fn latest_sql(key_names: &[String], columns: &str, filter: &str) -> String {
    let partition = key_names.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT {columns} FROM (SELECT *, row_number() OVER (PARTITION BY {partition} ORDER BY {} DESC) AS __cq_rn FROM versions) WHERE __cq_rn = 1 AND NOT {}{filter}",
        quote(EMITTED_AT),
        quote(DELETED),
    )
}

fn versions_ctx(store: &LocalStore) -> Result<SessionContext, CqError> {
    let ctx = SessionContext::new();
    ctx.register_table("versions", store.table_provider())
        .map_err(CqError::internal)?;
    Ok(ctx)
}

/// The table users query: the store itself, or for updating queries a view with the latest
/// version of each (window, key) that is not deleted (the SELECT's columns, `_emitted_at`,
/// `_final`).
pub async fn user_table(rt: &CqRuntime, store: &LocalStore) -> Result<Arc<dyn TableProvider>, CqError> {
    if !rt.layout().updating() {
        return Ok(store.table_provider());
    }
    let mut columns: Vec<String> = rt.output_schema().fields().iter().map(|f| quote(f.name())).collect();
    columns.push(quote(EMITTED_AT));
    columns.push(quote(FINAL));
    let sql = latest_sql(&rt.layout().key_names(), &columns.join(", "), "");
    let ctx = versions_ctx(store)?;
    let plan = ctx.sql(&sql).await.map_err(CqError::internal)?.into_unoptimized_plan();
    Ok(Arc::new(ViewTable::new(plan, Some(sql))))
}

/// Rows of `store` (an upstream query's output) that downstream queries consume: final rows in
/// the SELECT's columns, with `window_start` at or after `from`.
pub async fn final_rows(
    upstream: &CqRuntime,
    store: &LocalStore,
    from: Option<i64>,
) -> Result<Vec<RecordBatch>, CqError> {
    let ctx = versions_ctx(store)?;
    let columns: Vec<String> = upstream
        .output_schema()
        .fields()
        .iter()
        .map(|f| quote(f.name()))
        .collect();
    let mut conditions = Vec::new();
    if upstream.layout().updating() {
        conditions.push(format!("{} AND NOT {}", quote(FINAL), quote(DELETED)));
    }
    if let Some(from) = from {
        conditions.push(format!("CAST(window_start AS BIGINT) >= {from}"));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {} FROM versions{filter} ORDER BY window_start",
        columns.join(", ")
    );
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(CqError::internal)?
        .collect()
        .await
        .map_err(CqError::from_execution)?;
    let schema = upstream.output_schema();
    batches
        .into_iter()
        .map(|b| RecordBatch::try_new(Arc::clone(&schema), b.columns().to_vec()).map_err(CqError::internal))
        .collect()
}

async fn max_of(store: &LocalStore, expr: &str, filter: &str) -> Result<Option<i64>, CqError> {
    let batches = versions_ctx(store)?
        .sql(&format!(
            "SELECT CAST(max({expr}) AS BIGINT) AS m FROM versions{filter}"
        ))
        .await
        .map_err(CqError::internal)?
        .collect()
        .await
        .map_err(CqError::from_execution)?;
    let value = batches
        .first()
        .filter(|b| b.num_rows() > 0)
        .map(|b| ScalarValue::try_from_array(b.column(0), 0))
        .transpose()
        .map_err(CqError::internal)?;
    Ok(match value {
        Some(ScalarValue::Int64(v)) => v,
        _ => None,
    })
}

/// Sets where a (re)opened query resumes from what its store holds; returns the event time a
/// session query's replay starts at (`None`: from its registration).
pub async fn resume(rt: &mut CqRuntime, store: &LocalStore, dir: &Path) -> Result<Option<i64>, CqError> {
    let finals = if rt.layout().updating() {
        format!(" WHERE {}", quote(FINAL))
    } else {
        String::new()
    };
    if rt.layout().updating()
        && let Some(last) = max_of(store, &quote(EMITTED_AT), "").await?
    {
        rt.layout_mut().resume_emitted_at(last);
    }
    match rt.spec() {
        WindowSpec::Session { .. } => {
            let checkpoint = read_checkpoint(dir);
            let ended = max_of(store, "window_end", &finals).await?;
            let suppress = match (ended, checkpoint.map(|c| c.watermark_us)) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            rt.suppress_sessions_until(suppress);
            Ok(checkpoint.map(|c| c.replay_from()))
        }
        _ => {
            rt.emitted_through = max_of(store, "window_start", &finals).await?;
            Ok(None)
        }
    }
}

/// Updating queries: (window start, key) of the rows the output shows that are not final yet
/// (after a restart they belong to windows the replay reopened).
pub async fn open_rows(rt: &CqRuntime, store: &LocalStore) -> Result<Vec<(i64, Key)>, CqError> {
    if !rt.layout().updating() {
        return Ok(Vec::new());
    }
    let keys = rt.layout().key_names();
    let columns = keys.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
    let sql = latest_sql(&keys, &columns, &format!(" AND NOT {}", quote(FINAL)));
    let batches = versions_ctx(store)?
        .sql(&sql)
        .await
        .map_err(CqError::internal)?
        .collect()
        .await
        .map_err(CqError::from_execution)?;
    let mut out = Vec::new();
    for b in batches {
        let columns: Vec<ArrayRef> = b.columns().to_vec();
        out.extend(rt.layout().keys_of(&columns)?);
    }
    Ok(out)
}

/// Events received since `since_us` (ingest time), optionally with event time at or after
/// `from_us`, in arrival order.
pub async fn events_since(
    events: &Arc<dyn EventStore>,
    since_us: i64,
    from_us: Option<i64>,
) -> Result<Vec<RecordBatch>, CqError> {
    use crate::event::time::timestamp_lit;
    use datafusion::prelude::col;
    let ctx = SessionContext::new();
    ctx.register_table("src", events.table_provider())
        .map_err(CqError::internal)?;
    let mut df = ctx
        .table("src")
        .await
        .map_err(CqError::internal)?
        .filter(col("ingest_time").gt_eq(timestamp_lit(since_us)))
        .map_err(CqError::internal)?;
    if let Some(from) = from_us {
        df = df
            .filter(col("timestamp").gt_eq(timestamp_lit(from)))
            .map_err(CqError::internal)?;
    }
    df.sort(vec![col("ingest_time").sort(true, false)])
        .map_err(CqError::internal)?
        .collect()
        .await
        .map_err(CqError::from_execution)
}
