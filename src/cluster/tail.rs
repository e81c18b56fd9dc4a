//! Recent events everywhere: an instance's **tail** — its events not in the reader's view of
//! the catalog — served to the other instances over HTTP as an Arrow IPC stream
//! (`POST /internal/v1/cluster/tail`, guarded by `cluster.secret`).
//!
//! The reader sends the names of the owner's files it will read from shared storage (the list
//! it took for this scan); the owner answers, from one snapshot of its store, its in-memory
//! events plus every local file not in that list. A segment flushed and shipped while the query
//! runs is therefore in exactly one of the two: the reader's list (read from shared storage) or
//! the owner's answer. So a query on any instance sees every event acknowledged on any member
//! that answers before the query started.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::event::schema::col;
use crate::storage::local::LocalStore;

/// Header carrying `cluster.secret`.
pub const SECRET_HEADER: &str = "x-hub-cluster-secret";
/// Route of the tail.
pub const TAIL_PATH: &str = "/internal/v1/cluster/tail";
/// Route a member answers with its [`Member`] description (asked by `cluster.peers`).
pub const MEMBER_PATH: &str = "/internal/v1/cluster/member";
/// Media type of the answer.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// What a reader asks an owner for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TailRequest {
    /// The table: `events`, or a cluster-wide continuous-query table's catalog name.
    #[serde(default = "events_table")]
    pub table: String,
    /// The owner's data directory the reader means (a restarted owner with another directory
    /// answers 409 rather than the wrong tail).
    pub store_id: String,
    /// Columns wanted, in order (`timestamp` is always sent too); `None` = every column.
    pub columns: Option<Vec<String>>,
    /// Only events at or after this time (µs), when set.
    pub min_time_us: Option<i64>,
    /// Only events at or before this time (µs), when set.
    pub max_time_us: Option<i64>,
    /// The owner's flushed files the reader reads from shared storage (file names).
    pub known_files: Vec<String>,
}

fn events_table() -> String {
    crate::cluster::EVENTS.to_string()
}

/// The column a tail of `table` is filtered on by time and always carries: `timestamp` for
/// events; none for a continuous query's rows (they are few and asked for whole).
pub fn time_column(table: &str) -> Option<&'static str> {
    (table == crate::cluster::EVENTS).then_some(col::TIMESTAMP)
}

/// The local stores a member serves tails of: its events and its shared continuous-query
/// tables, by catalog name. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TailStores {
    events: LocalStore,
    tables: Arc<std::sync::RwLock<std::collections::HashMap<String, LocalStore>>>,
}

impl TailStores {
    /// The events store, and no shared table yet.
    pub fn new(events: LocalStore) -> Self {
        Self {
            events,
            tables: Arc::default(),
        }
    }

    /// The store of `table`, if this instance holds it.
    pub fn get(&self, table: &str) -> Option<LocalStore> {
        if table == crate::cluster::EVENTS {
            return Some(self.events.clone());
        }
        self.tables
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(table)
            .cloned()
    }

    /// `table` is served from `store` from now on (`None`: no longer).
    pub fn set(&self, table: &str, store: Option<LocalStore>) {
        let mut tables = self.tables.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match store {
            Some(s) => tables.insert(table.to_string(), s),
            None => tables.remove(table),
        };
    }
}

/// Why a tail could not be served or read.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// The request names an unknown column or another data directory.
    #[error("{0}")]
    Invalid(String),
    /// The tail is larger than `cluster.max_tail_bytes`.
    #[error(
        "the recent events of this instance take more than {limit} bytes (cluster.max_tail_bytes); narrow the time range"
    )]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Reading a local file or encoding failed.
    #[error("reading the tail: {0}")]
    Read(String),
    /// The owner did not answer as expected.
    #[error("instance {instance} at {url}: {message}")]
    Peer {
        /// Its name.
        instance: String,
        /// Its address.
        url: String,
        /// The HTTP status it answered, if it answered.
        status: Option<u16>,
        /// What went wrong.
        message: String,
    },
}

fn read_err(e: impl std::fmt::Display) -> TailError {
    TailError::Read(e.to_string())
}

/// Keeps the rows of `batch` inside the request's time range.
fn in_range(batch: RecordBatch, req: &TailRequest) -> Result<RecordBatch, TailError> {
    let Some(time) = time_column(&req.table) else {
        return Ok(batch);
    };
    if req.min_time_us.is_none() && req.max_time_us.is_none() {
        return Ok(batch);
    }
    let Some(times) = batch
        .column_by_name(time)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
    else {
        return Err(TailError::Read("the tail has no timestamp column".into()));
    };
    let keep: BooleanArray = times
        .iter()
        .map(|t| {
            Some(
                t.is_some_and(|t| req.min_time_us.is_none_or(|lo| t >= lo) && req.max_time_us.is_none_or(|hi| t <= hi)),
            )
        })
        .collect();
    filter_record_batch(&batch, &keep).map_err(read_err)
}

/// Indices in `schema` of the requested columns plus the time column (`timestamp` for events).
fn wanted(schema: &SchemaRef, req: &TailRequest) -> Result<Vec<usize>, TailError> {
    let Some(columns) = &req.columns else {
        return Ok((0..schema.fields().len()).collect());
    };
    let mut out = Vec::with_capacity(columns.len() + 1);
    for name in columns.iter().map(String::as_str).chain(time_column(&req.table)) {
        let i = schema
            .index_of(name)
            .map_err(|_| TailError::Invalid(format!("unknown column `{name}`")))?;
        if !out.contains(&i) {
            out.push(i);
        }
    }
    Ok(out)
}

fn read_file(path: &Path, schema: &SchemaRef, columns: &[usize]) -> Result<Vec<RecordBatch>, TailError> {
    let file = std::fs::File::open(path).map_err(|e| TailError::Read(format!("{}: {e}", path.display())))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(read_err)?;
    let names: HashSet<&str> = columns.iter().map(|i| schema.field(*i).name().as_str()).collect();
    let file_schema = Arc::clone(builder.schema());
    let roots: Vec<usize> = file_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| names.contains(f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder.with_projection(mask).build().map_err(read_err)?;
    reader
        .map(|b| {
            let b = b.map_err(read_err)?;
            // In the store's column order (a file written by this version has every column).
            let order: Vec<usize> = columns
                .iter()
                .map(|i| b.schema().index_of(schema.field(*i).name()))
                .collect::<Result<_, ArrowError>>()
                .map_err(read_err)?;
            b.project(&order).map_err(read_err)
        })
        .collect()
}

/// The owner's flushed files whose names the reader did not list (it reads those from shared
/// storage): with its in-memory events, the owner's tail. Served over HTTP ([`serve`]) and read
/// in process ([`super::tail_exec::TailExec`]) alike.
pub fn unlisted(files: Vec<std::path::PathBuf>, known_files: &[String]) -> Vec<std::path::PathBuf> {
    let known: HashSet<&str> = known_files.iter().map(String::as_str).collect();
    files
        .into_iter()
        .filter(|path| {
            let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
            !known.contains(name.as_ref())
        })
        .collect()
}

/// The owner's side: the tail of `local` for `req`, as an Arrow IPC stream of at most
/// `max_bytes` (blocking: reads files).
pub fn serve(local: &LocalStore, req: &TailRequest, max_bytes: usize) -> Result<Vec<u8>, TailError> {
    let schema = local.schema();
    let columns = wanted(&schema, req)?;
    let projected = Arc::new(schema.project(&columns).map_err(read_err)?);
    let snapshot = local.snapshot();
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &projected).map_err(read_err)?;
    let write = |batch: RecordBatch, writer: &mut StreamWriter<&mut Vec<u8>>| -> Result<(), TailError> {
        let batch = in_range(batch, req)?;
        if batch.num_rows() > 0 {
            writer.write(&batch).map_err(read_err)?;
        }
        Ok(())
    };
    for batch in snapshot.batches {
        write(batch.project(&columns).map_err(read_err)?, &mut writer)?;
        if writer.get_ref().len() > max_bytes {
            return Err(TailError::TooLarge { limit: max_bytes });
        }
    }
    for path in unlisted(snapshot.files, &req.known_files) {
        for batch in read_file(&path, &schema, &columns)? {
            write(batch, &mut writer)?;
            if writer.get_ref().len() > max_bytes {
                return Err(TailError::TooLarge { limit: max_bytes });
            }
        }
    }
    writer.finish().map_err(read_err)?;
    drop(writer);
    Ok(out)
}

/// What the owner side of the tail route needs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TailServer {
    /// This instance's stores.
    pub stores: TailStores,
    /// Its data directory's id (requests for another are refused).
    pub store_id: String,
    /// `cluster.secret`.
    pub secret: String,
    /// `cluster.max_tail_bytes`.
    pub max_bytes: usize,
    /// This instance's address for the others, once its listener is bound.
    pub advertised: Arc<std::sync::OnceLock<String>>,
    /// What this instance last said of itself (its heartbeat), for `cluster.peers`.
    pub announced: Arc<std::sync::RwLock<Option<Member>>>,
}

impl TailServer {
    /// The HTTP API is reachable at `url`: heartbeats (carrying it) start.
    pub fn advertise(&self, url: String) {
        if self.advertised.set(url.clone()).is_ok() {
            tracing::info!(%url, "advertised to the cluster");
        }
    }

    /// This instance as its last heartbeat described it (none before the first).
    pub fn member(&self) -> Option<Member> {
        self.announced
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether `given` is the cluster secret (compared as digests, in constant time for the
    /// digest's length).
    pub fn admits(&self, given: &[u8]) -> bool {
        secret_matches(given, &self.secret)
    }
}

/// Whether `given` is `secret` (compared as digests, in constant time for the digest's length);
/// the tail route and the distributed-execution worker both check it.
pub fn secret_matches(given: &[u8], secret: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given), Sha256::digest(secret.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Another instance, as its heartbeat row (or its answer to `cluster.peers`' question) says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its data directory.
    pub store_id: String,
    /// Its name.
    pub instance_id: String,
    /// Its HTTP API.
    pub url: String,
    /// Its store's data version.
    pub epoch: i64,
    /// See `epoch`.
    pub appends: i64,
    /// Its distributed-execution worker, when it runs one.
    pub worker_url: Option<String>,
    /// Digest of its secret and version ([`crate::cluster::distributed::worker_key`]): only
    /// workers with this instance's own are sent tasks.
    pub worker_key: Option<String>,
}

/// The reader's side: asks `member` for its tail; returns the batches (columns as requested,
/// then `timestamp` unless requested).
pub async fn fetch(
    client: &reqwest::Client,
    member: &Member,
    secret: &str,
    req: &TailRequest,
    timeout: Duration,
) -> Result<Vec<RecordBatch>, TailError> {
    let peer = |status: Option<u16>, message: String| TailError::Peer {
        instance: member.instance_id.clone(),
        url: member.url.clone(),
        status,
        message,
    };
    let response = client
        .post(format!("{}{TAIL_PATH}", member.url.trim_end_matches('/')))
        .header(SECRET_HEADER, secret)
        .json(req)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| peer(None, format!("no answer: {e}")))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| peer(Some(status.as_u16()), format!("reading the answer: {e}")))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err(peer(Some(status.as_u16()), format!("answered {status}: {text}")));
    }
    let bad = |e: ArrowError| peer(Some(status.as_u16()), format!("unreadable answer: {e}"));
    let reader = StreamReader::try_new(std::io::Cursor::new(body), None).map_err(bad)?;
    reader.map(|b| b.map_err(bad)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(columns: Option<Vec<&str>>) -> TailRequest {
        TailRequest {
            table: crate::cluster::EVENTS.into(),
            store_id: "s".into(),
            columns: columns.map(|c| c.into_iter().map(str::to_string).collect()),
            min_time_us: None,
            max_time_us: None,
            known_files: Vec::new(),
        }
    }

    #[test]
    fn requested_columns_come_first_then_the_timestamp_once() {
        let schema = crate::event::events_schema();
        let ts = schema.index_of(col::TIMESTAMP).expect("ts");
        let model = schema.index_of(col::MODEL).expect("model");
        assert_eq!(
            wanted(&schema, &request(Some(vec!["model"]))).expect("ok"),
            vec![model, ts]
        );
        assert_eq!(
            wanted(&schema, &request(Some(vec!["timestamp", "model"]))).expect("ok"),
            vec![ts, model]
        );
        assert_eq!(wanted(&schema, &request(Some(vec![]))).expect("ok"), vec![ts]);
        assert_eq!(
            wanted(&schema, &request(None)).expect("ok").len(),
            schema.fields().len()
        );
        let err = wanted(&schema, &request(Some(vec!["nope"]))).expect_err("unknown");
        assert!(err.to_string().contains("nope"));
    }
}
