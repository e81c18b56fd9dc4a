//! Compaction of shared history, once per cluster: the instance holding a PostgreSQL advisory
//! lock merges each data directory's small shipped files into one time-sorted file (zstd, 64k-row
//! row groups with statistics, a bloom filter on `event_id`), swaps them in the catalog in one
//! transaction, and deletes the replaced objects after a grace longer than any query.
//!
//! Events and every shared continuous-query table this instance knows ([`SharedTables`]) are
//! maintained alike: events sorted by `timestamp` with the bloom filter, a query's rows by
//! `window_start`.
//!
//! Files are merged only within one data directory: an instance reads its own rows locally and
//! skips its directory's shared files, so a file mixing directories would be read twice or
//! never. A compacted file lists the flushed segments it holds (`covers`), so the owner's
//! shipper never ships them again and its tail never serves them again.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::catalog::{Catalog, CatalogFile};
use super::tables::SharedTables;
use super::{ClusterError, EVENTS};
use crate::event::schema::col;
use crate::exports::destination::{Destination, join};

/// Advisory-lock key of the cluster's maintenance ("LLMHCM").
const LEADER_KEY: i64 = 0x4c4c_4d48_434d;
/// Rows per row group of a compacted file.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// The compaction settings of `[cluster]`.
#[derive(Debug, Clone, Copy)]
pub struct CompactSettings {
    /// How often the leader looks for work (zero: never compacts).
    pub every: Duration,
    /// Files below this size are merged.
    pub small_bytes: u64,
    /// A directory is compacted once it has this many small files.
    pub min_files: usize,
    /// Input bytes of one merge at most (it is done in memory).
    pub max_input_bytes: u64,
    /// Replaced objects are deleted this long after the swap.
    pub grace: Duration,
    /// Files whose events are all older than this are taken out (zero: kept forever).
    pub retention: Duration,
    /// The clock retention compares event times with (µs since the epoch).
    pub now_us: fn() -> i64,
}

fn merge_err(e: impl std::error::Error + Send + Sync + 'static) -> ClusterError {
    ClusterError::Local {
        path: "compaction".into(),
        source: Box::new(e),
    }
}

/// Picks the oldest small files of one directory, up to `max_input_bytes` (at least two).
fn pick(small: Vec<CatalogFile>, settings: &CompactSettings) -> Vec<CatalogFile> {
    if small.len() < settings.min_files.max(2) {
        return Vec::new();
    }
    let mut picked = Vec::new();
    let mut bytes = 0u64;
    for f in small {
        let size = f.bytes.max(0) as u64;
        if picked.len() >= 2 && bytes + size > settings.max_input_bytes {
            break;
        }
        bytes += size;
        picked.push(f);
    }
    picked
}

/// A table compaction maintains, and how its files are sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Maintained {
    /// Catalog name.
    table: String,
    /// The column rows are sorted by.
    sort: &'static str,
    /// Whether the file gets a bloom filter on `event_id` (events).
    bloom: bool,
}

/// Merges Parquet files (their bytes) into one, sorted by `t.sort`.
fn merge(inputs: Vec<Bytes>, t: &Maintained) -> Result<(Vec<u8>, usize), ClusterError> {
    let mut batches: Vec<RecordBatch> = Vec::new();
    for bytes in inputs {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(merge_err)?
            .build()
            .map_err(merge_err)?;
        for batch in reader {
            batches.push(batch.map_err(merge_err)?);
        }
    }
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Err(ClusterError::Config("compaction inputs hold no rows".into()));
    };
    let all = concat_batches(&schema, &batches).map_err(merge_err)?;
    drop(batches);
    let times = all
        .column_by_name(t.sort)
        .ok_or_else(|| ClusterError::Config(format!("compaction inputs have no {} column", t.sort)))?;
    let order = sort_to_indices(times, None, None).map_err(merge_err)?;
    let sorted = take_record_batch(&all, &order).map_err(merge_err)?;
    drop(all);
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    if t.bloom {
        props = props.set_column_bloom_filter_enabled(ColumnPath::from(col::EVENT_ID), true);
    }
    let props = props.build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props)).map_err(merge_err)?;
    writer.write(&sorted).map_err(merge_err)?;
    writer.close().map_err(merge_err)?;
    Ok((out, sorted.num_rows()))
}

/// The leader's work.
#[derive(Debug)]
pub struct Compactor {
    catalog: Catalog,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    instance_id: String,
    settings: CompactSettings,
    /// The shared continuous-query tables maintained with events.
    tables: Option<SharedTables>,
}

impl Compactor {
    /// A compactor writing to `dest`, recording as `instance_id`.
    pub fn new(catalog: Catalog, dest: &Destination, instance_id: String, settings: CompactSettings) -> Self {
        Self {
            catalog,
            store: Arc::clone(&dest.store),
            prefix: dest.prefix.clone(),
            instance_id,
            settings,
            tables: None,
        }
    }

    /// Maintains `tables`' shared files too.
    pub fn with_tables(mut self, tables: SharedTables) -> Self {
        self.tables = Some(tables);
        self
    }

    /// Events, then every shared table this instance knows (they run the same queries).
    fn maintained(&self) -> Vec<Maintained> {
        let events = Maintained {
            table: EVENTS.to_string(),
            sort: col::TIMESTAMP,
            bloom: true,
        };
        let tables = self.tables.iter().flat_map(SharedTables::all).map(|t| Maintained {
            table: t.key.clone(),
            sort: super::tables::WINDOW_START,
            bloom: false,
        });
        std::iter::once(events).chain(tables).collect()
    }

    /// One pass: one merge per data directory that has enough small files, then the deletion
    /// of objects replaced more than the grace ago. Returns the merges done.
    pub async fn pass(&self) -> Result<usize, ClusterError> {
        let mut merged = 0;
        let cutoff = (!self.settings.retention.is_zero()).then(|| {
            let keep = i64::try_from(self.settings.retention.as_micros()).unwrap_or(i64::MAX);
            (self.settings.now_us)().saturating_sub(keep)
        });
        for t in self.maintained() {
            for store_id in self.catalog.stores(&t.table).await? {
                let small = self
                    .catalog
                    .small_files(&t.table, &store_id, self.settings.small_bytes)
                    .await?;
                let inputs = pick(small, &self.settings);
                if !inputs.is_empty() && self.compact(&t, &store_id, &inputs).await? {
                    merged += 1;
                }
            }
            if let Some(cutoff) = cutoff {
                let n = self.catalog.expire_before(&t.table, cutoff).await?;
                if n > 0 {
                    tracing::info!(table = %t.table, files = n, "shared history past retention taken out");
                }
            }
        }
        for path in self.catalog.expired(self.settings.grace).await? {
            match self.store.delete(&join(&self.prefix, &path)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => self.catalog.forget(&path).await?,
                Err(e) => return Err(ClusterError::remote(format!("deleting {path}"))(e)),
            }
        }
        Ok(merged)
    }

    async fn compact(&self, t: &Maintained, store_id: &str, inputs: &[CatalogFile]) -> Result<bool, ClusterError> {
        let mut bytes = Vec::with_capacity(inputs.len());
        for f in inputs {
            let key = join(&self.prefix, &f.path);
            let got = self
                .store
                .get(&key)
                .await
                .map_err(ClusterError::remote(format!("reading {key}")))?;
            bytes.push(
                got.bytes()
                    .await
                    .map_err(ClusterError::remote(format!("reading {key}")))?,
            );
        }
        let target = t.clone();
        let (out, rows) = tokio::task::spawn_blocking(move || merge(bytes, &target))
            .await
            .map_err(merge_err)??;
        let expected: i64 = inputs.iter().map(|f| f.rows).sum();
        if rows as i64 != expected {
            return Err(ClusterError::Config(format!(
                "compaction read {rows} rows where the catalog lists {expected}; nothing swapped"
            )));
        }
        let relative = format!(
            "{}/{store_id}/compacted-{}.parquet",
            t.table,
            uuid::Uuid::new_v4().simple()
        );
        let key = join(&self.prefix, &relative);
        let size = out.len();
        self.store
            .put(&key, PutPayload::from(out))
            .await
            .map_err(ClusterError::remote(format!("writing {key}")))?;
        let bound = |pick: fn(&CatalogFile) -> Option<i64>, min: bool| -> Option<i64> {
            let all: Option<Vec<i64>> = inputs.iter().map(pick).collect();
            all.and_then(|v| if min { v.into_iter().min() } else { v.into_iter().max() })
        };
        let file = CatalogFile {
            path: relative.clone(),
            store_id: store_id.to_string(),
            rows: rows as i64,
            bytes: size as i64,
            min_event_time_us: bound(|f| f.min_event_time_us, true),
            max_event_time_us: bound(|f| f.max_event_time_us, false),
            covers: inputs.iter().flat_map(CatalogFile::segments).collect(),
        };
        let paths: Vec<String> = inputs.iter().map(|f| f.path.clone()).collect();
        if self.catalog.swap(&t.table, &self.instance_id, &file, &paths).await? {
            tracing::info!(table = %t.table, store = %store_id, files = inputs.len(), rows, bytes = size, "compacted shared history");
            Ok(true)
        } else {
            // Another swap took an input first: this file is nobody's.
            let _ = self.store.delete(&key).await;
            Ok(false)
        }
    }

    /// Tries to lead every `every`; the leader runs a pass each time. Leadership lasts as long
    /// as the lock's session.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.settings.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lead: Option<super::catalog::Lease> = None;
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let result = async {
                if let Some(lease) = lead.as_mut()
                    && !lease.holds().await
                {
                    tracing::warn!("lost the cluster maintenance lock");
                    lead = None;
                }
                if lead.is_none() {
                    lead = self.catalog.try_lead(LEADER_KEY).await?;
                    if lead.is_some() {
                        tracing::info!("this instance compacts shared history for the cluster");
                    }
                }
                match lead {
                    Some(_) => self.pass().await.map(|_| ()),
                    None => Ok(()),
                }
            }
            .await;
            match result {
                Ok(()) => last_error = None,
                Err(e) => {
                    let message = crate::error::chain(&e);
                    if last_error.as_deref() != Some(message.as_str()) {
                        tracing::warn!(error = %message, "compacting shared history failed; retrying");
                    }
                    last_error = Some(message);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, bytes: i64) -> CatalogFile {
        CatalogFile {
            path: format!("events/s/{name}"),
            store_id: "s".into(),
            rows: 1,
            bytes,
            min_event_time_us: None,
            max_event_time_us: None,
            covers: Vec::new(),
        }
    }

    #[test]
    fn picks_the_oldest_small_files_within_the_input_budget() {
        let settings = CompactSettings {
            every: Duration::from_secs(1),
            small_bytes: 100,
            min_files: 3,
            max_input_bytes: 25,
            grace: Duration::ZERO,
            retention: Duration::ZERO,
            now_us: crate::event::time::now_micros,
        };
        let names = |v: Vec<CatalogFile>| v.into_iter().map(|f| f.path).collect::<Vec<_>>();
        assert!(pick(vec![file("a", 1), file("b", 1)], &settings).is_empty(), "too few");
        assert_eq!(
            names(pick(
                vec![file("a", 10), file("b", 10), file("c", 10), file("d", 1)],
                &settings
            )),
            ["events/s/a", "events/s/b"]
        );
        // Two files are always taken, even over the budget.
        assert_eq!(
            pick(vec![file("a", 50), file("b", 50), file("c", 50)], &settings).len(),
            2
        );
    }

    #[test]
    fn a_compacted_file_covers_its_inputs_segments() {
        let mut c = file("compacted-1.parquet", 1);
        c.covers = vec!["events-1.parquet".into(), "events-2.parquet".into()];
        assert_eq!(c.segments(), ["events-1.parquet", "events-2.parquet"]);
        assert_eq!(file("events-3.parquet", 1).segments(), ["events-3.parquet"]);
    }
}
